//! Streaming downloads from blob storage: full (`200`), single range (`206`), several ranges
//! (`206 multipart/byteranges`), unsatisfiable (`416`), not modified (`304`, If-None-Match), with
//! ETag, If-Range and a sha256 header. The decision is `satchel_ranges`', shared with CloudAPI.

use crate::wire::ApiError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use futures::StreamExt;
use satchel_blob::Blobs;
pub use satchel_ranges::Answer;
use satchel_ranges::Conditions;
use std::ops::RangeInclusive;

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

fn header_value(s: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(s).map_err(|_| ApiError::internal("invalid header value"))
}

/// What a download of `d` answers (304, 200, 206 or 416), decided from the request headers
/// alone, so a caller can act on it (spend a one-time id) before any byte is read.
pub fn plan(req: &HeaderMap, d: &BlobDownload) -> Answer {
    satchel_ranges::evaluate(&Conditions::from_headers(req), &d.etag, d.size, MAX_RANGES)
}

pub async fn serve_blob(
    blobs: &Blobs,
    req: &HeaderMap,
    d: BlobDownload,
) -> Result<Response, ApiError> {
    let answer = plan(req, &d);
    serve_planned(blobs, answer, d).await
}

pub async fn serve_planned(
    blobs: &Blobs,
    answer: Answer,
    d: BlobDownload,
) -> Result<Response, ApiError> {
    let ranges = match answer {
        Answer::NotModified => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r.headers_mut().insert(header::ETAG, header_value(&d.etag)?);
            r.headers_mut()
                .insert(header::LAST_MODIFIED, header_value(&last_modified(&d))?);
            return Ok(r);
        }
        Answer::Unsatisfiable => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!(
                    "the requested range is not satisfiable: the file is {} bytes",
                    d.size
                ),
            )
            .into_response_with_range(d.size);
            e.headers_mut()
                .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(e);
        }
        Answer::Full => None,
        Answer::Partial(v) => Some(v),
    };
    let mut status = StatusCode::OK;
    let body: Body;
    let mut headers = HeaderMap::new();
    let h = &mut headers;
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, header_value(&d.etag)?);
    h.insert(header::LAST_MODIFIED, header_value(&last_modified(&d))?);
    h.insert(
        header::CONTENT_DISPOSITION,
        header_value(&format!(
            "attachment; filename=\"{}\"",
            ascii_name(&d.file_name)
        ))?,
    );
    if let Some(sha) = &d.sha256 {
        h.insert("x-checksum-sha256", header_value(sha)?);
        if let Ok(raw) = hex::decode(sha) {
            let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
            h.insert("repr-digest", header_value(&format!("sha-256=:{b64}:"))?);
        }
    }
    match ranges {
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(d.content_type),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(d.size));
            let stream = blobs
                .get(&d.key, None)
                .await
                .map_err(satchel_domain::DomainError::from)?;
            body = Body::from_stream(stream);
        }
        Some(v) if v.len() == 1 => {
            let r = &v[0];
            status = StatusCode::PARTIAL_CONTENT;
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(d.content_type),
            );
            h.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(r.end() - r.start() + 1),
            );
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{}", r.start(), r.end(), d.size))?,
            );
            let stream = blobs
                .get(&d.key, Some(*r.start()..r.end() + 1))
                .await
                .map_err(satchel_domain::DomainError::from)?;
            body = Body::from_stream(stream);
        }
        Some(v) => {
            let boundary = format!("satchel-{:016x}", rand::random::<u64>());
            let parts: Vec<(String, RangeInclusive<u64>)> = v
                .into_iter()
                .map(|r| {
                    let head = format!(
                        "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
                        d.content_type,
                        r.start(),
                        r.end(),
                        d.size
                    );
                    (head, r)
                })
                .collect();
            let tail = format!("\r\n--{boundary}--\r\n");
            let len: u64 = parts
                .iter()
                .map(|(hd, r)| hd.len() as u64 + r.end() - r.start() + 1)
                .sum::<u64>()
                + tail.len() as u64;
            status = StatusCode::PARTIAL_CONTENT;
            h.insert(
                header::CONTENT_TYPE,
                header_value(&format!("multipart/byteranges; boundary={boundary}"))?,
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            let blobs = blobs.clone();
            let key = d.key.clone();
            // Parts are fetched one after another as the client reads: memory stays flat.
            let stream =
                futures::stream::iter(parts.into_iter().map(Some).chain(std::iter::once(None)))
                    .then(move |part| {
                        let blobs = blobs.clone();
                        let key = key.clone();
                        let tail = tail.clone();
                        async move {
                            match part {
                                Some((head, r)) => {
                                    let body =
                                        blobs.get(&key, Some(*r.start()..r.end() + 1)).await?;
                                    let head = futures::stream::once(async move {
                                        Ok(bytes::Bytes::from(head))
                                    });
                                    Ok::<_, satchel_blob::BlobError>(head.chain(body).boxed())
                                }
                                None => Ok(futures::stream::once(async move {
                                    Ok(bytes::Bytes::from(tail))
                                })
                                .boxed()),
                            }
                        }
                    })
                    .map(|r| match r {
                        Ok(s) => s,
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    })
                    .flatten();
            body = Body::from_stream(stream);
        }
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

fn last_modified(d: &BlobDownload) -> String {
    httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.last_modified.max(0) as u64),
    )
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

trait RangeErr {
    fn into_response_with_range(self, size: u64) -> Response;
}

impl RangeErr for ApiError {
    fn into_response_with_range(self, size: u64) -> Response {
        let mut r = axum::response::IntoResponse::into_response(self);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        r
    }
}
