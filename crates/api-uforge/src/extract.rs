//! What a handler takes from the request besides its body: the authenticated caller ([`Auth`]),
//! the answer's format ([`Fmt`]), and the URL's ids, typed ([`BundlePath`], [`ArtifactPath`]...):
//! a path whose id is not a positive integer is refused here, once, with the same `400` for every
//! route. Also the reading of request documents and upload streams.
//!
//! A request signed with an API key pair carries `apiKey=...&signature=...` in its query, as the SDK's
//! `UForgeApiKeyAuth` sends it; which string is signed and how it is checked is the domain's
//! (`satchel_domain::apikeys`): this only splits the query.

use crate::wire::{parse_body_async, parse_id, ApiError, Format, MAX_DOC};
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::TryStreamExt;
use satchel_domain::apikeys::SignedRequest;
use satchel_domain::model::{Id, Principal};
use serde::Deserialize;

// ------------------------------------------------------------------ the caller

/// The authenticated caller (an API key pair's signed query, else HTTP Basic).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let who = principal(st, &parts.uri, &parts.headers, source).await?;
        st.satchel.rate.admit(&who)?;
        Ok(Auth(who))
    }
}

/// The API's base path, which the SDK's base URL ends with and leaves out of what it signs.
const BASE: &str = "/api";

/// The API-key credentials of a request, if it names an `apiKey`. The query is split on `&` as
/// received; the `signature` pair is taken out and the others are kept raw, in order, because the
/// signature covers them as the client encoded them.
fn signed_request(uri: &Uri) -> Result<Option<SignedRequest>, ApiError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let unauth = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, m);
    let (mut public_key, mut signature) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let decoded = url::form_urlencoded::parse(pair.as_bytes()).next();
        match decoded.as_ref().map(|(k, v)| (k.as_ref(), v)) {
            Some(("signature", v)) => {
                if signature.replace(v.to_string()).is_some() {
                    return Err(unauth("more than one signature parameter"));
                }
            }
            Some(("apiKey", v)) => {
                if public_key.replace(v.to_string()).is_some() {
                    return Err(unauth("more than one apiKey parameter"));
                }
                kept.push(pair);
            }
            _ => kept.push(pair),
        }
    }
    let Some(public_key) = public_key else {
        return Ok(None);
    };
    let signature = signature.ok_or_else(|| {
        unauth("a request with an apiKey must carry its signature (parameter signature)")
    })?;
    let path = uri.path();
    Ok(Some(SignedRequest {
        public_key,
        signature,
        path: path.strip_prefix(BASE).unwrap_or(path).to_string(),
        query: kept.join("&"),
    }))
}

/// Authenticates a request: with an API key pair when the query names an `apiKey` (the SDK then
/// sends no Basic credentials), else with HTTP Basic.
pub(crate) async fn principal(
    st: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    match signed_request(uri)? {
        Some(req) => Ok(st.satchel.login_with_api_key(&req, source).await?),
        None => basic_principal(st, headers, source).await,
    }
}

/// Authenticates the request's HTTP Basic credentials.
pub(crate) async fn basic_principal(
    st: &AppState,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    let (login, password) =
        basic_credentials(headers).map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
    Ok(st.satchel.auth.login(&login, &password, source).await?)
}

/// The login and password of an HTTP Basic `Authorization` header, or why there are none.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), &'static str> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authentication required (HTTP Basic)")?;
    let encoded = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))
        .ok_or("unsupported authorization scheme; use HTTP Basic")?;
    let malformed = "malformed Basic credentials";
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed)?;
    let raw = String::from_utf8(raw).map_err(|_| malformed)?;
    let (login, password) = raw.split_once(':').ok_or(malformed)?;
    Ok((login.to_string(), password.to_string()))
}

/// A status poll's conditions (`If-None-Match`, `If-Modified-Since`), moved out of the request
/// rather than copied with the whole header map: the poll path is the hottest route there is.
pub struct Conditional(pub HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for Conditional {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut kept = HeaderMap::new();
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
            if let header::Entry::Occupied(e) = parts.headers.entry(&name) {
                for v in e.remove_entry_mult().1 {
                    kept.append(&name, v);
                }
            }
        }
        Ok(Conditional(kept))
    }
}

