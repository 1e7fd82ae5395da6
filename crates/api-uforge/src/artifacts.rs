//! A bundle's files and folders (`softwareArtifact`), their content uploads and downloads.

use crate::docs;
use crate::download::serve_blob;
use crate::extract::{
    body_stream, write_doc, ArtifactFilePath, ArtifactPath, Auth, BundlePath, Fmt,
};
use crate::idempotency::Idem;
use crate::render::{artifact_doc, file_download};
use crate::wire::{ApiError, Doc};
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_api_doc::Table;
use satchel_domain::model::ArtifactInput;

type R = Result<Response, ApiError>;

/// `ms` is the path of one bundle.
pub fn routes(ms: &str) -> Table<AppState> {
    let arts = format!("{ms}/artifacts");
    let a = format!("{arts}/{{said}}");
    Table::new()
        .get(&arts, "A bundle's files and folders", list_artifacts)
        .post(&arts, "Add a file or folder", create_artifact)
        .get(&a, "A file or folder", get_artifact)
        .put(&a, "Update a file or folder", update_artifact)
        .delete(&a, "Delete a file or folder", delete_artifact)
        .post(
            &format!("{a}/subsoftwareartifacts"),
            "Add a file or folder inside a folder",
            create_child_artifact,
        )
        .get(&format!("{a}/bin"), "Download a file", download_artifact)
        .get(
            &format!("{a}/bin/{{file}}"),
            "Download a file by name",
            download_artifact_named,
        )
        .post(
            &format!("{a}/bin/{{file}}"),
            "Upload a file's content",
            upload_artifact,
        )
}

fn artifact_input(d: docs::SoftwareArtifactIn) -> ArtifactInput {
    ArtifactInput {
        name: d.name,
        kind: d.kind,
        tag: d.tag,
        install_location: d.install_location,
    }
}

async fn list_artifacts(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: BundlePath,
) -> R {
    let (_, arts) = st.satchel.list_artifacts(&who, &p.uid, p.msid).await?;
    let items: Vec<_> = arts.iter().map(|a| artifact_doc(&p.uid, a)).collect();
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
    p: BundlePath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let b = st.satchel.bundle(&who, &p.uid, p.msid).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", false).await?;
    let a = st
        .satchel
        .create_artifact(&b, artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&p.uid, &a))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn create_child_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ArtifactPath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let parent = st.satchel.artifact(&who, &p.uid, p.msid, p.said).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", false).await?;
    let a = st
        .satchel
        .create_child_artifact(&parent, artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&p.uid, &a))
        .with_status(StatusCode::CREATED)
        .into_response())
}

async fn get_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ArtifactPath,
) -> R {
    let a = st.satchel.artifact(&who, &p.uid, p.msid, p.said).await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&p.uid, a.artifact())).into_response())
}

async fn update_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    Fmt(f): Fmt,
    p: ArtifactPath,
    headers: HeaderMap,
    body: Body,
) -> R {
    let a = st.satchel.artifact(&who, &p.uid, p.msid, p.said).await?;
    let input: docs::SoftwareArtifactIn =
        write_doc(&st, &who, &headers, body, "softwareArtifact", true).await?;
    let a = st
        .satchel
        .update_artifact(&a, artifact_input(input))
        .await?;
    Ok(Doc::ok(f, "softwareArtifact", artifact_doc(&p.uid, &a)).into_response())
}

async fn delete_artifact(State(st): State<AppState>, Auth(who): Auth, p: ArtifactPath) -> R {
    st.satchel
        .delete_artifact(&who, &p.uid, p.msid, p.said)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn upload_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    idem: Idem,
    Fmt(f): Fmt,
    p: ArtifactFilePath,
    body: Body,
) -> R {
    // Resolve before reading the body: a foreign or missing artifact answers 404 without consuming it.
    let a = st.satchel.artifact(&who, &p.uid, p.msid, p.said).await?;
    satchel_domain::names::validate_file_name(&p.file)?;
    idem.once_upload(&st, &who, body, |body| async {
        let a = st
            .satchel
            .upload_artifact_file(&a, &p.file, body_stream(body))
            .await?;
        let sha256 = a
            .blob
            .as_ref()
            .map(|b| b.sha256.clone())
            .unwrap_or_default();
        Ok((
            Doc::ok(f, "softwareArtifact", artifact_doc(&p.uid, &a)).into_response(),
            sha256,
        ))
    })
    .await
}

async fn download_artifact(
    State(st): State<AppState>,
    Auth(who): Auth,
    p: ArtifactPath,
    headers: HeaderMap,
) -> R {
    let (a, blob) = st
        .satchel
        .artifact_file(&who, &p.uid, p.msid, p.said, None)
        .await?;
    serve_blob(&st.satchel.blobs, &headers, file_download(&a.name, &blob)).await
}

async fn download_artifact_named(
    State(st): State<AppState>,
    Auth(who): Auth,
    p: ArtifactFilePath,
    headers: HeaderMap,
) -> R {
    let (a, blob) = st
        .satchel
        .artifact_file(&who, &p.uid, p.msid, p.said, Some(&p.file))
        .await?;
    serve_blob(&st.satchel.blobs, &headers, file_download(&a.name, &blob)).await
}
