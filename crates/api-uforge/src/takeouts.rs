//! Takeouts (`/users/{uid}/takeouts`): everything a user owns in one zip or tar.gz, one ticket on the
//! export machinery: create, estimate, status (ETag, 304), cancel, download (Range), delete.

use crate::download::{mint, serve_archive, DownloadQuery};
use crate::extract::{Auth, Fmt, TakeoutPath};
use crate::idempotency::Idem;
use crate::render::{cancel_reply, op_status, status_reply, ticket_status_doc};
use crate::wire::{ApiError, Doc};
use crate::{docs, AppState};
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::download_ids::ArchiveTicket;
use satchel_domain::model::{TakeoutFormat, TakeoutPart, TakeoutSpec, Ticket};
use serde::Deserialize;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    let all = "/api/users/{uid}/takeouts";
    let one = "/api/users/{uid}/takeouts/{tid}";
    Table::new()
        .post(
            all,
            "Start a takeout of everything the user owns (a ticket)",
            create,
        )
        .get(all, "The user's takeouts", list)
        .get(
            "/api/users/{uid}/takeouts/estimate",
            "What a takeout would hold now (items, bytes)",
            estimate,
        )
        .get(one, "A takeout", get)
        .delete(one, "Delete a takeout and its archive", delete)
        .get(
            &format!("{one}/status"),
            "A takeout's status (ETag, 304)",
            status,
        )
        .delete(&format!("{one}/status"), "Cancel a takeout", cancel)
        .get(
            &format!("{one}/downloads"),
            "Download a takeout's archive (Range; owner, or a one-time downloadId)",
            download,
        )
        .post(
            &format!("{one}/downloadids"),
            "A one-time downloadId for a takeout's archive",
            download_id,
        )
}

#[derive(Deserialize, Default)]
struct TakeoutQuery {
    format: Option<String>,
    include: Option<String>,
}

/// `include=bundles,templates,images` (default: everything).
fn parts(include: &Option<String>) -> Result<Vec<TakeoutPart>, ApiError> {
    let Some(list) = include.as_deref().filter(|s| !s.trim().is_empty()) else {
        return Ok(TakeoutPart::ALL.to_vec());
    };
    list.split(',')
        .map(|k| {
            TakeoutPart::parse(k).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown takeout part {k:?}: use bundles, templates or images"
                ))
            })
        })
        .collect()
}

fn uri(uid: &str, t: &Ticket) -> String {
    format!("users/{uid}/takeouts/{}", t.id)
}

fn takeout_doc(uid: &str, t: &Ticket) -> docs::Takeout {
    let uri = uri(uid, t);
    let spec = t.takeout.clone();
    docs::Takeout {
        created: docs::iso(t.created),
        db_id: t.id,
        digest: t.archive.as_ref().map(|a| format!("sha256:{}", a.sha256)),
        last_modified: docs::iso(t.modified),
        format: spec
            .as_ref()
            .map(|s| s.format.as_str())
            .unwrap_or_default()
            .into(),
        include: spec
            .map(|s| s.include.iter().map(|p| p.folder().to_string()).collect())
            .unwrap_or_default(),
        download_uri: format!("{uri}/downloads"),
        status: op_status(t, Some(format!("{uri}/status"))),
        uri,
    }
}

async fn create(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<TakeoutQuery>,
) -> R {
    let format = TakeoutFormat::parse(q.format.as_deref()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unsupported takeout format {:?}: use zip or tar.gz",
            q.format.clone().unwrap_or_default()
        ))
    })?;
    let include = parts(&q.include)?;
    idem.once(&st, &who, async {
        let t = st
            .satchel
            .create_takeout(&who, &uid, TakeoutSpec { format, include })
            .await?;
        let doc = takeout_doc(&uid, &t);
        let location = format!("/api/{}", doc.uri);
        Ok(Doc::ok(f, "takeout", doc)
            .with_status(StatusCode::CREATED)
            .header(header::LOCATION, &location)
            .into_response())
    })
    .await
}

async fn list(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let ts = st.satchel.list_takeouts(&who, &uid).await?;
    let items: Vec<_> = ts.iter().map(|t| takeout_doc(&uid, t)).collect();
    let doc = docs::Takeouts {
        total: items.len() as i64,
        takeouts: docs::TakeoutItems { takeout: items },
    };
    Ok(Doc::ok(f, "takeouts", doc).into_response())
}

async fn estimate(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<TakeoutQuery>,
) -> R {
    let include = parts(&q.include)?;
    let e = st.satchel.estimate_takeout(&who, &uid, &include).await?;
    let doc = docs::TakeoutEstimate {
        include: include.iter().map(|p| p.folder().to_string()).collect(),
        items: e.items,
        bytes: e.bytes,
    };
    Ok(Doc::ok(f, "takeoutEstimate", doc).into_response())
}

async fn get(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: TakeoutPath) -> R {
    let t = st.satchel.takeout(&who, &p.uid, p.tid).await?;
    Ok(Doc::ok(f, "takeout", takeout_doc(&p.uid, &t)).into_response())
}

async fn status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    p: TakeoutPath,
) -> R {
    let t = st.satchel.takeout(&who, &p.uid, p.tid).await?;
    let doc = ticket_status_doc(&t, &uri(&p.uid, &t));
    status_reply(f, &headers, &t, doc)
}

async fn cancel(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: TakeoutPath) -> R {
    let c = st.satchel.cancel_takeout(&who, &p.uid, p.tid).await?;
    cancel_reply(f, &uri(&p.uid, &c.ticket), &c)
}

async fn download(
    State(st): State<AppState>,
    Query(q): Query<DownloadQuery>,
    p: TakeoutPath,
    parts: Parts,
) -> R {
    let route = ArchiveTicket::Takeout { tid: p.tid };
    serve_archive(&st, parts, q, (&p.uid, route), None, |a| {
        if a.file_name.ends_with(".zip") {
            "application/zip"
        } else {
            "application/x-gzip"
        }
    })
    .await
}

/// A one-time download id for the takeout's archive (for a plain link, which carries no credentials).
async fn download_id(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: TakeoutPath,
) -> R {
    let route = ArchiveTicket::Takeout { tid: p.tid };
    let t = st.satchel.takeout(&who, &p.uid, p.tid).await?;
    mint(&st, &who, f, (&p.uid, route), uri(&p.uid, &t)).await
}

async fn delete(State(st): State<AppState>, Auth(who): Auth, p: TakeoutPath) -> R {
    st.satchel.delete_takeout(&who, &p.uid, p.tid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
