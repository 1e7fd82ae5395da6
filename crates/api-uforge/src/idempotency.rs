//! The `Idempotency-Key` header on the routes that create a ticket or store an upload (the rule is in
//! `satchel_domain::idempotency`): the first 2xx answer is recorded and replayed to retries with
//! `Idempotent-Replayed: true`; a reused key on another request is a `409` uforgeError.

use crate::extract::read_doc;
use crate::wire::{parse_body_async, ApiError};
use crate::AppState;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use futures::TryStreamExt;
use satchel_domain::idempotency::{self as idem, Answer, Begin, Claim, Idempotency};
use satchel_domain::model::Principal;
use std::future::Future;

type R = Result<Response, ApiError>;

/// The request's key (if any) and the hash of its method and target.
pub(crate) struct Idem {
    key: Option<String>,
    request: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Idem {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let values = parts.headers.get_all(idem::HEADER);
        let key = idem::single_key(values.iter().map(|v| v.as_bytes()))?;
        let request = idem::request_hash(parts.method.as_str(), &target(&parts.uri));
        Ok(Idem { key, request })
    }
}

/// Path and query, without the API-key credentials (`apiKey`, `signature`): they authenticate the
/// request, they are not part of what it asks for.
fn target(uri: &Uri) -> String {
    let path = uri.path();
    let Some(q) = uri.query() else {
        return path.to_string();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or_default();
            name != "apiKey" && name != "signature"
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

impl Idem {
    /// Runs `op` once per key for a request without a body (ticket creation from the query).
    pub(crate) async fn once<Fut>(self, st: &AppState, who: &Principal, op: Fut) -> R
    where
        Fut: Future<Output = R>,
    {
        let Some(key) = self.key else {
            return op.await;
        };
        let body_hash = idem::body_hash(b"");
        match begin(st, who, &key, &self.request, Some(&body_hash)).await? {
            Begin::Run(claim) => settle(claim, &body_hash, op.await).await,
            Begin::Replay(a) | Begin::ReplayIfBody { answer: a, .. } => replay(a),
        }
    }

    /// Reads the request document (only for a caller entitled to write, as `extract::write_doc`
    /// does), then runs `op` with it once per key; the document's bytes are part of the fingerprint.
    pub(crate) async fn once_doc<T, F, Fut>(
        self,
        st: &AppState,
        who: &Principal,
        headers: &HeaderMap,
        body: Body,
        what: &'static str,
        op: F,
    ) -> R
    where
        T: serde::de::DeserializeOwned + Default + Send + 'static,
        F: FnOnce(T) -> Fut,
        Fut: Future<Output = R>,
    {
        st.satchel.may_write(who)?;
        let bytes = read_doc(body).await?;
        let Some(key) = self.key else {
            return op(parse_body_async(headers, bytes, what).await?).await;
        };
        let body_hash = idem::body_hash(&bytes);
        match begin(st, who, &key, &self.request, Some(&body_hash)).await? {
            Begin::Run(claim) => {
                let answer = match parse_body_async(headers, bytes, what).await {
                    Ok(doc) => op(doc).await,
                    Err(e) => Err(e),
                };
                settle(claim, &body_hash, answer).await
            }
            Begin::Replay(a) | Begin::ReplayIfBody { answer: a, .. } => replay(a),
        }
    }

    /// Runs an upload once per key. `op` stores the body and answers with the stored body's sha256
    /// (which the blob layer computes anyway); a retry's body is hashed without being stored.
    pub(crate) async fn once_upload<F, Fut>(
        self,
        st: &AppState,
        who: &Principal,
        body: Body,
        op: F,
    ) -> R
    where
        F: FnOnce(Body) -> Fut,
        Fut: Future<Output = Result<(Response, String), ApiError>>,
    {
        let Some(key) = self.key else {
            return op(body).await.map(|(r, _)| r);
        };
        match begin(st, who, &key, &self.request, None).await? {
            Begin::Run(claim) => match op(body).await {
                Ok((resp, sha256)) => settle(claim, &sha256, Ok(resp)).await,
                Err(e) => settle(claim, "", Err(e)).await,
            },
            Begin::Replay(a) => replay(a),
            Begin::ReplayIfBody { body_hash, answer } => {
                let stream = body.into_data_stream().map_ok(|b| b);
                match idem::stream_sha256(stream, st.satchel.config.max_upload).await? {
                    Some(h) if h == body_hash => replay(answer),
                    _ => Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "this Idempotency-Key was already used for a different request (another \
                         method, path, query or body); use a new key for a new request",
                    )),
                }
            }
        }
    }
}

async fn begin(
    st: &AppState,
    who: &Principal,
    key: &str,
    request: &str,
    body_hash: Option<&str>,
) -> Result<Begin, ApiError> {
    Ok(Idempotency::new(st.satchel.store.clone())
        .begin(who.user.id, key, request, body_hash)
        .await?)
}

/// Records a 2xx answer and sends it; anything else releases the key (a retry runs again).
async fn settle(claim: Claim, body_hash: &str, answer: R) -> R {
    let resp = match answer {
        Ok(r) if r.status().is_success() => r,
        other => {
            claim.release().await;
            return other;
        }
    };
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, idem::MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            // Answers here are small documents; one that is not cannot be replayed either.
            claim.release().await;
            return Err(ApiError::internal(format!("buffering the answer: {e}")));
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    // An answer showing a secret once names what to record in its place (`notify::RecordInstead`).
    let record_body = match parts.extensions.remove::<crate::notify::RecordInstead>() {
        Some(instead) => instead.0,
        None => bytes.to_vec(),
    };
    let recorded = Answer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: record_body,
    };
    match claim.record(body_hash, &recorded).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("an idempotency claim lapsed before its answer was recorded"),
        Err(e) => tracing::warn!(error = %e, "recording an idempotent answer failed"),
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The recorded answer, marked as a replay.
fn replay(a: Answer) -> R {
    let mut r = Response::new(Body::from(a.body));
    *r.status_mut() = StatusCode::from_u16(a.status)
        .map_err(|_| ApiError::internal("a recorded answer has an invalid status"))?;
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            r.headers_mut().append(k, v);
        }
    }
    r.headers_mut()
        .insert(idem::REPLAYED, HeaderValue::from_static("true"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_credentials_are_not_part_of_the_target() {
        let t = |s: &str| target(&s.parse().unwrap());
        assert_eq!(t("/api/x?outputFormat=yaml"), "/api/x?outputFormat=yaml");
        assert_eq!(
            t("/api/x?apiKey=p&outputFormat=yaml&signature=s"),
            "/api/x?outputFormat=yaml"
        );
        assert_eq!(t("/api/x?apiKey=p&signature=s"), "/api/x");
        assert_eq!(t("/api/x"), "/api/x");
    }
}
