//! Route table and handlers of the UForge face.

use crate::docs::{self, iso};
use crate::download::{serve_blob, BlobDownload};
use crate::idempotency::Idem;
use crate::wire::{parse_body_async, parse_id, ApiError, Doc, Format, MAX_DOC};
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::TryStreamExt;
use satchel_api_doc::Table;
use satchel_domain::model::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};

type R = Result<Response, ApiError>;

/// The face's route table; each route documents itself in `/api/openapi.json`.
pub fn routes() -> Table<AppState> {
    let ms = "/api/users/{uid}/mysoftware/{msid}";
    let p = |tail: &str| format!("{ms}{tail}");
    Table::new()
        .get("/api/status", "Service status (no authentication)", status)
        .get("/api/users/{uid}", "A user", get_user)
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
        .post(&p("/clone"), "Clone a software bundle", clone_bundle)
        .get(
            &p("/artifacts"),
            "A bundle's files and folders",
            list_artifacts,
        )
        .post(&p("/artifacts"), "Add a file or folder", create_artifact)
        .get(&p("/artifacts/{said}"), "A file or folder", get_artifact)
        .put(
            &p("/artifacts/{said}"),
            "Update a file or folder",
            update_artifact,
        )
        .delete(
            &p("/artifacts/{said}"),
            "Delete a file or folder",
            delete_artifact,
        )
        .post(
            &p("/artifacts/{said}/subsoftwareartifacts"),
            "Add a file or folder inside a folder",
            create_child_artifact,
        )
        .get(
            &p("/artifacts/{said}/bin"),
            "Download a file",
            download_artifact,
        )
        .get(
            &p("/artifacts/{said}/bin/{file}"),
            "Download a file by name",
            download_artifact_named,
        )
        .post(
            &p("/artifacts/{said}/bin/{file}"),
            "Upload a file's content",
            upload_artifact,
        )
        .get(
            &p("/licenses/{lid}"),
            "Download the license",
            download_license,
        )
        .delete(&p("/licenses/{lid}"), "Delete the license", delete_license)
        .post(
            &p("/licenses/{lid}/{file}"),
            "Upload the license",
            upload_license,
        )
        .get(
            &p("/licenses/{lid}/{file}"),
            "Download the license by name",
            download_license_named,
        )
        .get(&p("/logo/{lid}"), "Download the logo", download_logo)
        .delete(&p("/logo/{lid}"), "Delete the logo", delete_logo)
        .post(&p("/logo/{lid}/{file}"), "Upload the logo", upload_logo)
        .get(
            &p("/logo/{lid}/{file}"),
            "Download the logo by name",
            download_logo_named,
        )
        .post(
            &p("/exports"),
            "Start a bundle export (a ticket)",
            create_export,
        )
        .get(&p("/exports/{eid}"), "A bundle export", get_export)
        .delete(
            &p("/exports/{eid}"),
            "Delete a bundle export",
            delete_export,
        )
        .get(
            &p("/exports/{eid}/status"),
            "A bundle export's status (ETag, 304)",
            export_status,
        )
        .get(
            &p("/exports/{eid}/downloads"),
            "Download an export's archive (Range)",
            download_export,
        )
        .get(
            "/api/users/{uid}/exports",
            "The user's exports",
            list_exports,
        )
        .get(
            "/api/users/{uid}/exports/statuses",
            "The statuses of the user's exports",
            list_export_statuses,
        )
        .merge(crate::containers::routes(ms))
        .merge(crate::apikeys::routes())
}

// ------------------------------------------------------------------ extractors

/// The authenticated caller (an API key pair's signed query, else HTTP Basic).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let source = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let who = principal(st, &parts.uri, &parts.headers, source).await?;
        st.satchel.rate.admit(&who)?;
        Ok(Auth(who))
    }
}

/// Authenticates a request: with an API key pair when the query names an `apiKey` (the SDK then
/// sends no Basic credentials), else with HTTP Basic.
pub(crate) async fn principal(
    st: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    match crate::apikeys::signed_request(uri)? {
        Some(req) => Ok(st.satchel.login_with_api_key(&req, source).await?),
        None => basic_principal(st, headers, source).await,
    }
}

