//! Imports: bundle archives (`/users/{uid}/bundleimports`, what `hammr bundle import|create` call)
//! and template archives (`/users/{uid}/imports`, `hammr template import|create`). Each is a ticket:
//! created, given its archive by an upload, then polled (ETag, 304), cancelled, deleted.

use crate::extract::{body_stream, Auth, Conditional, Fmt, ImportPath};
use crate::idempotency::Idem;
use crate::render::{cancel_reply, status_reply, ticket_status_doc};
use crate::wire::{ApiError, Doc, Format};
use crate::{docs, AppState};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::{ImportSpec, Ticket, TicketKind};
use serde::Deserialize;

type R = Result<Response, ApiError>;

pub fn routes() -> Table<AppState> {
    /// Route summaries: create, get, delete, upload, status, cancel.
    type Summaries = [&'static str; 6];
    const KINDS: [(&str, Summaries); 2] = [
        (
            "bundleimports",
            [
                "Start a bundle import (then upload its archive)",
                "A bundle import",
                "Delete a bundle import record",
                "Upload the bundle archive of an import (streamed)",
                "A bundle import's status (ETag, 304)",
                "Cancel a bundle import",
            ],
        ),
        (
            "imports",
            [
                "Start a template import (then upload its archive)",
                "A template import",
                "Delete a template import record",
                "Upload the template archive of an import (streamed)",
                "A template import's status (ETag, 304)",
                "Cancel a template import",
            ],
        ),
    ];
    let mut t = Table::new();
    for (base, s) in KINDS {
        let list = format!("/api/users/{{uid}}/{base}");
        let one = format!("{list}/{{iid}}");
        t = t
            .post(&list, s[0], create)
            .get(&one, s[1], get)
            .delete(&one, s[2], delete)
            .post(&format!("{one}/uploads"), s[3], upload)
            .get(&format!("{one}/status"), s[4], status)
            .delete(&format!("{one}/status"), s[5], cancel);
    }
    t.get(
        "/api/users/{uid}/imports",
        "The user's template imports",
        list,
    )
}

/// Which kind of import a path names (`bundleimports` or `imports`).
fn kind_of(path: &str) -> TicketKind {
    if path.contains("/bundleimports") {
        TicketKind::BundleImport
    } else {
        TicketKind::TemplateImport
    }
}

/// hammr sends Python booleans (`True`/`False`); other clients `true`/`1`. The SDK spells the
/// last two `reuseBundles` and `useMajor` (its `Imports.Import` keyword arguments); the lowercase
/// forms are accepted too.
#[derive(Deserialize, Default)]
struct ImportQuery {
    imported: Option<String>,
    force: Option<String>,
    #[serde(alias = "reuseBundles")]
    reusebundles: Option<String>,
    #[serde(alias = "useMajor")]
    usemajor: Option<String>,
}

fn flag(name: &str, v: &Option<String>) -> Result<bool, ApiError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

async fn create(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    uri: axum::http::Uri,
    Path(uid): Path<String>,
    Query(q): Query<ImportQuery>,
) -> R {
    let kind = kind_of(uri.path());
    let spec = ImportSpec {
        imported: flag("imported", &q.imported)?,
        force: flag("force", &q.force)?,
        reuse_bundles: flag("reusebundles", &q.reusebundles)?,
        use_major: flag("usemajor", &q.usemajor)?,
    };
    idem.once(&st, &who, async {
        let t = st.satchel.create_import(&who, &uid, kind, spec).await?;
        let r = import_reply(f, &uid, &t)?;
        let location = format!("/api/{}", import_uri(&uid, &t));
        let mut r = r;
        *r.status_mut() = StatusCode::CREATED;
        r.headers_mut().insert(
            header::LOCATION,
            location
                .parse()
                .map_err(|_| ApiError::internal("location"))?,
        );
        Ok(r)
    })
    .await
}

async fn get(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    uri: axum::http::Uri,
    p: ImportPath,
) -> R {
    let t = st
        .satchel
        .import(&who, &p.uid, kind_of(uri.path()), p.iid)
        .await?;
    import_reply(f, &p.uid, &t)
}

async fn list(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let ts = st
        .satchel
        .list_imports(&who, &uid, TicketKind::TemplateImport)
        .await?;
    let items: Vec<_> = ts.iter().map(|t| appliance_import_doc(&uid, t)).collect();
    let doc = docs::ApplianceImports {
        total: items.len() as i64,
        appliance_imports: docs::ApplianceImportItems {
            appliance_import: items,
        },
    };
    Ok(Doc::ok(f, "applianceImports", doc).into_response())
}

async fn status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Conditional(headers): Conditional,
    uri: axum::http::Uri,
    p: ImportPath,
) -> R {
    let t = st
        .satchel
        .import_status(&who, &p.uid, kind_of(uri.path()), p.iid)
        .await?;
    status_reply(&st.statuses, f, &headers, &p.uid, &t, |t| {
        ticket_status_doc(t, &import_uri(&p.uid, t))
    })
}

