//! Account, keys, images and ExportImage routes.

use crate::error::Code;
use crate::idempotency::Idem;
use crate::{json_response, no_content, Caller, CloudError, CloudState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use futures::TryStreamExt;
use satchel_domain::cloud::service::{account_uuid, rfc3339};
use satchel_domain::cloud::{ExportState, Image, ImageExport, ImageInput, ImageUpdate, SshKey};
use satchel_domain::model::User;
use serde_json::{json, Value};
use std::collections::HashMap;

type Reply = Result<Response, CloudError>;
type Params = Query<HashMap<String, String>>;

/// The account a URL names, as the caller may see it: their own (or `my`). Any other account answers
/// exactly like one that does not exist.
pub(crate) fn account<'a>(caller: &'a Caller, login: &str) -> Result<&'a User, CloudError> {
    if login == "my" || login == caller.0.login {
        Ok(&caller.0)
    } else {
        Err(CloudError::not_found(format!("{login} does not exist")))
    }
}

fn ok(body: Value) -> Reply {
    Ok(json_response(StatusCode::OK, &body))
}

fn parse_body(body: &Bytes) -> Result<serde_json::Map<String, Value>, CloudError> {
    if body.is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CloudError::new(
            Code::InvalidContent,
            "the body must be a JSON object",
        )),
        Err(e) => Err(CloudError::new(
            Code::InvalidContent,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn string_field(m: &serde_json::Map<String, Value>, f: &str) -> Result<Option<String>, CloudError> {
    match m.get(f) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CloudError::invalid_argument(format!(
            "{f} must be a string"
        ))),
    }
}

pub async fn get_account(Extension(caller): Extension<Caller>, Path(login): Path<String>) -> Reply {
    let u = account(&caller, &login)?;
    ok(json!({
        "id": account_uuid(u.id),
        "login": u.login,
        "email": "",
        "created": rfc3339(u.created),
        "updated": rfc3339(u.created),
    }))
}

fn key_json(k: &SshKey) -> Value {
    json!({"name": k.name, "fingerprint": k.fingerprint, "key": k.key})
}

pub async fn list_keys(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(login): Path<String>,
) -> Reply {
    let u = account(&caller, &login)?;
    let keys = st.cloud.list_keys(u).await?;
    ok(Value::Array(keys.iter().map(key_json).collect()))
}

pub async fn create_key(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(login): Path<String>,
    body: Bytes,
) -> Reply {
    let u = account(&caller, &login)?;
    let m = parse_body(&body)?;
    let key = string_field(&m, "key")?
        .ok_or_else(|| CloudError::missing_parameter("key is a required argument"))?;
    let name = string_field(&m, "name")?;
    let k = st.cloud.add_key(u, name.as_deref(), &key).await?;
    Ok(json_response(StatusCode::CREATED, &key_json(&k)))
}

pub async fn get_key(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, key)): Path<(String, String)>,
) -> Reply {
    let u = account(&caller, &login)?;
    ok(key_json(&st.cloud.get_key(u, &key).await?))
}

pub async fn delete_key(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, key)): Path<(String, String)>,
) -> Reply {
    let u = account(&caller, &login)?;
    st.cloud.delete_key(u, &key).await?;
    Ok(no_content())
}

/// An image as CloudAPI shows it.
fn image_json(i: &Image) -> Value {
    let mut v = json!({
        "id": i.id,
        "name": i.name,
        "version": i.version,
        "os": i.os,
        "type": i.kind,
        "requirements": {},
        "state": i.state.as_str(),
        "public": i.public,
        "owner": account_uuid(i.owner_id),
        "files": i.file.iter().map(|f| json!({
            "compression": f.compression.as_str(),
            "sha1": f.sha1,
            "size": f.size,
        })).collect::<Vec<_>>(),
    });
    if let Some(o) = v.as_object_mut() {
        if let Some(d) = &i.description {
            o.insert("description".into(), d.clone().into());
        }
        if let Some(p) = i.published_at {
            o.insert("published_at".into(), rfc3339(p).into());
        }
    }
    v
}

pub async fn list_images(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path(login): Path<String>,
    Query(q): Params,
) -> Reply {
    let u = account(&caller, &login)?;
    let images = st.cloud.list_images(u).await?;
    let keep = |i: &&Image| {
        q.get("name").is_none_or(|n| &i.name == n)
            && q.get("version").is_none_or(|n| &i.version == n)
            && q.get("os").is_none_or(|n| &i.os == n)
            && q.get("state")
                .is_none_or(|n| n == "all" || i.state.as_str() == n)
            && q.get("type").is_none_or(|n| &i.kind == n)
    };
    ok(Value::Array(
        images.iter().filter(keep).map(image_json).collect(),
    ))
}

pub async fn create_image(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    idem: Idem,
    Path(login): Path<String>,
    body: Bytes,
) -> Reply {
    let u = account(&caller, &login)?;
    idem.once(&st, u, &body, new_image(&st, u, &body)).await
}