/// Authenticates the request's HTTP Basic credentials.
pub(crate) async fn basic_principal(
    st: &AppState,
    headers: &HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<Principal, ApiError> {
    let (login, password) =
        basic_credentials(headers).map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
    Ok(st.satchel.auth.login(&login, &password, source).await?)
}

/// The login and password of an HTTP Basic `Authorization` header, or why there are none.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), &'static str> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("authentication required (HTTP Basic)")?;
    let encoded = h
        .strip_prefix("Basic ")
        .or_else(|| h.strip_prefix("basic "))
        .ok_or("unsupported authorization scheme; use HTTP Basic")?;
    let malformed = "malformed Basic credentials";
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed)?;
    let raw = String::from_utf8(raw).map_err(|_| malformed)?;
    let (login, password) = raw.split_once(':').ok_or(malformed)?;
    Ok((login.to_string(), password.to_string()))
}

pub struct Fmt(pub Format);

impl<S: Send + Sync> FromRequestParts<S> for Fmt {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Fmt(Format::from_accept(&parts.headers)))
    }
}

/// A request document that must be present (PUT): an empty body is refused rather than ignored.
async fn read_required_doc(body: Body, what: &str) -> Result<bytes::Bytes, ApiError> {
    let b = read_doc(body).await?;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "a {what} document is required in the request body"
        )));
    }
    Ok(b)
}

/// Reads and parses a request document for a caller entitled to write, and only then: a caller
/// without the entitlement never makes the server read or parse a body.
pub(crate) async fn write_doc<T: serde::de::DeserializeOwned + Default + Send + 'static>(
    st: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
    required: bool,
) -> Result<T, ApiError> {
    st.satchel.may_write(who)?;
    let bytes = if required {
        read_required_doc(body, what).await?
    } else {
        read_doc(body).await?
    };
    parse_body_async(headers, bytes, what).await
}

pub(crate) async fn read_doc(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_DOC).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request documents are limited to {MAX_DOC} bytes"),
        )
    })
}

fn body_stream(
    body: Body,
) -> impl futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send {
    body.into_data_stream().map_ok(|b| b)
}

// ------------------------------------------------------------------ URIs and documents

pub(crate) fn bundle_uri(uid: &str, id: Id) -> String {
    format!("users/{uid}/mysoftware/{id}")
}

pub(crate) fn op_status(t: &Ticket, uri: Option<String>) -> docs::OpStatus {
    let error = t.state == TicketState::Error;
    docs::OpStatus {
        created: None,
        db_id: None,
        last_modified: None,
        bytes_loaded: t.bytes_loaded,
        bytes_total: t.bytes_total,
        cancelled: t.state == TicketState::Cancelled,
        complete: matches!(t.state, TicketState::Complete | TicketState::Expired),
        detailed_error: false,
        error,
        error_message: t.error_message.clone().filter(|_| error),
        eta: t.eta.map(iso),
        message: t.message.clone(),
        parent_uri: None,
        percentage: t.percentage.clamp(0, 100),
        uri,
    }
}

fn export_doc(uid: &str, t: &Ticket) -> docs::SoftwareBundleExport {
    let parent = bundle_uri(uid, t.bundle_id);
    let uri = format!("{parent}/exports/{}", t.id);
    docs::SoftwareBundleExport {
        created: iso(t.created),
        db_id: t.id,
        digest: t.archive.as_ref().map(|a| format!("sha256:{}", a.sha256)),
        last_modified: iso(t.modified),
        bundle_name: t.bundle_name.clone(),
        bundle_version: t.bundle_version.clone(),
        download_uri: format!("{uri}/downloads"),
        location: None,
        parent_uri: parent,
        status: op_status(t, Some(format!("{uri}/status"))),
        uri,
    }
}

fn appliance_export_doc(uid: &str, t: &Ticket) -> docs::ApplianceExport {
    let e = export_doc(uid, t);
    docs::ApplianceExport {
        created: e.created,
        db_id: e.db_id,
        digest: e.digest,
        last_modified: e.last_modified,
        appliance_name: e.bundle_name,
        appliance_version: e.bundle_version,
        download_uri: e.download_uri,
        downloaded: false,
        parent_uri: e.parent_uri,
        status: e.status,
        uri: e.uri,
    }
}

fn license_doc(uid: &str, a: &Attachment) -> docs::License {
    let parent = bundle_uri(uid, a.bundle_id);
    docs::License {
        created: iso(a.blob.uploaded),
        db_id: a.id,
        last_modified: iso(a.blob.uploaded),
        md5sum: a.blob.md5.clone(),
        sha256sum: a.blob.sha256.clone(),
        size: a.blob.size,
        uploaded: true,
        uploaded_time: iso(a.blob.uploaded),
        name: a.name.clone(),
        uri: format!("{parent}/licenses/{}", a.id),
        parent_uri: parent,
    }
}

