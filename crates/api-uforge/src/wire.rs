//! Wire format: content negotiation, rendering documents as XML or JSON, parsing request bodies, and
//! the one mapping from domain errors to HTTP statuses.

use crate::docs::{self, NS};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_domain::DomainError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest XML/JSON request document (file uploads are streamed and limited separately).
pub const MAX_DOC: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    pub fn from_accept(headers: &HeaderMap) -> Format {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // JSON only when asked for and preferred over XML; the SDK always asks for XML.
        let json = accept.find("application/json");
        let xml = accept
            .find("application/xml")
            .or_else(|| accept.find("text/xml"));
        match (json, xml) {
            (Some(j), Some(x)) if j < x => Format::Json,
            (Some(_), None) => Format::Json,
            _ => Format::Xml,
        }
    }
}

/// Serialises `doc` as the root element `root`: in XML as `<ns0:root xmlns:ns0="...">` with
/// unqualified children (the schema is elementFormDefault=unqualified).
pub fn render_doc<T: Serialize>(
    format: Format,
    root: &str,
    doc: &T,
) -> Result<(Vec<u8>, &'static str), String> {
    match format {
        Format::Json => serde_json::to_vec(doc)
            .map(|v| (v, "application/json"))
            .map_err(|e| e.to_string()),
        Format::Xml => {
            let qname = format!("ns0:{root}");
            let body =
                quick_xml::se::to_string_with_root(&qname, doc).map_err(|e| e.to_string())?;
            // Insert the namespace declaration into the root start tag.
            let insert_at = 1 + qname.len();
            let mut out = String::with_capacity(body.len() + 100);
            out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>");
            out.push_str(&body[..insert_at]);
            out.push_str(" xmlns:ns0=\"");
            out.push_str(NS);
            out.push('"');
            out.push_str(&body[insert_at..]);
            Ok((out.into_bytes(), "application/xml"))
        }
    }
}

/// A document reply. The XML content type is exactly `application/xml` (the SDK compares the string).
pub struct Doc<T> {
    pub format: Format,
    pub root: &'static str,
    pub status: StatusCode,
    pub doc: T,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl<T: Serialize> Doc<T> {
    pub fn ok(format: Format, root: &'static str, doc: T) -> Self {
        Doc {
            format,
            root,
            status: StatusCode::OK,
            doc,
            headers: Vec::new(),
        }
    }
    pub fn with_status(mut self, s: StatusCode) -> Self {
        self.status = s;
        self
    }
    pub fn header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }
}

impl<T: Serialize> IntoResponse for Doc<T> {
    fn into_response(self) -> Response {
        match render_doc(self.format, self.root, &self.doc) {
            Ok((body, ct)) => {
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = self.status;
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
                for (k, v) in self.headers {
                    r.headers_mut().insert(k, v);
                }
                r
            }
            Err(e) => ApiError::internal(format!("rendering {}: {e}", self.root)).into_response(),
        }
    }
}

/// An error reply. The face's outer layer turns it (and any other non-2xx) into a `uforgeError`
/// document carrying the request's method and URI.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

/// Marker put on error responses so the outer layer knows the message to render.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match &e {
            DomainError::NotFound(_) => StatusCode::NOT_FOUND,
            DomainError::Invalid(_) | DomainError::Rule { .. } => StatusCode::BAD_REQUEST,
            DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
            DomainError::Conflict(_) => StatusCode::CONFLICT,
            DomainError::Gone(_) => StatusCode::GONE,
            DomainError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            DomainError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            DomainError::QuotaExceeded(_) => StatusCode::FORBIDDEN,
            DomainError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            DomainError::Storage(_) | DomainError::Blob(_) | DomainError::Internal(_) => {
                tracing::error!(error = %e, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
            "internal server error; the request was not completed".to_string()
        } else {
            e.to_string()
        };
        let retry_after = match &e {
            DomainError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        ApiError {
            status,
            message,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r.extensions_mut().insert(ErrorMessage(self.message));
        r
    }
}

pub fn error_document(
    format: Format,
    status: StatusCode,
    method: &str,
    uri: &str,
    message: &str,
) -> (Vec<u8>, &'static str) {
    let doc = docs::UForgeError {
        localized_error_msg: docs::LocalizedMessage {
            message: message.to_string(),
        },
        request_method: method.to_string(),
        request_uri: uri.to_string(),
        status_code: status.as_u16(),
        timestamp: docs::iso(chrono::Utc::now().timestamp_millis()),
    };
    render_doc(format, "uforgeError", &doc)
        .unwrap_or_else(|_| (message.as_bytes().to_vec(), "text/plain"))
}

/// Parses a request document: JSON when the body says so, otherwise XML. XML with a DTD or entity
/// declarations is refused outright (nothing is ever resolved).
pub fn parse_body<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request(format!("the {what} document is not UTF-8")))?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = ct.contains("json") || (!ct.contains("xml") && text.trim_start().starts_with('{'));
    if json {
        serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("malformed {what} JSON document: {e}")))
    } else {
        let upper = text.to_ascii_uppercase();
        if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
            return Err(ApiError::bad_request(format!(
                "the {what} XML document contains a DTD or entity declaration; these are not accepted"
            )));
        }
        // The deserializer's cost grows with the square of the attributes on one element (it checks
        // each against the others); one linear pass first refuses documents outside the limits.
        check_xml_shape(text, &XmlLimits::DEFAULT)
            .map_err(|e| ApiError::bad_request(format!("the {what} XML document {e}")))?;
        quick_xml::de::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("malformed {what} XML document: {e}")))
    }
}

