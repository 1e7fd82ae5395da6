//! What request logs may show. The request span records the URI with the values of credential
//! query parameters replaced (one-time `downloadId`s, API-key `signature`s, anything named like a
//! password or token); credential headers are never recorded, and `serve` marks them sensitive so
//! that even a Debug print of the headers shows `Sensitive`.

use axum::http::{Request, Uri};
use std::borrow::Cow;

/// Query parameters whose values are secrets, compared case-insensitively after decoding.
const SECRET_PARAMS: &[&str] = &[
    "downloadid",
    "downloadkey",
    "signature",
    "password",
    "passphrase",
    "passwd",
    "secret",
    "token",
    "access_token",
];

pub const REDACTED: &str = "REDACTED";

/// The tracing span of one request (tower-http's default fields, with the URI redacted).
pub fn span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        uri = %uri(req.uri()),
        version = ?req.version(),
    )
}

/// The URI as logs may show it.
pub fn uri(uri: &Uri) -> Cow<'_, str> {
    let Some(query) = uri.query() else {
        return Cow::Owned(uri.to_string());
    };
    if !query.split('&').any(is_secret) {
        return Cow::Owned(uri.to_string());
    }
    let query: Vec<Cow<str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(pair) => Cow::Owned(format!("{name}={REDACTED}")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    let prefix = match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => format!("{s}://{a}"),
        _ => String::new(),
    };
    Cow::Owned(format!("{prefix}{}?{}", uri.path(), query.join("&")))
}

fn is_secret(pair: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    let name = decode(name).to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
}

/// `application/x-www-form-urlencoded` decoding of a parameter name (`+`, `%XX`), so an encoded
/// name is recognised too; invalid escapes are kept as they are.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match b.get(i + 1..i + 3) {
                Some(h) if h.iter().all(u8::is_ascii_hexdigit) => {
                    let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(hex(h[0]) << 4 | hex(h[1]));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        uri(&s.parse::<Uri>().unwrap_or_default()).into_owned()
    }

    #[test]
    fn credentials_in_queries_are_redacted() {
        assert_eq!(r("/api/x/downloads"), "/api/x/downloads");
        assert_eq!(r("/api/x?limit=5"), "/api/x?limit=5");
        assert_eq!(
            r("/api/x/downloads?downloadId=0123abcd"),
            "/api/x/downloads?downloadId=REDACTED"
        );
        assert_eq!(
            r("/api/users/a?apiKey=pub&signature=s%2Fig&x=1"),
            "/api/users/a?apiKey=pub&signature=REDACTED&x=1"
        );
        assert_eq!(r("/a?DOWNLOADID=k&b"), "/a?DOWNLOADID=REDACTED&b");
        assert_eq!(r("/a?download%49d=k"), "/a?download%49d=REDACTED");
        assert_eq!(r("/a?password"), "/a?password");
        assert_eq!(r("/a?%zz=1&%4=2&%"), "/a?%zz=1&%4=2&%");
        assert_eq!(r("http://h:1/a?token=t"), "http://h:1/a?token=REDACTED");
        assert_eq!(
            r("/api/users/a/takeouts?format=zip&passphrase=correct+horse"),
            "/api/users/a/takeouts?format=zip&passphrase=REDACTED"
        );
    }
}
