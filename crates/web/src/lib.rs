//! The self-service page: one HTML document, its script and its style sheet, embedded in the binary
//! (`include_str!`, no build step, nothing fetched from elsewhere), served at `/` and under `/ui/`.
//!
//! The page is a client of the UForge face's JSON (`/api/...`, HTTP Basic on every `fetch`, the
//! credentials kept in memory only); this crate owns only the assets and the headers they are
//! served with: a strict Content-Security-Policy (`default-src 'self'`, no inline script),
//! `nosniff`, no referrer (download links carry one-time ids), revalidation by ETag.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: &'static str,
}

/// FNV-1a over the asset, at compile time: a validator that changes whenever the file does.
const fn fnv(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

const fn hex16(mut v: u64) -> [u8; 18] {
    let digits = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 16;
    while i > 0 {
        out[i] = digits[(v & 0xf) as usize];
        v >>= 4;
        i -= 1;
    }
    out
}

macro_rules! asset {
    ($file:literal, $type:literal) => {{
        const BODY: &str = include_str!(concat!("../assets/", $file));
        const TAG: [u8; 18] = hex16(fnv(BODY));
        Asset {
            body: BODY,
            content_type: $type,
            // Hex digits and quotes only, so always UTF-8.
            etag: match std::str::from_utf8(&TAG) {
                Ok(s) => s,
                Err(_) => panic!("etag"),
            },
        }
    }};
}

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const SCRIPT: Asset = asset!("app.js", "text/javascript; charset=utf-8");
const STYLE: Asset = asset!("app.css", "text/css; charset=utf-8");

/// Everything the page may load comes from this origin; scripts only from files (no inline
/// script, no `eval`), and nothing may frame it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether a path is the page's: `/`, `/ui` and everything under `/ui/` (so `ui` cannot be a
/// CloudAPI login).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// The answer for a path [`owns`] accepts.
pub fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Response {
    let asset = match path {
        "/" | "/ui" | "/ui/" | "/ui/index.html" => &INDEX,
        "/ui/app.js" => &SCRIPT,
        "/ui/app.css" => &STYLE,
        _ => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Body::empty())
    } else if method == Method::HEAD {
        (StatusCode::OK, Body::empty())
    } else {
        (StatusCode::OK, Body::from(asset.body))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    }
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    // Revalidated on every load: an upgraded server's page and script never mix with old ones.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Download links carry one-time ids: never hand a URL to anyone else.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &HeaderMap) -> Response {
        serve(&Method::GET, path, headers)
    }

    #[test]
    fn the_page_its_script_and_style_have_their_types_and_a_strict_policy() {
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/ui/", "text/html; charset=utf-8"),
            ("/ui/app.js", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "text/css; charset=utf-8"),
        ] {
            assert!(owns(path));
            let r = get(path, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], ty);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        }
        assert!(!owns("/alice/images"));
        assert!(!owns("/uix"));
        assert_eq!(
            get("/ui/nope.js", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
        let post = serve(&Method::POST, "/", &HeaderMap::new());
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn the_page_has_no_inline_script_or_style_and_loads_only_its_own_files() {
        let html = INDEX.body;
        assert!(html.contains(r#"<script src="/ui/app.js" defer></script>"#));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "one script, from a file"
        );
        assert!(!html.contains(" style=") && !html.contains("<style"));
        for handler in ["onclick=", "onsubmit=", "onload=", "javascript:"] {
            assert!(!html.contains(handler), "{handler}");
        }
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let etag = get("/ui/app.js", &HeaderMap::new()).headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(get("/ui/app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(get("/ui/app.css", &h).status(), StatusCode::OK);
    }
}
