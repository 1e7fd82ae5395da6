//! Bundle exports: tickets that build a bundle's archive, their status, the archive download, and
//! the user's exports across bundles.

use crate::docs;
use crate::download::{mint, serve_archive, DownloadQuery};
use crate::extract::{
    ApplianceExportPath, AppliancePath, Auth, BundlePath, Conditional, ExportPath, Fmt,
};
use crate::idempotency::Idem;
use crate::render::{
    appliance_export_doc, cancel_reply, export_doc, export_uri, op_status, status_reply,
    ticket_status_doc,
};
use crate::wire::{ApiError, Doc, Format};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::download_ids::ArchiveTicket;
use satchel_domain::model::{ArchiveRef, OutputFormat, Principal};
use satchel_domain::service::{ListQuery, OrderBy};
use serde::Deserialize;

type R = Result<Response, ApiError>;

/// `ms` is the path of one bundle.
pub fn routes(ms: &str) -> Table<AppState> {
    let exports = format!("{ms}/exports");
    let e = format!("{exports}/{{eid}}");
    Table::new()
        .post(&exports, "Start a bundle export (a ticket)", create_export)
        .get(&e, "A bundle export", get_export)
        .delete(&e, "Delete a bundle export", delete_export)
        .get(
            &format!("{e}/status"),
            "A bundle export's status (ETag, 304)",
            export_status,
        )
        .delete(
            &format!("{e}/status"),
            "Cancel a bundle export",
            cancel_export,
        )
        .get(
            &format!("{e}/downloads"),
            "Download an export's archive (Range; owner, or a one-time downloadId)",
            download_export,
        )
        .post(
            &format!("{e}/downloadids"),
            "A one-time downloadId for an export's archive",
            export_download_id,
        )
        .get(
            "/api/users/{uid}/exports",
            "The user's appliance exports (query, orderBy, descending, count, offset)",
            list_exports,
        )
        .get(
            "/api/users/{uid}/exports/statuses",
            "The statuses of the user's appliance exports (ae: some of them)",
            list_export_statuses,
        )
        .get(
            "/api/users/{uid}/mysoftware/exports",
            "The user's bundle exports across bundles (Satchel; the self-service page)",
            list_bundle_exports,
        )
}

/// Appliance exports (seed 002): the same ticket machinery, under `/users/{uid}/appliances/{aid}`.
pub fn appliance_routes() -> Table<AppState> {
    let exports = "/api/users/{uid}/appliances/{aid}/exports";
    let e = format!("{exports}/{{eid}}");
    Table::new()
        .post(
            exports,
            "Start an appliance export (a ticket)",
            create_appliance_export,
        )
        .get(&e, "An appliance export", get_appliance_export)
        .delete(&e, "Delete an appliance export", delete_appliance_export)
        .get(
            &format!("{e}/status"),
            "An appliance export's status (ETag, 304)",
            appliance_export_status,
        )
        .delete(
            &format!("{e}/status"),
            "Cancel an appliance export",
            cancel_appliance_export,
        )
        .get(
            &format!("{e}/downloads"),
            "Download an appliance export's archive (Range; owner, or a one-time downloadId)",
            download_appliance_export,
        )
        .post(
            &format!("{e}/downloadids"),
            "A one-time downloadId for an appliance export's archive",
            appliance_export_download_id,
        )
}

#[derive(Deserialize)]
struct ExportQuery {
    #[serde(rename = "outputFormat")]
    output_format: Option<String>,
}

async fn create_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Query(q): Query<ExportQuery>,
    p: BundlePath,
) -> R {
    idem.once(&st, &who, export_ticket(&st, &who, f, p, q))
        .await
}

async fn export_ticket(
    st: &AppState,
    who: &Principal,
    f: Format,
    p: BundlePath,
    q: ExportQuery,
) -> R {
    let b = st.satchel.bundle(who, &p.uid, p.msid).await?;
    let format = OutputFormat::parse(q.output_format.as_deref()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unsupported outputFormat {:?}: use yaml or json",
            q.output_format.clone().unwrap_or_default()
        ))
    })?;
    let t = st.satchel.create_export(&b, format).await?;
    let doc = export_doc(&p.uid, &t);
    let location = format!("/api/{}", doc.uri);
    Ok(Doc::ok(f, "softwareBundleExport", doc)
        .with_status(StatusCode::CREATED)
        .header(header::LOCATION, &location)
        .into_response())
}

