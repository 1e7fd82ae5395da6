//! The service status and the user (`/api/status`, `/api/users/{uid}`).

use crate::docs;
use crate::extract::{Auth, Fmt};
use crate::render::user_doc;
use crate::wire::{ApiError, Doc};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    Table::new()
        .get("/api/status", "Service status (no authentication)", status)
        .get("/api/users/{uid}", "A user", get_user)
}

async fn status(Fmt(f): Fmt) -> R {
    Ok(Doc::ok(
        f,
        "serviceStatus",
        docs::ServiceStatus {
            alive: true,
            version: docs::SDK_VERSION.into(),
        },
    )
    .into_response())
}

async fn get_user(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let owner = st.satchel.owner(&who, &uid).await?;
    Ok(Doc::ok(f, "user", user_doc(owner.user())).into_response())
}
