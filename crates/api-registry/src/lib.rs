//! The pull endpoint: the OCI distribution API's read side (`/v2/...`) over published images,
//! which podman, skopeo and docker pull from as `<host>/<login>/<name>:<tag>`.
//!
//! A face like the others: it authenticates (HTTP Basic with the user's UForge login, through the
//! domain's bounded, throttled login), translates paths and headers to `Satchel::pull_*` calls and
//! renders their answers; blobs are served by `ranges::serve` (Range, conditional requests). Errors
//! are the registry's own `{"errors":[{"code","message","detail"}]}`; an unauthenticated request
//! gets `401` with `WWW-Authenticate: Basic`, which is what makes clients send credentials.
//! Another user's repository is indistinguishable from a missing one (`NAME_UNKNOWN` /
//! `MANIFEST_UNKNOWN`): the domain resolves ownership.

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use satchel_domain::model::Principal;
use satchel_domain::registry::{sha256_hex, Manifest, MEDIA_DOCKER_MANIFEST, MEDIA_OCI_INDEX};
use satchel_domain::service::Satchel;
use satchel_domain::DomainError;
use satchel_ranges::Representation;
use std::sync::Arc;

/// Sent with every answer: clients check it on `/v2/`.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");
const REALM: &str = "Basic realm=\"Satchel registry\", charset=\"UTF-8\"";

#[derive(Clone)]
pub struct RegistryState {
    pub satchel: Arc<Satchel>,
}

/// The `/v2` routes (mounted on the server's one port: `v2` cannot be a login).
pub fn router(satchel: Arc<Satchel>) -> Router {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/{login}/{name}/manifests/{reference}", get(manifest))
        .route("/v2/{login}/{name}/blobs/{digest}", get(blob))
        .route("/v2/{login}/{name}/tags/list", get(tags))
        .fallback(unknown)
        .method_not_allowed_fallback(read_only)
        .with_state(RegistryState { satchel })
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut().insert(
                    HeaderName::from_static(API_VERSION.0),
                    HeaderValue::from_static(API_VERSION.1),
                );
                r
            },
        ))
}

// ------------------------------------------------------------------ errors

/// One registry error, rendered as `{"errors":[...]}`.
#[derive(Debug)]
pub struct RegistryError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl RegistryError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        RegistryError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// The domain's error, a `NotFound` reported as `not_found` (the route's own code).
    fn from_domain(e: DomainError, not_found: &'static str) -> Self {
        match e {
            DomainError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, not_found, m),
            DomainError::Unauthenticated(m) => Self::unauthorized(m),
            DomainError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "DENIED", m),
            DomainError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, "UNSUPPORTED", m),
            DomainError::Throttled {
                retry_after,
                message,
            } => RegistryError {
                retry_after: Some(retry_after),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            },
            other => {
                tracing::error!(error = %other, "registry request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{"code": self.code, "message": self.message, "detail": null}]
        });
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        }
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

type Reply = Result<Response, RegistryError>;

async fn unknown() -> RegistryError {
    RegistryError::new(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "no such repository; names are <login>/<name>",
    )
}

async fn read_only() -> RegistryError {
    RegistryError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "this registry is read-only: publish images through the UForge API (pimages)",
    )
}

// ------------------------------------------------------------------ auth

/// The caller, from HTTP Basic credentials (the user's UForge login and password).
pub struct Caller(pub Principal);

impl FromRequestParts<RegistryState> for Caller {
    type Rejection = RegistryError;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &RegistryState,
    ) -> Result<Self, Self::Rejection> {
        let (login, password) =
            basic_credentials(&parts.headers).map_err(RegistryError::unauthorized)?;
        let source = parts
            .extensions
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let who = st
            .satchel
            .auth
            .login(&login, &password, source)
            .await
            .map_err(|e| RegistryError::from_domain(e, "UNAUTHORIZED"))?;
        // The per-user request rate every face applies (429 TOOMANYREQUESTS with Retry-After).
        st.satchel
            .rate
            .admit(&who)
            .map_err(|e| RegistryError::from_domain(e, "TOOMANYREQUESTS"))?;
        Ok(Caller(who))
    }
}

/// The login and password of a `Basic` `Authorization` header, or why there are none.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), &'static str> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authentication required")?;
    let (scheme, encoded) = h.split_once(' ').ok_or("malformed Authorization header")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("unsupported authorization scheme; use Basic");
    }
    let malformed = "malformed Basic credentials";
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed)?;
    let raw = String::from_utf8(raw).map_err(|_| malformed)?;
    let (login, password) = raw.split_once(':').ok_or(malformed)?;
    Ok((login.to_string(), password.to_string()))
}

// ------------------------------------------------------------------ routes