async fn new_image(st: &CloudState, u: &User, body: &Bytes) -> Reply {
    let m = parse_body(body)?;
    let public = match m.get("public") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(CloudError::invalid_argument("public must be a boolean")),
    };
    let input = ImageInput {
        name: string_field(&m, "name")?,
        version: string_field(&m, "version")?,
        os: string_field(&m, "os")?,
        kind: string_field(&m, "type")?,
        description: string_field(&m, "description")?,
        public,
    };
    let image = st.cloud.create_image(u, input).await?;
    let mut r = json_response(StatusCode::CREATED, &image_json(&image));
    if let Ok(v) = HeaderValue::from_str(&format!("/{}/images/{}", u.login, image.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

pub async fn get_image(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, id)): Path<(String, String)>,
) -> Reply {
    let u = account(&caller, &login)?;
    ok(image_json(&st.cloud.image(u, &id).await?))
}

pub async fn delete_image(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, id)): Path<(String, String)>,
) -> Reply {
    let u = account(&caller, &login)?;
    st.cloud.delete_image(u, &id).await?;
    Ok(no_content())
}

pub async fn put_image_file(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, id)): Path<(String, String)>,
    Query(q): Params,
    body: Body,
) -> Reply {
    let u = account(&caller, &login)?;
    let compression = q.get("compression").map(String::as_str).unwrap_or("none");
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let image = st
        .cloud
        .upload_image_file(
            u,
            &id,
            compression,
            q.get("sha1").map(String::as_str),
            stream,
        )
        .await?;
    ok(image_json(&image))
}

fn base_url(st: &CloudState, headers: &HeaderMap) -> String {
    if let Some(u) = &st.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `POST /{login}/images/{id}?action=...`: `export` (ExportImage), `activate`, `update`
/// (UpdateImage, fields in the JSON body), `clone` (CloneImage).
pub async fn image_action(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    idem: Idem,
    Path((login, id)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let u = account(&caller, &login)?;
    idem.once(&st, u, &body, act(&st, u, id, q, &headers, &body))
        .await
}

/// UpdateImage's body: the fields this server keeps; IMGAPI's others are refused by name rather
/// than dropped, so a client never believes it set them.
fn image_update(body: &Bytes) -> Result<ImageUpdate, CloudError> {
    let m = parse_body(body)?;
    if let Some(k) = m
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "version" | "description"))
    {
        return Err(CloudError::invalid_argument(format!(
            "{k} cannot be updated on this server (name, version and description can)"
        )));
    }
    Ok(ImageUpdate {
        name: string_field(&m, "name")?,
        version: string_field(&m, "version")?,
        description: string_field(&m, "description")?,
    })
}

async fn act(
    st: &CloudState,
    u: &User,
    id: String,
    q: HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Reply {
    match q.get("action").map(String::as_str) {
        Some("export") => {
            let manta_path = q
                .get("manta_path")
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    CloudError::missing_parameter("missing 'manta_path' prefix parameter")
                })?
                .clone();
            let asynchronous = match q.get("async").map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(CloudError::invalid_argument(format!(
                        "async must be true or false, not {other:?}"
                    )))
                }
            };
            if asynchronous {
                let e = st.cloud.start_export(u, &id, &manta_path).await?;
                let mut r = json_response(StatusCode::ACCEPTED, &export_json(st, headers, &e));
                if let Ok(v) =
                    HeaderValue::from_str(&format!("/{}/images/{}/exports/{}", u.login, id, e.id))
                {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                return Ok(r);
            }
            // Run to completion even if the client goes away: an export is never left half done.
            let cloud = st.cloud.clone();
            let user = u.clone();
            let task =
                tokio::spawn(async move { cloud.export_image(&user, &id, &manta_path).await });
            let t = task.await.map_err(|e| {
                tracing::error!(error = %e, "export task failed");
                CloudError::new(Code::InternalError, "export failed")
            })??;
            ok(json!({
                "manta_url": base_url(st, headers),
                "image_path": t.image_path,
                "manifest_path": t.manifest_path,
            }))
        }
        Some("activate") => ok(image_json(&st.cloud.activate_image(u, &id).await?)),
        Some("update") => {
            let upd = image_update(body)?;
            ok(image_json(&st.cloud.update_image(u, &id, upd).await?))
        }
        Some("clone") => ok(image_json(&st.cloud.clone_image(u, &id).await?)),
        Some(other) => Err(CloudError::invalid_argument(format!(
            "unsupported action {other:?} (supported: export, activate, update, clone)"
        ))),
        None => Err(CloudError::missing_parameter(
            "action is a required argument",
        )),
    }
}

fn export_json(st: &CloudState, headers: &HeaderMap, e: &ImageExport) -> Value {
    let mut v = json!({
        "id": e.id,
        "image_id": e.image_id,
        "manta_path": e.manta_path,
        "state": e.state.as_str(),
        "created": rfc3339(e.created),
        "updated": rfc3339(e.modified),
    });
    if let Some(o) = v.as_object_mut() {
        if e.state == ExportState::Complete {
            o.insert("manta_url".into(), base_url(st, headers).into());
            o.insert("image_path".into(), e.image_path.clone().into());
            o.insert("manifest_path".into(), e.manifest_path.clone().into());
        }
        if let Some(err) = &e.error {
            o.insert("error".into(), json!({"message": err}));
        }
    }
    v
}

pub async fn get_export(
    State(st): State<CloudState>,
    Extension(caller): Extension<Caller>,
    Path((login, id, eid)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Reply {
    let u = account(&caller, &login)?;
    let e = st.cloud.get_export(u, &eid).await?;
    if e.image_id != id {
        return Err(CloudError::not_found(format!("export {eid} not found")));
    }
    ok(export_json(&st, &headers, &e))
}
