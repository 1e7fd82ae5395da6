//! Image publication (pimages) and the pull endpoint's rules (the OCI distribution API's read side).
//!
//! Publishing a generated container image is a ticket of kind `ImagePublish` (subject: the image's
//! ticket; subject name and version: repository and tag). Its job reads the image's OCI layout
//! archive through the hostile-safe reader and writes each blob (manifest, config, layers) to a
//! content-addressed key of the owner's (`u/{owner}/registry/blobs/sha256/<hex>`), published only
//! once its sha256 matches the digest it is named by; the reference is recorded in the transaction
//! that completes the ticket. Blobs are shared by the owner's references with the same content and
//! deleted with the last one (`RegistryStore::delete_publish`). What the pull endpoint serves is
//! private: only the owner (and admins) resolve `<login>/<repository>`; anyone else sees no such
//! repository, as with a missing one.

use crate::container::ref_component;
use crate::export::{Failure, TicketRunner};
use crate::importer::{send_member, ChannelRead, Piece};
use crate::model::*;
use crate::service::Satchel;
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::StreamExt;
use satchel_archive::reader::{read_archive, ReadError};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest `index.json` or manifest read into memory.
const MAX_DOC: u64 = 1 << 20;

/// The owner's content-addressed key of a blob (`hex`: a sha256 in lowercase hex).
pub fn registry_blob_key(owner: Id, hex: &str) -> String {
    format!("u/{owner}/registry/blobs/sha256/{hex}")
}

/// Everything the owner's references may hold: a live publish may write anywhere in it.
pub(crate) fn registry_prefix(owner: Id) -> String {
    format!("u/{owner}/registry/")
}

/// The hex of a `sha256:<64 lowercase hex>` digest, or None for anything else.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// The repository and tag an image is published under unless the request names others: its
/// name and version as OCI reference components.
pub fn default_reference(i: &Ticket) -> (String, String) {
    let name = i
        .image
        .as_ref()
        .map(|s| s.name.as_str())
        .unwrap_or(&i.subject_name);
    (
        ref_component(name, "image"),
        ref_component(&i.subject_version, "latest"),
    )
}

/// What a client asks to publish; the image's name and version when unsaid.
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    pub repository: Option<String>,
    pub tag: Option<String>,
}

/// A publish ticket with its reference once complete.
#[derive(Debug, Clone)]
pub struct PublishView {
    pub ticket: Ticket,
    pub published: Option<Published>,
    /// The image's route ids (bundle, template, image), for its URI.
    pub image: Option<(Id, Id, Id)>,
}

/// A manifest to serve: the reference it belongs to and where its bytes are.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub published: Published,
    pub blob: PublishedBlob,
}

impl Satchel {
    /// A publish ticket of the image in the path.
    pub async fn pimage(
        &self,
        who: &Principal,
        uid: &str,
        (msid, tid, itid): (Id, Id, Id),
        ptiid: Id,
    ) -> Result<PublishView> {
        let i = self.image(who, uid, msid, tid, itid).await?;
        match self.store.get_ticket(i.owner_id, ptiid).await? {
            Some(t) if t.kind == TicketKind::ImagePublish && t.subject_id == i.id => {
                let published = self.store.published(t.owner_id, t.id).await?;
                Ok(PublishView {
                    ticket: t,
                    published,
                    image: Some((msid, tid, itid)),
                })
            }
            _ => Err(DomainError::not_found(format!(
                "publication {ptiid} of image {itid}"
            ))),
        }
    }