async fn base(_: Caller) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// Whether `accept` (the request's Accept values) takes `media`. No Accept takes anything; a
/// client naming only other manifest types (docker's schema 1, say) does not get this one.
fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let mut any = false;
    for v in headers.get_all(header::ACCEPT) {
        for item in v.to_str().unwrap_or("").split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == media || t == "*/*" || t == "application/*" {
                return true;
            }
            // An OCI manifest reads as docker's schema 2 for clients that only name docker's.
            if t == MEDIA_DOCKER_MANIFEST && media != MEDIA_OCI_INDEX {
                return true;
            }
        }
    }
    !any
}

async fn manifest(
    State(st): State<RegistryState>,
    Caller(who): Caller,
    Path((login, name, reference)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Reply {
    if reference.starts_with("sha256:") && sha256_hex(&reference).is_none() {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{reference} is not a sha256 digest"),
        ));
    }
    let m: Manifest = st
        .satchel
        .pull_manifest(&who, &login, &name, &reference)
        .await
        .map_err(|e| RegistryError::from_domain(e, "MANIFEST_UNKNOWN"))?;
    if !accepts(&headers, &m.blob.media_type) {
        return Err(RegistryError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!(
                "{login}/{name}:{reference} is a {}, which the request does not accept",
                m.blob.media_type
            ),
        ));
    }
    serve(&st, &headers, method, &m.blob, m.published.created).await
}

async fn blob(
    State(st): State<RegistryState>,
    Caller(who): Caller,
    Path((login, name, digest)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Reply {
    if sha256_hex(&digest).is_none() {
        return Err(RegistryError::new(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{digest} is not a sha256 digest"),
        ));
    }
    let b = st
        .satchel
        .pull_blob(&who, &login, &name, &digest)
        .await
        .map_err(|e| RegistryError::from_domain(e, "BLOB_UNKNOWN"))?;
    let mut b = b;
    // Layers and configs are served as bytes; only manifests carry their own type.
    b.media_type = "application/octet-stream".into();
    serve(&st, &headers, method, &b, 0).await
}

/// A content-addressed blob (its digest is its strong ETag), with Range and conditional requests.
async fn serve(
    st: &RegistryState,
    headers: &HeaderMap,
    method: Method,
    b: &satchel_domain::model::PublishedBlob,
    modified: i64,
) -> Reply {
    let digest = HeaderName::from_static("docker-content-digest");
    let rep = Representation {
        key: b.key.clone(),
        size: b.size.max(0) as u64,
        etag: format!("\"{}\"", b.digest),
        last_modified_ms: modified,
        content_type: b.media_type.clone(),
        headers: vec![(digest.clone(), b.digest.clone())],
        whole_body_headers: Vec::new(),
        max_ranges: 1,
    };
    if method == Method::HEAD {
        // No body, so no blob read: what a GET would send, described.
        let mut r = StatusCode::OK.into_response();
        let h = r.headers_mut();
        for (k, v) in [
            (header::CONTENT_TYPE, rep.content_type.clone()),
            (header::CONTENT_LENGTH, rep.size.to_string()),
            (header::ETAG, rep.etag.clone()),
            (digest, b.digest.clone()),
            (header::ACCEPT_RANGES, "bytes".into()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        return Ok(r);
    }
    let answer = rep.plan(headers);
    satchel_ranges::serve(&st.satchel.blobs, answer, rep, |size| {
        RegistryError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("the range is not satisfiable: the blob is {size} bytes"),
        )
        .into_response()
    })
    .await
    .map_err(|e| RegistryError::from_domain(DomainError::from(e), "BLOB_UNKNOWN"))
}

async fn tags(
    State(st): State<RegistryState>,
    Caller(who): Caller,
    Path((login, name)): Path<(String, String)>,
) -> Reply {
    let tags = st
        .satchel
        .pull_tags(&who, &login, &name)
        .await
        .map_err(|e| RegistryError::from_domain(e, "NAME_UNKNOWN"))?;
    let body = serde_json::json!({"name": format!("{login}/{name}"), "tags": tags});
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_rules() {
        let mut h = HeaderMap::new();
        let oci = satchel_domain::registry::MEDIA_OCI_MANIFEST;
        assert!(accepts(&h, oci));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.docker.distribution.manifest.v1+json"),
        );
        assert!(!accepts(&h, oci));
        h.append(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json; q=0.9"),
        );
        assert!(accepts(&h, oci));
        assert!(!accepts(&h, MEDIA_OCI_INDEX));
    }

    #[test]
    fn basic_credentials_are_parsed_or_refused() {
        let mut h = HeaderMap::new();
        assert!(basic_credentials(&h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6cHc6eA=="),
        );
        assert_eq!(
            basic_credentials(&h).unwrap(),
            ("alice".to_string(), "pw:x".to_string())
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(basic_credentials(&h).is_err());
    }
}
