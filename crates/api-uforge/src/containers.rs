//! Container templates, their images, and image downloads (owner, or anyone with a one-time
//! `downloadId`), under `/api/users/{uid}/mysoftware/{msid}/templates`.

use crate::docs;
use crate::download::{serve_archive, DownloadQuery};
use crate::extract::{
    write_doc, Auth, BundlePath, Conditional, Fmt, ImageFilePath, ImagePath, TemplatePath,
};
use crate::idempotency::Idem;
use crate::pimages::registering_names;
use crate::render::{
    docker_format, image_doc, image_status_doc, status_reply, template_doc, template_uri,
};
use crate::wire::{ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::container::{ImageRequest, FORMAT_DOCKER};
use satchel_domain::download_ids::ArchiveTicket;
use satchel_domain::model::*;

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

// ------------------------------------------------------------------ request documents

/// The distribution names and architectures the schema enumerates (the SDK refuses others).
pub(crate) const DISTRIBUTIONS: &[&str] = &[
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
pub(crate) const ARCHS: &[&str] = &["i386", "i586", "i686", "noarch", "x86_64"];

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

async fn list_templates(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BundlePath,
) -> R {
    let ts = st.satchel.list_templates(&who, &p.uid, p.msid).await?;
    let items: Vec<_> = ts.iter().map(|t| template_doc(&p.uid, t)).collect();
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
    p: BundlePath,
    body: Body,
) -> R {
    // An empty body is a template on no particular distribution.
    let input: docs::ContainerTemplateIn =
        write_doc(&st, &who, &headers, body, "containerTemplate", false).await?;
    let distro = match input.distribution {
        Some(d) => distribution(d)?,
        None => None,
    };
    let t = st
        .satchel
        .create_template(&who, &p.uid, p.msid, distro)
        .await?;
    let doc = template_doc(&p.uid, &t);
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
    p: TemplatePath,
) -> R {
    let (_, t) = st.satchel.template(&who, &p.uid, p.msid, p.tid).await?;
    Ok(Doc::ok(f, "containerTemplate", template_doc(&p.uid, &t)).into_response())
}

async fn delete_template(State(st): State<AppState>, Auth(who): Auth, p: TemplatePath) -> R {
    st.satchel
        .delete_template(&who, &p.uid, p.msid, p.tid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn formats(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: TemplatePath) -> R {
    st.satchel.template(&who, &p.uid, p.msid, p.tid).await?;
    let uri = format!("{}/formats", template_uri(&p.uid, p.msid, p.tid));
    let doc = docs::ImageFormats {
        total: 1,
        image_formats: docs::ImageFormatItems {
            image_format: vec![docker_format(Some(format!("{uri}/{FORMAT_DOCKER}")))],
        },
    };
    Ok(Doc::ok(f, "imageFormats", doc).into_response())
}

// ------------------------------------------------------------------ images

async fn generate(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    headers: HeaderMap,
    p: TemplatePath,
    body: Body,
) -> R {
    let (st, who, p) = (&st, &who, &p);
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
                    &p.uid,
                    p.msid,
                    p.tid,
                    ImageRequest {
                        format,
                        name: input.name,
                        compress: input.compress.unwrap_or(false),
                    },
                )
                .await?;
            let doc = image_doc(&p.uid, &i, None);
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
    headers: HeaderMap,
    p: TemplatePath,
) -> R {
    let is = st.satchel.list_images(&who, &p.uid, p.msid, p.tid).await?;
    let mut items: Vec<_> = is.iter().map(|i| image_doc(&p.uid, i, None)).collect();
    registering_names(&st, &who, &p.uid, &headers, &is, &mut items).await?;
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
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> R {
    let is = st.satchel.list_user_images(&who, &uid).await?;
    let mut items: Vec<_> = is.iter().map(|i| image_doc(&uid, i, None)).collect();
    registering_names(&st, &who, &uid, &headers, &is, &mut items).await?;
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
    headers: HeaderMap,
    p: ImagePath,
) -> R {
    let i = st
        .satchel
        .image(&who, &p.uid, p.msid, p.tid, p.itid)
        .await?;
    let key = st.satchel.new_download_key(&i).await?;
    let mut doc = [image_doc(&p.uid, &i, key.as_deref())];
    registering_names(
        &st,
        &who,
        &p.uid,
        &headers,
        std::slice::from_ref(&i),
        &mut doc,
    )
    .await?;
    let [doc] = doc;
    Ok(Doc::ok(f, "image", doc)
        // The id in it is a credential that works once: never cache this document.
        .header(header::CACHE_CONTROL, "no-store")
        .into_response())
}

async fn delete_image(State(st): State<AppState>, Auth(who): Auth, p: ImagePath) -> R {
    st.satchel
        .delete_image(&who, &p.uid, p.msid, p.tid, p.itid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn image_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Conditional(headers): Conditional,
    p: ImagePath,
) -> R {
    let i = st
        .satchel
        .image_status(&who, &p.uid, (p.msid, p.tid, p.itid))
        .await?;
    status_reply(&st.statuses, f, &headers, &p.uid, &i, |i| {
        image_status_doc(&p.uid, i)
    })
}

/// Cancels the generation; answers the status as it is afterwards.
async fn cancel_image(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: ImagePath) -> R {
    let c = st
        .satchel
        .cancel_image(&who, &p.uid, p.msid, p.tid, p.itid)
        .await?;
    let mut doc = image_status_doc(&p.uid, &c.ticket);
    doc.message = c.message();
    Ok(Doc::ok(f, "status", doc).into_response())
}

async fn download(
    State(st): State<AppState>,
    Query(q): Query<DownloadQuery>,
    p: ImagePath,
    parts: Parts,
) -> R {
    serve_image(&st, parts, q, p, None).await
}

async fn download_named(
    State(st): State<AppState>,
    Query(q): Query<DownloadQuery>,
    p: ImageFilePath,
    parts: Parts,
) -> R {
    let ImageFilePath {
        uid,
        msid,
        tid,
        itid,
        file,
    } = p;
    let p = ImagePath {
        uid,
        msid,
        tid,
        itid,
    };
    serve_image(&st, parts, q, p, Some(&file)).await
}

async fn serve_image(
    st: &AppState,
    parts: Parts,
    q: DownloadQuery,
    p: ImagePath,
    file: Option<&str>,
) -> R {
    let route = ArchiveTicket::Image {
        msid: p.msid,
        tid: p.tid,
        itid: p.itid,
    };
    serve_archive(st, parts, q, (&p.uid, route), file, |_| "application/x-tar").await
}