/// The answer's format, from `Accept`.
pub struct Fmt(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Fmt {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Fmt(Format::from_accept(&parts.headers)))
    }
}

// ------------------------------------------------------------------ typed paths

/// Every named segment a route of this face may have; each typed path takes the ones it names.
#[derive(Deserialize)]
struct Segments {
    uid: String,
    msid: Option<String>,
    said: Option<String>,
    lid: Option<String>,
    eid: Option<String>,
    tid: Option<String>,
    itid: Option<String>,
    ptiid: Option<String>,
    iid: Option<String>,
    aid: Option<String>,
    osid: Option<String>,
    bsid: Option<String>,
    file: Option<String>,
}

impl Segments {
    async fn of<S: Send + Sync>(parts: &mut Parts, st: &S) -> Result<Segments, Response> {
        let Path(s) = Path::<Segments>::from_request_parts(parts, st)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(s)
    }
}

/// The id in segment `s`, named `what` in the refusal.
fn id(s: &Option<String>, what: &str) -> Result<Id, ApiError> {
    parse_id(what, s.as_deref().unwrap_or_default())
}

fn text(s: Option<String>) -> String {
    s.unwrap_or_default()
}

/// Declares a typed path: its fields are `uid`, ids (parsed in order, each refused with its
/// name) and text segments.
macro_rules! typed_path {
    ($(#[$m:meta])* $name:ident { $($id:ident: $what:expr),* $(; $($txt:ident),*)? }) => {
        $(#[$m])*
        pub struct $name {
            pub uid: String,
            $(pub $id: Id,)*
            $($(pub $txt: String,)*)?
        }

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Response;
            async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, Response> {
                let s = Segments::of(parts, st).await?;
                $(let $id = id(&s.$id, $what).map_err(IntoResponse::into_response)?;)*
                Ok($name {
                    $($id,)*
                    $($($txt: text(s.$txt),)*)?
                    uid: s.uid,
                })
            }
        }
    };
}

typed_path!(
    /// `/users/{uid}/mysoftware/{msid}`
    BundlePath { msid: "mySoftware id" }
);
typed_path!(
    /// A bundle and a file name, e.g. an upload of its license or logo (whose `{lid}` is ignored:
    /// there is one of each).
    BundleFilePath { msid: "mySoftware id"; file }
);
typed_path!(
    /// `.../artifacts/{said}`
    ArtifactPath { msid: "mySoftware id", said: "softwareArtifact id" }
);
typed_path!(
    /// `.../artifacts/{said}/bin/{file}`
    ArtifactFilePath { msid: "mySoftware id", said: "softwareArtifact id"; file }
);
typed_path!(
    /// `.../licenses/{lid}`
    LicensePath { msid: "mySoftware id", lid: "license id" }
);
typed_path!(
    /// `.../licenses/{lid}/{file}`
    LicenseFilePath { msid: "mySoftware id", lid: "license id"; file }
);
typed_path!(
    /// `.../logo/{lid}`
    LogoPath { msid: "mySoftware id", lid: "logo id" }
);
typed_path!(
    /// `.../logo/{lid}/{file}`
    LogoFilePath { msid: "mySoftware id", lid: "logo id"; file }
);
typed_path!(
    /// `.../exports/{eid}`
    ExportPath { msid: "mySoftware id", eid: "export id" }
);
typed_path!(
    /// `.../templates/{tid}`
    TemplatePath { msid: "mySoftware id", tid: "container template id" }
);
typed_path!(
    /// `.../templates/{tid}/images/{itid}`
    ImagePath { msid: "mySoftware id", tid: "container template id", itid: "image id" }
);
typed_path!(
    /// `.../templates/{tid}/images/{itid}/downloads/{file}`
    ImageFilePath { msid: "mySoftware id", tid: "container template id", itid: "image id"; file }
);
typed_path!(
    /// `/users/{uid}/appliances/{aid}`
    AppliancePath { aid: "appliance id" }
);
typed_path!(
    /// `.../appliances/{aid}/mysoftware/{msid}`
    ApplianceBundlePath { aid: "appliance id", msid: "mySoftware id" }
);
typed_path!(
    /// `.../appliances/{aid}/osprofile/{osid}`
    OsProfilePath { aid: "appliance id", osid: "osProfile id" }
);
typed_path!(
    /// `.../appliances/{aid}/bootscripts/{bsid}`
    BootScriptPath { aid: "appliance id", bsid: "bootScript id" }
);
typed_path!(
    /// `.../appliances/{aid}/bootscripts/{bsid}/bin/{file}`
    BootScriptFilePath { aid: "appliance id", bsid: "bootScript id"; file }
);

typed_path!(
    /// `/users/{uid}/appliances/{aid}/exports/{eid}`
    ApplianceExportPath { aid: "appliance id", eid: "export id" }
);
typed_path!(
    /// `/users/{uid}/takeouts/{tid}`
    TakeoutPath { tid: "takeout id" }
);
typed_path!(
    /// `/users/{uid}/bundleimports/{iid}` and `/users/{uid}/imports/{iid}`
    ImportPath { iid: "import id" }
);

// ------------------------------------------------------------------ bodies

/// A request document that must be present (PUT): an empty body is refused rather than ignored.
async fn read_required_doc(body: Body, what: &str) -> Result<bytes::Bytes, ApiError> {
    let b = read_doc(body).await?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "a {what} document is required in the request body"
        )));
    }
    Ok(b)
}

