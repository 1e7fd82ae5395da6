//! Domain values to wire documents (`docs.rs`), and the replies built around them: URIs, the status
//! document with its ETag and `304` (rendered once per remembered ticket version: [`StatusMemo`]),
//! what a download serves. Nothing here reads the store.

use crate::docs::{self, iso};
use crate::download::BlobDownload;
use crate::wire::{render_doc, ApiError, Doc, Format};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use satchel_domain::appliance::{Appliance, ApplianceParts, BootScript, OsPackage, OsProfile};
use satchel_domain::container::FORMAT_DOCKER;
use satchel_domain::model::*;
use satchel_domain::polls::Snapshot;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type R = Result<Response, ApiError>;

// ------------------------------------------------------------------ users and bundles

pub(crate) fn bundle_uri(uid: &str, id: Id) -> String {
    format!("users/{uid}/mysoftware/{id}")
}

pub(crate) fn user_doc(u: &User) -> docs::User {
    docs::User {
        created: iso(u.created),
        db_id: u.id,
        login_name: u.login.clone(),
        active: true,
        admin: u.admin,
        base_exports_uri: format!("users/{}/exports", u.login),
        base_my_software_library_uri: format!("users/{}/mysoftware", u.login),
        uri: format!("users/{}", u.login),
    }
}

pub(crate) fn bundle_doc(uid: &str, v: &BundleView) -> docs::MySoftware {
    let b = &v.bundle;
    let uri = bundle_uri(uid, b.id);
    docs::MySoftware {
        created: iso(b.created),
        db_id: b.id,
        last_modified: iso(b.modified),
        name: b.name.clone(),
        version: b.version.clone(),
        description: b.description.clone(),
        release: b.release.clone(),
        install_location: b.install_location.clone(),
        size: v.size,
        revision: b.revision,
        artifacts_uri: format!("{uri}/artifacts"),
        export_uri: format!("{uri}/exports"),
        clone_uri: format!("{uri}/clone"),
        license: v.license.as_ref().map(|l| license_doc(uid, l)),
        logo: v.logo.as_ref().map(|l| logo_doc(uid, l)),
        imported: b.imported,
        uri,
    }
}

