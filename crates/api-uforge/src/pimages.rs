//! Publications of container images (`pimages`: UForge's `containerTemplateImage-publish` family),
//! under `/api/users/{uid}/mysoftware/{msid}/templates/{tid}/images/{itid}/pimages`, the user's
//! list (`/api/users/{uid}/pimages`, what `hammr image list/info` read), an image's package list and
//! the user's image statuses. A publication makes the image pullable from the pull endpoint
//! (`satchel-api-registry`) as `<host>/<login>/<repository>:<tag>`.

use crate::docs;
use crate::extract::{write_doc, Auth, Fmt, ImagePath, PimagePath};
use crate::render::{image_status_doc, op_status, ticket_status_doc};
use crate::wire::{ApiError, Doc, Format};
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::*;
use satchel_domain::registry::{PublishRequest, PublishView};

type R = Result<Response, ApiError>;

pub fn routes(ms: &str) -> Table<AppState> {
    let i = format!("{ms}/templates/{{tid}}/images/{{itid}}");
    let p = format!("{i}/pimages/{{ptiid}}");
    Table::new()
        .post(
            &format!("{i}/pimages"),
            "Publish an image to the pull endpoint (a ticket)",
            publish,
        )
        .get(&p, "A publication", get_pimage)
        .delete(
            &p,
            "Unpublish (the reference and its unshared blobs)",
            delete_pimage,
        )
        .get(
            &format!("{p}/status"),
            "A publication's status",
            pimage_status,
        )
        .delete(
            &format!("{p}/cancel"),
            "Cancel a publication",
            cancel_pimage,
        )
        .get(
            "/api/users/{uid}/pimages",
            "The user's publications",
            list_user_pimages,
        )
        .get(&format!("{i}/pkgs"), "An image's package list", pkgs)
        .get(
            "/api/users/{uid}/images/status",
            "The statuses of the user's images",
            images_status,
        )
}

/// The host clients pull from: the request's own `Host` (the pull endpoint shares the port), if
/// it is a plain host[:port].
pub(crate) fn registry_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost")
        .to_string()
}

fn image_uri(uid: &str, (msid, tid, itid): (Id, Id, Id)) -> String {
    format!("users/{uid}/mysoftware/{msid}/templates/{tid}/images/{itid}")
}

fn pimage_doc(uid: &str, host: &str, v: &PublishView, f: Format) -> docs::PublishImageDoc {
    let t = &v.ticket;
    let image = v
        .image
        .map(|ids| image_uri(uid, ids))
        .unwrap_or_else(|| format!("users/{uid}/images/{}", t.subject_id));
    let uri = format!("{image}/pimages/{}", t.id);
    let reference = format!("{host}/{uid}/{}:{}", t.subject_name, t.subject_version);
    let published = v.published.as_ref();
    docs::PublishImageDoc {
        xml: f == Format::Xml,
        created: docs::iso(t.created),
        db_id: t.id,
        digest: published.map(|p| p.manifest_digest.clone()),
        last_modified: docs::iso(t.modified),
        size: published.map(|p| p.total_size).unwrap_or(0),
        status: op_status(t, Some(format!("{uri}/status"))),
        parent_uri: image.clone(),
        cred_account: docs::CredAccountDoc {
            xml: f == Format::Xml,
            xsi_type: "CredAccountDocker",
            created: docs::iso(t.created),
            db_id: 0,
            last_modified: docs::iso(t.created),
            name: "satchel-registry".into(),
            uri: format!("users/{uid}/pimages"),
            target_platform: docs::TargetPlatformRef {
                name: Some("Docker".into()),
                kind: Some("docker".into()),
            },
            certificates: None,
            values: vec![
                ("endpointUrl", host.to_string()),
                ("login", uid.to_string()),
            ],
        },
        name: t.subject_name.clone(),
        status_uri: format!("{uri}/status"),
        uri,
        version: t.subject_version.clone(),
        registering_name: published.map(|_| reference.clone()),
        cloud_id: published.map(|_| reference),
        image_uri: image,
        namespace: format!("{host}/{uid}"),
        repository_name: t.subject_name.clone(),
        tag_name: t.subject_version.clone(),
    }
}

async fn publish(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    p: ImagePath,
    body: Body,
) -> R {
    // An empty body publishes under the image's own name and version.
    let input: docs::PublishImageIn =
        write_doc(&st, &who, &headers, body, "publishImage", false).await?;
    let ids = (p.msid, p.tid, p.itid);
    let t = st
        .satchel
        .publish_image(
            &who,
            &p.uid,
            ids,
            PublishRequest {
                repository: input.repository_name,
                tag: input.tag_name,
            },
        )
        .await?;
    let v = PublishView {
        ticket: t,
        published: None,
        image: Some(ids),
    };
    let doc = pimage_doc(&p.uid, &registry_host(&headers), &v, f);
    let location = format!("/api/{}", doc.uri);
    Ok(Doc::ok(f, "publishImage", doc)
        .with_status(StatusCode::CREATED)
        .header(header::LOCATION, &location)
        .into_response())
}

