//! Container templates, their images, and image downloads (owner, or anyone with a one-time
//! `downloadId`), under `/api/users/{uid}/mysoftware/{msid}/templates`.

use crate::docs::{self, iso};
use crate::download::{plan, serve_planned, BlobDownload};
use crate::idempotency::Idem;
use crate::routes::{bundle_uri, op_status, principal, status_reply, write_doc, Auth, Fmt};
use crate::wire::{parse_id, ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::container::{ImageRequest, FORMAT_DOCKER};
use satchel_domain::model::*;
use serde::Deserialize;

type R = Result<Response, ApiError>;

pub fn routes(ms: &str) -> Table<AppState> {
    let t = format!("{ms}/templates");
    let tt = format!("{t}/{{tid}}");
    let i = format!("{t}/{{tid}}/images/{{itid}}");
    Table::new()
        .get(&t, "A bundle's container templates", list_templates)
        .post(&t, "Create a container template", create_template)
        .get(&tt, "A container template", get_template)
        .delete(
            &tt,
            "Delete a container template and its images",
            delete_template,
        )
        .get(
            &format!("{tt}/formats"),
            "Image formats of a template",
            formats,
        )
        .get(&format!("{tt}/images"), "A template's images", list_images)
        .post(
            &format!("{tt}/images"),
            "Generate an image (a ticket)",
            generate,
        )
        .get(&i, "An image (mints a one-time downloadId)", get_image)
        .delete(&i, "Delete an image", delete_image)
        .get(
            &format!("{i}/status"),
            "An image's status (ETag, 304)",
            image_status,
        )
        .delete(
            &format!("{i}/status"),
            "Cancel an image's generation",
            cancel_image,
        )
        .get(
            "/api/users/{uid}/images",
            "The user's images",
            list_user_images,
        )
        .get(
            &format!("{i}/downloads"),
            "Download an image (owner, or a one-time downloadId)",
            download,
        )
        .get(
            &format!("{i}/downloads/{{file}}"),
            "Download an image by name",
            download_named,
        )
}

// ------------------------------------------------------------------ documents

fn template_uri(uid: &str, msid: Id, tid: Id) -> String {
    format!("{}/templates/{tid}", bundle_uri(uid, msid))
}

fn template_doc(uid: &str, t: &ContainerTemplate) -> docs::ContainerTemplate {
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

fn docker_format(uri: Option<String>) -> docs::ImageFormat {
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
    let parent = template_uri(uid, i.bundle_id, i.template_id().unwrap_or(0));
    (format!("{parent}/images/{}", i.id), parent)
}

fn image_doc(uid: &str, i: &Ticket, key: Option<&str>) -> docs::Image {
    let spec = i.image.clone().unwrap_or(ImageSpec {
        template_id: 0,
        name: i.bundle_name.clone(),
        format: FORMAT_DOCKER.into(),
        compress: false,
    });
    let (uri, parent) = image_uris(uid, i);
    let done = i.state == TicketState::Complete;
    let archive = i.archive.as_ref().filter(|_| done);
    let downloadable = done && spec.compress;
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
        download_key: key.map(str::to_string),
        download_uri: downloadable.then(|| match key {
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
        version: i.bundle_version.clone(),
    }
}

/// The distribution names and architectures the schema enumerates (the SDK refuses others).
const DISTRIBUTIONS: &[&str] = &[
    "CentOS",
    "Debian",
    "Fedora Core",
    "OpenSUSE",
    "Oracle Linux",
    "RedHat Enterprise Linux",
    "Scientific Linux",
    "SUSE Linux Enterprise Server",
    "Ubuntu",
    "Windows",
];
const ARCHS: &[&str] = &["i386", "i586", "i686", "noarch", "x86_64"];

fn distribution(d: docs::Distribution) -> Result<Option<DistributionRef>, ApiError> {
    let Some(name) = d.name.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
        if d.arch.is_some() || d.version.is_some() {
            return Err(ApiError::bad_request(
                "the distribution needs a name (e.g. Debian, Ubuntu, CentOS)",
            ));
        }
        return Ok(None);
    };
    let name = DISTRIBUTIONS
        .iter()
        .find(|n| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown distribution name {name:?}; expected one of: {}",
                DISTRIBUTIONS.join(", ")
            ))
        })?;
    let arch = match d.arch.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => "x86_64",
        Some(a) => ARCHS
            .iter()
            .find(|x| x.eq_ignore_ascii_case(a))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown distribution arch {a:?}; expected one of: {}",
                    ARCHS.join(", ")
                ))
            })?,
    };
    Ok(Some(DistributionRef {
        name: name.to_string(),
        version: d.version.unwrap_or_default().trim().to_string(),
        arch: arch.to_string(),
    }))
}

// ------------------------------------------------------------------ templates