/// Bounds on the shape of an XML request document. No UForge document comes near them: the
/// schema's elements carry at most a handful of attributes (namespace and `xsi:type` declarations).
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub attributes_per_element: usize,
    pub elements: usize,
    pub depth: usize,
    /// Longest text node, attribute value or name, in bytes.
    pub string_len: usize,
}

impl XmlLimits {
    pub const DEFAULT: XmlLimits = XmlLimits {
        attributes_per_element: 32,
        elements: 20_000,
        depth: 32,
        string_len: 256 * 1024,
    };
}

/// One streaming pass over `text`, in time linear in its length, that refuses documents outside
/// `limits` (and malformed ones) with a message naming the limit. Attributes are counted without
/// duplicate checks, which is what makes the deserializer quadratic.
pub fn check_xml_shape(text: &str, limits: &XmlLimits) -> Result<(), String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let (mut depth, mut elements) = (0usize, 0usize);
    let mut start = |e: &quick_xml::events::BytesStart<'_>| -> Result<(), String> {
        elements += 1;
        if elements > limits.elements {
            return Err(format!("has more than {} elements", limits.elements));
        }
        if e.name().as_ref().len() > limits.string_len {
            return Err(format!(
                "has a name longer than {} bytes",
                limits.string_len
            ));
        }
        let mut n = 0usize;
        for a in e.attributes().with_checks(false) {
            let a = a.map_err(|err| format!("is malformed: {err}"))?;
            n += 1;
            if n > limits.attributes_per_element {
                return Err(format!(
                    "has an element with more than {} attributes",
                    limits.attributes_per_element
                ));
            }
            if a.value.len() > limits.string_len || a.key.as_ref().len() > limits.string_len {
                return Err(format!(
                    "has an attribute longer than {} bytes",
                    limits.string_len
                ));
            }
        }
        Ok(())
    };
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                start(&e)?;
                depth += 1;
                if depth > limits.depth {
                    return Err(format!("is nested deeper than {} elements", limits.depth));
                }
            }
            Ok(Event::Empty(e)) => start(&e)?,
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Text(t)) if t.len() > limits.string_len => {
                return Err(format!(
                    "has a text longer than {} bytes",
                    limits.string_len
                ))
            }
            Ok(Event::CData(t)) if t.len() > limits.string_len => {
                return Err(format!(
                    "has a text longer than {} bytes",
                    limits.string_len
                ))
            }
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("is malformed: {e}")),
        }
    }
}

/// Documents up to this size are parsed on the calling task; larger ones on a blocking thread, so
/// a burst of big documents never holds the async workers (and with them every other request).
const INLINE_PARSE: usize = 16 * 1024;

/// [`parse_body`] off the async workers for all but small documents.
pub async fn parse_body_async<T: DeserializeOwned + Default + Send + 'static>(
    headers: &HeaderMap,
    body: bytes::Bytes,
    what: &'static str,
) -> Result<T, ApiError> {
    if body.len() <= INLINE_PARSE {
        return parse_body(headers, &body, what);
    }
    let headers = headers.clone();
    tokio::task::spawn_blocking(move || parse_body(&headers, &body, what))
        .await
        .map_err(|e| ApiError::internal(format!("parsing {what}: {e}")))?
}