fn ids(p: &PimagePath) -> (Id, Id, Id) {
    (p.msid, p.tid, p.itid)
}

async fn get_pimage(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    p: PimagePath,
) -> R {
    let v = st.satchel.pimage(&who, &p.uid, ids(&p), p.ptiid).await?;
    let doc = pimage_doc(&p.uid, &registry_host(&headers), &v, f);
    Ok(Doc::ok(f, "publishImage", doc).into_response())
}

async fn delete_pimage(State(st): State<AppState>, Auth(who): Auth, p: PimagePath) -> R {
    st.satchel
        .delete_pimage(&who, &p.uid, ids(&p), p.ptiid)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn pimage_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: PimagePath,
) -> R {
    let v = st.satchel.pimage(&who, &p.uid, ids(&p), p.ptiid).await?;
    let uri = format!("{}/pimages/{}", image_uri(&p.uid, ids(&p)), p.ptiid);
    let mut doc = ticket_status_doc(&v.ticket, &uri);
    doc.parent_uri = Some(uri);
    Ok(Doc::ok(f, "status", doc).into_response())
}

/// Cancels the publication; answers its status as it is afterwards.
async fn cancel_pimage(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: PimagePath,
) -> R {
    let c = st
        .satchel
        .cancel_pimage(&who, &p.uid, ids(&p), p.ptiid)
        .await?;
    let uri = format!("{}/pimages/{}", image_uri(&p.uid, ids(&p)), p.ptiid);
    let mut doc = ticket_status_doc(&c.ticket, &uri);
    doc.parent_uri = Some(uri);
    doc.message = c.message();
    Ok(Doc::ok(f, "status", doc).into_response())
}

async fn list_user_pimages(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    headers: HeaderMap,
    Path(uid): Path<String>,
) -> R {
    let host = registry_host(&headers);
    let vs = st.satchel.list_user_pimages(&who, &uid).await?;
    let items: Vec<_> = vs.iter().map(|v| pimage_doc(&uid, &host, v, f)).collect();
    let doc = docs::PublishImages {
        total: items.len() as i64,
        publish_images: docs::PublishImageItems {
            publish_image: items,
        },
    };
    Ok(Doc::ok(f, "publishImages", doc).into_response())
}

/// A container image holds a bundle's files, not distribution packages: the list is empty (the
/// files are the bundle's, listed under its artifacts).
async fn pkgs(State(st): State<AppState>, Auth(who): Auth, Fmt(f): Fmt, p: ImagePath) -> R {
    st.satchel
        .image(&who, &p.uid, p.msid, p.tid, p.itid)
        .await?;
    let doc = docs::ImagePkgs {
        total: 0,
        image_pkgs: docs::ImagePkgItems::default(),
    };
    Ok(Doc::ok(f, "imagePkgs", doc).into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StatusQuery {
    /// Image ids, comma-separated; all of the user's when absent.
    img: Option<String>,
}

/// The statuses of the user's images (all, or those `img` names).
async fn images_status(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    Path(uid): Path<String>,
    Query(q): Query<StatusQuery>,
) -> R {
    let wanted: Option<Vec<Id>> = match q.img.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| {
                    s.trim().parse::<Id>().map_err(|_| {
                        ApiError::bad_request(format!("img: {s:?} is not an image id"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let is = st.satchel.list_user_images(&who, &uid).await?;
    let items: Vec<_> = is
        .iter()
        .filter(|i| wanted.as_ref().is_none_or(|w| w.contains(&i.id)))
        .map(|i| image_status_doc(&uid, i))
        .collect();
    let doc = docs::OpStatuses {
        total: items.len() as i64,
        statuses: docs::StatusItems { status: items },
    };
    Ok(Doc::ok(f, "statuses", doc).into_response())
}

/// Sets each complete image's `registeringName`: the reference it is published under, else the
/// one it would be published under by default (hammr's `image download` prints `docker pull` it).
pub(crate) async fn registering_names(
    st: &AppState,
    who: &Principal,
    uid: &str,
    headers: &HeaderMap,
    images: &[Ticket],
    out: &mut [docs::Image],
) -> Result<(), ApiError> {
    if !images.iter().any(|i| i.state == TicketState::Complete) {
        return Ok(());
    }
    let host = registry_host(headers);
    let published = st.satchel.list_user_pimages(who, uid).await?;
    for (i, doc) in images.iter().zip(out.iter_mut()) {
        if i.state != TicketState::Complete {
            continue;
        }
        let (repo, tag) = published
            .iter()
            .find(|v| v.ticket.subject_id == i.id && v.published.is_some())
            .map(|v| {
                (
                    v.ticket.subject_name.clone(),
                    v.ticket.subject_version.clone(),
                )
            })
            .unwrap_or_else(|| satchel_domain::registry::default_reference(i));
        doc.registering_name = Some(format!("{host}/{uid}/{repo}:{tag}"));
    }
    Ok(())
}
