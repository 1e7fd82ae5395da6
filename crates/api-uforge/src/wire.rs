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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Marker put on error responses so the outer layer knows the message to render.
#[derive(Clone, Debug)]
pub struct ErrorMessage(pub String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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
        ApiError { status, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = self.status;
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
        quick_xml::de::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("malformed {what} XML document: {e}")))
    }
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
