//! The operations the wire faces call. Ownership is decided here, once, by the resolving calls
//! ([`Satchel::owner`], [`Satchel::bundle`], [`Satchel::artifact`], and for tickets `export`,
//! `template`, `image`): they take the authenticated principal and the ids of the URL, and another
//! user's things answer exactly like missing ones. They return handles ([`Owner`], [`OwnedBundle`],
//! [`OwnedArtifact`]); an operation given a handle checks entitlements and rules, never ownership
//! again. An operation given ids resolves them through the same calls.

use crate::auth::{AuthConfig, Authenticator};
use crate::model::*;
use crate::names;
use crate::ports::{OneTimeKeys, Store};
pub use crate::quota::Quota;
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::Stream;
use satchel_blob::BlobStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Config {
    /// How long a completed archive is kept.
    pub retention: Duration,
    /// Attempts per export job before its ticket ends in error.
    pub max_attempts: i32,
    /// Largest accepted file upload.
    pub max_upload: u64,
    /// How long a one-time download id stays valid.
    pub download_key_ttl: Duration,
    /// Limits of the login path.
    pub auth: AuthConfig,
    /// Per-user quotas.
    pub quota: Quota,
    /// Requests per second one user may make (None: no limit).
    pub user_rate: Option<u32>,
    /// Seals API key secrets. The default is a fresh random key (keys do not outlive the process):
    /// `serve` loads a persistent one.
    pub api_key_seal: crate::apikeys::SealKey,
    /// Seals cloud account secrets (`crate::accounts`); like `api_key_seal`, random by default.
    /// Also seals the takeout webhooks' signing secrets (`crate::notify`).
    pub secrets_key: crate::apikeys::SealKey,
    /// Takeout webhooks may go to loopback, private and link-local addresses (tests, closed
    /// networks); refused by default (`crate::notify::check_url`).
    pub notify_allow_private: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 3,
            max_upload: 64 << 30,
            download_key_ttl: Duration::from_secs(3600),
            auth: AuthConfig::default(),
            quota: Quota::default(),
            user_rate: Some(50),
            api_key_seal: crate::apikeys::SealKey::random(),
            secrets_key: crate::apikeys::SealKey::random(),
            notify_allow_private: false,
        }
    }
}

pub struct Satchel {
    pub store: Arc<dyn Store>,
    pub keys: Arc<dyn OneTimeKeys>,
    pub blobs: Arc<dyn BlobStore>,
    pub auth: Authenticator,
    pub config: Config,
    /// Requests per second per user, shared with the CloudAPI face.
    pub rate: Arc<crate::limits::RateLimiter>,
    /// Opens and seals API key secrets (`crate::apikeys`).
    pub(crate) seal: crate::apikeys::SealKey,
    /// Opens and seals cloud account secrets (`crate::accounts`).
    pub(crate) secrets: crate::apikeys::SealKey,
    /// Wakes an idle job worker once a ticket is queued (`Satchel::with_waker`).
    wake: Arc<Notify>,
    /// The store's memory of tickets, which status polls answer from (`crate::polls`); none
    /// unless `Satchel::with_ticket_cache` gives it.
    pub(crate) tickets: Option<Arc<crate::polls::TicketCache>>,
}

fn user_blob_prefix(owner: Id) -> String {
    format!("u/{owner}/files")
}

pub fn archive_key(owner: Id, ticket: Id) -> String {
    format!("u/{owner}/exports/{ticket}/archive.tar.gz")
}

/// Where an import keeps its upload and the files it unpacks (the sweep spares the prefix while the
/// import is live; once it completes, the rows it wrote reference the files).
pub fn import_prefix(owner: Id, ticket: Id) -> String {
    format!("u/{owner}/imports/{ticket}/")
}

