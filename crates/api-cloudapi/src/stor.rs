//! Manta-style object paths under `/{login}/stor` and `/{login}/public`: PUT objects and directories,
//! GET/HEAD objects (with `Range`) and directory listings (newline-delimited JSON), DELETE.

use crate::error::Code;
use crate::images::account;
use crate::{no_content, Caller, CloudError, CloudState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;
use futures::TryStreamExt;
use satchel_domain::cloud::service::rfc3339;
use satchel_domain::cloud::{EntryKind, StorEntry};
use satchel_domain::model::User;
use satchel_ranges::serve::http_date;
use satchel_ranges::Representation;
use serde_json::json;
use std::collections::HashMap;

type Reply = Result<Response, CloudError>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The caller and the path the URL names, as `/<login>/<area>/<rest>`.
fn target(caller: &Caller, p: &HashMap<String, String>) -> Result<(User, String), CloudError> {
    let login = p.get("login").map(String::as_str).unwrap_or_default();
    let user = account(caller, login)?.clone();
    let area = p.get("area").map(String::as_str).unwrap_or_default();
    if area != "stor" && area != "public" {
        return Err(CloudError::not_found(format!(
            "/{login}/{area} does not exist"
        )));
    }
    let raw = match p.get("rest").filter(|r| !r.is_empty()) {
        Some(rest) => format!("/{}/{area}/{rest}", user.login),
        None => format!("/{}/{area}", user.login),
    };
    Ok((user, raw))
}

fn hv(s: &str) -> Result<HeaderValue, CloudError> {
    HeaderValue::from_str(s).map_err(|_| CloudError::new(Code::InternalError, "bad header value"))
}

fn md5_b64(hex_md5: &str) -> Option<String> {
    hex::decode(hex_md5).ok().map(|raw| B64.encode(raw))
}

pub async fn get_entry(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Reply {
    let (user, raw) = target(&caller, &p)?;
    let (path, entry) = st.cloud.stor_entry(&user, &raw).await?;
    if entry.kind == EntryKind::Directory {
        let limit = match q.get("limit") {
            None => 256,
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| CloudError::invalid_argument("limit must be 1 to 1024"))?,
        };
        let items = st
            .cloud
            .stor_list(&user, &path, q.get("marker").map(String::as_str), limit)
            .await?;
        let mut body = String::new();
        for e in &items {
            body.push_str(&listing_line(e).to_string());
            body.push('\n');
        }
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-json-stream; type=directory"),
        );
        h.insert("result-set-size", HeaderValue::from(items.len()));
        h.insert(header::LAST_MODIFIED, hv(&http_date(entry.mtime))?);
        return Ok(r);
    }
    serve_object(&st, &headers, &entry).await
}

fn listing_line(e: &StorEntry) -> serde_json::Value {
    let mtime = rfc3339(e.mtime);
    match e.kind {
        EntryKind::Directory => json!({"name": e.name, "type": "directory", "mtime": mtime}),
        EntryKind::Object => {
            let mut v = json!({
                "name": e.name,
                "type": "object",
                "etag": e.etag,
                "size": e.size,
                "mtime": mtime,
                "contentType": e.content_type.as_deref().unwrap_or("application/octet-stream"),
            });
            if let (Some(o), Some(m)) = (v.as_object_mut(), e.md5.as_deref().and_then(md5_b64)) {
                o.insert("contentMD5".into(), m.into());
            }
            v
        }
    }
}

async fn serve_object(st: &CloudState, req: &HeaderMap, e: &StorEntry) -> Reply {
    let key = e
        .blob_key
        .as_deref()
        .ok_or_else(|| CloudError::not_found(format!("{} has no data", e.path)))?;
    let rep = Representation {
        key: key.to_string(),
        size: e.size.max(0) as u64,
        etag: format!("\"{}\"", e.etag),
        last_modified_ms: e.mtime,
        content_type: e
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
        headers: Vec::new(),
        // A Content-MD5 must describe the bytes sent.
        whole_body_headers: e
            .md5
            .as_deref()
            .and_then(md5_b64)
            .map(|m| (HeaderName::from_static("content-md5"), m))
            .into_iter()
            .collect(),
        // One range is served as 206; several are answered with the whole object.
        max_ranges: 1,
    };
    let answer = rep.plan(req);
    let path = e.path.clone();
    satchel_ranges::serve(&st.cloud.blobs, answer, rep, |size| {
        CloudError::new(
            Code::RequestedRangeNotSatisfiable,
            format!("the range is not satisfiable: {path} is {size} bytes"),
        )
        .into_response()
    })
    .await
    .map_err(|e| CloudError::from(satchel_domain::DomainError::from(e)))
}

fn is_directory_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mut parts = ct.split(';').map(str::trim);
            parts.next() == Some("application/json")
                && parts.any(|p| p.replace(' ', "") == "type=directory")
        })
}

pub async fn put_entry(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    let (user, raw) = target(&caller, &p)?;
    if is_directory_type(&headers) {
        st.cloud.stor_mkdir(&user, &raw).await?;
        return Ok(no_content());
    }
    let expect_md5 = match headers.get("content-md5").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(hex::encode(B64.decode(v.trim()).map_err(|_| {
            CloudError::new(Code::BAD_REQUEST, "Content-MD5 is not base64")
        })?)),
        Some(Err(_)) => {
            return Err(CloudError::new(
                Code::BAD_REQUEST,
                "Content-MD5 is not text",
            ))
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let e = st
        .cloud
        .stor_put_object(
            &user,
            &raw,
            content_type.as_deref(),
            expect_md5.as_deref(),
            stream,
        )
        .await?;
    let mut r = no_content();
    let h = r.headers_mut();
    h.insert(header::ETAG, hv(&format!("\"{}\"", e.etag))?);
    h.insert(header::LAST_MODIFIED, hv(&http_date(e.mtime))?);
    if let Some(m) = e.md5.as_deref().and_then(md5_b64) {
        h.insert("computed-md5", hv(&m)?);
    }
    Ok(r)
}

pub async fn delete_entry(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(p): Path<HashMap<String, String>>,
) -> Reply {
    let (user, raw) = target(&caller, &p)?;
    st.cloud.stor_delete(&user, &raw).await?;
    Ok(no_content())
}
