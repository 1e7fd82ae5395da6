//! The CloudAPI operations. Every call takes the authenticated account; another account's keys, images
//! and objects answer exactly like missing ones (public images excepted: visible, but not exportable).
//!
//! ExportImage does what Manta's snaplinks do: the exported `.zfs` object shares the image file's
//! immutable blob instead of copying its bytes, so exporting costs the same for 1 KiB or 100 GiB and
//! needs no extra space. Blobs are never written in place (every upload gets a fresh key), and a
//! blob is deleted only when its last reference (image or object) goes, decided inside the store's
//! transaction.

use super::manta::{export_targets, MantaPath};
use super::model::*;
use crate::model::{now_millis, Id, Millis, User};
use crate::ports::{CloudStore, Store};
use crate::{DomainError, Result, RuleCode};
use bytes::Bytes;
use futures::Stream;
use satchel_blob::{BlobStore, Hashes};
use std::sync::Arc;

/// The deterministic UUID CloudAPI shows as an account's id (`owner` of images).
pub fn account_uuid(id: Id) -> String {
    uuid::Uuid::from_u128(0x5a7c_4e10_0000_4000_8000_0000_0000_0000u128 | (id as u64 as u128))
        .hyphenated()
        .to_string()
}

const OS: &[&str] = &["smartos", "linux", "windows", "bsd", "illumos", "other"];
const TYPES: &[&str] = &["zone-dataset", "lx-dataset", "zvol", "docker", "other"];

pub struct Cloud {
    pub users: Arc<dyn Store>,
    pub store: Arc<dyn CloudStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub max_upload: u64,
    /// The same per-user quotas as the UForge face's (image files and objects count as stored bytes).
    pub quota: crate::quota::Quota,
    /// Requests per second per user, shared with the UForge face.
    pub rate: Arc<crate::limits::RateLimiter>,
    /// Attempts an async export's job gets before it is given up.
    pub max_attempts: i32,
    /// Wakes this process's job workers after an export is queued (other instances wake on the
    /// store's own signal).
    pub wake: Arc<tokio::sync::Notify>,
}

impl Cloud {
    fn quotas(&self) -> crate::quota::Quotas<'_> {
        crate::quota::Quotas {
            store: self.users.as_ref(),
            quota: &self.quota,
            max_upload: self.max_upload,
        }
    }
}

fn invalid(msg: impl Into<String>) -> DomainError {
    DomainError::rule(RuleCode::InvalidArgument, msg)
}

fn image_not_found(id: &str) -> DomainError {
    DomainError::rule(RuleCode::ResourceNotFound, format!("image {id} not found"))
}

fn object_not_found(path: &str) -> DomainError {
    DomainError::rule(RuleCode::ResourceNotFound, format!("{path} was not found"))
}

fn validate_label(field: &str, v: &str, max: usize) -> Result<()> {
    if v.is_empty() || v.len() > max {
        return Err(invalid(format!("{field} must be 1 to {max} characters")));
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '~'))
        || v.starts_with('.')
    {
        return Err(invalid(format!(
            "{field} {v:?} may only hold letters, digits and . _ - + ~ (and may not start with a dot)"
        )));
    }
    Ok(())
}

impl Cloud {
    // ---------------------------------------------------------------- accounts and keys

    pub async fn account(&self, login: &str) -> Result<Option<User>> {
        Ok(self.users.user_by_login(login).await?.map(|r| r.user))
    }

    /// The account and key a signed request names (`/<login>/keys/<fp or name>`).
    pub async fn signing_key(&self, login: &str, key: &str) -> Result<(User, SshKey)> {
        let unknown = || DomainError::Unauthenticated(format!("key {key} of {login} is not known"));
        let user = self.account(login).await?.ok_or_else(unknown)?;
        if let Some(k) = self.store.get_key(user.id, key).await? {
            return Ok((user, k));
        }
        // sshpk 1.7.1 (smartdc's) misreads half of all ed25519 private key files and then names the
        // key by a different MD5; accept that name for the key it really is.
        let legacy = self.store.list_keys(user.id).await?.into_iter().find(|k| {
            satchel_httpsig::PublicKey::parse_openssh(&k.key)
                .ok()
                .and_then(|p| p.sshpk_legacy_md5_fingerprint())
                .is_some_and(|fp| fp == key)
        });
        let k = legacy.ok_or_else(unknown)?;
        Ok((user, k))
    }