pub fn parse_id(what: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid {what} {s:?}: a positive integer is expected"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::{MySoftwareIn, OpStatus};
    use proptest::prelude::*;

    #[test]
    fn xml_root_is_prefixed_and_children_unqualified() {
        let (b, ct) = render_doc(
            Format::Xml,
            "status",
            &OpStatus {
                percentage: 5,
                ..Default::default()
            },
        )
        .unwrap();
        let s = String::from_utf8(b).unwrap();
        assert_eq!(ct, "application/xml");
        assert!(s.contains("<ns0:status xmlns:ns0=\"http://www.usharesoft.com/uforge\"><bytesLoaded>0</bytesLoaded>"), "{s}");
        assert!(s.ends_with("</ns0:status>"));
    }

    #[test]
    fn sdk_style_documents_parse() {
        let h = HeaderMap::new();
        let doc = r#"<?xml version="1.0" encoding="utf-8"?><ns1:mySoftware xmlns:ns1="http://www.usharesoft.com/uforge" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="ns1:MySoftware"><name>n &amp; m</name><version>1</version><unknown><x/></unknown></ns1:mySoftware>"#;
        let m: MySoftwareIn = parse_body(&h, doc.as_bytes(), "mySoftware").unwrap();
        assert_eq!(m.name.as_deref(), Some("n & m"));
        assert_eq!(m.version.as_deref(), Some("1"));
        let e = parse_body::<MySoftwareIn>(
            &h,
            b"<!DOCTYPE x [<!ENTITY a 'b'>]><m><name>&a;</name></m>",
            "m",
        );
        assert!(e.is_err());
    }

    #[test]
    fn shape_limits_are_named() {
        let l = XmlLimits::DEFAULT;
        let attrs: String = (0..33).map(|i| format!(" a{i}=\"1\"")).collect();
        let e = check_xml_shape(&format!("<m{attrs}/>"), &l).unwrap_err();
        assert!(e.contains("32 attributes"), "{e}");
        let e = check_xml_shape(&format!("<m>{}</m>", "<x/>".repeat(20_000)), &l).unwrap_err();
        assert!(e.contains("20000 elements"), "{e}");
        let e =
            check_xml_shape(&format!("{}{}", "<x>".repeat(33), "</x>".repeat(33)), &l).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
        let e = check_xml_shape(&format!("<m>{}</m>", "a".repeat(300_000)), &l).unwrap_err();
        assert!(e.contains("text longer"), "{e}");
        assert!(check_xml_shape("<m><a></b></m>", &l).is_err());
        let ok: String = (0..32).map(|i| format!(" a{i}=\"1\"")).collect();
        assert!(check_xml_shape(&format!("<m{ok}><x>t</x></m>"), &l).is_ok());
    }

    /// The worst documents under the 1 MiB limit, of every shape the limits allow, parse fast.
    /// (Before the shape check, 90 k attributes on one element took 40 s.)
    #[test]
    fn every_shape_under_the_limit_parses_in_linear_time() {
        let h = HeaderMap::new();
        let attrs: String = (0..32).map(|i| format!(" a{i}=\"1\"")).collect();
        let shapes = [
            // The original attack, and attributes spread at the limit over many elements.
            format!(
                "<m{}/>",
                (0..90_000)
                    .map(|i| format!(" a{i}=\"1\""))
                    .collect::<String>()
            ),
            format!("<m>{}</m>", format!("<x{attrs}/>").repeat(3_000)),
            format!("<m>{}</m>", "<x/>".repeat(19_000)),
            format!("<m>{}</m>", "<name>n</name>".repeat(19_000)),
            format!("<m><name>{}</name></m>", "a".repeat(250_000)),
            format!("{}{}", "<x>".repeat(32), "</x>".repeat(32)),
        ];
        for doc in shapes {
            assert!(doc.len() <= MAX_DOC, "{}", doc.len());
            let t = std::time::Instant::now();
            let _ = parse_body::<MySoftwareIn>(&h, doc.as_bytes(), "mySoftware");
            let took = t.elapsed();
            // Generous for a debug build on a busy machine; quadratic shapes took seconds.
            assert!(
                took < std::time::Duration::from_secs(2),
                "{took:?} for {} bytes",
                doc.len()
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), json in any::<bool>()) {
            let mut h = HeaderMap::new();
            if json {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            let _ = parse_body::<MySoftwareIn>(&h, &body, "mySoftware");
        }

        #[test]
        fn xmlish_parsing_never_panics(s in "<[a-z:]{1,6}( [a-z:]{1,5}=\"[^\"]{0,5}\")?>(<[a-zA-Z]{1,8}>[^<]{0,10}</[a-zA-Z]{1,8}>){0,4}(</[a-z:]{1,6}>)?") {
            let _ = parse_body::<MySoftwareIn>(&HeaderMap::new(), s.as_bytes(), "mySoftware");
        }
    }
}
