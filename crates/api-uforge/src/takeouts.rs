//! Takeouts (`/users/{uid}/takeouts`): everything a user owns in one zip or tar.gz, one ticket on the
//! export machinery: create, estimate, status (ETag, 304), cancel, download (Range), delete.

use crate::download::{mint, serve_archive, DownloadQuery};
use crate::extract::{Auth, Conditional, Fmt, TakeoutPath};
use crate::idempotency::Idem;
use crate::render::{cancel_reply, op_status, status_reply, ticket_status_doc};
use crate::wire::{parse_body, ApiError, Doc};
use crate::{docs, AppState};
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::accounts::Secret;
use satchel_domain::download_ids::ArchiveTicket;
use satchel_domain::model::{TakeoutFormat, TakeoutPart, Ticket};
use satchel_domain::takeout::TakeoutRequest;
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
    /// Better sent in the body (a query string may be logged by proxies; Satchel redacts it).
    passphrase: Option<String>,
    credentials: Option<String>,
    /// Where the final status is POSTed, signed (`satchel_domain::notify`).
    #[serde(rename = "notifyUrl")]
    notify_url: Option<String>,
}

/// The optional request document (`takeout`, JSON or XML): the same settings as the query, which
/// wins where both give one. The passphrase belongs here.
#[derive(Deserialize, Default)]
#[serde(default)]
struct TakeoutBody {
    format: Option<String>,
    include: Option<String>,
    passphrase: Option<String>,
    credentials: Option<String>,
    #[serde(rename = "notifyUrl")]
    notify_url: Option<String>,
}

/// Largest takeout request document.
const MAX_BODY: usize = 64 * 1024;

/// `credentials=plaintext` (the only value besides the default, `encrypted`).
fn plaintext(credentials: Option<&str>) -> Result<bool, ApiError> {
    match credentials
        .map(|c| c.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("encrypted") => Ok(false),
        Some("plaintext") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unknown credentials mode {other:?}: use encrypted (with a passphrase) or plaintext"
        ))),
    }
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
                    "unknown takeout part {k:?}: use bundles, templates, images or accounts"
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
        notify_url: t.takeout.as_ref().and_then(|s| s.notify_url.clone()),
        notify_secret: None,
    }
}

async fn create(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<TakeoutQuery>,
    req: Request,
) -> R {
    let (head, body) = req.into_parts();
    let headers = head.headers;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::bad_request(format!(
            "the takeout document is larger than {MAX_BODY} bytes"
        ))
    })?;
    let b: TakeoutBody = parse_body(&headers, &bytes, "takeout")?;
    let format_text = q.format.or(b.format);
    let format = TakeoutFormat::parse(format_text.as_deref()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unsupported takeout format {:?}: use zip or tar.gz",
            format_text.clone().unwrap_or_default()
        ))
    })?;
    let include = parts(&q.include.or(b.include))?;
    let plaintext_credentials = plaintext(q.credentials.or(b.credentials).as_deref())?;
    let passphrase = q
        .passphrase
        .or(b.passphrase)
        .filter(|p| !p.is_empty())
        .map(Secret::text);
    let notify_url = q.notify_url.or(b.notify_url).filter(|u| !u.is_empty());
    let req = TakeoutRequest {
        format,
        include,
        passphrase,
        plaintext_credentials,
        notify_url,
    };
    idem.once(&st, &who, async {
        let (t, secret) = st.satchel.create_takeout_notifying(&who, &uid, req).await?;
        let mut doc = takeout_doc(&uid, &t);
        let location = format!("/api/{}", doc.uri);
        // The webhook secret made for this takeout is shown here once; what an Idempotency-Key
        // records (and replays) is the document without it.
        let replayed = match &secret {
            Some(_) => Some(crate::notify::without_secret(f, &takeout_doc(&uid, &t))?),
            None => None,
        };
        doc.notify_secret = secret.map(|s| s.expose_str().into_owned());
        let mut r = Doc::ok(f, "takeout", doc)
            .with_status(StatusCode::CREATED)
            .header(header::LOCATION, &location)
            .into_response();
        if let Some(body) = replayed {
            r.extensions_mut().insert(body);
        }
        Ok(r)
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
    Conditional(headers): Conditional,
    p: TakeoutPath,
) -> R {
    let t = st.satchel.takeout_status(&who, &p.uid, p.tid).await?;
    status_reply(&st.statuses, f, &headers, &p.uid, &t, |t| {
        ticket_status_doc(t, &uri(&p.uid, t))
    })
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