    pub async fn list_keys(&self, who: &User) -> Result<Vec<SshKey>> {
        self.store.list_keys(who.id).await
    }

    pub async fn get_key(&self, who: &User, name_or_fp: &str) -> Result<SshKey> {
        self.store
            .get_key(who.id, name_or_fp)
            .await?
            .ok_or_else(|| {
                DomainError::rule(
                    RuleCode::ResourceNotFound,
                    format!("key {name_or_fp} not found"),
                )
            })
    }

    /// Registers an OpenSSH public key; `name` defaults to its fingerprint, as CloudAPI does.
    pub async fn add_key(&self, who: &User, name: Option<&str>, text: &str) -> Result<SshKey> {
        let key = satchel_httpsig::PublicKey::parse_openssh(text)
            .map_err(|e| invalid(format!("key is not a valid OpenSSH public key: {e}")))?;
        let fp = key.md5_fingerprint();
        let name = match name.map(str::trim) {
            Some("") | None => fp.clone(),
            Some(n) => {
                if n.len() > 128 || n.chars().any(|c| c.is_control() || c == '/') {
                    return Err(invalid(
                        "key name must be 1 to 128 characters, without / or control characters",
                    ));
                }
                n.to_string()
            }
        };
        self.store
            .add_key(who.id, &name, &fp, &key.to_openssh())
            .await
            .map_err(|e| match e {
                DomainError::Conflict(_) => DomainError::rule(
                    RuleCode::InvalidArgument,
                    format!("a key named {name:?} or with fingerprint {fp} already exists"),
                ),
                other => other,
            })
    }

    pub async fn delete_key(&self, who: &User, name_or_fp: &str) -> Result<()> {
        if self.store.delete_key(who.id, name_or_fp).await? {
            Ok(())
        } else {
            Err(DomainError::rule(
                RuleCode::ResourceNotFound,
                format!("key {name_or_fp} not found"),
            ))
        }
    }

    // ---------------------------------------------------------------- images

    pub async fn create_image(&self, who: &User, input: ImageInput) -> Result<Image> {
        let need = |v: Option<String>, f: &str| {
            v.ok_or_else(|| {
                DomainError::rule(RuleCode::MissingParameter, format!("{f} is required"))
            })
        };
        // In NFC, like the UForge face's names (crate::names::nfc).
        let name = crate::names::nfc(&need(input.name, "name")?);
        let version = crate::names::nfc(&need(input.version, "version")?);
        let os = need(input.os, "os")?;
        let kind = need(input.kind, "type")?;
        validate_label("name", &name, 512)?;
        validate_label("version", &version, 128)?;
        if !OS.contains(&os.as_str()) {
            return Err(invalid(format!("os must be one of {}", OS.join(", "))));
        }
        if !TYPES.contains(&kind.as_str()) {
            return Err(invalid(format!("type must be one of {}", TYPES.join(", "))));
        }
        if let Some(d) = &input.description {
            if d.len() > 512 {
                return Err(invalid("description must be at most 512 characters"));
            }
        }
        if input.public == Some(true) && !who.admin {
            return Err(DomainError::rule(
                RuleCode::NotAuthorized,
                "only operators may create public images",
            ));
        }
        let image = Image {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            owner_id: who.id,
            name,
            version,
            os,
            kind,
            description: input.description,
            state: ImageState::Unactivated,
            public: input.public.unwrap_or(false),
            published_at: None,
            created: now_millis(),
            file: None,
        };
        self.store.create_image(&image).await?;
        Ok(image)
    }

    pub async fn list_images(&self, who: &User) -> Result<Vec<Image>> {
        self.store.list_images(who.id).await
    }

    /// An image the caller may see: theirs, or a public one.
    pub async fn image(&self, who: &User, id: &str) -> Result<Image> {
        match self.store.get_image(id).await? {
            Some(i) if i.owner_id == who.id || i.public => Ok(i),
            _ => Err(image_not_found(id)),
        }
    }