async fn get_export(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: ExportPath) -> R {
    let t = st.satchel.export(&who, &p.uid, p.msid, p.eid).await?;
    Ok(Doc::ok(f, "softwareBundleExport", export_doc(&p.uid, &t)).into_response())
}

async fn export_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Conditional(headers): Conditional,
    p: ExportPath,
) -> R {
    let t = st
        .satchel
        .export_status(&who, &p.uid, p.msid, p.eid)
        .await?;
    status_reply(&st.statuses, f, &headers, &p.uid, &t, |t| {
        ticket_status_doc(t, &export_uri(&p.uid, t))
    })
}

/// Cancels the export; answers its status as it is afterwards (saying so when it had finished).
async fn cancel_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ExportPath,
) -> R {
    let c = st
        .satchel
        .cancel_export(&who, &p.uid, p.msid, p.eid)
        .await?;
    cancel_reply(f, &export_uri(&p.uid, &c.ticket), &c)
}

async fn download_export(
    State(st): State<AppState>,
    Query(q): Query<DownloadQuery>,
    p: ExportPath,
    parts: Parts,
) -> R {
    let route = ArchiveTicket::BundleExport {
        msid: p.msid,
        eid: p.eid,
    };
    serve_archive(&st, parts, q, (&p.uid, route), None, gzip).await
}

fn gzip(_: &ArchiveRef) -> &'static str {
    "application/x-gzip"
}

/// A one-time download id for the export's archive (for a plain link, which carries no credentials).
async fn export_download_id(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ExportPath,
) -> R {
    let route = ArchiveTicket::BundleExport {
        msid: p.msid,
        eid: p.eid,
    };
    let t = st.satchel.export(&who, &p.uid, p.msid, p.eid).await?;
    mint(&st, &who, f, (&p.uid, route), export_uri(&p.uid, &t)).await
}

