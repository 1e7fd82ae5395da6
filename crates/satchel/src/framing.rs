//! Checks on how a request is framed, made before any face reads its body.
//!
//! hyper frames HTTP/1 requests itself: given both `Content-Length` and `Transfer-Encoding`, it drops
//! the length, reads chunks and closes the connection afterwards (one option RFC 9112 §6.3 gives),
//! but it does not tell the service, which therefore cannot take the other option, refusing the
//! request, which is what a request smuggled past a proxy needs. [`Watched`] sees the bytes hyper
//! reads and follows HTTP/1.1 framing (heads, sized and chunked bodies) just far enough to note,
//! request by request, whether a head carried both fields; the service takes the notes in the same
//! order ([`Heads::next_is_ambiguous`]). If it ever loses track (HTTP/2, a head hyper will refuse
//! anyway), it stops noting and requests go through unflagged, as before.
//!
//! [`refusal`] then turns a flagged request, or one declaring a body larger than `--max-upload`,
//! into an error before the body is polled, so hyper never sends `100 Continue` for it.

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_cloudapi::{CloudError, Code};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Request extension: the head carried both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousLength;

/// Why a request is refused before its body is read: the status and the message.
pub fn refusal<B>(req: &Request<B>, max_upload: u64) -> Option<(StatusCode, String)> {
    if req.extensions().get::<AmbiguousLength>().is_some() {
        return Some((
            StatusCode::BAD_REQUEST,
            "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112 §6.3)"
                .into(),
        ));
    }
    // hyper has already refused a Content-Length that is not a number.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    (declared > max_upload).then(|| {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body ({declared} bytes) is larger than the upload limit ({max_upload} bytes)"
            ),
        )
    })
}

/// The refusal in the format of the face the path belongs to (UForge's under `/api`, CloudAPI's
/// elsewhere, as `serve` splits them). The body is left unread, so the connection closes after.
pub fn refuse<B>(req: &Request<B>, status: StatusCode, message: &str) -> Response {
    let path = req.uri().path();
    let mut r = if path == "/api" || path.starts_with("/api/") {
        satchel_api_uforge::error_response(req, status, message)
    } else {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => Code::RequestEntityTooLarge,
            _ => Code::BAD_REQUEST,
        };
        let mut r = CloudError::with_status(status, code, message).into_response();
        r.headers_mut().insert(
            "api-version",
            HeaderValue::from_static(satchel_api_cloudapi::API_VERSION),
        );
        r
    };
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The notes of one connection: per request head, in order, whether it was ambiguous.
#[derive(Clone, Default)]
pub struct Heads(Arc<Mutex<VecDeque<bool>>>);

impl Heads {
    /// The note of the next request hyper hands over (hyper serves an HTTP/1 connection's
    /// requests one at a time, in order; the head's bytes went through [`Watched`] before).
    pub fn next_is_ambiguous(&self) -> bool {
        self.0
            .lock()
            .map(|mut q| q.pop_front().unwrap_or(false))
            .unwrap_or(false)
    }

    fn push(&self, ambiguous: bool) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(ambiguous);
        }
    }
}