fn template_ids(msid: &str, tid: &str) -> Result<(Id, Id), ApiError> {
    Ok((
        parse_id("mySoftware id", msid)?,
        parse_id("container template id", tid)?,
    ))
}

async fn list_templates(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid)): Path<(String, String)>,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    let ts = st.satchel.list_templates(&who, &uid, msid).await?;
    let items: Vec<_> = ts.iter().map(|t| template_doc(&uid, t)).collect();
    let doc = docs::ContainerTemplates {
        total: items.len() as i64,
        container_templates: docs::ContainerTemplateItems {
            container_template: items,
        },
    };
    Ok(Doc::ok(f, "containerTemplates", doc).into_response())
}

async fn create_template(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    Path((uid, msid)): Path<(String, String)>,
    body: Body,
) -> R {
    let msid = parse_id("mySoftware id", &msid)?;
    // An empty body is a template on no particular distribution.
    let input: docs::ContainerTemplateIn =
        write_doc(&st, &who, &headers, body, "containerTemplate", false).await?;
    let distro = match input.distribution {
        Some(d) => distribution(d)?,
        None => None,
    };
    let t = st.satchel.create_template(&who, &uid, msid, distro).await?;
    let doc = template_doc(&uid, &t);
    let location = format!("/api/{}", doc.uri);
    Ok(Doc::ok(f, "containerTemplate", doc)
        .with_status(StatusCode::CREATED)
        .header(header::LOCATION, &location)
        .into_response())
}

async fn get_template(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, tid)): Path<(String, String, String)>,
) -> R {
    let (msid, tid) = template_ids(&msid, &tid)?;
    let (_, t) = st.satchel.template(&who, &uid, msid, tid).await?;
    Ok(Doc::ok(f, "containerTemplate", template_doc(&uid, &t)).into_response())
}

async fn delete_template(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, tid)): Path<(String, String, String)>,
) -> R {
    let (msid, tid) = template_ids(&msid, &tid)?;
    st.satchel.delete_template(&who, &uid, msid, tid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn formats(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, tid)): Path<(String, String, String)>,
) -> R {
    let (msid, tid) = template_ids(&msid, &tid)?;
    st.satchel.template(&who, &uid, msid, tid).await?;
    let uri = format!("{}/formats", template_uri(&uid, msid, tid));
    let doc = docs::ImageFormats {
        total: 1,
        image_formats: docs::ImageFormatItems {
            image_format: vec![docker_format(Some(format!("{uri}/{FORMAT_DOCKER}")))],
        },
    };
    Ok(Doc::ok(f, "imageFormats", doc).into_response())
}

// ------------------------------------------------------------------ images

type ImagePath = Path<(String, String, String, String)>;

fn image_ids(msid: &str, tid: &str, itid: &str) -> Result<(Id, Id, Id), ApiError> {
    let (msid, tid) = template_ids(msid, tid)?;
    Ok((msid, tid, parse_id("image id", itid)?))
}

async fn generate(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    headers: HeaderMap,
    Path((uid, msid, tid)): Path<(String, String, String)>,
    body: Body,
) -> R {
    let (msid, tid) = template_ids(&msid, &tid)?;
    let (st, who, uid) = (&st, &who, &uid);
    idem.once_doc(
        st,
        who,
        &headers,
        body,
        "image",
        |input: docs::ImageIn| async move {
            let format = input
                .format
                .and_then(|f| f.name)
                .or_else(|| input.target_format.and_then(|f| f.name));
            let i = st
                .satchel
                .generate_image(
                    who,
                    uid,
                    msid,
                    tid,
                    ImageRequest {
                        format,
                        name: input.name,
                        compress: input.compress.unwrap_or(false),
                    },
                )
                .await?;
            st.wake.notify_one();
            let doc = image_doc(uid, &i, None);
            let location = format!("/api/{}", doc.uri);
            Ok(Doc::ok(f, "image", doc)
                .with_status(StatusCode::CREATED)
                .header(header::LOCATION, &location)
                .into_response())
        },
    )
    .await
}

async fn list_images(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, tid)): Path<(String, String, String)>,
) -> R {
    let (msid, tid) = template_ids(&msid, &tid)?;
    let is = st.satchel.list_images(&who, &uid, msid, tid).await?;
    let items: Vec<_> = is.iter().map(|i| image_doc(&uid, i, None)).collect();
    let doc = docs::Images {
        total: items.len() as i64,
        images: docs::ImageItems { image: items },
    };
    Ok(Doc::ok(f, "images", doc).into_response())
}

/// Every container image of the user, across bundles and templates (what `hammr image list` reads).
async fn list_user_images(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
) -> R {
    let is = st.satchel.list_user_images(&who, &uid).await?;
    let items: Vec<_> = is.iter().map(|i| image_doc(&uid, i, None)).collect();
    let doc = docs::Images {
        total: items.len() as i64,
        images: docs::ImageItems { image: items },
    };
    Ok(Doc::ok(f, "images", doc).into_response())
}