pub(crate) fn artifact_doc(uid: &str, a: &Artifact) -> docs::SoftwareArtifact {
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

/// A license or logo: one document shape, under the attachment's own path segment.
fn attachment_doc(uid: &str, a: &Attachment, segment: &str) -> docs::UploadObject {
    let parent = bundle_uri(uid, a.bundle_id);
    docs::UploadObject {
        created: iso(a.blob.uploaded),
        db_id: a.id,
        last_modified: iso(a.blob.uploaded),
        md5sum: a.blob.md5.clone(),
        sha256sum: a.blob.sha256.clone(),
        size: a.blob.size,
        uploaded: true,
        uploaded_time: iso(a.blob.uploaded),
        name: a.name.clone(),
        uri: format!("{parent}/{segment}/{}", a.id),
        parent_uri: parent,
    }
}

pub(crate) fn license_doc(uid: &str, a: &Attachment) -> docs::License {
    attachment_doc(uid, a, "licenses")
}

pub(crate) fn logo_doc(uid: &str, a: &Attachment) -> docs::Logo {
    attachment_doc(uid, a, "logo")
}

// ------------------------------------------------------------------ tickets

pub(crate) fn op_status(t: &Ticket, uri: Option<String>) -> docs::OpStatus {
    let cancelled = t.state == TicketState::Cancelled;
    // hammr's export and import loops poll `while not (status.complete or status.error)` and never
    // look at `cancelled` (bundle.py, template.py), so a ticket cancelled elsewhere would keep them
    // polling forever: for those kinds a cancel also reads as an error. Container images keep
    // `error=false` (hammr's generate loop checks `cancelled` and reports it as such).
    let cancel_is_error = cancelled && t.kind != TicketKind::ContainerImage;
    let error = t.state == TicketState::Error || cancel_is_error;
    docs::OpStatus {
        created: None,
        db_id: None,
        last_modified: None,
        bytes_loaded: t.bytes_loaded,
        bytes_total: t.bytes_total,
        cancelled,
        complete: matches!(t.state, TicketState::Complete | TicketState::Expired),
        detailed_error: false,
        error,
        error_message: if cancel_is_error {
            Some(
                t.error_message
                    .clone()
                    .unwrap_or_else(|| "cancelled by the user".into()),
            )
        } else {
            t.error_message.clone().filter(|_| error)
        },
        eta: t.eta.map(iso),
        message: t.message.clone(),
        parent_uri: None,
        percentage: t.percentage.clamp(0, 100),
        uri,
    }
}

/// The status document of one ticket, at `{uri}/status`, with its id and dates.
pub(crate) fn ticket_status_doc(t: &Ticket, uri: &str) -> docs::OpStatus {
    let mut doc = op_status(t, Some(format!("{uri}/status")));
    doc.db_id = Some(t.id);
    doc.created = Some(iso(t.created));
    doc.last_modified = Some(iso(t.modified));
    doc
}

/// What an export ticket exports: its bundle's or its appliance's URI.
fn export_parent(uid: &str, t: &Ticket) -> String {
    match t.kind {
        TicketKind::ApplianceExport => appliance_uri(uid, t.subject_id),
        _ => bundle_uri(uid, t.subject_id),
    }
}

pub(crate) fn export_uri(uid: &str, t: &Ticket) -> String {
    format!("{}/exports/{}", export_parent(uid, t), t.id)
}

pub(crate) fn export_doc(uid: &str, t: &Ticket) -> docs::SoftwareBundleExport {
    let parent = export_parent(uid, t);
    let uri = export_uri(uid, t);
    docs::SoftwareBundleExport {
        created: iso(t.created),
        db_id: t.id,
        digest: t.archive.as_ref().map(|a| format!("sha256:{}", a.sha256)),
        last_modified: iso(t.modified),
        bundle_name: t.subject_name.clone(),
        bundle_version: t.subject_version.clone(),
        download_uri: format!("{uri}/downloads"),
        location: None,
        parent_uri: parent,
        status: op_status(t, Some(format!("{uri}/status"))),
        uri,
    }
}

pub(crate) fn appliance_export_doc(uid: &str, t: &Ticket) -> docs::ApplianceExport {
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

/// One status answer, rendered: the document's bytes and the headers around them.
pub(crate) struct RenderedStatus {
    etag: HeaderValue,
    last_modified: HeaderValue,
    content_type: &'static str,
    body: Bytes,
    modified: Millis,
}

/// Past this many rendered answers the memo starts over.
const MEMO_MAX: usize = 50_000;

/// Status answers rendered from remembered ticket rows, by (ticket, format), each kept while the row
/// it was rendered from is the one the domain remembers (same `Snapshot::version`, never reused)
/// and for the same URL user (the document's URIs name it). A status poll of a ticket nothing
/// changed then costs a map lookup: no render, no sha256.
#[derive(Default)]
pub struct StatusMemo {
    map: Mutex<HashMap<(Id, Format), Memo>>,
}

struct Memo {
    version: u64,
    uid: String,
    rendered: Arc<RenderedStatus>,
}

impl StatusMemo {
    fn get(&self, id: Id, f: Format, version: u64, uid: &str) -> Option<Arc<RenderedStatus>> {
        let map = self.map.lock().ok()?;
        let m = map.get(&(id, f))?;
        (m.version == version && m.uid == uid).then(|| m.rendered.clone())
    }

    fn put(&self, id: Id, f: Format, version: u64, uid: &str, rendered: Arc<RenderedStatus>) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= MEMO_MAX {
                map.clear();
            }
            map.insert(
                (id, f),
                Memo {
                    version,
                    uid: uid.to_string(),
                    rendered,
                },
            );
        }
    }
}

fn render_status(f: Format, t: &Ticket, doc: docs::OpStatus) -> Result<RenderedStatus, ApiError> {
    let (body, content_type) = render_doc(f, "status", &doc)
        .map_err(|e| ApiError::internal(format!("rendering status: {e}")))?;
    Ok(RenderedStatus {
        etag: HeaderValue::from_str(&status_etag(t, f)).map_err(|_| ApiError::internal("etag"))?,
        last_modified: HeaderValue::from_str(&satchel_ranges::serve::http_date(t.modified))
            .map_err(|_| ApiError::internal("date"))?,
        content_type,
        body: Bytes::from(body),
        modified: t.modified,
    })
}

