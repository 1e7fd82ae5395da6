//! The one routine that answers a GET of a stored blob, for both faces: `304`, `200`, `206` with one
//! range, `206 multipart/byteranges` with several (parts fetched one after another as the client
//! reads, so memory stays flat), and the framing of a `416`, whose body is the face's.

use crate::Answer;
use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use satchel_blob::{BlobError, BlobStore};
use std::ops::RangeInclusive;
use std::sync::Arc;

/// A stored blob as one HTTP representation.
pub struct Representation {
    pub key: String,
    pub size: u64,
    /// The strong entity tag, quoted.
    pub etag: String,
    /// Milliseconds since the epoch (`Last-Modified`, `If-Modified-Since`).
    pub last_modified_ms: i64,
    pub content_type: String,
    /// Sent with every `200` and `206` (a digest of the whole representation, a file name...).
    pub headers: Vec<(HeaderName, String)>,
    /// Sent with a `200` only, because they describe the bytes of the body (`Content-MD5`).
    pub whole_body_headers: Vec<(HeaderName, String)>,
    /// Ranges answered as `multipart/byteranges`; more (after merging) get the whole
    /// representation. 1: a single range only, several are answered whole (§14.2 allows it).
    pub max_ranges: usize,
}

impl Representation {
    /// What a GET with these headers answers, before any byte is read.
    pub fn plan(&self, req: &HeaderMap) -> Answer {
        crate::evaluate_at(
            &crate::Conditions::from_headers(req),
            &self.etag,
            Some(self.last_modified_ms),
            self.size,
            self.max_ranges.max(1),
        )
    }

    fn last_modified(&self) -> String {
        http_date(self.last_modified_ms)
    }
}

/// An HTTP date from milliseconds since the epoch.
pub fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
}

/// Values come from the server's own records; one that is not a valid header value is left out
/// rather than failing the download.
fn put(h: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            h.insert(name, v);
        }
        Err(_) => tracing::warn!(header = %name, "a stored value is not a valid header; left out"),
    }
}

/// Answers `answer` (from [`Representation::plan`]) with `rep`'s bytes. `unsatisfiable` renders
/// the face's `416` body for a representation of the given size; this routine adds its
/// `Content-Range: bytes */size`.
pub async fn serve(
    blobs: &Arc<dyn BlobStore>,
    answer: Answer,
    rep: Representation,
    unsatisfiable: impl FnOnce(u64) -> Response,
) -> Result<Response, BlobError> {
    let ranges = match answer {
        Answer::NotModified => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            put(r.headers_mut(), header::ETAG, &rep.etag);
            put(r.headers_mut(), header::LAST_MODIFIED, &rep.last_modified());
            return Ok(r);
        }
        Answer::Unsatisfiable => {
            let mut r = unsatisfiable(rep.size);
            let h = r.headers_mut();
            put(h, header::CONTENT_RANGE, &format!("bytes */{}", rep.size));
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(r);
        }
        Answer::Full => Vec::new(),
        Answer::Partial(v) => v,
    };
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    put(&mut h, header::ETAG, &rep.etag);
    put(&mut h, header::LAST_MODIFIED, &rep.last_modified());
    for (name, value) in &rep.headers {
        put(&mut h, name.clone(), value);
    }
    let (status, body) = match ranges.len() {
        0 => {
            put(&mut h, header::CONTENT_TYPE, &rep.content_type);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(rep.size));
            for (name, value) in &rep.whole_body_headers {
                put(&mut h, name.clone(), value);
            }
            let stream = blobs.get(&rep.key, None).await?;
            (StatusCode::OK, Body::from_stream(stream))
        }
        1 => {
            let r = &ranges[0];
            put(&mut h, header::CONTENT_TYPE, &rep.content_type);
            h.insert(
                header::CONTENT_LENGTH,
                HeaderValue::from(r.end() - r.start() + 1),
            );
            put(
                &mut h,
                header::CONTENT_RANGE,
                &format!("bytes {}-{}/{}", r.start(), r.end(), rep.size),
            );
            let stream = blobs.get(&rep.key, Some(*r.start()..r.end() + 1)).await?;
            (StatusCode::PARTIAL_CONTENT, Body::from_stream(stream))
        }
        _ => {
            let (len, body, content_type) = multipart(blobs, &rep, ranges);
            put(&mut h, header::CONTENT_TYPE, &content_type);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            (StatusCode::PARTIAL_CONTENT, body)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = h;
    Ok(resp)
}

/// A `multipart/byteranges` body: its length, the body, its content type.
fn multipart(
    blobs: &Arc<dyn BlobStore>,
    rep: &Representation,
    ranges: Vec<RangeInclusive<u64>>,
) -> (u64, Body, String) {
    let boundary = format!("satchel-{:016x}", rand::random::<u64>());
    let parts: Vec<(String, RangeInclusive<u64>)> = ranges
        .into_iter()
        .map(|r| {
            let head = format!(
                "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {}-{}/{}\r\n\r\n",
                rep.content_type,
                r.start(),
                r.end(),
                rep.size
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
    let (blobs, key) = (blobs.clone(), rep.key.clone());
    let stream = futures::stream::iter(parts.into_iter().map(Some).chain(std::iter::once(None)))
        .then(move |part| {
            let (blobs, key, tail) = (blobs.clone(), key.clone(), tail.clone());
            async move {
                match part {
                    Some((head, r)) => {
                        let body = blobs.get(&key, Some(*r.start()..r.end() + 1)).await?;
                        let head =
                            futures::stream::once(async move { Ok(bytes::Bytes::from(head)) });
                        Ok::<_, BlobError>(head.chain(body).boxed())
                    }
                    None => Ok(
                        futures::stream::once(async move { Ok(bytes::Bytes::from(tail)) }).boxed(),
                    ),
                }
            }
        })
        .map(|r| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten();
    (
        len,
        Body::from_stream(stream),
        format!("multipart/byteranges; boundary={boundary}"),
    )
}