fn logo_doc(uid: &str, a: &Attachment) -> docs::Logo {
    let l = license_doc(uid, a);
    docs::Logo {
        created: l.created,
        db_id: l.db_id,
        last_modified: l.last_modified,
        md5sum: l.md5sum,
        sha256sum: l.sha256sum,
        size: l.size,
        uploaded: true,
        uploaded_time: l.uploaded_time,
        name: l.name,
        uri: format!("{}/logo/{}", l.parent_uri, a.id),
        parent_uri: l.parent_uri,
    }
}

fn artifact_doc(uid: &str, a: &Artifact) -> docs::SoftwareArtifact {
    let parent = bundle_uri(uid, a.bundle_id);
    let uri = format!("{parent}/artifacts/{}", a.id);
    docs::SoftwareArtifact {
        created: iso(a.created),
        db_id: a.id,
        last_modified: iso(a.modified),
        md5sum: a.blob.as_ref().map(|b| b.md5.clone()),
        sha256sum: a.blob.as_ref().map(|b| b.sha256.clone()),
        size: a.blob.as_ref().map(|b| b.size).unwrap_or(0),
        uploaded: a.blob.is_some(),
        uploaded_time: a.blob.as_ref().map(|b| iso(b.uploaded)),
        binary_uri: (a.kind == "file").then(|| format!("{uri}/bin/{}", a.name)),
        tag: a.tag.clone(),
        parent_uri: match a.parent_id {
            Some(p) => format!("{parent}/artifacts/{p}"),
            None => parent,
        },
        install_location: a.install_location.clone(),
        name: a.name.clone(),
        full_name: a.name.clone(),
        kind: a.kind.clone(),
        uri,
    }
}

async fn bundle_doc(st: &AppState, uid: &str, b: &Bundle) -> Result<docs::MySoftware, ApiError> {
    let s = &st.satchel.store;
    let license = s.get_attachment(b.id, AttachmentKind::License).await?;
    let logo = s.get_attachment(b.id, AttachmentKind::Logo).await?;
    let size: i64 = s
        .list_artifacts(b.id)
        .await?
        .iter()
        .filter_map(|a| a.blob.as_ref())
        .map(|b| b.size)
        .sum();
    let uri = bundle_uri(uid, b.id);
    Ok(docs::MySoftware {
        created: iso(b.created),
        db_id: b.id,
        last_modified: iso(b.modified),
        name: b.name.clone(),
        version: b.version.clone(),
        description: b.description.clone(),
        release: b.release.clone(),
        install_location: b.install_location.clone(),
        size,
        revision: b.revision,
        artifacts_uri: format!("{uri}/artifacts"),
        export_uri: format!("{uri}/exports"),
        clone_uri: format!("{uri}/clone"),
        license: license.as_ref().map(|l| license_doc(uid, l)),
        logo: logo.as_ref().map(|l| logo_doc(uid, l)),
        imported: false,
        uri,
    })
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

fn artifact_input(d: docs::SoftwareArtifactIn) -> ArtifactInput {
    ArtifactInput {
        name: d.name,
        kind: d.kind,
        tag: d.tag,
        install_location: d.install_location,
    }
}

// ------------------------------------------------------------------ handlers

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
    let u = st.satchel.target(&who, &uid).await?;
    let doc = docs::User {
        created: iso(u.created),
        db_id: u.id,
        login_name: u.login.clone(),
        active: true,
        admin: u.admin,
        base_exports_uri: format!("users/{}/exports", u.login),
        base_my_software_library_uri: format!("users/{}/mysoftware", u.login),
        uri: format!("users/{}", u.login),
    };
    Ok(Doc::ok(f, "user", doc).into_response())
}

async fn list_bundles(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let bundles = st.satchel.list_bundles(&who, &uid).await?;
    let mut items = Vec::with_capacity(bundles.len());
    for b in &bundles {
        items.push(bundle_doc(&st, &uid, b).await?);
    }
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
    st.satchel.target(&who, &uid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", false).await?;
    let b = st
        .satchel
        .create_bundle(&who, &uid, bundle_input(input))
        .await?;
    let doc = bundle_doc(&st, &uid, &b).await?;
    Ok(Doc::ok(f, "mySoftware", doc)
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let (_, b) = st.satchel.bundle(&who, &uid, msid).await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&st, &uid, &b).await?).into_response())
}

