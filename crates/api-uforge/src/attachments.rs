//! A bundle's license and logo: one of each, uploaded, downloaded (by id, or id and name), deleted.

use crate::download::serve_blob;
use crate::extract::{
    body_stream, Auth, BundleFilePath, Fmt, LicenseFilePath, LicensePath, LogoFilePath, LogoPath,
};
use crate::idempotency::Idem;
use crate::render::{file_download, license_doc, logo_doc};
use crate::wire::{ApiError, Doc, Format};
use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::{AttachmentKind, Id, Principal};

type R = Result<Response, ApiError>;

/// `ms` is the path of one bundle.
pub fn routes(ms: &str) -> Table<AppState> {
    let (l, g) = (
        format!("{ms}/licenses/{{lid}}"),
        format!("{ms}/logo/{{lid}}"),
    );
    let file = |p: &str| format!("{p}/{{file}}");
    Table::new()
        .get(&l, "Download the license", download::<LicensePath>)
        .delete(&l, "Delete the license", delete::<LicensePath>)
        .post(&file(&l), "Upload the license", upload_license)
        .get(
            &file(&l),
            "Download the license by name",
            download::<LicenseFilePath>,
        )
        .get(&g, "Download the logo", download::<LogoPath>)
        .delete(&g, "Delete the logo", delete::<LogoPath>)
        .post(&file(&g), "Upload the logo", upload_logo)
        .get(
            &file(&g),
            "Download the logo by name",
            download::<LogoFilePath>,
        )
}

/// A path naming a license or a logo: its user, `(bundle id, attachment id)` and file name if any.
trait AttachmentPath: FromRequestParts<AppState, Rejection = Response> + Send + 'static {
    const KIND: AttachmentKind;
    fn ids(&self) -> (&str, (Id, Id), Option<&str>);
}

impl AttachmentPath for LicensePath {
    const KIND: AttachmentKind = AttachmentKind::License;
    fn ids(&self) -> (&str, (Id, Id), Option<&str>) {
        (&self.uid, (self.msid, self.lid), None)
    }
}
impl AttachmentPath for LicenseFilePath {
    const KIND: AttachmentKind = AttachmentKind::License;
    fn ids(&self) -> (&str, (Id, Id), Option<&str>) {
        (&self.uid, (self.msid, self.lid), Some(&self.file))
    }
}
impl AttachmentPath for LogoPath {
    const KIND: AttachmentKind = AttachmentKind::Logo;
    fn ids(&self) -> (&str, (Id, Id), Option<&str>) {
        (&self.uid, (self.msid, self.lid), None)
    }
}
impl AttachmentPath for LogoFilePath {
    const KIND: AttachmentKind = AttachmentKind::Logo;
    fn ids(&self) -> (&str, (Id, Id), Option<&str>) {
        (&self.uid, (self.msid, self.lid), Some(&self.file))
    }
}

async fn download<P: AttachmentPath>(
    State(st): State<AppState>,
    Auth(who): Auth,
    headers: HeaderMap,
    p: P,
) -> R {
    let (uid, ids, file) = p.ids();
    let a = st.satchel.attachment(&who, uid, ids, P::KIND, file).await?;
    serve_blob(&st.satchel.blobs, &headers, file_download(&a.name, &a.blob)).await
}

async fn delete<P: AttachmentPath>(State(st): State<AppState>, Auth(who): Auth, p: P) -> R {
    let (uid, ids, _) = p.ids();
    st.satchel
        .delete_attachment(&who, uid, ids, P::KIND)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_license(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    p: BundleFilePath,
    body: Body,
) -> R {
    upload(&st, &who, idem, f, p, AttachmentKind::License, body).await
}

async fn upload_logo(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    p: BundleFilePath,
    body: Body,
) -> R {
    upload(&st, &who, idem, f, p, AttachmentKind::Logo, body).await
}

async fn upload(
    st: &AppState,
    who: &Principal,
    idem: Idem,
    f: Format,
    p: BundleFilePath,
    kind: AttachmentKind,
    body: Body,
) -> R {
    // Resolve before reading the body: a foreign or missing bundle answers 404 without consuming it.
    let b = st.satchel.bundle(who, &p.uid, p.msid).await?;
    satchel_domain::names::validate_file_name(&p.file)?;
    idem.once_upload(st, who, body, |body| async move {
        let a = st
            .satchel
            .upload_attachment(&b, kind, &p.file, body_stream(body))
            .await?;
        let doc = match kind {
            AttachmentKind::License => {
                Doc::ok(f, "license", license_doc(&p.uid, &a)).into_response()
            }
            AttachmentKind::Logo => Doc::ok(f, "logo", logo_doc(&p.uid, &a)).into_response(),
        };
        Ok((doc, a.blob.sha256.clone()))
    })
    .await
}