/// The image, with a fresh one-time download id when it can be downloaded.
async fn get_image(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, tid, itid)): ImagePath,
) -> R {
    let (msid, tid, itid) = image_ids(&msid, &tid, &itid)?;
    let i = st.satchel.image(&who, &uid, msid, tid, itid).await?;
    let key = st.satchel.new_download_key(&i).await?;
    Ok(Doc::ok(f, "image", image_doc(&uid, &i, key.as_deref()))
        // The id in it is a credential that works once: never cache this document.
        .header(header::CACHE_CONTROL, "no-store")
        .into_response())
}

async fn delete_image(
    State(st): State<AppState>,
    Auth(who): Auth,
    Path((uid, msid, tid, itid)): ImagePath,
) -> R {
    let (msid, tid, itid) = image_ids(&msid, &tid, &itid)?;
    st.satchel.delete_image(&who, &uid, msid, tid, itid).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn status_doc(uid: &str, i: &Ticket) -> docs::OpStatus {
    let (parent, _) = image_uris(uid, i);
    let mut doc = op_status(i, Some(format!("{parent}/status")));
    doc.db_id = Some(i.id);
    doc.created = Some(iso(i.created));
    doc.last_modified = Some(iso(i.modified));
    doc.parent_uri = Some(parent);
    doc
}

async fn image_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    Path((uid, msid, tid, itid)): ImagePath,
) -> R {
    let (msid, tid, itid) = image_ids(&msid, &tid, &itid)?;
    let i = st.satchel.image(&who, &uid, msid, tid, itid).await?;
    status_reply(f, &headers, &i, status_doc(&uid, &i))
}

/// Cancels the generation; answers the status as it is afterwards.
async fn cancel_image(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path((uid, msid, tid, itid)): ImagePath,
) -> R {
    let (msid, tid, itid) = image_ids(&msid, &tid, &itid)?;
    let i = st.satchel.cancel_image(&who, &uid, msid, tid, itid).await?;
    Ok(Doc::ok(f, "status", status_doc(&uid, &i)).into_response())
}

#[derive(Deserialize)]
struct DownloadQuery {
    #[serde(rename = "downloadId")]
    download_id: Option<String>,
}

async fn download(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((uid, msid, tid, itid)): ImagePath,
    Query(q): Query<DownloadQuery>,
) -> R {
    serve_image(st, method, uri, headers, (uid, msid, tid, itid), None, q).await
}

async fn download_named(
    State(st): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((uid, msid, tid, itid, file)): Path<(String, String, String, String, String)>,
    Query(q): Query<DownloadQuery>,
) -> R {
    serve_image(
        st,
        method,
        uri,
        headers,
        (uid, msid, tid, itid),
        Some(file),
        q,
    )
    .await
}

/// With `downloadId`, the id alone authorises (Basic credentials, which clients send anyway, are
/// ignored); without it, the owner's credentials do.
async fn serve_image(
    st: AppState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    (uid, msid, tid, itid): (String, String, String, String),
    file: Option<String>,
    q: DownloadQuery,
) -> R {
    let ids = image_ids(&msid, &tid, &itid)?;
    let key = q
        .download_id
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let download = |i: &Ticket, a: &ArchiveRef| BlobDownload {
        key: a.key.clone(),
        size: a.size as u64,
        etag: format!("\"{}\"", a.sha256),
        sha256: Some(a.sha256.clone()),
        content_type: "application/x-tar",
        file_name: a.file_name.clone(),
        last_modified: i.modified,
    };
    let (d, answer) = match key {
        Some(_) if method == Method::HEAD => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "HEAD with a downloadId is refused: the id is spent by the first GET",
            ))
        }
        Some(key) => {
            let k = st
                .satchel
                .image_archive_by_key(&uid, ids, file.as_deref(), key)
                .await?;
            let answer = plan(&headers, &download(&k.image, &k.archive));
            // The id is spent only by an answer that sends bytes: a 416 or a 304 keeps it.
            let (i, a) = if answer.sends_bytes() {
                st.satchel.spend_download_key(k).await?
            } else {
                (k.image, k.archive)
            };
            (download(&i, &a), answer)
        }
        None => {
            let who = principal(&st, &uri, &headers, None).await?;
            let (i, a) = st
                .satchel
                .image_archive(&who, &uid, ids, file.as_deref())
                .await?;
            let d = download(&i, &a);
            let answer = plan(&headers, &d);
            (d, answer)
        }
    };
    let mut r = serve_planned(&st.satchel.blobs, answer, d).await?;
    if key.is_some() {
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
    }
    Ok(r)
}