async fn update_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    st.satchel.bundle(&who, &uid, msid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", true).await?;
    let b = st
        .satchel
        .update_bundle(&who, &uid, msid, bundle_input(input))
        .await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&st, &uid, &b).await?).into_response())
}

async fn delete_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid)): Path<(String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    st.satchel.delete_bundle(&who, &uid, msid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn clone_bundle(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    st.satchel.bundle(&who, &uid, msid).await?;
    let input: docs::MySoftwareIn =
        write_doc(&st, &who, &headers, body, "mySoftware", false).await?;
    let b = st
        .satchel
        .clone_bundle(&who, &uid, msid, bundle_input(input))
        .await?;
    Ok(Doc::ok(f, "mySoftware", bundle_doc(&st, &uid, &b).await?)
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn list_artifacts(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let (_, arts) = st.satchel.list_artifacts(&who, &uid, msid).await?;
    let items: Vec<_> = arts.iter().map(|a| artifact_doc(&uid, a)).collect();
    let doc = docs::SoftwareArtifacts {
        total: items.len() as i64,
        software_artifacts: docs::ArtifactItems {
            software_artifact: items,
        },
    };
    Ok(Doc::ok(f, "softwareArtifacts", doc).into_response())
}

async fn create_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    st.satchel.bundle(&who, &uid, msid).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", false).await?;
    let a = st
        .satchel
        .create_artifact(&who, &uid, msid, None, artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&uid, &a))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn create_child_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, said)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    st.satchel.artifact(&who, &uid, msid, said).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", false).await?;
    let a = st
        .satchel
        .create_artifact(&who, &uid, msid, Some(said), artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&uid, &a))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, said)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    let (_, a) = st.satchel.artifact(&who, &uid, msid, said).await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&uid, &a)).into_response())
}

async fn update_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, said)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    st.satchel.artifact(&who, &uid, msid, said).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", true).await?;
    let a = st
        .satchel
        .update_artifact(&who, &uid, msid, said, artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&uid, &a)).into_response())
}

async fn delete_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, said)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    st.satchel.delete_artifact(&who, &uid, msid, said).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Path((uid, msid, said, file)): Path<(String, String, String, String)>,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    // Resolve before reading the body: a foreign or missing artifact answers 404 without consuming it.
    st.satchel.artifact(&who, &uid, msid, said).await?;
    satchel_domain::names::validate_file_name(&file)?;
    idem.once_upload(&st, &who, body, |body| async {
        let a = st
            .satchel
            .upload_artifact_file(&who, &uid, msid, said, &file, body_stream(body))
            .await?;
        let sha256 = a
            .blob
            .as_ref()
            .map(|b| b.sha256.clone())
            .unwrap_or_default();
        Ok((
            Doc::ok(f, "softwareArtifact", artifact_doc(&uid, &a)).into_response(),
            sha256,
        ))
    })
    .await
}

async fn download_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, said)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    let (a, blob) = st
        .satchel
        .artifact_file(&who, &uid, msid, said, None)
        .await?;
    serve_file(&st, &headers, &a.name, &blob).await
}

async fn download_artifact_named(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, said, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let said = parse_id("softwareArtifact id", &said)?;
    let (a, blob) = st
        .satchel
        .artifact_file(&who, &uid, msid, said, Some(&file))
        .await?;
    serve_file(&st, &headers, &a.name, &blob).await
}