/// A connection whose reads are followed by a framing tracker.
pub struct Watched<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> Watched<S> {
    /// `max_head`: the largest request head hyper accepts (the tracker holds one at most).
    pub fn new(inner: S, max_head: usize) -> (Self, Heads) {
        let heads = Heads::default();
        let tracker = Tracker::new(heads.clone(), max_head);
        (Watched { inner, tracker }, heads)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.tracker.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head.
    Head,
    /// Skipping this many body bytes.
    Sized(u64),
    /// Reading a chunk-size line.
    ChunkLine,
    /// Skipping this many chunk bytes.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty one.
    Trailer,
    /// Lost track (HTTP/2, an upgrade, something hyper refuses): no more notes.
    Off,
}

/// Longest chunk-size or trailer line followed (hyper refuses far shorter ones).
const MAX_LINE: usize = 16 * 1024;

struct Tracker {
    state: State,
    /// The head, or the line, read so far.
    buf: Vec<u8>,
    /// How much of `buf` was searched for the end of the head already.
    scanned: usize,
    heads: Heads,
    max_head: usize,
}

impl Tracker {
    fn new(heads: Heads, max_head: usize) -> Self {
        Tracker {
            state: State::Head,
            buf: Vec::new(),
            scanned: 0,
            heads,
            max_head: max_head.saturating_add(1024),
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head => {
                    if self.buf.is_empty() {
                        // Empty lines before a request line are skipped (by hyper too).
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let start = self.buf.len();
                    self.buf.extend_from_slice(data);
                    match self.head_end() {
                        Some(end) => {
                            // What followed the head is its body (or the next request).
                            let rest = end.saturating_sub(start);
                            self.head(end);
                            data = &data[rest..];
                        }
                        None if self.buf.len() > self.max_head => return self.off(),
                        None => return,
                    }
                }
                State::Sized(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = match n - k {
                        0 => State::Head,
                        left => State::Sized(left),
                    };
                }
                State::ChunkData(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = match n - k {
                        0 => State::ChunkEnd,
                        left => State::ChunkData(left),
                    };
                }
                State::ChunkEnd => {
                    match data[0] {
                        b'\r' => {}
                        b'\n' => self.state = State::ChunkLine,
                        _ => return self.off(),
                    }
                    data = &data[1..];
                }
                State::ChunkLine | State::Trailer => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > MAX_LINE {
                            self.off();
                        }
                        return;
                    };
                    self.buf.extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    let line = std::mem::take(&mut self.buf);
                    if self.state == State::Trailer {
                        if line == b"\n" || line == b"\r\n" {
                            self.state = State::Head;
                        }
                        continue;
                    }
                    self.state = match httparse::parse_chunk_size(&line) {
                        Ok(httparse::Status::Complete((_, 0))) => State::Trailer,
                        Ok(httparse::Status::Complete((_, n))) => State::ChunkData(n),
                        _ => return self.off(),
                    };
                }
            }
        }
    }

    /// The end (exclusive) of the head in `buf`: just past the first empty line.
    fn head_end(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(2);
        self.scanned = self.buf.len();
        let b = &self.buf;
        (from..b.len()).find_map(|i| {
            if b[i] != b'\n' {
                return None;
            }
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(b'\n'), _) => Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            }
        })
    }

    /// Notes the head that ends at `end` and follows its body's framing as hyper does.
    fn head(&mut self, end: usize) {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut slots);
        let next = match req.parse(&self.buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {
                let (mut te, mut chunked, mut cl, mut lengths) = (false, false, None, 0);
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        te = true;
                        // hyper: the last field's last coding decides.
                        chunked = std::str::from_utf8(h.value).is_ok_and(|v| {
                            v.rsplit(',')
                                .next()
                                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
                        });
                    } else if h.name.eq_ignore_ascii_case("content-length") {
                        lengths += 1;
                        cl = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<u64>().ok());
                    }
                }
                self.heads.push(te && lengths > 0);
                match (te, chunked, cl) {
                    (true, true, _) if req.version == Some(1) => State::ChunkLine,
                    // hyper refuses these: the connection ends.
                    (true, _, _) => State::Off,
                    (false, _, Some(0)) => State::Head,
                    (false, _, Some(n)) => State::Sized(n),
                    (false, _, None) if lengths > 0 => State::Off,
                    (false, _, None) => State::Head,
                }
            }
            // HTTP/2's preface, or a head hyper refuses too.
            _ => State::Off,
        };
        self.buf.clear();
        self.scanned = 0;
        self.state = next;
        if next == State::Off {
            self.off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(stream: &[u8], step: usize) -> Vec<bool> {
        let heads = Heads::default();
        let mut t = Tracker::new(heads.clone(), 64 * 1024);
        for part in stream.chunks(step) {
            t.feed(part);
        }
        let q = heads.0.lock().map(|q| q.clone()).unwrap_or_default();
        q.into_iter().collect()
    }

    #[test]
    fn follows_requests_and_flags_both_lengths() {
        // Bodies hold text that looks like heads: only real heads are noted.
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            PUT /b HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1a\r\nContent-Length: 5\r\n\r\nGET /\r\n0\r\nX-T: y\r\n\r\n\
            \r\nPOST /d HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
            0\r\n\r\n\
            GET /e HTTP/1.1\n\n";
        for step in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(
                notes(stream, step),
                vec![false, false, false, true, false],
                "step {step}"
            );
        }
    }

    #[test]
    fn stops_where_hyper_would() {
        // HTTP/2 preface: nothing to note.
        assert!(notes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 5).is_empty());
        // Not chunked at the end: hyper refuses it and closes, so nothing after it counts.
        let s = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(notes(s, 4), vec![true]);
        // A head larger than allowed is not held.
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 200 * 1024));
        let heads = Heads::default();
        let mut t = Tracker::new(heads.clone(), 64 * 1024);
        t.feed(&big);
        assert_eq!(t.state, State::Off);
        assert!(t.buf.capacity() == 0);
    }

    #[test]
    fn refusals() {
        let req = |h: &[(&str, &str)]| {
            let mut b = Request::builder().uri("/api/x");
            for (k, v) in h {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap_or_default()
        };
        assert!(refusal(&req(&[("content-length", "100")]), 100).is_none());
        assert!(refusal(&req(&[]), 100).is_none());
        assert_eq!(
            refusal(&req(&[("content-length", "101")]), 100).map(|r| r.0),
            Some(StatusCode::PAYLOAD_TOO_LARGE)
        );
        let mut r = req(&[]);
        r.extensions_mut().insert(AmbiguousLength);
        assert_eq!(refusal(&r, 100).map(|r| r.0), Some(StatusCode::BAD_REQUEST));
    }
}
