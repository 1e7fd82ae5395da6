//! The `Idempotency-Key` header on the `POST`s that create an image or an export (the rule is in
//! `satchel_domain::idempotency`): the first 2xx answer is recorded and replayed to retries with
//! `Idempotent-Replayed: true`; a reused key on another request is `409 {code: "Conflict"}`.

use crate::error::Code;
use crate::{CloudError, CloudState};
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use satchel_domain::idempotency::{self as idem, Answer, Begin, Idempotency};
use satchel_domain::model::User;
use std::future::Future;

type Reply = Result<Response, CloudError>;

/// The request's key (if any) and the hash of its method and target (path and query).
pub(crate) struct Idem {
    key: Option<String>,
    request: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Idem {
    type Rejection = CloudError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, CloudError> {
        let values = parts.headers.get_all(idem::HEADER);
        let key = idem::single_key(values.iter().map(|v| v.as_bytes()))?;
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| parts.uri.path());
        let request = idem::request_hash(parts.method.as_str(), target);
        Ok(Idem { key, request })
    }
}

impl Idem {
    /// Runs `op` at most once per key for the caller; `body` (already read) is fingerprinted.
    pub(crate) async fn once<Fut>(self, st: &CloudState, who: &User, body: &[u8], op: Fut) -> Reply
    where
        Fut: Future<Output = Reply>,
    {
        let Some(key) = self.key else {
            return op.await;
        };
        let body_hash = idem::body_hash(body);
        let claim = match Idempotency::new(st.cloud.users.clone())
            .begin(who.id, &key, &self.request, Some(&body_hash))
            .await?
        {
            Begin::Run(claim) => claim,
            Begin::Replay(a) | Begin::ReplayIfBody { answer: a, .. } => return replay(a),
        };
        let resp = match op.await {
            Ok(r) if r.status().is_success() => r,
            other => {
                // Only successes are remembered: a retry after an error runs again.
                claim.release().await;
                return other;
            }
        };
        let (mut parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, idem::MAX_ANSWER).await {
            Ok(b) => b,
            Err(e) => {
                claim.release().await;
                tracing::error!(error = %e, "buffering an idempotent answer");
                return Err(CloudError::new(Code::InternalError, "internal error"));
            }
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        let recorded = Answer {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: bytes.to_vec(),
        };
        match claim.record(&body_hash, &recorded).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("an idempotency claim lapsed before its answer was recorded")
            }
            Err(e) => tracing::warn!(error = %e, "recording an idempotent answer failed"),
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }
}

/// The recorded answer (with its Content-MD5), marked as a replay.
fn replay(a: Answer) -> Reply {
    let mut r = Response::new(Body::from(a.body));
    *r.status_mut() = StatusCode::from_u16(a.status).map_err(|_| {
        CloudError::new(
            Code::InternalError,
            "a recorded answer has an invalid status",
        )
    })?;
    for (k, v) in a.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            r.headers_mut().append(k, v);
        }
    }
    r.headers_mut()
        .insert(idem::REPLAYED, HeaderValue::from_static("true"));
    Ok(r)
}
