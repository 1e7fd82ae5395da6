//! The CloudAPI face (`/{login}/...`): wire-compatible with Joyent Triton CloudAPI as `smartdc`
//! 9.0.1 (`sdc-exportimage` and friends) speaks it, plus the Manta-style object paths the exports
//! land in. It only translates: authenticate (HTTP Signature), parse, call `satchel_domain::cloud`,
//! render JSON and `{code, message}` errors.

mod auth;
mod error;
mod idempotency;
mod images;
mod stor;

pub use error::{CloudError, Code};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine;
use md5::{Digest, Md5};
use satchel_api_doc::Table;
use satchel_domain::cloud::Cloud;
use satchel_domain::model::User;
use std::sync::Arc;
use std::time::Duration;

/// The version answered in `Api-Version` (smartdc asks for `~7.2`).
pub const API_VERSION: &str = "7.2.0";

#[derive(Clone)]
pub struct CloudState {
    pub cloud: Arc<Cloud>,
    /// This server's base URL as clients reach it (`manta_url`); derived from `Host` when unset.
    pub public_url: Option<String>,
    /// How far a request's `Date` may be from the server's clock.
    pub max_clock_skew: Duration,
}

/// The authenticated account, put in request extensions by the signature check.
#[derive(Clone, Debug)]
pub struct Caller(pub User);

/// The face's route table; each route documents itself in `/api/openapi.json`.
fn table() -> Table<CloudState> {
    let stor = |t: Table<CloudState>, path: &str| {
        t.get(
            path,
            "Read a Manta-style object or list a directory",
            stor::get_entry,
        )
        .put(path, "Write an object or make a directory", stor::put_entry)
        .delete(
            path,
            "Delete an object or an empty directory",
            stor::delete_entry,
        )
    };
    let t = Table::new()
        .get("/{login}", "The account", images::get_account)
        .get("/{login}/keys", "The account's SSH keys", images::list_keys)
        .post("/{login}/keys", "Add an SSH key", images::create_key)
        .get("/{login}/keys/{key}", "An SSH key", images::get_key)
        .delete(
            "/{login}/keys/{key}",
            "Remove an SSH key",
            images::delete_key,
        )
        .get(
            "/{login}/images",
            "The account's images",
            images::list_images,
        )
        .post("/{login}/images", "Create an image", images::create_image)
        .get("/{login}/images/{id}", "An image", images::get_image)
        .post(
            "/{login}/images/{id}",
            "An image action (activate, export to a Manta path)",
            images::image_action,
        )
        .delete(
            "/{login}/images/{id}",
            "Delete an image",
            images::delete_image,
        )
        .put(
            "/{login}/images/{id}/file",
            "Upload an image's file",
            images::put_image_file,
        )
        .get(
            "/{login}/images/{id}/exports/{eid}",
            "An asynchronous image export",
            images::get_export,
        );
    let t = stor(t, "/{login}/{area}");
    stor(t, "/{login}/{area}/{*rest}")
}

/// The operations this face routes (for the OpenAPI document).
pub fn operations() -> Vec<satchel_api_doc::Operation> {
    table().operations
}

pub fn router(state: CloudState) -> Router {
    let authed = table()
        .router
        .fallback(|| async { CloudError::not_found("no such resource") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    authed
        .with_state(state)
        .layer(axum::middleware::from_fn(cloud_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            CloudError::new(Code::InternalError, "internal error").into_response()
        }))
        .layer(axum::middleware::from_fn(restify_headers))
}

/// What every CloudAPI (restify) answer carries: `Request-Id` (the request's id, the one the
/// server's `x-request-id` layer gave it or the client sent, so logs and clients agree) and
/// `Response-Time` in milliseconds.
async fn restify_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("request-id", v);
    }
    h.insert(
        "response-time",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    r
}

/// `204 No Content`.
pub(crate) fn no_content() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// A JSON reply with a correct `Content-MD5` (restify clients check it when present).
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&md5) {
        h.insert("content-md5", v);
    }
    r
}

/// Framework rejections (unknown method, bad path, body limits) become `{code, message}` too, and
/// every answer carries `Api-Version`.
async fn cloud_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_success()
        && !status.is_redirection()
        && status != StatusCode::NOT_MODIFIED
        && !is_json
    {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => (Code::RESOURCE_NOT_FOUND, format!("{path} does not exist")),
            StatusCode::METHOD_NOT_ALLOWED => (
                Code::BadMethod,
                format!("{method} is not allowed on {path}"),
            ),
            StatusCode::PAYLOAD_TOO_LARGE => {
                (Code::RequestEntityTooLarge, "request body too large".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                Code::UnsupportedMediaType,
                "unsupported content type".into(),
            ),
            StatusCode::RANGE_NOT_SATISFIABLE => (
                Code::RequestedRangeNotSatisfiable,
                "range not satisfiable".into(),
            ),
            s if s.is_client_error() => (
                Code::BAD_REQUEST,
                s.canonical_reason().unwrap_or("bad request").into(),
            ),
            _ => (Code::InternalError, "internal error".into()),
        };
        let keep: Vec<_> = [header::CONTENT_RANGE, header::ALLOW]
            .into_iter()
            .filter_map(|h| resp.headers().get(&h).map(|v| (h, v.clone())))
            .collect();
        resp = CloudError::with_status(status, code, message).into_response();
        for (h, v) in keep {
            resp.headers_mut().insert(h, v);
        }
    }
    let h = resp.headers_mut();
    h.insert("api-version", HeaderValue::from_static(API_VERSION));
    h.insert(header::SERVER, HeaderValue::from_static("Satchel"));
    resp
}