impl Satchel {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<dyn OneTimeKeys>,
        blobs: Arc<dyn BlobStore>,
        config: Config,
    ) -> Self {
        let auth = Authenticator::new(store.clone(), config.auth.clone());
        let rate = Arc::new(crate::limits::RateLimiter::new(config.user_rate));
        Satchel {
            store,
            keys,
            blobs,
            auth,
            seal: config.api_key_seal.clone(),
            secrets: config.secrets_key.clone(),
            config,
            rate,
            wake: Arc::new(Notify::new()),
            tickets: None,
        }
    }

    /// Status polls answer from `cache` (the store's, `Store::ticket_cache`) when they can.
    pub fn with_ticket_cache(mut self, cache: Option<Arc<crate::polls::TicketCache>>) -> Self {
        self.tickets = cache;
        self
    }

    /// Wakes `wake` (the job pool's) whenever a ticket is queued, so an idle worker starts at once.
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// A ticket was queued: tell an idle worker.
    pub(crate) fn queued(&self, t: Ticket) -> Ticket {
        self.wake.notify_one();
        t
    }

    /// The user whose things the URL names, as a handle for the operations that create under it.
    pub async fn owner(&self, who: &Principal, uid: &str) -> Result<Owner> {
        let user = self.target(who, uid).await?;
        Ok(Owner {
            who: who.clone(),
            user,
        })
    }

    /// The user whose things the URL names, as the caller may see them.
    pub async fn target(&self, who: &Principal, uid: &str) -> Result<User> {
        if who.user.login == uid {
            return Ok(who.user.clone());
        }
        if who.user.admin {
            if let Some(rec) = self.store.user_by_login(uid).await? {
                return Ok(rec.user);
            }
        }
        Err(DomainError::not_found(format!("user {uid}")))
    }

    pub(crate) fn quota(&self) -> crate::quota::Quotas<'_> {
        crate::quota::Quotas {
            store: self.store.as_ref(),
            quota: &self.config.quota,
            max_upload: self.config.max_upload,
        }
    }

    /// Whether the caller may change anything at all (the faces ask before reading a request
    /// document, so an unentitled caller never gets one parsed).
    pub fn may_write(&self, who: &Principal) -> Result<()> {
        self.require(who, ENT_SOFTWARE_UPLOAD)
    }

    pub(crate) fn require(&self, who: &Principal, ent: &str) -> Result<()> {
        if who.has(ent) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!(
                "the entitlement {ent} is required for this operation"
            )))
        }
    }

    // ---------------------------------------------------------------- bundles

    /// Resolves a bundle of the user the URL names.
    pub async fn bundle(&self, who: &Principal, uid: &str, msid: Id) -> Result<OwnedBundle> {
        let owner = self.owner(who, uid).await?;
        let bundle = self
            .store
            .get_bundle(owner.user.id, msid)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("mySoftware {msid}")))?;
        Ok(OwnedBundle { owner, bundle })
    }

    /// A bundle with what its document shows.
    pub async fn bundle_view(&self, who: &Principal, uid: &str, msid: Id) -> Result<BundleView> {
        let b = self.bundle(who, uid, msid).await?;
        self.view(b.bundle).await
    }

    /// What a bundle's document shows besides its row: three reads, made concurrently (a list
    /// reads them for all bundles at once, `list_bundles`).
    pub(crate) async fn view(&self, bundle: Bundle) -> Result<BundleView> {
        let (license, logo, artifacts) = futures::try_join!(
            self.store
                .get_attachment(bundle.id, AttachmentKind::License),
            self.store.get_attachment(bundle.id, AttachmentKind::Logo),
            self.store.list_artifacts(bundle.id),
        )?;
        let size = artifacts
            .iter()
            .filter_map(|a| a.blob.as_ref())
            .map(|b| b.size)
            .sum();
        Ok(BundleView {
            bundle,
            size,
            license,
            logo,
        })
    }

    /// The user's bundles, each with what its document shows: three statements in all.
    pub async fn list_bundles(&self, who: &Principal, uid: &str) -> Result<Vec<BundleView>> {
        let owner = self.target(who, uid).await?;
        let (bundles, (sizes, attachments)) = futures::try_join!(
            self.store.list_bundles(owner.id),
            self.store.bundle_extras(owner.id)
        )?;
        let sizes: std::collections::HashMap<Id, i64> = sizes.into_iter().collect();
        let mut attachments: std::collections::HashMap<(Id, AttachmentKind), Attachment> =
            attachments
                .into_iter()
                .map(|a| ((a.bundle_id, a.kind), a))
                .collect();
        Ok(bundles
            .into_iter()
            .map(|bundle| BundleView {
                size: sizes.get(&bundle.id).copied().unwrap_or(0),
                license: attachments.remove(&(bundle.id, AttachmentKind::License)),
                logo: attachments.remove(&(bundle.id, AttachmentKind::Logo)),
                bundle,
            })
            .collect())
    }

    pub async fn create_bundle(&self, owner: &Owner, input: BundleInput) -> Result<BundleView> {
        self.require(&owner.who, ENT_SOFTWARE_UPLOAD)?;
        let input = input.into_nfc();
        let name = input
            .name
            .clone()
            .ok_or_else(|| DomainError::Invalid("mySoftware name is required".into()))?;
        let version = input
            .version
            .clone()
            .ok_or_else(|| DomainError::Invalid("mySoftware version is required".into()))?;
        names::validate_label("name", &name)?;
        names::validate_label("version", &version)?;
        let b = self
            .store
            .create_bundle(owner.user.id, &name, &version, &input)
            .await?;
        self.view(b).await
    }

    pub async fn update_bundle(&self, b: &OwnedBundle, input: BundleInput) -> Result<BundleView> {
        self.require(&b.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let msid = b.bundle.id;
        let input = input.into_nfc();
        if let Some(n) = &input.name {
            names::validate_label("name", n)?;
        }
        if let Some(v) = &input.version {
            names::validate_label("version", v)?;
        }
        let updated = self
            .store
            .update_bundle(b.owner().id, msid, &input)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("mySoftware {msid}")))?;
        self.view(updated).await
    }

    pub async fn delete_bundle(&self, who: &Principal, uid: &str, msid: Id) -> Result<()> {
        let b = self.bundle(who, uid, msid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        // Its images' publications first (they are tickets of their own, not cascaded).
        let owner = b.owner().id;
        for t in self.store.list_tickets(owner).await? {
            if t.kind == TicketKind::ContainerImage && t.subject_id == msid {
                self.unpublish_image(owner, t.id).await?;
            }
        }
        let keys = self
            .store
            .delete_bundle(b.owner().id, msid)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("mySoftware {msid}")))?;
        self.delete_blobs(keys).await;
        Ok(())
    }

    /// Copies a bundle with its files (blobs are copied too: each bundle owns its own).
    pub async fn clone_bundle(&self, b: &OwnedBundle, input: BundleInput) -> Result<BundleView> {
        let (owner, src) = (b.owner(), &b.bundle);
        self.require(&b.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let input = input.into_nfc();
        let name = input
            .name
            .clone()
            .unwrap_or_else(|| format!("{} (clone)", src.name));
        let version = input.version.clone().unwrap_or_else(|| src.version.clone());
        names::validate_label("name", &name)?;
        names::validate_label("version", &version)?;
        let merged = BundleInput {
            name: Some(name.clone()),
            version: Some(version.clone()),
            description: input.description.or(src.description.clone()),
            release: input.release.or(src.release.clone()),
            install_location: input.install_location.or(src.install_location.clone()),
        };
        let dst = self
            .store
            .create_bundle(owner.id, &name, &version, &merged)
            .await?;
        let arts = self.store.list_artifacts(src.id).await?;
        let mut map = std::collections::HashMap::new();
        // Parents come before children in id order: they were created first.
        for a in arts {
            let parent = a.parent_id.and_then(|p| map.get(&p).copied());
            let input = ArtifactInput {
                name: Some(a.name.clone()),
                kind: Some(a.kind.clone()),
                tag: a.tag.clone(),
                install_location: a.install_location.clone(),
            };
            let na = self
                .store
                .create_artifact(dst.id, parent, &a.name, &input)
                .await?;
            map.insert(a.id, na.id);
            if let Some(b) = &a.blob {
                let copy = self.copy_blob(owner.id, b).await?;
                self.store.set_artifact_blob(dst.id, na.id, &copy).await?;
            }
        }
        for kind in [AttachmentKind::License, AttachmentKind::Logo] {
            if let Some(att) = self.store.get_attachment(src.id, kind).await? {
                let copy = self.copy_blob(owner.id, &att.blob).await?;
                self.store
                    .put_attachment(dst.id, kind, &att.name, &copy)
                    .await?;
            }
        }
        self.view(dst).await
    }

    async fn copy_blob(&self, owner: Id, b: &BlobRef) -> Result<BlobRef> {
        let key = satchel_blob::new_key(&user_blob_prefix(owner));
        let stream = self.blobs.get(&b.key, None).await?;
        let w = self.blobs.put_stream(&key, stream, None).await?;
        Ok(BlobRef {
            key,
            size: w.size as i64,
            sha256: w.sha256,
            md5: w.md5,
            uploaded: now_millis(),
            crc32: w.crc32,
        })
    }

    pub(crate) async fn delete_blobs(&self, keys: Vec<String>) {
        for k in keys {
            if let Err(e) = self.blobs.delete(&k).await {
                tracing::warn!(key = %k, error = %e, "could not delete a blob; it is now unreferenced");
            }
        }
    }

    // ---------------------------------------------------------------- artifacts

    pub async fn list_artifacts(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
    ) -> Result<(Bundle, Vec<Artifact>)> {
        let b = self.bundle(who, uid, msid).await?.bundle;
        let arts = self.store.list_artifacts(b.id).await?;
        Ok((b, arts))
    }

    /// Resolves a file or folder of a bundle of the user the URL names.
    pub async fn artifact(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        said: Id,
    ) -> Result<OwnedArtifact> {
        let bundle = self.bundle(who, uid, msid).await?;
        let artifact = self
            .store
            .get_artifact(bundle.bundle.id, said)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("softwareArtifact {said}")))?;
        Ok(OwnedArtifact { bundle, artifact })
    }

    /// Adds a file or folder at the top of the bundle.
    pub async fn create_artifact(&self, b: &OwnedBundle, input: ArtifactInput) -> Result<Artifact> {
        self.add_artifact(b, None, input).await
    }

    /// Adds a file or folder inside a folder.
    pub async fn create_child_artifact(
        &self,
        parent: &OwnedArtifact,
        input: ArtifactInput,
    ) -> Result<Artifact> {
        let pa = &parent.artifact;
        if pa.kind != "folder" {
            return Err(DomainError::Invalid(format!(
                "softwareArtifact {} is a file; only folders have children",
                pa.id
            )));
        }
        self.add_artifact(&parent.bundle, Some(pa.id), input).await
    }

    async fn add_artifact(
        &self,
        b: &OwnedBundle,
        parent: Option<Id>,
        input: ArtifactInput,
    ) -> Result<Artifact> {
        self.require(&b.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let input = input.into_nfc();
        let name = input
            .name
            .clone()
            .ok_or_else(|| DomainError::Invalid("softwareArtifact name is required".into()))?;
        names::validate_file_name(&name)?;
        if let Some(k) = &input.kind {
            if k != "file" && k != "folder" {
                return Err(DomainError::Invalid(format!(
                    "softwareArtifact type must be file or folder, not {k:?}"
                )));
            }
        }
        self.store
            .create_artifact(b.bundle.id, parent, &name, &input)
            .await
    }

    pub async fn update_artifact(
        &self,
        owned: &OwnedArtifact,
        input: ArtifactInput,
    ) -> Result<Artifact> {
        let (b, a, said) = (&owned.bundle.bundle, &owned.artifact, owned.artifact.id);
        self.require(&owned.bundle.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let input = input.into_nfc();
        if let Some(n) = &input.name {
            names::validate_file_name(n)?;
        }
        if input.kind.as_deref().is_some_and(|k| k != a.kind) {
            return Err(DomainError::Invalid(
                "the type of a softwareArtifact cannot change".into(),
            ));
        }
        self.store
            .update_artifact(b.id, said, &input)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("softwareArtifact {said}")))
    }

    pub async fn delete_artifact(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        said: Id,
    ) -> Result<()> {
        let a = self.artifact(who, uid, msid, said).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let keys = self
            .store
            .delete_artifact(a.bundle.bundle.id, said)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("softwareArtifact {said}")))?;
        self.delete_blobs(keys).await;
        Ok(())
    }

    /// Streams a file body into blob storage, then points the artifact at it (replacing any previous file).
    pub async fn upload_artifact_file<S, E>(
        &self,
        owned: &OwnedArtifact,
        file_name: &str,
        body: S,
    ) -> Result<Artifact>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let (b, a, said) = (&owned.bundle.bundle, &owned.artifact, owned.artifact.id);
        self.require(&owned.bundle.owner.who, ENT_SOFTWARE_UPLOAD)?;
        names::validate_file_name(file_name)?;
        if a.kind == "folder" {
            return Err(DomainError::Invalid(format!(
                "softwareArtifact {said} is a folder; upload files to its children"
            )));
        }
        let blob = self.store_upload(b.owner_id, body).await?;
        match self.store.set_artifact_blob(b.id, said, &blob).await {
            Ok(old) => {
                if let Some(old) = old {
                    self.delete_blobs(vec![old]).await;
                }
            }
            Err(e) => {
                self.delete_blobs(vec![blob.key.clone()]).await;
                return Err(e);
            }
        }
        self.store
            .get_artifact(b.id, said)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("softwareArtifact {said}")))
    }

    pub(crate) async fn store_upload<S, E>(&self, owner: Id, body: S) -> Result<BlobRef>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let key = satchel_blob::new_key(&user_blob_prefix(owner));
        self.store_upload_at(owner, &key, body).await
    }

    /// Streams an upload to `key`, within the user's quota and `--max-upload`.
    pub(crate) async fn store_upload_at<S, E>(
        &self,
        owner: Id,
        key: &str,
        body: S,
    ) -> Result<BlobRef>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let key = key.to_string();
        let allowance = self.quota().upload_allowance(owner).await?;
        let w = allowance.check(
            self.blobs
                .put_stream(&key, body, Some(allowance.bytes))
                .await,
        )?;
        Ok(BlobRef {
            key,
            size: w.size as i64,
            sha256: w.sha256,
            md5: w.md5,
            uploaded: now_millis(),
            crc32: w.crc32,
        })
    }

    pub async fn artifact_file(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        said: Id,
        file_name: Option<&str>,
    ) -> Result<(Artifact, BlobRef)> {
        let a = self.artifact(who, uid, msid, said).await?.artifact;
        let blob = a
            .blob
            .clone()
            .ok_or_else(|| DomainError::not_found(format!("file of softwareArtifact {said}")))?;
        if let Some(f) = file_name {
            names::validate_file_name(f)?;
            if !names::same_name(f, &a.name) {
                return Err(DomainError::not_found(format!(
                    "file {f} of softwareArtifact {said}"
                )));
            }
        }
        Ok((a, blob))
    }

    // ---------------------------------------------------------------- license / logo

    pub async fn upload_attachment<S, E>(
        &self,
        owned: &OwnedBundle,
        kind: AttachmentKind,
        file_name: &str,
        body: S,
    ) -> Result<Attachment>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let b = &owned.bundle;
        self.require(&owned.owner.who, ENT_SOFTWARE_UPLOAD)?;
        names::validate_file_name(file_name)?;
        let file_name = &names::nfc(file_name);
        let blob = self.store_upload(owned.owner().id, body).await?;
        match self
            .store
            .put_attachment(b.id, kind, file_name, &blob)
            .await
        {
            Ok((att, old)) => {
                if let Some(old) = old {
                    self.delete_blobs(vec![old]).await;
                }
                Ok(att)
            }
            Err(e) => {
                self.delete_blobs(vec![blob.key]).await;
                Err(e)
            }
        }
    }

    /// The bundle's license or logo, as the URL names it: by its id `lid` and, when the URL has
    /// one, its exact file name; any other id or name does not exist.
    pub async fn attachment(
        &self,
        who: &Principal,
        uid: &str,
        (msid, lid): (Id, Id),
        kind: AttachmentKind,
        file_name: Option<&str>,
    ) -> Result<Attachment> {
        let b = self.bundle(who, uid, msid).await?.bundle;
        let a = self
            .store
            .get_attachment(b.id, kind)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("{} of mySoftware {msid}", kind.as_str()))
            })?;
        if a.id != lid || file_name.is_some_and(|f| f != a.name) {
            return Err(DomainError::not_found(format!(
                "{} {lid} of mySoftware {msid}",
                kind.as_str()
            )));
        }
        Ok(a)
    }

    pub async fn delete_attachment(
        &self,
        who: &Principal,
        uid: &str,
        (msid, lid): (Id, Id),
        kind: AttachmentKind,
    ) -> Result<()> {
        let a = self.attachment(who, uid, (msid, lid), kind, None).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let key = self
            .store
            .delete_attachment(a.bundle_id, kind)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("{} of mySoftware {msid}", kind.as_str()))
            })?;
        self.delete_blobs(vec![key]).await;
        Ok(())
    }

    // ---------------------------------------------------------------- export tickets

    /// Queues an export of the bundle (and wakes a worker); the ticket is returned at once.
    pub async fn create_export(&self, owned: &OwnedBundle, format: OutputFormat) -> Result<Ticket> {
        let (owner, b) = (owned.owner(), &owned.bundle);
        self.require(&owned.owner.who, ENT_SOFTWARE_UPLOAD)?;
        self.quota().check_ticket(owner.id).await?;
        let t = self
            .store
            .create_ticket(&NewTicket {
                import: None,
                takeout: None,
                owner_id: owner.id,
                kind: TicketKind::BundleExport,
                image: None,
                subject_id: b.id,
                subject_name: b.name.clone(),
                subject_version: b.version.clone(),
                format,
                max_attempts: self.config.max_attempts,
            })
            .await?;
        Ok(self.queued(t))
    }

    /// A ticket of this bundle. Tickets of other bundles, even the caller's own, do not exist here.
    pub async fn export(&self, who: &Principal, uid: &str, msid: Id, eid: Id) -> Result<Ticket> {
        self.ticket_of(who, uid, eid, TicketKind::BundleExport, Some(msid), || {
            format!("export {eid} of mySoftware {msid}")
        })
        .await
    }

    /// A ticket of `uid`'s of this kind (and subject, if given): the one resolving rule for every
    /// ticket route. A ticket of another kind or subject, even the caller's own, does not exist here.
    pub(crate) async fn ticket_of(
        &self,
        who: &Principal,
        uid: &str,
        id: Id,
        kind: TicketKind,
        subject: Option<Id>,
        what: impl FnOnce() -> String,
    ) -> Result<Ticket> {
        let owner = self.target(who, uid).await?;
        match self.store.get_ticket(owner.id, id).await? {
            Some(t) if t.kind == kind && subject.is_none_or(|s| s == t.subject_id) => Ok(t),
            _ => Err(DomainError::not_found(what())),
        }
    }

    /// The user's appliance exports (what UForge lists under `/users/{uid}/exports`), filtered,
    /// ordered and paged by `q`; with the number that matched before paging.
    pub async fn list_exports(
        &self,
        who: &Principal,
        uid: &str,
        q: &ListQuery,
    ) -> Result<(usize, Vec<Ticket>)> {
        let ts = self
            .tickets_of(who, uid, TicketKind::ApplianceExport)
            .await?;
        Ok(q.apply(ts))
    }

    /// The user's bundle exports across bundles (not a UForge listing: the self-service page's).
    pub async fn list_bundle_exports(&self, who: &Principal, uid: &str) -> Result<Vec<Ticket>> {
        self.tickets_of(who, uid, TicketKind::BundleExport).await
    }

    /// The user's tickets of one kind.
    pub(crate) async fn tickets_of(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
    ) -> Result<Vec<Ticket>> {
        let owner = self.target(who, uid).await?;
        let mut ts = self.store.list_tickets(owner.id).await?;
        ts.retain(|t| t.kind == kind);
        Ok(ts)
    }

    /// An export's archive if it may be downloaded, else why not (the rule for every export kind).
    pub(crate) fn ready_archive(t: &Ticket) -> Result<ArchiveRef> {
        let eid = t.id;
        match (t.state, &t.archive) {
            (TicketState::Complete, Some(a)) => Ok(a.clone()),
            (TicketState::Expired, _) => Err(DomainError::Gone(format!(
                "the archive of export {eid} has expired and was deleted; request a new export"
            ))),
            (TicketState::Error, _) => Err(DomainError::Conflict(format!(
                "export {eid} failed: {}",
                t.error_message.clone().unwrap_or_default()
            ))),
            (TicketState::Cancelled, _) => Err(DomainError::Conflict(format!("export {eid} was cancelled"))),
            _ => Err(DomainError::Conflict(format!(
                "the archive of export {eid} is not ready yet ({}%); poll its status until it is complete",
                t.percentage
            ))),
        }
    }

    /// Cancels a ticket of the caller's (already resolved): queued or running becomes `cancelled`
    /// (a running job notices at its next progress report and removes its partial output); a
    /// finished one is left as it is, which the answer says.
    pub(crate) async fn cancel_resolved(&self, who: &Principal, t: Ticket) -> Result<Cancelled> {
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let was = t.state;
        let ticket = self
            .store
            .cancel_ticket(t.owner_id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("ticket {}", t.id)))?;
        Ok(Cancelled {
            now: !was.is_final() && ticket.state == TicketState::Cancelled,
            ticket,
        })
    }

    /// Cancels a bundle export.
    pub async fn cancel_export(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        eid: Id,
    ) -> Result<Cancelled> {
        let t = self.export(who, uid, msid, eid).await?;
        self.cancel_resolved(who, t).await
    }

    /// Deletes the ticket; a running job notices and stops, and its archive is removed.
    pub async fn delete_export(&self, who: &Principal, uid: &str, msid: Id, eid: Id) -> Result<()> {
        let t = self.export(who, uid, msid, eid).await?;
        self.delete_with_archive(&t, || format!("export {eid} of mySoftware {msid}"))
            .await
    }

    /// Deletes a resolved ticket that publishes an archive (exports, takeouts), and the archive.
    /// `what` names it when it went meanwhile.
    pub(crate) async fn delete_with_archive(
        &self,
        t: &Ticket,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        let gone = self
            .store
            .delete_ticket(t.owner_id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(what()))?;
        // The key is deterministic, so delete it even if the job published just before we removed the row.
        self.delete_blobs(vec![archive_key(gone.owner_id, gone.id)])
            .await;
        Ok(())
    }

    /// Deletes the archives whose retention has passed; their tickets become `expired`.
    pub async fn sweep_expired(&self) -> Result<usize> {
        let mut n = 0;
        loop {
            let batch = self.store.tickets_to_expire(now_millis(), 100).await?;
            if batch.is_empty() {
                return Ok(n);
            }
            for t in batch {
                if self.store.mark_expired(t.id).await? {
                    self.delete_blobs(vec![archive_key(t.owner_id, t.id)]).await;
                    n += 1;
                }
            }
        }
    }
}