async fn upload(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    uri: axum::http::Uri,
    p: ImportPath,
    body: Body,
) -> R {
    let kind = kind_of(uri.path());
    // Resolve before reading the body: a foreign or missing import answers 404 without consuming it.
    st.satchel.import(&who, &p.uid, kind, p.iid).await?;
    idem.once_upload(&st, &who, body, |body| async {
        let t = st
            .satchel
            .upload_import(&who, &p.uid, kind, p.iid, body_stream(body))
            .await?;
        let sha = t
            .archive
            .as_ref()
            .map(|a| a.sha256.clone())
            .unwrap_or_default();
        let doc = ticket_status_doc(&t, &import_uri(&p.uid, &t));
        Ok((Doc::ok(f, "status", doc).into_response(), sha))
    })
    .await
}

async fn cancel(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    uri: axum::http::Uri,
    p: ImportPath,
) -> R {
    let c = st
        .satchel
        .cancel_import(&who, &p.uid, kind_of(uri.path()), p.iid)
        .await?;
    cancel_reply(f, &import_uri(&p.uid, &c.ticket), &c)
}

async fn delete(
    State(st): State<AppState>,
    Auth(who): Auth,
    uri: axum::http::Uri,
    p: ImportPath,
) -> R {
    st.satchel
        .delete_import(&who, &p.uid, kind_of(uri.path()), p.iid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ documents

fn import_uri(uid: &str, t: &Ticket) -> String {
    match t.kind {
        TicketKind::BundleImport => format!("users/{uid}/bundleimports/{}", t.id),
        _ => format!("users/{uid}/imports/{}", t.id),
    }
}

/// What the import created, once it did.
fn reference_uri(uid: &str, t: &Ticket) -> Option<String> {
    (t.state == satchel_domain::model::TicketState::Complete && t.subject_id > 0).then(|| {
        match t.kind {
            TicketKind::BundleImport => format!("users/{uid}/mysoftware/{}", t.subject_id),
            _ => format!("users/{uid}/appliances/{}", t.subject_id),
        }
    })
}

fn import_reply(f: Format, uid: &str, t: &Ticket) -> R {
    Ok(match t.kind {
        TicketKind::BundleImport => {
            Doc::ok(f, "softwareBundleImport", bundle_import_doc(uid, t)).into_response()
        }
        _ => Doc::ok(f, "applianceImport", appliance_import_doc(uid, t)).into_response(),
    })
}

fn bundle_import_doc(uid: &str, t: &Ticket) -> docs::SoftwareBundleImport {
    let uri = import_uri(uid, t);
    let spec = t.import.unwrap_or_default();
    docs::SoftwareBundleImport {
        created: docs::iso(t.created),
        db_id: t.id,
        last_modified: docs::iso(t.modified),
        sha256sum: t.archive.as_ref().map(|a| a.sha256.clone()),
        size: t.archive.as_ref().map(|a| a.size),
        status: crate::render::op_status(t, Some(format!("{uri}/status"))),
        uploaded: t.state != satchel_domain::model::TicketState::AwaitingUpload,
        parent_uri: format!("users/{uid}"),
        reference_uri: reference_uri(uid, t),
        upload_uri: format!("{uri}/uploads"),
        status_uri: format!("{uri}/status"),
        imported: spec.imported,
        uri,
    }
}

fn appliance_import_doc(uid: &str, t: &Ticket) -> docs::ApplianceImport {
    let uri = import_uri(uid, t);
    let spec = t.import.unwrap_or_default();
    docs::ApplianceImport {
        created: docs::iso(t.created),
        db_id: t.id,
        last_modified: docs::iso(t.modified),
        sha256sum: t.archive.as_ref().map(|a| a.sha256.clone()),
        size: t.archive.as_ref().map(|a| a.size),
        status: crate::render::op_status(t, Some(format!("{uri}/status"))),
        uploaded: t.state != satchel_domain::model::TicketState::AwaitingUpload,
        use_major: spec.use_major,
        reuse_bundles: spec.reuse_bundles,
        force_rw: spec.force,
        imported: spec.imported,
        parent_uri: format!("users/{uid}"),
        reference_uri: reference_uri(uid, t),
        upload_uri: format!("{uri}/uploads"),
        uri,
    }
}
