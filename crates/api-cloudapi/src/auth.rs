//! HTTP Signature authentication, as CloudAPI does it: `Authorization: Signature keyId="/<login>/keys/
//! <md5 fingerprint or name>",algorithm="...",headers="date ...",signature="..."`, over a `Date` within
//! the allowed skew, with a key registered to that account.

use crate::error::Code;
use crate::{Caller, CloudError, CloudState};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use satchel_httpsig::{KeyRef, PublicKey};
use std::time::SystemTime;

pub async fn authenticate(State(st): State<CloudState>, mut req: Request, next: Next) -> Response {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let method = req.method().clone();
    match check(&st, req.headers(), &method, &target).await {
        Ok(user) => {
            let who = satchel_domain::model::Principal { user };
            if let Err(e) = st.cloud.rate.admit(&who) {
                return CloudError::from(e).into_response();
            }
            req.extensions_mut().insert(Caller(who.user));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn check(
    st: &CloudState,
    headers: &HeaderMap,
    method: &Method,
    target: &str,
) -> Result<satchel_domain::model::User, CloudError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            CloudError::invalid_credentials(
                "requests must be signed: Authorization: Signature keyId=\"/<login>/keys/<fingerprint>\",...",
            )
        })?
        .to_str()
        .map_err(|_| CloudError::invalid_credentials("the Authorization header is not text"))?;
    let sig = satchel_httpsig::parse_authorization(value)
        .map_err(|e| CloudError::invalid_credentials(format!("bad Authorization header: {e}")))?;
    let (login, key) = match satchel_httpsig::parse_key_id(&sig.key_id)
        .map_err(|e| CloudError::invalid_credentials(format!("bad keyId: {e}")))?
    {
        KeyRef::Account { login, key } => (login, key),
        KeyRef::SubUser { login, user, .. } => {
            return Err(CloudError::invalid_credentials(format!(
                "sub-user keys ({login}/users/{user}) are not supported by this server; sign with a key of the account itself"
            )))
        }
    };
    if !sig.headers.iter().any(|h| h == "date" || h == "x-date") {
        return Err(CloudError::invalid_credentials(
            "the signature must cover the Date header",
        ));
    }
    let date_hdr = if sig.headers.iter().any(|h| h == "date") {
        header::DATE.as_str()
    } else {
        "x-date"
    };
    let date = headers
        .get(date_hdr)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| CloudError::invalid_credentials("the Date header is missing"))?;
    let when = httpdate::parse_http_date(date).map_err(|_| {
        CloudError::invalid_credentials(format!("the Date header {date:?} is not an HTTP date"))
    })?;
    let now = SystemTime::now();
    let skew = now
        .duration_since(when)
        .or_else(|_| when.duration_since(now))
        .unwrap_or_default();
    if skew > st.max_clock_skew {
        return Err(CloudError::invalid_credentials(format!(
            "the Date header {date:?} is {} s away from the server's clock (at most {} s allowed)",
            skew.as_secs(),
            st.max_clock_skew.as_secs()
        )));
    }
    let (user, stored) = st
        .cloud
        .signing_key(&login, &key)
        .await
        .map_err(CloudError::from)?;
    let public = PublicKey::parse_openssh(&stored.key).map_err(|e| {
        tracing::error!(error = %e, key = stored.id, "a stored key does not parse");
        CloudError::new(Code::InternalError, "stored key unreadable")
    })?;
    let data = satchel_httpsig::signing_string(&sig.headers, method.as_str(), target, |h| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
    .map_err(|e| {
        CloudError::invalid_credentials(format!("cannot rebuild the signed string: {e}"))
    })?;
    public
        .verify(&sig.algorithm, data.as_bytes(), &sig.signature)
        .map_err(|e| match e {
            satchel_httpsig::Error::BadSignature => CloudError::new(
                Code::InvalidSignature,
                "The signature we calculated does not match the one you sent",
            ),
            other => CloudError::invalid_credentials(format!("signature not accepted: {other}")),
        })?;
    Ok(user)
}