/// What a UForge listing's `query`, `orderBy`, `descending`, `count` and `offset` ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Case-insensitive substring of the subject's name (an appliance's, for exports).
    pub query: Option<String>,
    pub order_by: OrderBy,
    pub descending: bool,
    pub count: Option<usize>,
    pub offset: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderBy {
    #[default]
    Created,
    Name,
    Id,
}

impl OrderBy {
    /// `created` (the default), `name` or `dbId` (`id`); anything else is refused by the face.
    pub fn parse(s: &str) -> Option<OrderBy> {
        match s.to_ascii_lowercase().as_str() {
            "created" | "creationdate" | "date" => Some(OrderBy::Created),
            "name" => Some(OrderBy::Name),
            "dbid" | "id" => Some(OrderBy::Id),
            _ => None,
        }
    }
}

impl ListQuery {
    /// Filters, orders (ties by id, so pages never overlap) and pages; the count before paging.
    pub fn apply(&self, mut ts: Vec<Ticket>) -> (usize, Vec<Ticket>) {
        if let Some(q) = self.query.as_deref().map(str::to_lowercase) {
            ts.retain(|t| t.subject_name.to_lowercase().contains(&q));
        }
        ts.sort_by(|a, b| {
            let o = match self.order_by {
                OrderBy::Created => a.created.cmp(&b.created),
                OrderBy::Name => a
                    .subject_name
                    .to_lowercase()
                    .cmp(&b.subject_name.to_lowercase())
                    .then_with(|| a.subject_version.cmp(&b.subject_version)),
                OrderBy::Id => std::cmp::Ordering::Equal,
            };
            o.then(a.id.cmp(&b.id))
        });
        if self.descending {
            ts.reverse();
        }
        let total = ts.len();
        let page = ts
            .into_iter()
            .skip(self.offset)
            .take(self.count.unwrap_or(usize::MAX))
            .collect();
        (total, page)
    }
}