async fn serve_file(st: &AppState, headers: &HeaderMap, name: &str, blob: &BlobRef) -> R {
    serve_blob(
        &st.satchel.blobs,
        headers,
        BlobDownload {
            key: blob.key.clone(),
            size: blob.size as u64,
            etag: format!("\"{}\"", blob.sha256),
            sha256: Some(blob.sha256.clone()),
            content_type: "application/octet-stream",
            file_name: name.to_string(),
            last_modified: blob.uploaded,
        },
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn upload_attachment(
    st: &AppState,
    who: &Principal,
    idem: Idem,
    f: Format,
    uid: &str,
    msid: &str,
    kind: AttachmentKind,
    file: &str,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", msid)?;
    st.satchel.bundle(who, uid, msid).await?;
    satchel_domain::names::validate_file_name(file)?;
    idem.once_upload(st, who, body, |body| async move {
        let a = st
            .satchel
            .upload_attachment(who, uid, msid, kind, file, body_stream(body))
            .await?;
        let doc = match kind {
            AttachmentKind::License => Doc::ok(f, "license", license_doc(uid, &a)).into_response(),
            AttachmentKind::Logo => Doc::ok(f, "logo", logo_doc(uid, &a)).into_response(),
        };
        Ok((doc, a.blob.sha256.clone()))
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn download_attachment(
    st: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    uid: &str,
    msid: &str,
    lid: &str,
    kind: AttachmentKind,
    file: Option<&str>,
) -> R {
    let msid = parse_id("mySoftware id", msid)?;
    let lid = parse_id(&format!("{} id", kind.as_str()), lid)?;
    let a = st.satchel.attachment(who, uid, msid, kind).await?;
    if a.id != lid || file.is_some_and(|f| f != a.name) {
        return Err(satchel_domain::DomainError::not_found(format!(
            "{} {lid} of mySoftware {msid}",
            kind.as_str()
        ))
        .into());
    }
    serve_file(st, headers, &a.name, &a.blob).await
}

async fn delete_attachment(
    st: &AppState,
    who: &Principal,
    uid: &str,
    msid: &str,
    lid: &str,
    kind: AttachmentKind,
) -> R {
    let msid = parse_id("mySoftware id", msid)?;
    let lid = parse_id(&format!("{} id", kind.as_str()), lid)?;
    let a = st.satchel.attachment(who, uid, msid, kind).await?;
    if a.id != lid {
        return Err(satchel_domain::DomainError::not_found(format!(
            "{} {lid} of mySoftware {msid}",
            kind.as_str()
        ))
        .into());
    }
    st.satchel.delete_attachment(who, uid, msid, kind).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_license(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Path((uid, msid, _lid, file)): Path<(String, String, String, String)>,
    body: Body,
) -> R {
    upload_attachment(
        &st,
        &who,
        idem,
        f,
        &uid,
        &msid,
        AttachmentKind::License,
        &file,
        body,
    )
    .await
}
async fn upload_logo(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    Path((uid, msid, _lid, file)): Path<(String, String, String, String)>,
    body: Body,
) -> R {
    upload_attachment(
        &st,
        &who,
        idem,
        f,
        &uid,
        &msid,
        AttachmentKind::Logo,
        &file,
        body,
    )
    .await
}
async fn download_license(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Path((uid, msid, lid)): Path<(String, String, String)>,
) -> R {
    download_attachment(
        &st,
        &who,
        &headers,
        &uid,
        &msid,
        &lid,
        AttachmentKind::License,
        None,
    )
    .await
}
async fn download_license_named(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Path((uid, msid, lid, file)): Path<(String, String, String, String)>,
) -> R {
    download_attachment(
        &st,
        &who,
        &headers,
        &uid,
        &msid,
        &lid,
        AttachmentKind::License,
        Some(&file),
    )
    .await
}
async fn download_logo(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Path((uid, msid, lid)): Path<(String, String, String)>,
) -> R {
    download_attachment(
        &st,
        &who,
        &headers,
        &uid,
        &msid,
        &lid,
        AttachmentKind::Logo,
        None,
    )
    .await
}
async fn download_logo_named(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Path((uid, msid, lid, file)): Path<(String, String, String, String)>,
) -> R {
    download_attachment(
        &st,
        &who,
        &headers,
        &uid,
        &msid,
        &lid,
        AttachmentKind::Logo,
        Some(&file),
    )
    .await
}
async fn delete_license(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, lid)): Path<(String, String, String)>,
) -> R {
    delete_attachment(&st, &who, &uid, &msid, &lid, AttachmentKind::License).await
}
async fn delete_logo(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, lid)): Path<(String, String, String)>,
) -> R {
    delete_attachment(&st, &who, &uid, &msid, &lid, AttachmentKind::Logo).await
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
    Path((uid, msid)): Path<(String, String)>,
    Query(q): Query<ExportQuery>,
) -> R {
    idem.once(&st, &who, export_ticket(&st, &who, f, uid, msid, q))
        .await
}

async fn export_ticket(
    st: &AppState,
    who: &Principal,
    f: Format,
    uid: String,
    msid: String,
    q: ExportQuery,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    st.satchel.bundle(who, &uid, msid).await?;
    let format = OutputFormat::parse(q.output_format.as_deref()).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unsupported outputFormat {:?}: use yaml or json",
            q.output_format.clone().unwrap_or_default()
        ))
    })?;
    let t = st.satchel.create_export(who, &uid, msid, format).await?;
    st.wake.notify_one();
    let doc = export_doc(&uid, &t);
    let location = format!("/api/{}", doc.uri);
    Ok(Doc::ok(f, "softwareBundleExport", doc)
        .with_status(StatusCode::CREATED)
        .header(header::LOCATION, &location)
        .into_response())
}