/// A ticket's status document, or `304` when the client's copy is current (ETag over every field
/// shown, Last-Modified from the ticket); never cached without revalidation. `doc` builds the
/// document; it only runs when the memo has no answer for this version of the ticket.
pub(crate) fn status_reply(
    memo: &StatusMemo,
    f: Format,
    headers: &HeaderMap,
    uid: &str,
    s: &Snapshot,
    doc: impl FnOnce(&Ticket) -> docs::OpStatus,
) -> R {
    let t = &s.ticket;
    let remembered = (s.version != 0)
        .then(|| memo.get(t.id, f, s.version, uid))
        .flatten();
    let r = match remembered {
        Some(r) => r,
        None => {
            let r = Arc::new(render_status(f, t, doc(t))?);
            if s.version != 0 {
                memo.put(t.id, f, s.version, uid, r.clone());
            }
            r
        }
    };
    // The same conditional rules as downloads (weak If-None-Match, then If-Modified-Since).
    let conditions = satchel_ranges::Conditions::from_headers(headers);
    let etag = r.etag.to_str().map_err(|_| ApiError::internal("etag"))?;
    let mut resp = if satchel_ranges::not_modified(&conditions, etag, Some(r.modified)) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut resp = Response::new(Body::from(r.body.clone()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(r.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, r.etag.clone());
    h.insert(header::LAST_MODIFIED, r.last_modified.clone());
    Ok(resp)
}

/// The answer to a cancel: the ticket's status document (not conditional), whose message says
/// when there was nothing to cancel.
pub(crate) fn cancel_reply(f: Format, uri: &str, c: &Cancelled) -> R {
    let mut doc = ticket_status_doc(&c.ticket, uri);
    doc.message = c.message();
    Ok(Doc::ok(f, "status", doc).into_response())
}

// ------------------------------------------------------------------ containers

pub(crate) fn template_uri(uid: &str, msid: Id, tid: Id) -> String {
    format!("{}/templates/{tid}", bundle_uri(uid, msid))
}

pub(crate) fn template_doc(uid: &str, t: &ContainerTemplate) -> docs::ContainerTemplate {
    let uri = template_uri(uid, t.bundle_id, t.id);
    docs::ContainerTemplate {
        created: iso(t.created),
        db_id: t.id,
        last_modified: iso(t.modified),
        distribution: t.distribution.as_ref().map(|d| docs::Distribution {
            arch: Some(d.arch.clone()).filter(|s| !s.is_empty()),
            name: Some(d.name.clone()),
            version: Some(d.version.clone()).filter(|s| !s.is_empty()),
        }),
        images_uri: format!("{uri}/images"),
        formats_uri: format!("{uri}/formats"),
        uri,
    }
}

pub(crate) fn docker_format(uri: Option<String>) -> docs::ImageFormat {
    docs::ImageFormat {
        access: true,
        active: true,
        name: FORMAT_DOCKER.into(),
        preselected: true,
        uri,
    }
}

/// An image's URI and its parent's (the template).
fn image_uris(uid: &str, i: &Ticket) -> (String, String) {
    let parent = template_uri(uid, i.subject_id, i.template_id().unwrap_or(0));
    (format!("{parent}/images/{}", i.id), parent)
}

/// An image; `key` is a one-time download id just minted for it.
pub(crate) fn image_doc(uid: &str, i: &Ticket, key: Option<&str>) -> docs::Image {
    let spec = i.image.clone().unwrap_or(ImageSpec {
        template_id: 0,
        name: i.subject_name.clone(),
        format: FORMAT_DOCKER.into(),
        compress: false,
        base: None,
    });
    let (uri, parent) = image_uris(uid, i);
    let done = i.state == TicketState::Complete;
    let archive = i.archive.as_ref().filter(|_| done);
    docs::Image {
        created: iso(i.created),
        db_id: i.id,
        digest: archive.map(|a| format!("sha256:{}", a.sha256)),
        last_modified: iso(i.modified),
        mime_type: "application/x-tar".into(),
        sha256sum: archive.map(|a| a.sha256.clone()),
        size: archive.map(|a| a.size).unwrap_or(0),
        status: op_status(i, Some(format!("{uri}/status"))),
        uploaded: done,
        parent_uri: parent,
        compress: spec.compress,
        distribution_name: spec.base.as_ref().map(|b| b.label.clone()),
        download_key: key.map(str::to_string),
        download_uri: i.downloadable_archive().map(|_| match key {
            Some(k) => format!("{uri}/downloads?downloadId={k}"),
            None => format!("{uri}/downloads"),
        }),
        file_extension: if spec.compress {
            "oci.tar.gz"
        } else {
            "oci.tar"
        }
        .into(),
        file_name: archive.map(|a| a.file_name.clone()),
        file_size: archive.map(|a| a.size).unwrap_or(0),
        format: docker_format(None),
        target_format: docs::TargetFormat {
            name: "Docker".into(),
            format: docker_format(None),
            kind: "container".into(),
            access: true,
            active: true,
        },
        image_created: done,
        name: spec.name,
        status_uri: format!("{uri}/status"),
        uri,
        version: i.subject_version.clone(),
        entrypoint: String::new(),
        registering_name: None,
    }
}

/// An image's status document (its parent is the image).
pub(crate) fn image_status_doc(uid: &str, i: &Ticket) -> docs::OpStatus {
    let (uri, _) = image_uris(uid, i);
    let mut doc = ticket_status_doc(i, &uri);
    doc.parent_uri = Some(uri);
    doc
}

// ------------------------------------------------------------------ downloads

/// An uploaded file (artifact, license, logo), served under its name.
pub(crate) fn file_download(name: &str, blob: &BlobRef) -> BlobDownload {
    BlobDownload {
        key: blob.key.clone(),
        size: blob.size as u64,
        etag: format!("\"{}\"", blob.sha256),
        sha256: Some(blob.sha256.clone()),
        content_type: "application/octet-stream",
        file_name: name.to_string(),
        last_modified: blob.uploaded,
    }
}

/// A ticket's archive (an export's `.tar.gz`, an image's tar).
pub(crate) fn archive_download(
    t: &Ticket,
    a: &ArchiveRef,
    content_type: &'static str,
) -> BlobDownload {
    BlobDownload {
        key: a.key.clone(),
        size: a.size as u64,
        etag: format!("\"{}\"", a.sha256),
        sha256: Some(a.sha256.clone()),
        content_type,
        file_name: a.file_name.clone(),
        last_modified: t.modified,
    }
}

// ------------------------------------------------------------------ appliance templates

pub(crate) fn appliance_uri(uid: &str, aid: Id) -> String {
    format!("users/{uid}/appliances/{aid}")
}

fn os_profile_uri(uid: &str, p: &OsProfile) -> String {
    format!("{}/osprofile/{}", appliance_uri(uid, p.appliance_id), p.id)
}

/// `distributionName` as UForge shows it: the name and version (`CentOS 7`).
fn distribution_name(d: Option<&DistributionRef>) -> String {
    match d {
        Some(d) if !d.version.is_empty() => format!("{} {}", d.name, d.version),
        Some(d) => d.name.clone(),
        None => String::new(),
    }
}

pub(crate) fn appliance_doc(uid: &str, p: &ApplianceParts) -> docs::Appliance {
    let a = &p.appliance;
    let uri = appliance_uri(uid, a.id);
    docs::Appliance {
        created: iso(a.created),
        db_id: a.id,
        last_modified: iso(a.modified),
        arch_name: a
            .distribution
            .as_ref()
            .map(|d| d.arch.clone())
            .unwrap_or_default(),
        base_my_software_uri: format!("{uri}/mysoftware"),
        base_os_profile_uri: format!("{uri}/osprofile"),
        boot_scripts_uri: format!("{uri}/bootscripts"),
        boot_script_uris: docs::UriList {
            uri: p
                .boot_scripts
                .iter()
                .map(|s| format!("{uri}/bootscripts/{}", s.id))
                .collect(),
        },
        description: a.description.clone(),
        distribution_name: distribution_name(a.distribution.as_ref()),
        exports_uri: format!("{uri}/exports"),
        image_uris: docs::UriList::default(),
        imported: a.imported,
        my_software_uris: docs::UriList {
            uri: p.bundles.iter().map(|b| bundle_uri(uid, b.id)).collect(),
        },
        name: a.name.clone(),
        nb_security_updates: 0,
        nb_updates: 0,
        os_profile_uri: p.os_profile.as_ref().map(|o| os_profile_uri(uid, o)),
        shared: false,
        version: a.version.clone(),
        uri,
    }
}

pub(crate) fn linux_profile_doc(uid: &str, a: &Appliance, p: &OsProfile) -> docs::LinuxProfile {
    let uri = os_profile_uri(uid, p);
    let d = a.distribution.as_ref();
    docs::LinuxProfile {
        created: iso(p.created),
        db_id: p.id,
        last_modified: iso(p.modified),
        active: true,
        appliance_uri: appliance_uri(uid, a.id),
        arch: d.map(|d| d.arch.clone()).filter(|s| !s.is_empty()),
        name: p.name.clone(),
        version: d.map(|d| d.version.clone()).filter(|s| !s.is_empty()),
        packages_uri: format!("{uri}/pkgs"),
        uri,
    }
}

pub(crate) fn packages_doc(pkgs: &[OsPackage]) -> docs::Packages {
    docs::Packages {
        pkgs: docs::PkgItems {
            pkg: pkgs
                .iter()
                .map(|p| docs::Pkg {
                    size: 0,
                    uploaded: false,
                    arch: p.arch.clone(),
                    name: p.name.clone(),
                    version: p.version.clone(),
                })
                .collect(),
        },
    }
}

pub(crate) fn boot_script_doc(uid: &str, s: &BootScript) -> docs::BootScript {
    let parent = appliance_uri(uid, s.appliance_id);
    let uri = format!("{parent}/bootscripts/{}", s.id);
    let b = s.blob.as_ref();
    docs::BootScript {
        created: iso(s.created),
        db_id: s.id,
        last_modified: iso(s.modified),
        md5sum: b.map(|b| b.md5.clone()),
        sha256sum: b.map(|b| b.sha256.clone()),
        size: b.map(|b| b.size).unwrap_or(0),
        uploaded: b.is_some(),
        uploaded_time: b.map(|b| iso(b.uploaded)),
        binary_uri: format!("{uri}/bin/{}", s.name),
        parent_uri: parent,
        name: s.name.clone(),
        full_name: s.name.clone(),
        boot_order: s.order,
        boot_type: s.kind.as_str().to_string(),
        uri,
    }
}

// ------------------------------------------------------------------ cloud accounts

pub(crate) fn account_uri(uid: &str, id: Id) -> String {
    format!("users/{uid}/accounts/{id}")
}

/// A certificate of an account; its content (base64) only when given (revealed).
pub(crate) fn cert_doc(
    owner: &User,
    account: Id,
    c: &satchel_domain::accounts::AccountCert,
    content: Option<&satchel_domain::accounts::Secret>,
) -> docs::CertificateDoc {
    docs::CertificateDoc {
        uri: format!("{}/certs/{}", account_uri(&owner.login, account), c.id),
        ..cert_doc_inner(c, content)
    }
}

/// An account's document: its subtype's fields in schema order, secrets as the view has them
/// (masked unless revealed).
pub(crate) fn account_doc(
    v: &satchel_domain::accounts::AccountView,
    xml: bool,
) -> docs::CredAccountDoc {
    let a = &v.account;
    let owner_uri = account_uri(&v.owner_login, a.id);
    docs::CredAccountDoc {
        xml,
        xsi_type: a.kind.xsi_type(),
        created: iso(a.created),
        db_id: a.id,
        last_modified: iso(a.modified),
        name: a.name.clone(),
        target_platform: docs::TargetPlatformRef {
            name: Some(a.platform.clone()),
            kind: Some(a.kind.platform_type().to_string()),
        },
        certificates: a.kind.has_certificates().then(|| docs::CertificateItems {
            certificate: v
                .certs
                .iter()
                .map(|c| docs::CertificateDoc {
                    uri: format!("{owner_uri}/certs/{}", c.cert.id),
                    ..cert_doc_inner(&c.cert, c.content.as_ref())
                })
                .collect(),
        }),
        uri: owner_uri,
        values: v
            .values
            .iter()
            .map(|(f, s)| (f.name, s.expose_str().into_owned()))
            .collect(),
    }
}

fn cert_doc_inner(
    c: &satchel_domain::accounts::AccountCert,
    content: Option<&satchel_domain::accounts::Secret>,
) -> docs::CertificateDoc {
    use base64::Engine;
    docs::CertificateDoc {
        created: iso(c.created),
        db_id: c.id,
        last_modified: iso(c.modified),
        size: c.size,
        uploaded: c.size > 0,
        content: content.map(|s| base64::engine::general_purpose::STANDARD.encode(s.expose())),
        name: c.name.clone(),
        kind: c.cert_type.clone(),
        uri: String::new(),
    }
}
