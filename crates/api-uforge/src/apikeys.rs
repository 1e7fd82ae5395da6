//! UForge API key pairs: `/api/users/{uid}/apikeys[/{akid}]`, and reading a request signed with one
//! (`apiKey=...&signature=...` in the query, as the SDK's `UForgeApiKeyAuth` sends it). Which string
//! is signed and how it is checked is the domain's (`satchel_domain::apikeys`); this only splits the
//! query.

use crate::docs::{self, iso};
use crate::extract::{read_doc, Auth, Fmt};
use crate::wire::{parse_body_async, parse_id, ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::apikeys::{ApiKey, SignedRequest};

type R = Result<Response, ApiError>;

/// The API's base path, which the SDK's base URL ends with and leaves out of what it signs.
const BASE: &str = "/api";

pub fn routes() -> Table<AppState> {
    let keys = "/api/users/{uid}/apikeys";
    let key = "/api/users/{uid}/apikeys/{akid}";
    Table::new()
        .get(keys, "The user's API key pairs (never their secrets)", list)
        .post(
            keys,
            "Create an API key pair (the only answer with its secret)",
            create,
        )
        .get(key, "An API key pair (without its secret)", get)
        .delete(key, "Delete (revoke) an API key pair", delete)
}

/// The API-key credentials of a request, if it names an `apiKey`. The query is split on `&` as
/// received; the `signature` pair is taken out and the others are kept raw, in order, because the
/// signature covers them as the client encoded them.
pub(crate) fn signed_request(uri: &Uri) -> Result<Option<SignedRequest>, ApiError> {
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

fn key_doc(uid: &str, k: &ApiKey, secret: Option<String>) -> docs::ApiKeyPair {
    docs::ApiKeyPair {
        created: iso(k.created),
        db_id: k.id,
        last_modified: k.last_used.map(iso),
        name: k.name.clone(),
        description: k.description.clone(),
        public_key: k.public_key.clone(),
        secret_key: secret,
        uri: format!("users/{uid}/apikeys/{}", k.id),
    }
}

async fn list(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let keys = st.satchel.list_api_keys(&who, &uid).await?;
    let items: Vec<_> = keys.iter().map(|k| key_doc(&uid, k, None)).collect();
    let doc = docs::ApiKeyPairs {
        total: items.len() as i64,
        api_key_pairs: docs::ApiKeyPairItems {
            api_key_pair: items,
        },
    };
    Ok(Doc::ok(f, "apiKeyPairs", doc).into_response())
}

async fn create(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> R {
    // Resolve the user first: a caller who may not act for `uid` never gets a body parsed.
    st.satchel.target(&who, &uid).await?;
    let input: docs::ApiKeyPairIn =
        parse_body_async(&headers, read_doc(body).await?, "apiKeyPair").await?;
    let created = st
        .satchel
        .create_api_key(&who, &uid, input.name, input.description)
        .await?;
    let doc = key_doc(&uid, &created.key, Some(created.secret.to_string()));
    // Never replayed: this route takes no Idempotency-Key, so the secret is stored nowhere else.
    Ok(Doc::ok(f, "apiKeyPair", doc)
        .with_status(StatusCode::CREATED)
        .header(header::CACHE_CONTROL, "no-store")
        .into_response())
}

async fn get(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, akid)): Path<(String, String)>,
) -> R {
    let akid = parse_id("apiKeyPair id", &akid)?;
    let k = st.satchel.api_key(&who, &uid, akid).await?;
    Ok(Doc::ok(f, "apiKeyPair", key_doc(&uid, &k, None)).into_response())
}

async fn delete(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, akid)): Path<(String, String)>,
) -> R {
    let akid = parse_id("apiKeyPair id", &akid)?;
    st.satchel.delete_api_key(&who, &uid, akid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
