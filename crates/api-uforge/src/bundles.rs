//! Software bundles (`mySoftware`): list, create, read, update, delete, clone.

use crate::docs;
use crate::extract::{write_doc, Auth, BundlePath, Fmt};
use crate::render::bundle_doc;
use crate::wire::{ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::BundleInput;

type R = Result<Response, ApiError>;

/// `ms` is the path of one bundle.
pub fn routes(ms: &str) -> Table<AppState> {
    Table::new()
        .get(
            "/api/users/{uid}/mysoftware",
            "The user's software bundles",
            list_bundles,
        )
        .post(
            "/api/users/{uid}/mysoftware",
            "Create a software bundle",
            create_bundle,
        )
        .get(ms, "A software bundle", get_bundle)
        .put(ms, "Update a software bundle", update_bundle)
        .delete(ms, "Delete a software bundle and its files", delete_bundle)
        .post(
            &format!("{ms}/clone"),
            "Clone a software bundle",
            clone_bundle,
        )
}

fn bundle_input(d: docs::MySoftwareIn) -> BundleInput {
    BundleInput {
        name: d.name,
        version: d.version,
        description: d.description,
        release: d.release,
        install_location: d.install_location,
    }
}

async fn list_bundles(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let views = st.satchel.list_bundles(&who, &uid).await?;
    let items: Vec<_> = views.iter().map(|v| bundle_doc(&uid, v)).collect();
    let doc = docs::MySoftwareList {
        total: items.len() as i64,
        my_software_list: docs::MySoftwareItems { my_software: items },
    };
    Ok(Doc::ok(f, "mySoftwareList", doc).into_response())
}

async fn create_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let owner = st.satchel.owner(&who, &uid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", false).await?;
    let v = st
        .satchel
        .create_bundle(&owner, bundle_input(input))
        .await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&uid, &v))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_bundle(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: BundlePath) -> R {
    let v = st.satchel.bundle_view(&who, &p.uid, p.msid).await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&p.uid, &v)).into_response())
}

async fn update_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BundlePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let b = st.satchel.bundle(&who, &p.uid, p.msid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", true).await?;
    let v = st.satchel.update_bundle(&b, bundle_input(input)).await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&p.uid, &v)).into_response())
}

async fn delete_bundle(State(st): State<AppState>, Auth(who): Auth, p: BundlePath) -> R {
    st.satchel.delete_bundle(&who, &p.uid, p.msid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clone_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BundlePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let b = st.satchel.bundle(&who, &p.uid, p.msid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", false).await?;
    let v = st.satchel.clone_bundle(&b, bundle_input(input)).await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&p.uid, &v))
        .with_status(StatusCode::CREATED)
        .into_response())
}