async fn get_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, eid)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let eid = parse_id("export id", &eid)?;
    let t = st.satchel.export(&who, &uid, msid, eid).await?;
    Ok(Doc::ok(f, "softwareBundleExport", export_doc(&uid, &t)).into_response())
}

/// Strong ETag over every field the status document shows.
fn status_etag(t: &Ticket, f: Format) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}",
        t.id,
        t.state.as_str(),
        t.percentage,
        t.bytes_loaded,
        t.bytes_total,
        t.eta,
        t.message,
        t.error_message,
        t.modified,
        f,
        t.archive.as_ref().map(|a| &a.sha256)
    ));
    format!("\"{}\"", &hex::encode(h.finalize())[..32])
}

fn not_modified(headers: &HeaderMap, etag: &str, last_modified_ms: i64) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag));
    }
    if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(since) = httpdate::parse_http_date(ims) {
            let since_s = since
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            return last_modified_ms / 1000 <= since_s;
        }
    }
    false
}

async fn export_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    Path((uid, msid, eid)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let eid = parse_id("export id", &eid)?;
    let t = st.satchel.export(&who, &uid, msid, eid).await?;
    let uri = format!("{}/exports/{}/status", bundle_uri(&uid, msid), t.id);
    let mut doc = op_status(&t, Some(uri));
    doc.db_id = Some(t.id);
    doc.created = Some(iso(t.created));
    doc.last_modified = Some(iso(t.modified));
    status_reply(f, &headers, &t, doc)
}

/// A ticket's status document, or `304` when the client's copy is current (ETag over every field
/// shown, Last-Modified from the ticket); never cached without revalidation.
pub(crate) fn status_reply(f: Format, headers: &HeaderMap, t: &Ticket, doc: docs::OpStatus) -> R {
    let etag = status_etag(t, f);
    let lm = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.modified.max(0) as u64),
    );
    if not_modified(headers, &etag, t.modified) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(
            header::ETAG,
            etag.parse().map_err(|_| ApiError::internal("etag"))?,
        );
        r.headers_mut().insert(
            header::LAST_MODIFIED,
            lm.parse().map_err(|_| ApiError::internal("date"))?,
        );
        return Ok(r);
    }
    Ok(Doc::ok(f, "status", doc)
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &lm)
        .header(header::CACHE_CONTROL, "no-cache")
        .into_response())
}

async fn download_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    Path((uid, msid, eid)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let eid = parse_id("export id", &eid)?;
    let (t, a) = st.satchel.export_archive(&who, &uid, msid, eid).await?;
    serve_blob(
        &st.satchel.blobs,
        &headers,
        BlobDownload {
            key: a.key.clone(),
            size: a.size as u64,
            etag: format!("\"{}\"", a.sha256),
            sha256: Some(a.sha256.clone()),
            content_type: "application/x-gzip",
            file_name: a.file_name.clone(),
            last_modified: t.modified,
        },
    )
    .await
}

async fn delete_export(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, eid)): Path<(String, String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let eid = parse_id("export id", &eid)?;
    st.satchel.delete_export(&who, &uid, msid, eid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_exports(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let ts = st.satchel.list_exports(&who, &uid).await?;
    let items: Vec<_> = ts.iter().map(|t| appliance_export_doc(&uid, t)).collect();
    let doc = docs::ApplianceExports {
        total: items.len() as i64,
        appliance_exports: docs::ApplianceExportItems {
            appliance_export: items,
        },
    };
    Ok(Doc::ok(f, "applianceExports", doc).into_response())
}

async fn list_export_statuses(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let ts = st.satchel.list_exports(&who, &uid).await?;
    let items: Vec<_> = ts
        .iter()
        .map(|t| {
            let mut s = op_status(
                t,
                Some(format!(
                    "{}/exports/{}/status",
                    bundle_uri(&uid, t.bundle_id),
                    t.id
                )),
            );
            s.db_id = Some(t.id);
            s.parent_uri = Some(format!(
                "{}/exports/{}",
                bundle_uri(&uid, t.bundle_id),
                t.id
            ));
            s
        })
        .collect();
    let doc = docs::OpStatuses {
        total: items.len() as i64,
        statuses: docs::StatusItems { status: items },
    };
    Ok(Doc::ok(f, "statuses", doc).into_response())
}