    /// Queues the publication of a generated image (and wakes a worker).
    pub async fn publish_image(
        &self,
        who: &Principal,
        uid: &str,
        (msid, tid, itid): (Id, Id, Id),
        req: PublishRequest,
    ) -> Result<Ticket> {
        let i = self.image(who, uid, msid, tid, itid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        if i.state != TicketState::Complete || i.archive.is_none() {
            return Err(DomainError::Conflict(format!(
                "image {itid} is not generated yet ({}); publish it once its status is complete",
                i.state.as_str()
            )));
        }
        let (name, version) = default_reference(&i);
        let repository = match req.repository.as_deref().map(str::trim) {
            Some(r) if !r.is_empty() => ref_component(r, "image"),
            _ => name,
        };
        let tag = match req.tag.as_deref().map(str::trim) {
            Some(t) if !t.is_empty() => ref_component(t, "latest"),
            _ => version,
        };
        // One live or complete publication per tag: unpublish it first.
        let taken = self
            .store
            .list_tickets(i.owner_id)
            .await?
            .into_iter()
            .any(|t| {
                t.kind == TicketKind::ImagePublish
                    && t.subject_name == repository
                    && t.subject_version == tag
                    && matches!(
                        t.state,
                        TicketState::Queued | TicketState::Running | TicketState::Complete
                    )
            });
        if taken {
            return Err(DomainError::Conflict(format!(
                "{repository}:{tag} is published already; delete that publication first"
            )));
        }
        self.quota().check_ticket(i.owner_id).await?;
        let t = self
            .store
            .create_ticket(&NewTicket {
                owner_id: i.owner_id,
                kind: TicketKind::ImagePublish,
                image: None,
                import: None,
                takeout: None,
                subject_id: i.id,
                subject_name: repository,
                subject_version: tag,
                format: OutputFormat::Yaml,
                max_attempts: self.config.max_attempts,
            })
            .await?;
        Ok(self.queued(t))
    }

    /// Every publication of the user (what `GET /users/{uid}/pimages` lists), with the route ids of
    /// the image each came from when it still exists.
    pub async fn list_user_pimages(&self, who: &Principal, uid: &str) -> Result<Vec<PublishView>> {
        let owner = self.target(who, uid).await?;
        let tickets = self.store.list_tickets(owner.id).await?;
        let published = self.store.list_published(owner.id).await?;
        let mut out = Vec::new();
        for t in tickets
            .iter()
            .filter(|t| t.kind == TicketKind::ImagePublish)
        {
            let image = tickets
                .iter()
                .find(|i| i.id == t.subject_id && i.kind == TicketKind::ContainerImage)
                .and_then(|i| Some((i.subject_id, i.template_id()?, i.id)));
            out.push(PublishView {
                ticket: t.clone(),
                published: published.iter().find(|p| p.ticket_id == t.id).cloned(),
                image,
            });
        }
        Ok(out)
    }

    /// Unpublishes: the reference goes at once (pulls fail from then on), then the blobs no other
    /// reference holds. A running publication stops and removes what it wrote.
    pub async fn delete_pimage(
        &self,
        who: &Principal,
        uid: &str,
        ids: (Id, Id, Id),
        ptiid: Id,
    ) -> Result<()> {
        let v = self.pimage(who, uid, ids, ptiid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        self.unpublish(&v.ticket).await
    }

    pub(crate) async fn unpublish(&self, t: &Ticket) -> Result<()> {
        let (_, gone) = self
            .store
            .delete_publish(t.owner_id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("publication {}", t.id)))?;
        self.delete_blobs(gone).await;
        Ok(())
    }

    /// Unpublishes every publication of image `itid` (the image is being deleted).
    pub(crate) async fn unpublish_image(&self, owner: Id, itid: Id) -> Result<()> {
        for t in self.store.list_tickets(owner).await? {
            if t.kind == TicketKind::ImagePublish && t.subject_id == itid {
                match self.unpublish(&t).await {
                    Ok(()) | Err(DomainError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Cancels a queued or running publication; its job removes the blobs it wrote.
    pub async fn cancel_pimage(
        &self,
        who: &Principal,
        uid: &str,
        ids: (Id, Id, Id),
        ptiid: Id,
    ) -> Result<Cancelled> {
        let v = self.pimage(who, uid, ids, ptiid).await?;
        self.cancel_resolved(who, v.ticket).await
    }

    // ------------------------------------------------------------ the pull endpoint

    /// The owner of `<login>/...` as the caller may pull from it: themselves, or anyone for an
    /// admin. Anyone else gets the answer a missing repository gets.
    async fn pull_owner(&self, who: &Principal, login: &str, repository: &str) -> Result<User> {
        self.target(who, login).await.map_err(|e| match e {
            DomainError::NotFound(_) => {
                DomainError::not_found(format!("repository {login}/{repository}"))
            }
            other => other,
        })
    }

    /// The manifest `reference` (a tag or a digest) of `<login>/<repository>`.
    pub async fn pull_manifest(
        &self,
        who: &Principal,
        login: &str,
        repository: &str,
        reference: &str,
    ) -> Result<Manifest> {
        let owner = self.pull_owner(who, login, repository).await?;
        let p = self
            .store
            .find_published(owner.id, repository, reference)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("manifest {reference} of {login}/{repository}"))
            })?;
        let blob = PublishedBlob {
            key: registry_blob_key(owner.id, sha256_hex(&p.manifest_digest).unwrap_or_default()),
            digest: p.manifest_digest.clone(),
            size: p.manifest_size,
            media_type: p.media_type.clone(),
        };
        Ok(Manifest { published: p, blob })
    }

    /// A blob of `<login>/<repository>` (only a blob one of its references holds).
    pub async fn pull_blob(
        &self,
        who: &Principal,
        login: &str,
        repository: &str,
        digest: &str,
    ) -> Result<PublishedBlob> {
        let owner = self.pull_owner(who, login, repository).await?;
        self.store
            .published_blob(owner.id, repository, digest)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("blob {digest} of {login}/{repository}")))
    }

    /// The tags of `<login>/<repository>`, sorted; an unknown repository is `NotFound`.
    pub async fn pull_tags(
        &self,
        who: &Principal,
        login: &str,
        repository: &str,
    ) -> Result<Vec<String>> {
        let owner = self.pull_owner(who, login, repository).await?;
        let mut tags: Vec<String> = self
            .store
            .list_published(owner.id)
            .await?
            .into_iter()
            .filter(|p| p.repository == repository)
            .map(|p| p.tag)
            .collect();
        if tags.is_empty() {
            return Err(DomainError::not_found(format!(
                "repository {login}/{repository}"
            )));
        }
        tags.sort();
        Ok(tags)
    }
}

// ---------------------------------------------------------------- the publish job

/// What the writer stored: (hex digest, key, size).
type Stored = Arc<Mutex<Vec<(String, String, i64)>>>;

fn stored_list(s: &Stored) -> Vec<(String, String, i64)> {
    s.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Writes each member it is sent to its content-addressed key, hashing as it goes: a member whose
/// sha256 is not the digest it is named by is aborted, never published.
async fn store_blobs(
    blobs: Arc<dyn satchel_blob::BlobStore>,
    mut pieces: tokio::sync::mpsc::Receiver<Piece>,
    stored: Stored,
) -> std::result::Result<(), String> {
    let mut open: Option<(String, String, satchel_blob::BlobWriter, Sha256, i64)> = None;
    while let Some(p) = pieces.recv().await {
        match p {
            Piece::Start { name: hex, key } => {
                let w = blobs
                    .writer(&key, satchel_blob::Hashes::NONE)
                    .await
                    .map_err(|e| e.to_string())?;
                open = Some((hex, key, w, Sha256::new(), 0));
            }
            Piece::Data(b) => {
                let Some((_, _, w, h, n)) = open.as_mut() else {
                    return Err("data outside a member".into());
                };
                h.update(&b);
                *n += b.len() as i64;
                if let Err(e) = w.write(b).await {
                    if let Some((_, _, w, _, _)) = open.take() {
                        w.abort().await;
                    }
                    return Err(e.to_string());
                }
            }
            Piece::End => {
                let Some((hex, key, w, h, n)) = open.take() else {
                    return Err("end outside a member".into());
                };
                if hex::encode(h.finalize()) != hex {
                    w.abort().await;
                    return Err(format!("blob sha256:{hex} does not match its digest"));
                }
                w.finish().await.map_err(|e| e.to_string())?;
                stored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((hex, key, n));
            }
        }
    }
    if let Some((_, _, w, _, _)) = open.take() {
        w.abort().await; // the reader stopped mid-member
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
}

#[derive(serde::Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Desc>,
}

#[derive(serde::Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    #[serde(default)]
    manifests: Vec<Desc>,
}

impl TicketRunner {
    /// Publishes the image: every blob of its layout to the owner's content-addressed keys, then
    /// the reference with the ticket's completion. On any failure or cancel, the blobs it wrote that
    /// no reference holds are removed.
    pub(crate) async fn publish_image(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let stored: Stored = Arc::default();
        let r = self.publish_inner(t, &stored, cancel).await;
        if r.is_err() {
            let keys: Vec<String> = stored_list(&stored).into_iter().map(|s| s.1).collect();
            if let Ok(gone) = self.store.unreferenced_registry_blobs(&keys).await {
                for k in gone {
                    let _ = self.blobs.delete(&k).await;
                }
            }
        }
        r
    }

