//! UForge downloads: a stored file or archive as a representation (`satchel_ranges::serve`, shared
//! with CloudAPI: 200, 206, multipart/byteranges, 304 by If-None-Match or If-Modified-Since, 416),
//! with UForge's headers (Content-Disposition, the sha256 as `X-Checksum-Sha256` and
//! `Repr-Digest`) and its `uforgeError` for a 416.

use crate::wire::ApiError;
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use base64::Engine;
use satchel_blob::BlobStore;
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
        axum::response::IntoResponse::into_response(ApiError::new(
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
