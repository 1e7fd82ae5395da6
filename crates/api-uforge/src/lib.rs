//! The UForge face (`/api/...`): wire-compatible with uforge-python-sdk 3.8.13 and hammr.
//! It only translates: extract (`extract.rs`: caller, format, typed ids), call
//! `satchel_domain::service::Satchel` (which decides ownership and returns resolved handles),
//! render (`render.rs`). One handler file per resource: `users`, `bundles`, `artifacts`,
//! `attachments` (license, logo), `exports`, `containers` (templates, images), `apikeys`,
//! `accounts` (cloud accounts, secrets sealed), `appliances` (appliance templates, their OS profile,
//! packages and boot scripts), `imports` (bundle and template archives made into new bundles and
//! appliances), `takeouts` (everything in one archive).

mod accounts;
mod apikeys;
mod appliances;
mod artifacts;
mod attachments;
mod bundles;
mod containers;
mod distributions;
pub mod docs;
mod download;
mod exports;
mod extract;
mod idempotency;
mod imports;
mod notify;
mod pimages;
mod render;
mod takeouts;
mod users;
pub mod wire;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use satchel_api_doc::Table;
use satchel_domain::service::Satchel;
use std::sync::Arc;
use wire::{error_document, ErrorMessage, Format};

#[derive(Clone)]
pub struct AppState {
    pub satchel: Arc<Satchel>,
    /// Status answers rendered once per remembered ticket version (`render::StatusMemo`).
    pub(crate) statuses: Arc<render::StatusMemo>,
}

impl AppState {
    pub fn new(satchel: Arc<Satchel>) -> Self {
        AppState {
            satchel,
            statuses: Arc::default(),
        }
    }
}

/// The face's route table; each route documents itself in `/api/openapi.json`.
fn routes() -> Table<AppState> {
    let ms = "/api/users/{uid}/mysoftware/{msid}";
    users::routes()
        .merge(bundles::routes(ms))
        .merge(artifacts::routes(ms))
        .merge(attachments::routes(ms))
        .merge(exports::routes(ms))
        .merge(exports::appliance_routes())
        .merge(containers::routes(ms))
        .merge(pimages::routes(ms))
        .merge(distributions::routes())
        .merge(apikeys::routes())
        .merge(accounts::routes())
        .merge(imports::routes())
        .merge(takeouts::routes())
        .merge(notify::routes())
        .merge(appliances::routes())
}

/// The `/api` router, with every non-2xx answer rendered as a `uforgeError`.
pub fn router(state: AppState) -> Router {
    routes()
        .router
        .with_state(state)
        .layer(axum::middleware::from_fn(uforge_errors))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.extensions_mut()
                .insert(ErrorMessage("internal server error".into()));
            r
        }))
}

pub use extract::basic_credentials;

/// The operations this face routes (for the OpenAPI document).
pub fn operations() -> Vec<satchel_api_doc::Operation> {
    routes().operations
}

/// Collapses repeated slashes (`http://host/api/` + `/users/...` yields `//users`), before routing.
pub fn normalize_path(mut req: Request) -> Request {
    let path = req.uri().path();
    // A byte scan: `str::contains` builds a substring searcher on every request.
    if path.as_bytes().windows(2).any(|w| w == b"//") {
        let mut p = String::with_capacity(path.len());
        let mut prev = '\0';
        for c in path.chars() {
            if !(c == '/' && prev == '/') {
                p.push(c);
            }
            prev = c;
        }
        let pq = match req.uri().query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(v) = pq.parse() {
            parts.path_and_query = Some(v);
            if let Ok(u) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    req
}

/// A `uforgeError` for a request the server refuses in front of the routes (framing, declared
/// body size: `satchel::framing`), so it answers in this face's format all the same.
pub fn error_response<B>(
    req: &axum::http::Request<B>,
    status: StatusCode,
    message: &str,
) -> Response {
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let format = Format::from_accept(req.headers());
    let (body, ct) = error_document(format, status, req.method().as_str(), &uri, message);
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

async fn uforge_errors(req: Request, next: Next) -> Response {
    // Kept as they are (cheap clones, no allocation) and spelled out only for an error.
    let (method, request_uri) = (req.method().clone(), req.uri().clone());
    let format = Format::from_accept(req.headers());
    let resp = next.run(req).await;
    let status = resp.status();
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return resp;
    }
    let method = method.to_string();
    let uri = request_uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let (mut parts, body) = resp.into_parts();
    let message = match parts.extensions.get::<ErrorMessage>() {
        Some(ErrorMessage(m)) => m.clone(),
        None => {
            // A rejection from the framework (unknown route, wrong method, body limit, bad path...).
            let text = axum::body::to_bytes(body, 64 * 1024)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            match (status, text.is_empty()) {
                (StatusCode::NOT_FOUND, _) => format!("no such resource: {uri}"),
                (StatusCode::METHOD_NOT_ALLOWED, _) => {
                    format!("method {method} is not allowed on {uri}")
                }
                (_, false) => text,
                (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
            }
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        parts.headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"satchel\""),
        );
    }
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE
    ) {
        // The rest of the request body is not read (too large, or no room left to write it): tell
        // the client the connection ends here, or it may pool it and lose its next request.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let (body, ct) = error_document(format, status, &method, &uri, &message);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_DISPOSITION);
    Response::from_parts(parts, Body::from(body))
}