    async fn publish_inner(
        &self,
        t: &Ticket,
        stored: &Stored,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let image = self
            .store
            .get_ticket(t.owner_id, t.subject_id)
            .await?
            .filter(|i| i.kind == TicketKind::ContainerImage)
            .ok_or_else(|| Failure::Permanent(format!("image {} was deleted", t.subject_id)))?;
        let archive = match (image.state, &image.archive) {
            (TicketState::Complete, Some(a)) => a.clone(),
            _ => {
                return Err(Failure::Permanent(format!(
                    "image {} is not generated",
                    image.id
                )))
            }
        };
        let mut stream = self
            .blobs
            .get(&archive.key, None)
            .await
            .map_err(|e| match e {
                satchel_blob::BlobError::NotFound(_) => {
                    Failure::Permanent("the image's archive is missing".into())
                }
                other => Failure::Transient(other.into()),
            })?;

        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let (pieces, rx_pieces) = tokio::sync::mpsc::channel::<Piece>(8);
        let writer = tokio::spawn(store_blobs(self.blobs.clone(), rx_pieces, stored.clone()));
        // The image archive is a plain tar unless it was generated with `compress`.
        let limits = satchel_archive::reader::Limits {
            plain_tar: true,
            ..self.import_limits.clone()
        };
        let owner = t.owner_id;
        let stop = cancel.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let input = ChannelRead::new(rx);
            let mut index: Option<Vec<u8>> = None;
            let read = read_archive(input, &limits, |m, r| {
                if m.path == "index.json" {
                    let mut doc = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::Read::take(r, MAX_DOC + 1), &mut doc)
                        .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
                    if doc.len() as u64 > MAX_DOC {
                        return Err(ReadError::caller(&m.path, "index.json is too large"));
                    }
                    index = Some(doc);
                    return Ok(());
                }
                let hex = m
                    .path
                    .strip_prefix("blobs/sha256/")
                    .and_then(|h| sha256_hex(&format!("sha256:{h}")).map(str::to_string));
                match hex {
                    Some(hex) => {
                        let key = registry_blob_key(owner, &hex);
                        send_member(&pieces, hex, key, r, &stop)
                            .map_err(|e| ReadError::caller(&m.path, e))
                    }
                    // `oci-layout` and anything else: not served.
                    None => std::io::copy(r, &mut std::io::sink())
                        .map(|_| ())
                        .map_err(|e| ReadError::caller(&m.path, e.to_string())),
                }
            });
            read.map(|_| index)
        });
        let mut meter = self.meter(t.id, archive.size).await?;
        let fed = self.feed_reader(&mut stream, tx, &mut meter, cancel).await;
        let read = reader.await.map_err(|e| {
            Failure::Transient(DomainError::Internal(
                format!("the image reader stopped: {e}").into(),
            ))
        })?;
        let written = writer.await.map_err(|e| {
            Failure::Transient(DomainError::Internal(
                format!("the blob writer stopped: {e}").into(),
            ))
        })?;
        fed?;
        if cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        if let Err(e) = written {
            return Err(Failure::Transient(DomainError::Internal(
                format!("storing a blob failed: {e}").into(),
            )));
        }
        let index = read
            .map_err(|e| Failure::Permanent(format!("the image archive was refused: {e}")))?
            .ok_or_else(|| Failure::Permanent("the image archive has no index.json".into()))?;
        let stored = stored_list(stored);
        let p = self.reference(t, &index, &stored).await?;
        match self.store.complete_publish(t.id, &p).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Cancelled),
            // Another publication took the tag meanwhile (the check at creation is not a lock).
            Err(DomainError::Conflict(_)) => Err(Failure::Permanent(format!(
                "{}:{} was published meanwhile",
                p.repository, p.tag
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The reference the layout's `index.json` names, with every blob it needs (each one stored).
    async fn reference(
        &self,
        t: &Ticket,
        index: &[u8],
        stored: &[(String, String, i64)],
    ) -> std::result::Result<NewPublished, Failure> {
        let bad = |m: String| Failure::Permanent(m);
        let index: IndexDoc = serde_json::from_slice(index)
            .map_err(|e| bad(format!("index.json is not an OCI index: {e}")))?;
        let top = match index.manifests.as_slice() {
            [one] => one,
            [] => return Err(bad("index.json lists no manifest".into())),
            // Several images in one layout: publish them as the index itself lists them.
            _ => return Err(bad("index.json lists several manifests".into())),
        };
        let find = |d: &Desc, media: &str| -> std::result::Result<PublishedBlob, Failure> {
            let hex = sha256_hex(&d.digest)
                .ok_or_else(|| bad(format!("unsupported digest {}", d.digest)))?;
            let (_, key, size) = stored
                .iter()
                .find(|s| s.0 == hex)
                .ok_or_else(|| bad(format!("blob {} is missing from the layout", d.digest)))?;
            if d.size != *size {
                return Err(bad(format!(
                    "blob {} holds {size} bytes, its descriptor says {}",
                    d.digest, d.size
                )));
            }
            Ok(PublishedBlob {
                digest: d.digest.clone(),
                key: key.clone(),
                size: *size,
                media_type: if d.media_type.is_empty() {
                    media.to_string()
                } else {
                    d.media_type.clone()
                },
            })
        };
        let top_blob = find(top, MEDIA_OCI_MANIFEST)?;
        let mut blobs = vec![top_blob.clone()];
        // The manifest (or a nested index and its manifests) names the rest.
        let mut todo = vec![top_blob.clone()];
        while let Some(m) = todo.pop() {
            let doc = self.read_doc(&m.key).await?;
            let doc: ManifestDoc = serde_json::from_slice(&doc)
                .map_err(|e| bad(format!("manifest {} is not JSON: {e}", m.digest)))?;
            let is_index = doc.media_type.as_deref() == Some(MEDIA_OCI_INDEX)
                || m.media_type == MEDIA_OCI_INDEX
                || !doc.manifests.is_empty();
            if is_index {
                for d in &doc.manifests {
                    let b = find(d, MEDIA_OCI_MANIFEST)?;
                    blobs.push(b.clone());
                    todo.push(b);
                }
                continue;
            }
            let config = doc
                .config
                .as_ref()
                .ok_or_else(|| bad(format!("manifest {} has no config", m.digest)))?;
            blobs.push(find(config, "application/vnd.oci.image.config.v1+json")?);
            for l in &doc.layers {
                blobs.push(find(l, "application/vnd.oci.image.layer.v1.tar+gzip")?);
            }
        }
        let mut seen = std::collections::HashSet::new();
        blobs.retain(|b| seen.insert(b.digest.clone()));
        Ok(NewPublished {
            image_ticket_id: t.subject_id,
            repository: t.subject_name.clone(),
            tag: t.subject_version.clone(),
            manifest_digest: top_blob.digest.clone(),
            media_type: top_blob.media_type.clone(),
            manifest_size: top_blob.size,
            blobs,
        })
    }

    async fn read_doc(&self, key: &str) -> std::result::Result<Vec<u8>, Failure> {
        let mut s = self
            .blobs
            .get(key, None)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.map_err(|e| Failure::Transient(e.into()))?;
            out.extend_from_slice(&c);
            if out.len() as u64 > MAX_DOC {
                return Err(Failure::Permanent("a manifest is too large".into()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_keys() {
        let hex = "a".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(sha256_hex(&format!("sha256:{}", "A".repeat(64))), None);
        assert_eq!(sha256_hex(&format!("sha512:{hex}")), None);
        assert_eq!(sha256_hex("sha256:../../x"), None);
        assert_eq!(
            registry_blob_key(7, &hex),
            format!("u/7/registry/blobs/sha256/{hex}")
        );
    }
}