    async fn own_image(&self, who: &User, id: &str) -> Result<Image> {
        let i = self.image(who, id).await?;
        if i.owner_id != who.id {
            return Err(DomainError::rule(
                RuleCode::NotImageOwner,
                format!("account {} is not the owner of image {id}", who.login),
            ));
        }
        Ok(i)
    }

    /// Streams the image file in, recording its sha1 and size. Only before activation.
    pub async fn upload_image_file<S, E>(
        &self,
        who: &User,
        id: &str,
        compression: &str,
        expect_sha1: Option<&str>,
        body: S,
    ) -> Result<Image>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let compression = Compression::parse(compression)
            .ok_or_else(|| invalid("compression must be one of gzip, bzip2, xz, none"))?;
        let image = self.own_image(who, id).await?;
        if image.state != ImageState::Unactivated {
            return Err(DomainError::rule(
                RuleCode::ImageFilesImmutable,
                format!(
                    "image {id} is {}; its file cannot change",
                    image.state.as_str()
                ),
            ));
        }
        let key = satchel_blob::new_key(&format!("u/{}/images/{id}", who.id));
        let allowance = self.quotas().upload_allowance(who.id).await?;
        let written = allowance.check(
            self.blobs
                .put_stream_with(&key, body, Some(allowance.bytes), Hashes::IMAGE)
                .await,
        )?;
        let sha1 = written.sha1.clone().unwrap_or_default();
        if let Some(want) = expect_sha1 {
            if !want.eq_ignore_ascii_case(&sha1) {
                self.delete_blob(&key).await;
                return Err(DomainError::rule(
                    RuleCode::Upload,
                    format!("the uploaded file's sha1 is {sha1}, not {want}"),
                ));
            }
        }
        let file = ImageFile {
            blob_key: key.clone(),
            size: written.size as i64,
            sha1,
            md5: written.md5,
            compression,
        };
        match self.store.set_image_file(who.id, id, &file).await? {
            Some(old) => {
                if let Some(old) = old {
                    self.delete_blob(&old).await;
                }
                self.image(who, id).await
            }
            None => {
                self.delete_blob(&key).await;
                Err(DomainError::rule(
                    RuleCode::ImageFilesImmutable,
                    format!("image {id} changed while its file was uploading"),
                ))
            }
        }
    }

    pub async fn activate_image(&self, who: &User, id: &str) -> Result<Image> {
        let image = self.own_image(who, id).await?;
        match image.state {
            ImageState::Active => Err(DomainError::rule(
                RuleCode::ImageAlreadyActivated,
                format!("image {id} is already active"),
            )),
            ImageState::Unactivated if image.file.is_none() => Err(DomainError::rule(
                RuleCode::NoActivationNoFile,
                format!("image {id} cannot be activated: it has no file"),
            )),
            ImageState::Unactivated => {
                if !self.store.activate_image(who.id, id, now_millis()).await? {
                    return Err(DomainError::Conflict(format!(
                        "image {id} changed while activating"
                    )));
                }
                self.image(who, id).await
            }
        }
    }

    /// UpdateImage: the owner renames, re-versions or re-describes an image (in any state).
    pub async fn update_image(&self, who: &User, id: &str, u: ImageUpdate) -> Result<Image> {
        let image = self.own_image(who, id).await?;
        if u.name.is_none() && u.version.is_none() && u.description.is_none() {
            return Err(DomainError::rule(
                RuleCode::MissingParameter,
                "nothing to update: give name, version or description",
            ));
        }
        let name = u.name.map(|n| crate::names::nfc(&n)).unwrap_or(image.name);
        let version = u
            .version
            .map(|v| crate::names::nfc(&v))
            .unwrap_or(image.version);
        validate_label("name", &name, 512)?;
        validate_label("version", &version, 128)?;
        let description = match u.description {
            Some(d) if d.len() > 512 => {
                return Err(invalid("description must be at most 512 characters"))
            }
            Some(d) => Some(d),
            None => image.description,
        };
        if !self
            .store
            .update_image(who.id, id, &name, &version, description.as_deref())
            .await?
        {
            return Err(image_not_found(id));
        }
        self.image(who, id).await
    }

    /// CloneImage: a copy, owned by the caller, of an active image someone else made public to
    /// them (this server has public images, not IMGAPI's per-account ACLs). The copy is private,
    /// active, gets a new id and shares the file (the last image referencing a blob deletes it).
    pub async fn clone_image(&self, who: &User, id: &str) -> Result<Image> {
        let source = self.image(who, id).await?;
        if source.owner_id == who.id {
            return Err(invalid(format!(
                "image {id} is already yours: only images shared with you can be cloned"
            )));
        }
        if source.state != ImageState::Active || source.file.is_none() {
            return Err(invalid(format!(
                "image {id} is not active: it cannot be cloned"
            )));
        }
        let copy = Image {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            owner_id: who.id,
            public: false,
            published_at: Some(now_millis()),
            created: now_millis(),
            ..source
        };
        if !self.store.clone_image(id, &copy).await? {
            return Err(image_not_found(id));
        }
        Ok(copy)
    }

    pub async fn delete_image(&self, who: &User, id: &str) -> Result<()> {
        self.own_image(who, id).await?;
        match self.store.delete_image(who.id, id).await? {
            Some(blob) => {
                if let Some(b) = blob {
                    self.delete_blob(&b).await;
                }
                Ok(())
            }
            None => Err(image_not_found(id)),
        }
    }

    /// The image manifest as IMGAPI serialises it (what `.imgmanifest` holds).
    pub fn manifest(&self, image: &Image) -> serde_json::Value {
        let mut m = serde_json::json!({
            "v": 2,
            "uuid": image.id,
            "owner": account_uuid(image.owner_id),
            "name": image.name,
            "version": image.version,
            "state": image.state.as_str(),
            "disabled": false,
            "public": image.public,
            "type": image.kind,
            "os": image.os,
            "files": image.file.iter().map(|f| serde_json::json!({
                "sha1": f.sha1,
                "size": f.size,
                "compression": f.compression.as_str(),
            })).collect::<Vec<_>>(),
            "requirements": {},
        });
        if let Some(obj) = m.as_object_mut() {
            if let Some(d) = &image.description {
                obj.insert("description".into(), d.clone().into());
            }
            if let Some(p) = image.published_at {
                obj.insert("published_at".into(), rfc3339(p).into());
            }
        }
        m
    }

    // ---------------------------------------------------------------- ExportImage

    /// Exports the image's manifest and file under `manta_path` (see the module doc for how the file
    /// is shared, not copied). The file object is written first, so a manifest is only ever visible
    /// next to its file.
    pub async fn export_image(
        &self,
        who: &User,
        id: &str,
        manta_path: &str,
    ) -> Result<ExportTargets> {
        let image = self.own_image(who, id).await?;
        let dest = MantaPath::parse(manta_path, &who.login)?;
        let Some(file) = image.file.clone() else {
            return Err(invalid(format!("image {id} has no file to export")));
        };
        let dest_is_dir = dest.is_root()
            || manta_path.ends_with('/')
            || matches!(
                self.store.stor_get(who.id, &dest.full()).await?,
                Some(StorEntry {
                    kind: EntryKind::Directory,
                    ..
                })
            );
        let (manifest_path, file_path) = export_targets(
            &dest,
            dest_is_dir,
            &image.name,
            &image.version,
            file.compression,
        )?;
        if let Some(parent) = file_path.parent() {
            self.mkdirs(who, &parent).await?;
        }

        // The file: a new reference to the image's blob, made only if the image still holds it.
        let now = now_millis();
        let entry = self.object_entry(
            who,
            &file_path,
            &file.blob_key,
            file.size,
            Some(file.md5.clone()),
            now,
            Some("application/octet-stream"),
        )?;
        self.put_entry(&entry, &file_path, Some(&image.id)).await?;

        // The manifest: a small object of its own.
        let body = serde_json::to_vec_pretty(&self.manifest(&image))
            .map_err(|e| DomainError::Internal(crate::Cause::of(e)))?;
        let key = satchel_blob::new_key(&format!("u/{}/stor", who.id));
        let written = self.blobs.put_bytes(&key, Bytes::from(body)).await?;
        let entry = self.object_entry(
            who,
            &manifest_path,
            &key,
            written.size as i64,
            Some(written.md5),
            now,
            Some("application/json"),
        )?;
        if let Err(e) = self.put_entry(&entry, &manifest_path, None).await {
            self.delete_blob(&key).await;
            return Err(e);
        }
        Ok(ExportTargets {
            image_path: file_path.full(),
            manifest_path: manifest_path.full(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn object_entry(
        &self,
        who: &User,
        path: &MantaPath,
        blob_key: &str,
        size: i64,
        md5: Option<String>,
        now: Millis,
        content_type: Option<&str>,
    ) -> Result<StorEntry> {
        let parent = path
            .parent()
            .ok_or_else(|| invalid("an object cannot be an area root"))?;
        let name = path.name().unwrap_or_default().to_string();
        Ok(StorEntry {
            owner_id: who.id,
            path: path.full(),
            parent: parent.full(),
            name,
            kind: EntryKind::Object,
            size,
            md5,
            content_type: content_type.map(str::to_string),
            blob_key: Some(blob_key.to_string()),
            etag: uuid::Uuid::new_v4().simple().to_string(),
            mtime: now,
        })
    }

    async fn put_entry(
        &self,
        entry: &StorEntry,
        path: &MantaPath,
        link_from_image: Option<&str>,
    ) -> Result<()> {
        let parent_is_root = path.parent().is_some_and(|p| p.is_root());
        match self
            .store
            .stor_put(entry, parent_is_root, link_from_image)
            .await?
        {
            StorPut::Done { replaced_blob } => {
                if let Some(old) = replaced_blob {
                    self.delete_blob(&old).await;
                }
                Ok(())
            }
            StorPut::NoParent => Err(DomainError::rule(
                RuleCode::DirectoryDoesNotExist,
                format!("{} does not exist", entry.parent),
            )),
            StorPut::IsDirectory => Err(DomainError::rule(
                RuleCode::InvalidArgument,
                format!("{} is a directory", entry.path),
            )),
            StorPut::SourceGone => Err(DomainError::rule(
                RuleCode::ResourceNotFound,
                "the image was deleted or changed during the export",
            )),
        }
    }

    /// `mkdir -p`: every missing directory from the area root down to `dir`.
    async fn mkdirs(&self, who: &User, dir: &MantaPath) -> Result<()> {
        let mut chain = Vec::new();
        let mut cur = Some(dir.clone());
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            chain.push(p);
        }
        for p in chain.into_iter().rev() {
            self.mkdir_path(who, &p).await?;
        }
        Ok(())
    }

    async fn mkdir_path(&self, who: &User, p: &MantaPath) -> Result<bool> {
        if p.is_root() {
            return Ok(false);
        }
        let parent = p.parent().ok_or_else(|| invalid("no parent"))?;
        let entry = StorEntry {
            owner_id: who.id,
            path: p.full(),
            parent: parent.full(),
            name: p.name().unwrap_or_default().to_string(),
            kind: EntryKind::Directory,
            size: 0,
            md5: None,
            content_type: None,
            blob_key: None,
            etag: uuid::Uuid::new_v4().simple().to_string(),
            mtime: now_millis(),
        };
        match self.store.stor_mkdir(&entry, parent.is_root()).await? {
            StorMkdir::Created => Ok(true),
            StorMkdir::Existed => Ok(false),
            StorMkdir::NoParent => Err(DomainError::rule(
                RuleCode::DirectoryDoesNotExist,
                format!("{} does not exist", parent.full()),
            )),
            StorMkdir::IsObject => Err(DomainError::rule(
                RuleCode::InvalidArgument,
                format!("{} is an object, not a directory", p.full()),
            )),
        }
    }

    // ---------------------------------------------------------------- async exports

    /// Queues an export as a job on the durable queue (leased, heartbeated, taken over by another
    /// instance if this one dies, retried, given up with an error); poll it with [`Cloud::get_export`].
    pub async fn start_export(
        &self,
        who: &User,
        id: &str,
        manta_path: &str,
    ) -> Result<ImageExport> {
        // Refuse what the synchronous call would refuse before queueing anything.
        let image = self.own_image(who, id).await?;
        MantaPath::parse(manta_path, &who.login)?;
        let size = image.file.as_ref().map(|f| f.size).unwrap_or(0);
        let now = now_millis();
        let e = ImageExport {
            id: uuid::Uuid::new_v4().hyphenated().to_string(),
            owner_id: who.id,
            image_id: id.to_string(),
            manta_path: manta_path.to_string(),
            state: ExportState::Queued,
            bytes_copied: 0,
            bytes_total: size,
            image_path: None,
            manifest_path: None,
            error: None,
            created: now,
            modified: now,
        };
        self.store
            .create_image_export(&e, self.max_attempts.max(1))
            .await?;
        self.wake.notify_one();
        Ok(e)
    }

    /// Runs a queued export to its end and records the outcome. Running it again (a retry, or a
    /// takeover after its instance died) writes the same targets again: it is idempotent.
    async fn run_export(&self, user: &User, mut e: ImageExport) -> Result<ImageExport> {
        e.state = ExportState::Running;
        e.modified = now_millis();
        self.store.update_image_export(&e).await?;
        match self.export_image(user, &e.image_id, &e.manta_path).await {
            Ok(t) => {
                e.state = ExportState::Complete;
                e.bytes_copied = e.bytes_total;
                e.image_path = Some(t.image_path);
                e.manifest_path = Some(t.manifest_path);
            }
            // A failure of the storage underneath is worth a retry; a refusal by a rule (the image
            // or path is no longer valid) is the export's final answer.
            Err(
                err @ (DomainError::Storage(_) | DomainError::Blob(_) | DomainError::Internal(_)),
            ) => return Err(err),
            Err(err) => {
                e.state = ExportState::Error;
                e.error = Some(err.to_string());
            }
        }
        e.modified = now_millis();
        self.store.update_image_export(&e).await?;
        Ok(e)
    }

    pub async fn get_export(&self, who: &User, id: &str) -> Result<ImageExport> {
        self.store
            .get_image_export(who.id, id)
            .await?
            .ok_or_else(|| {
                DomainError::rule(RuleCode::ResourceNotFound, format!("export {id} not found"))
            })
    }

    // ---------------------------------------------------------------- the object namespace

    /// The entry at `raw`, synthesising the area roots (which always exist).
    pub async fn stor_entry(&self, who: &User, raw: &str) -> Result<(MantaPath, StorEntry)> {
        let p = MantaPath::parse(raw, &who.login)?;
        if p.is_root() {
            let full = p.full();
            let root = StorEntry {
                owner_id: who.id,
                parent: format!("/{}", who.login),
                name: p.area.as_str().to_string(),
                path: full,
                kind: EntryKind::Directory,
                size: 0,
                md5: None,
                content_type: None,
                blob_key: None,
                etag: "root".into(),
                mtime: who.created,
            };
            return Ok((p, root));
        }
        let e = self
            .store
            .stor_get(who.id, &p.full())
            .await?
            .ok_or_else(|| object_not_found(raw))?;
        Ok((p, e))
    }

    pub async fn stor_list(
        &self,
        who: &User,
        dir: &MantaPath,
        marker: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StorEntry>> {
        self.store
            .stor_list(who.id, &dir.full(), marker, limit.clamp(1, 1024))
            .await
    }

    /// Streams a new object to `raw`; replaces an existing object. With `expect_md5` (hex), a body
    /// whose md5 differs is refused and nothing changes.
    pub async fn stor_put_object<S, E>(
        &self,
        who: &User,
        raw: &str,
        content_type: Option<&str>,
        expect_md5: Option<&str>,
        body: S,
    ) -> Result<StorEntry>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let p = MantaPath::parse(raw, &who.login)?;
        if p.is_root() {
            return Err(invalid(format!("{} is a directory", p.full())));
        }
        let key = satchel_blob::new_key(&format!("u/{}/stor", who.id));
        let allowance = self.quotas().upload_allowance(who.id).await?;
        let written = allowance.check(
            self.blobs
                .put_stream_with(&key, body, Some(allowance.bytes), Hashes::IMAGE)
                .await,
        )?;
        if let Some(want) = expect_md5 {
            if !want.eq_ignore_ascii_case(&written.md5) {
                self.delete_blob(&key).await;
                return Err(DomainError::rule(
                    RuleCode::BadRequest,
                    format!(
                        "Content-MD5 {want} does not match the body's md5 {}",
                        written.md5
                    ),
                ));
            }
        }
        let entry = self.object_entry(
            who,
            &p,
            &key,
            written.size as i64,
            Some(written.md5),
            now_millis(),
            content_type,
        )?;
        if let Err(e) = self.put_entry(&entry, &p, None).await {
            self.delete_blob(&key).await;
            return Err(e);
        }
        Ok(entry)
    }

    /// Creates a directory whose parent exists; an existing directory is fine (Manta answers 204 both ways).
    pub async fn stor_mkdir(&self, who: &User, raw: &str) -> Result<bool> {
        let p = MantaPath::parse(raw, &who.login)?;
        self.mkdir_path(who, &p).await
    }

    pub async fn stor_delete(&self, who: &User, raw: &str) -> Result<()> {
        let p = MantaPath::parse(raw, &who.login)?;
        if p.is_root() {
            return Err(DomainError::rule(
                RuleCode::OperationNotAllowedOnRootDirectory,
                format!("{} cannot be deleted", p.full()),
            ));
        }
        match self.store.stor_delete(who.id, &p.full()).await? {
            StorDelete::Deleted { blob } => {
                if let Some(b) = blob {
                    self.delete_blob(&b).await;
                }
                Ok(())
            }
            StorDelete::Missing => Err(object_not_found(raw)),
            StorDelete::NotEmpty => Err(DomainError::rule(
                RuleCode::DirectoryNotEmpty,
                format!("{} is not empty", p.full()),
            )),
        }
    }

    async fn delete_blob(&self, key: &str) {
        if let Err(e) = self.blobs.delete(key).await {
            tracing::warn!(key, error = %e, "deleting a blob failed; it is now orphaned");
        }
    }
}

pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The job handler for CloudAPI async image exports (kind [`crate::model::JOB_IMAGE_EXPORT`]).
pub struct ImageExportRunner {
    pub cloud: Arc<Cloud>,
}

#[async_trait::async_trait]
impl crate::ports::JobHandler for ImageExportRunner {
    async fn run(
        &self,
        job: &crate::model::Job,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        let crate::model::JobSubject::ImageExport(id) = &job.subject else {
            return Err(DomainError::Internal(
                format!("a {} job reached the image export runner", job.subject).into(),
            ));
        };
        let Some(e) = self.cloud.store.get_image_export_any(id).await? else {
            return Ok(()); // its user was removed meanwhile
        };
        if e.state.is_final() {
            return Ok(()); // finished by an attempt that died before removing its job
        }
        let Some(user) = self.cloud.users.user_by_id(e.owner_id).await? else {
            return Ok(());
        };
        tokio::select! {
            r = self.cloud.run_export(&user, e) => r.map(|_| ()),
            // The lease was lost (another instance runs it now) or this server is stopping: leave
            // the export as it is; whoever holds the job next writes the same targets again.
            _ = cancel.cancelled() => Err(DomainError::Internal("image export interrupted".into())),
        }
    }

    async fn give_up(&self, job: &crate::model::Job, error: &str) -> Result<()> {
        let crate::model::JobSubject::ImageExport(id) = &job.subject else {
            return Ok(());
        };
        if let Some(mut e) = self.cloud.store.get_image_export_any(id).await? {
            if !e.state.is_final() {
                e.state = ExportState::Error;
                e.error = Some(format!("gave up after {} attempts: {error}", job.attempts));
                e.modified = now_millis();
                self.cloud.store.update_image_export(&e).await?;
            }
        }
        Ok(())
    }
}
