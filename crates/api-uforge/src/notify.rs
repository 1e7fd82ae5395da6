//! Takeout webhooks' signing secret (`/users/{uid}/notifysecret`): rotating it shows the new one,
//! once. (The first one is shown by the takeout `201` that made it: `takeouts.rs`.) The rules are
//! in `satchel_domain::notify`.

use crate::extract::{Auth, Fmt};
use crate::wire::{render_doc, ApiError, Doc, Format};
use crate::{docs, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    Table::new().post(
        "/api/users/{uid}/notifysecret",
        "Replace the takeout webhook signing secret (the only answer with the new one)",
        rotate,
    )
}

/// What an `Idempotency-Key` records instead of an answer that shows a secret
/// (`idempotency::settle` looks for it): the same document without the secret, so the secret is
/// never replayed nor stored in plaintext with the key.
#[derive(Clone)]
pub(crate) struct RecordInstead(pub Vec<u8>);

pub(crate) fn without_secret(f: Format, doc: &docs::Takeout) -> Result<RecordInstead, ApiError> {
    render_doc(f, "takeout", doc)
        .map(|(body, _)| RecordInstead(body))
        .map_err(|e| ApiError::internal(format!("rendering takeout: {e}")))
}

// Not wrapped in `Idem`: an answer with a secret is never recorded (as API key creation).
async fn rotate(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let secret = st.satchel.rotate_notify_secret(&who, &uid).await?;
    let doc = docs::NotifySecret {
        secret: secret.expose_str().into_owned(),
        signature_header: satchel_domain::notify::SIGNATURE_HEADER.into(),
        uri: format!("users/{uid}/notifysecret"),
    };
    Ok(Doc::ok(f, "notifySecret", doc)
        .with_status(StatusCode::CREATED)
        .into_response())
}