/// Reads and parses a request document for a caller entitled to write, and only then: a caller
/// without the entitlement never makes the server read or parse a body.
pub(crate) async fn write_doc<T: serde::de::DeserializeOwned + Default + Send + 'static>(
    st: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
    required: bool,
) -> Result<T, ApiError> {
    st.satchel.may_write(who)?;
    let bytes = if required {
        read_required_doc(body, what).await?
    } else {
        read_doc(body).await?
    };
    parse_body_async(headers, bytes, what).await
}

pub(crate) async fn read_doc(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_DOC).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request documents are limited to {MAX_DOC} bytes"),
        )
    })
}

/// An upload's body, as the stream the domain stores.
pub(crate) fn body_stream(
    body: Body,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send {
    body.into_data_stream().map_ok(|b| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(u: &str) -> Option<SignedRequest> {
        signed_request(&u.parse::<Uri>().unwrap()).unwrap()
    }

    #[test]
    fn splits_what_the_sdk_sends() {
        // requests' URL for Exports().Export('yaml') with apikeys, then `&signature=` appended.
        let r = parse(
            "/api/users/alice/mysoftware/3/exports?outputFormat=yaml&apiKey=PUB&signature=a%2Bb%2Fc%3D",
        )
        .unwrap();
        assert_eq!(r.public_key, "PUB");
        assert_eq!(r.signature, "a+b/c=");
        assert_eq!(r.path, "/users/alice/mysoftware/3/exports");
        assert_eq!(r.query, "outputFormat=yaml&apiKey=PUB");
        assert_eq!(
            r.signed_text(),
            "users/alice/mysoftware/3/exports?outputFormat=yaml&apiKey=PUB"
        );
    }

    #[test]
    fn keeps_the_other_parameters_raw_and_in_order() {
        let r = parse("/api/users/a?x=%20y&apiKey=K&signature=s&z=1").unwrap();
        assert_eq!(r.query, "x=%20y&apiKey=K&z=1");
    }

    #[test]
    fn without_an_api_key_it_is_basic_auth() {
        assert!(parse("/api/users/a").is_none());
        assert!(parse("/api/users/a?signature=x").is_none());
        assert!(parse("/api/users/a?apikey=x&signature=y").is_none());
    }

    #[test]
    fn refuses_ambiguous_or_unsigned_requests() {
        for u in [
            "/api/users/a?apiKey=K",
            "/api/users/a?apiKey=K&signature=1&signature=2",
            "/api/users/a?apiKey=K&apiKey=L&signature=1",
        ] {
            let e = signed_request(&u.parse::<Uri>().unwrap()).err();
            assert_eq!(e.map(|e| e.status), Some(StatusCode::UNAUTHORIZED), "{u}");
        }
    }
}
typed_path!(
    /// `.../templates/{tid}/images/{itid}/pimages/{ptiid}`
    PimagePath { msid: "mySoftware id", tid: "container template id", itid: "image id", ptiid: "publishImage id" }
);
