//! UForge downloads: a stored file or archive as a representation (`satchel_ranges::serve`, shared
//! with CloudAPI: 200, 206, multipart/byteranges, 304 by If-None-Match or If-Modified-Since, 416),
//! with UForge's headers (Content-Disposition, the sha256 as `X-Checksum-Sha256` and
//! `Repr-Digest`) and its `uforgeError` for a 416; the archive downloads of every ticket kind, by
//! the owner or with a one-time `downloadId`, and the route minting those ids.

use crate::docs;
use crate::extract::Auth;
use crate::render::archive_download;
use crate::wire::{ApiError, Doc, Format};
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use satchel_blob::BlobStore;
use satchel_domain::download_ids::ArchiveTicket;
use satchel_domain::model::{ArchiveRef, Principal, Ticket};
pub use satchel_ranges::Answer;
use satchel_ranges::Representation;
use std::sync::Arc;

pub struct BlobDownload {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub sha256: Option<String>,
    pub content_type: &'static str,
    pub file_name: String,
    pub last_modified: i64,
}

const MAX_RANGES: usize = 64;

impl BlobDownload {
    fn representation(&self) -> Representation {
        let mut headers = vec![(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", ascii_name(&self.file_name)),
        )];
        if let Some(sha) = &self.sha256 {
            headers.push((HeaderName::from_static("x-checksum-sha256"), sha.clone()));
            if let Ok(raw) = hex::decode(sha) {
                let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
                headers.push((
                    HeaderName::from_static("repr-digest"),
                    format!("sha-256=:{b64}:"),
                ));
            }
        }
        Representation {
            key: self.key.clone(),
            size: self.size,
            etag: self.etag.clone(),
            last_modified_ms: self.last_modified,
            content_type: self.content_type.to_string(),
            headers,
            whole_body_headers: Vec::new(),
            max_ranges: MAX_RANGES,
        }
    }
}

/// What a download of `d` answers (304, 200, 206 or 416), decided from the request headers
/// alone, so a caller can act on it (spend a one-time id) before any byte is read.
pub fn plan(req: &HeaderMap, d: &BlobDownload) -> Answer {
    // The validators alone decide; the headers are built once, when the answer is served.
    satchel_ranges::evaluate_at(
        &satchel_ranges::Conditions::from_headers(req),
        &d.etag,
        Some(d.last_modified),
        d.size,
        MAX_RANGES,
    )
}

pub async fn serve_blob(
    blobs: &Arc<dyn BlobStore>,
    req: &HeaderMap,
    d: BlobDownload,
) -> Result<Response, ApiError> {
    let answer = plan(req, &d);
    serve_planned(blobs, answer, d).await
}

pub async fn serve_planned(
    blobs: &Arc<dyn BlobStore>,
    answer: Answer,
    d: BlobDownload,
) -> Result<Response, ApiError> {
    satchel_ranges::serve(blobs, answer, d.representation(), |size| {
        IntoResponse::into_response(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("the requested range is not satisfiable: the file is {size} bytes"),
        ))
    })
    .await
    .map_err(|e| satchel_domain::DomainError::from(e).into())
}

fn ascii_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `?downloadId=` on the archive download routes.
#[derive(serde::Deserialize, Default)]
pub(crate) struct DownloadQuery {
    #[serde(rename = "downloadId")]
    download_id: Option<String>,
}

/// A ticket's archive (image, export, takeout), for any of its download routes. With a
/// `downloadId` the id alone authorises (Basic credentials, which clients send anyway, are
/// ignored) and is spent only by an answer that sends bytes (a 416 or a 304 keeps it); without
/// one the caller authenticates as on every other route.
pub(crate) async fn serve_archive(
    st: &AppState,
    mut parts: Parts,
    q: DownloadQuery,
    (uid, route): (&str, ArchiveTicket),
    file: Option<&str>,
    content_type: fn(&ArchiveRef) -> &'static str,
) -> Result<Response, ApiError> {
    let key = q
        .download_id
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let download = |t: &Ticket, a: &ArchiveRef| archive_download(t, a, content_type(a));
    let (d, answer) = match key {
        Some(_) if parts.method == Method::HEAD => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "HEAD with a downloadId is refused: the id is spent by the first GET",
            ))
        }
        Some(key) => {
            let k = st.satchel.archive_by_key(uid, route, file, key).await?;
            let answer = plan(&parts.headers, &download(&k.ticket, &k.archive));
            let (t, a) = if answer.sends_bytes() {
                st.satchel.spend_download_key(k).await?
            } else {
                (k.ticket, k.archive)
            };
            (download(&t, &a), answer)
        }
        None => {
            let Auth(who) = Auth::from_request_parts(&mut parts, st).await?;
            let (t, a) = st.satchel.ticket_archive(&who, uid, route, file).await?;
            let d = download(&t, &a);
            let answer = plan(&parts.headers, &d);
            (d, answer)
        }
    };
    let mut r = serve_planned(&st.satchel.blobs, answer, d).await?;
    if key.is_some() {
        // The URL holds a credential that worked once: no cache may replay it.
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(r)
}

/// `POST .../downloadids`: a fresh one-time download id for a ticket's archive, and the URI
/// (relative to `/api`, as every document's) that spends it.
pub(crate) async fn mint(
    st: &AppState,
    who: &Principal,
    f: Format,
    (uid, route): (&str, ArchiveTicket),
    ticket_uri: String,
) -> Result<Response, ApiError> {
    let key = st.satchel.download_id(who, uid, route).await?;
    let doc = docs::DownloadId {
        uri: format!("{ticket_uri}/downloads?downloadId={key}"),
        download_id: key,
    };
    Ok(Doc::ok(f, "downloadId", doc)
        .with_status(StatusCode::CREATED)
        // The id in it is a credential that works once: never cache this document.
        .header(header::CACHE_CONTROL, "no-store")
        .into_response())
}