async fn delete_export(State(st): State<AppState>, Auth(who): Auth, p: ExportPath) -> R {
    st.satchel
        .delete_export(&who, &p.uid, p.msid, p.eid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /users/{uid}/exports`'s parameters, as the SDK sends them (`Exports.Getall`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    query: Option<String>,
    order_by: Option<String>,
    descending: Option<String>,
    count: Option<String>,
    offset: Option<String>,
}

impl ListParams {
    fn parse(self) -> Result<ListQuery, ApiError> {
        let number = |v: Option<String>, what: &str| -> Result<Option<usize>, ApiError> {
            v.map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{what} must be a whole number, not {v:?}"))
                })
            })
            .transpose()
        };
        let order_by = match self.order_by.as_deref().map(str::trim) {
            None | Some("") => OrderBy::default(),
            Some(o) => OrderBy::parse(o).ok_or_else(|| {
                ApiError::bad_request(format!("orderBy must be created, name or dbId, not {o:?}"))
            })?,
        };
        // Case-insensitive, as Java's Boolean parsing is (the SDK sends Python's `True`).
        let descending = match self.descending.as_deref().map(str::trim) {
            None | Some("") => false,
            Some(d) if d.eq_ignore_ascii_case("false") => false,
            Some(d) if d.eq_ignore_ascii_case("true") => true,
            Some(d) => {
                return Err(ApiError::bad_request(format!(
                    "descending must be true or false, not {d:?}"
                )))
            }
        };
        Ok(ListQuery {
            query: self.query.filter(|q| !q.trim().is_empty()),
            order_by,
            descending,
            count: number(self.count, "count")?,
            offset: number(self.offset, "offset")?.unwrap_or(0),
        })
    }
}

/// The user's appliance exports, as UForge lists them (`query`, `orderBy`, `descending`, `count`,
/// `offset`; `total` counts every match, not just the page).
async fn list_exports(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<ListParams>,
) -> R {
    let (total, ts) = st.satchel.list_exports(&who, &uid, &q.parse()?).await?;
    let items: Vec<_> = ts.iter().map(|t| appliance_export_doc(&uid, t)).collect();
    let doc = docs::ApplianceExports {
        total: total as i64,
        appliance_exports: docs::ApplianceExportItems {
            appliance_export: items,
        },
    };
    Ok(Doc::ok(f, "applianceExports", doc).into_response())
}

/// The user's bundle exports across bundles: a Satchel listing (UForge has none) that the
/// self-service page reads, as `softwareBundleExport` documents.
async fn list_bundle_exports(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let ts = st.satchel.list_bundle_exports(&who, &uid).await?;
    let items: Vec<_> = ts.iter().map(|t| export_doc(&uid, t)).collect();
    let doc = docs::SoftwareBundleExports {
        total: items.len() as i64,
        software_bundle_exports: docs::SoftwareBundleExportItems {
            software_bundle_export: items,
        },
    };
    Ok(Doc::ok(f, "softwareBundleExports", doc).into_response())
}

#[derive(Deserialize, Default)]
struct StatusParams {
    /// Appliance export ids, comma-separated: only their statuses.
    ae: Option<String>,
}

async fn list_export_statuses(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<StatusParams>,
) -> R {
    let wanted: Option<Vec<i64>> = match q.ae.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(list) => Some(
            list.split(',')
                .map(|id| {
                    id.trim().parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "ae must be appliance export ids separated by commas, not {list:?}"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let (_, mut ts) = st
        .satchel
        .list_exports(&who, &uid, &ListQuery::default())
        .await?;
    if let Some(ids) = &wanted {
        ts.retain(|t| ids.contains(&t.id));
    }
    let items: Vec<_> = ts
        .iter()
        .map(|t| {
            let uri = export_uri(&uid, t);
            let mut s = op_status(t, Some(format!("{uri}/status")));
            s.db_id = Some(t.id);
            s.parent_uri = Some(uri);
            s
        })
        .collect();
    let doc = docs::OpStatuses {
        total: items.len() as i64,
        statuses: docs::StatusItems { status: items },
    };
    Ok(Doc::ok(f, "statuses", doc).into_response())
}

// ------------------------------------------------------------------ appliance exports

fn output_format(q: &ExportQuery) -> Result<OutputFormat, ApiError> {
    OutputFormat::parse(q.output_format.as_deref()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unsupported outputFormat {:?}: use yaml or json",
            q.output_format.clone().unwrap_or_default()
        ))
    })
}

async fn create_appliance_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Query(q): Query<ExportQuery>,
    p: AppliancePath,
) -> R {
    idem.once(&st, &who, async {
        let a = st.satchel.appliance(&who, &p.uid, p.aid).await?;
        let format = output_format(&q)?;
        let t = st.satchel.create_appliance_export(&a, format).await?;
        let doc = appliance_export_doc(&p.uid, &t);
        let location = format!("/api/{}", doc.uri);
        Ok(Doc::ok(f, "applianceExport", doc)
            .with_status(StatusCode::CREATED)
            .header(header::LOCATION, &location)
            .into_response())
    })
    .await
}

async fn get_appliance_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ApplianceExportPath,
) -> R {
    let t = st
        .satchel
        .appliance_export(&who, &p.uid, p.aid, p.eid)
        .await?;
    Ok(Doc::ok(f, "applianceExport", appliance_export_doc(&p.uid, &t)).into_response())
}

async fn appliance_export_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Conditional(headers): Conditional,
    p: ApplianceExportPath,
) -> R {
    let t = st
        .satchel
        .appliance_export_status(&who, &p.uid, p.aid, p.eid)
        .await?;
    status_reply(&st.statuses, f, &headers, &p.uid, &t, |t| {
        ticket_status_doc(t, &export_uri(&p.uid, t))
    })
}

async fn cancel_appliance_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ApplianceExportPath,
) -> R {
    let c = st
        .satchel
        .cancel_appliance_export(&who, &p.uid, p.aid, p.eid)
        .await?;
    cancel_reply(f, &export_uri(&p.uid, &c.ticket), &c)
}

async fn download_appliance_export(
    State(st): State<AppState>,
    Query(q): Query<DownloadQuery>,
    p: ApplianceExportPath,
    parts: Parts,
) -> R {
    let route = ArchiveTicket::ApplianceExport {
        aid: p.aid,
        eid: p.eid,
    };
    serve_archive(&st, parts, q, (&p.uid, route), None, gzip).await
}

/// A one-time download id for the appliance export's archive.
async fn appliance_export_download_id(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ApplianceExportPath,
) -> R {
    let route = ArchiveTicket::ApplianceExport {
        aid: p.aid,
        eid: p.eid,
    };
    let t = st
        .satchel
        .appliance_export(&who, &p.uid, p.aid, p.eid)
        .await?;
    mint(&st, &who, f, (&p.uid, route), export_uri(&p.uid, &t)).await
}

async fn delete_appliance_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    p: ApplianceExportPath,
) -> R {
    st.satchel
        .delete_appliance_export(&who, &p.uid, p.aid, p.eid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
