//! Imports: an uploaded bundle or template archive made into a new bundle (or appliance with its
//! bundles). An import is a ticket (`TicketKind::BundleImport` / `TemplateImport`): created waiting
//! for its upload, queued with its job once the archive is stored, run by [`TicketRunner`], polled,
//! cancelled and deleted like every ticket.
//!
//! The job reads the archive once, streamed, through the hostile-safe reader
//! (`satchel_archive::reader`): every file member goes to a blob of its own under the import's
//! prefix (`service::import_prefix`) as it is read, never into memory. The descriptor is then checked
//! against what was actually read (`import::descriptor`), and what it describes is written with
//! the ticket's completion in one transaction (`ImportStore`). On any refusal or failure the blobs
//! written so far are deleted; a crash leaves them under a live prefix until the ticket ends, and
//! the orphan sweep takes them after.

use crate::appliance::{
    BootType, NewAppliance, NewApplianceParts, NewBootScript, NewOsProfile, OsPackage,
};
use crate::export::{Failure, Meter, TicketRunner};
use crate::import::{self, ArtifactKind, BundlePlan, ImportPlan, PlannedMember, TemplatePlan};
use crate::model::*;
use crate::service::{import_prefix, Satchel};
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use satchel_archive::reader::{read_archive, ReadError, ReadSummary};
use satchel_blob::{BlobStore, Hashes};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

impl Satchel {
    // ---------------------------------------------------------------- imports

    /// Creates an import of `kind` waiting for its archive.
    pub async fn create_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        spec: ImportSpec,
    ) -> Result<Ticket> {
        debug_assert!(kind.is_import());
        let owner = self.target(who, uid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        self.quota().check_ticket(owner.id).await?;
        self.store
            .create_ticket(&NewTicket {
                owner_id: owner.id,
                kind,
                image: None,
                import: Some(spec),
                takeout: None,
                subject_id: 0,
                subject_name: String::new(),
                subject_version: String::new(),
                format: OutputFormat::Yaml,
                max_attempts: self.config.max_attempts,
            })
            .await
    }

    /// An import of `kind` of the user's; imports of the other kind do not exist here.
    pub async fn import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<Ticket> {
        self.ticket_of(who, uid, id, kind, None, || format!("import {id}"))
            .await
    }

    pub async fn list_imports(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
    ) -> Result<Vec<Ticket>> {
        self.tickets_of(who, uid, kind).await
    }

    /// Stores the uploaded archive (streamed, bounded by the user's quota and `--max-upload`) and
    /// queues the import. A second upload, or one after a cancel, is refused and its blob removed.
    pub async fn upload_import<S, E>(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
        body: S,
    ) -> Result<Ticket>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let t = self.import(who, uid, kind, id).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        if t.state != TicketState::AwaitingUpload {
            return Err(DomainError::Conflict(format!(
                "import {id} has its archive already (it is {})",
                t.state.as_str()
            )));
        }
        let key = upload_key(t.owner_id, t.id);
        let blob = self.store_upload_at(t.owner_id, &key, body).await?;
        let upload = ArchiveRef {
            key: blob.key.clone(),
            file_name: "upload.tar.gz".into(),
            size: blob.size,
            sha256: blob.sha256,
        };
        let queued = self
            .store
            .queue_import(t.owner_id, t.id, &upload, self.config.max_attempts)
            .await;
        match queued {
            Ok(Some(t)) if t.state == TicketState::Queued => Ok(self.queued(t)),
            Ok(Some(t)) => {
                // Raced with another upload or a cancel: the key is this import's, so only remove
                // it if the ticket does not hold it.
                if t.archive.as_ref().map(|a| &a.key) != Some(&key) {
                    self.delete_blobs(vec![key]).await;
                }
                Err(DomainError::Conflict(format!(
                    "import {id} has its archive already (it is {})",
                    t.state.as_str()
                )))
            }
            Ok(None) => {
                self.delete_blobs(vec![key]).await;
                Err(DomainError::not_found(format!("import {id}")))
            }
            Err(e) => {
                self.delete_blobs(vec![key]).await;
                Err(e)
            }
        }
    }

    pub async fn cancel_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<Cancelled> {
        let t = self.import(who, uid, kind, id).await?;
        self.cancel_resolved(who, t).await
    }

    /// Deletes the import's record (and its upload, if still there). What it created stays: it is
    /// the user's bundle or appliance now.
    pub async fn delete_import(
        &self,
        who: &Principal,
        uid: &str,
        kind: TicketKind,
        id: Id,
    ) -> Result<()> {
        let t = self.import(who, uid, kind, id).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let gone = self
            .store
            .delete_ticket(t.owner_id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("import {id}")))?;
        self.delete_blobs(vec![upload_key(gone.owner_id, gone.id)])
            .await;
        Ok(())
    }
}

/// Where an import's uploaded archive is kept until the import ends.
pub(crate) fn upload_key(owner: Id, ticket: Id) -> String {
    format!("{}upload.tar.gz", import_prefix(owner, ticket))
}

impl TicketRunner {
    /// Deletes an import's upload once the import has ended (no-op for the other kinds).
    pub(crate) async fn discard_upload(&self, t: &Ticket) {
        if t.kind.is_import() {
            let _ = self.blobs.delete(&upload_key(t.owner_id, t.id)).await;
        }
    }

    /// Creates the template's appliance with its bundles (new ones from the archive, or with
    /// `reusebundles` the user's own of the same name and version) and boot scripts, replacing an
    /// appliance of the same name and version with `force` (without it, such an appliance is a
    /// refusal), all with the ticket's completion in one transaction.
    async fn complete_template_import(
        &self,
        t: &Ticket,
        plan: &TemplatePlan,
        files: &HashMap<String, BlobRef>,
    ) -> std::result::Result<(), Failure> {
        let spec = t.import.unwrap_or_default();
        let owner = t.owner_id;
        let mine = if spec.reuse_bundles {
            self.store.list_bundles(owner).await?
        } else {
            Vec::new()
        };
        let mut bundles = Vec::with_capacity(plan.bundles.len());
        for b in &plan.bundles {
            let (name, version) = (crate::names::nfc(&b.name), crate::names::nfc(&b.version));
            match mine.iter().find(|m| m.name == name && m.version == version) {
                Some(m) => bundles.push(ImportedBundle::Existing(m.id)),
                None => bundles.push(ImportedBundle::New(Box::new(bundle_parts(
                    b,
                    files,
                    spec.imported,
                )?))),
            }
        }
        let mut boot_scripts = Vec::with_capacity(plan.boot_scripts.len());
        for (i, s) in plan.boot_scripts.iter().enumerate() {
            let kind = match s.kind.as_deref() {
                None => BootType::FirstBoot,
                Some(k) => BootType::parse(&k.to_ascii_lowercase()).ok_or_else(|| {
                    Failure::Permanent(format!(
                        "boot script {}: type {k:?} is neither firstboot nor everyboot",
                        s.name
                    ))
                })?,
            };
            let script = NewBootScript {
                name: s.name.clone(),
                order: s.order.map(i64::from).unwrap_or(i as i64 + 1),
                kind,
            };
            boot_scripts.push((script, stored(files, &s.script.member)?));
        }
        let os = &plan.os;
        let os_profile = match (&os.profile, os.pkgs.is_empty()) {
            (None, true) => None,
            // Packages belong to a profile; hammr's templates name one, others get the smallest.
            (p, _) => Some(NewOsProfile {
                name: p.clone().unwrap_or_else(|| "Minimal".into()),
                packages: os
                    .pkgs
                    .iter()
                    .map(|p| OsPackage {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        arch: p.arch.clone(),
                    })
                    .collect(),
            }),
        };
        let distribution = (!os.name.is_empty()).then(|| DistributionRef {
            name: os.name.clone(),
            version: os.version.clone(),
            arch: os.arch.clone(),
        });
        let parts = NewApplianceParts {
            appliance: NewAppliance {
                name: plan.name.clone(),
                version: plan.version.clone(),
                description: plan.description.clone(),
                distribution,
                imported: spec.imported,
            },
            bundles: Vec::new(),
            os_profile,
            boot_scripts,
        }
        .checked()?;
        let existing = self
            .store
            .find_appliance(owner, &parts.appliance.name, &parts.appliance.version)
            .await?;
        let replace = match (existing, spec.force) {
            (Some(a), true) => Some(a.id),
            (Some(a), false) => {
                return Err(Failure::Permanent(format!(
                    "an appliance {} {} exists already (id {}); import with force to replace it",
                    a.name, a.version, a.id
                )))
            }
            (None, _) => None,
        };
        match self
            .store
            .complete_template_import(t.id, &bundles, &parts, replace)
            .await?
        {
            Some((_, gone)) => {
                for key in gone {
                    let _ = self.blobs.delete(&key).await;
                }
                Ok(())
            }
            None => Err(Failure::Cancelled),
        }
    }

    /// Runs an import: read, check, create, complete; see the module documentation.
    pub(crate) async fn run_import(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let upload = t
            .archive
            .clone()
            .ok_or_else(|| Failure::Permanent("the import has no uploaded archive".into()))?;
        let written = Written::default();
        let outcome = self.import_once(t, &upload, &written, cancel).await;
        let stored = written.keys();
        // Nothing of a failed or cancelled attempt stays: the files it stored go with it. After a
        // success, what the import did not keep goes too (members of reused bundles, a template's
        // logo, which appliances do not hold).
        let keep = match &outcome {
            Ok(()) => self
                .store
                .referenced_blobs(&stored)
                .await
                .unwrap_or_else(|_| stored.iter().cloned().collect()),
            Err(_) => Default::default(),
        };
        for key in stored.iter().filter(|k| !keep.contains(*k)) {
            let _ = self.blobs.delete(key).await;
        }
        outcome
    }

    async fn import_once(
        &self,
        t: &Ticket,
        upload: &ArchiveRef,
        written: &Written,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let read = self.read_upload(t, upload, written, cancel).await?;
        let files = written.by_path(&read);
        let plan = import::plan_import(&read)
            .map_err(|e| Failure::Permanent(format!("the archive was refused: {e}")))?;
        match (t.kind, plan) {
            (TicketKind::BundleImport, ImportPlan::Bundle(b)) => {
                let parts = bundle_parts(&b, &files, t.import.is_some_and(|i| i.imported))?;
                match self.store.complete_bundle_import(t.id, &parts).await? {
                    Some(_) => Ok(()),
                    None => Err(Failure::Cancelled),
                }
            }
            (TicketKind::TemplateImport, ImportPlan::Template(p)) => {
                self.complete_template_import(t, &p, &files).await
            }
            (_, ImportPlan::Template(_)) => Err(Failure::Permanent(
                "the archive holds a template (template.yml); import it under /imports".into(),
            )),
            (_, ImportPlan::Bundle(_)) => Err(Failure::Permanent(
                "the archive holds a bundle (bundle.yml); import it under /bundleimports".into(),
            )),
        }
    }

    /// Feeds a stored archive's `stream` to a reader thread (through `tx`, read back as a
    /// [`ChannelRead`]), reporting progress and stopping on cancel. A reader that stops early (it
    /// refused the archive) ends the feed quietly: its own answer says why. `tx` is dropped on
    /// return, and on failure `cancel` fires so that the reader and its writer stop too.
    pub(crate) async fn feed_reader(
        &self,
        stream: &mut futures::stream::BoxStream<'static, satchel_blob::Result<Bytes>>,
        tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
        meter: &mut Meter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let fed = async {
            while let Some(chunk) = stream.next().await {
                if cancel.is_cancelled() {
                    return Err(Failure::Cancelled);
                }
                let chunk = chunk.map_err(|e| Failure::Transient(e.into()))?;
                meter.loaded += chunk.len() as i64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(());
                }
                self.pace(meter).await?;
            }
            Ok(())
        }
        .await;
        drop(tx);
        if fed.is_err() {
            cancel.cancel();
        }
        fed
    }

    /// Streams the upload through the hostile-safe reader on a blocking thread, storing each file
    /// member in a blob of its own as it passes; progress is the share of the upload read.
    async fn read_upload(
        &self,
        t: &Ticket,
        upload: &ArchiveRef,
        written: &Written,
        cancel: &CancellationToken,
    ) -> std::result::Result<ReadSummary, Failure> {
        let mut stream = self
            .blobs
            .get(&upload.key, None)
            .await
            .map_err(|e| match e {
                satchel_blob::BlobError::NotFound(_) => {
                    Failure::Permanent("the uploaded archive is missing".into())
                }
                other => Failure::Transient(other.into()),
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let limits = self.import_limits.clone();
        let (blobs, prefix) = (self.blobs.clone(), import_prefix(t.owner_id, t.id));
        let stop = cancel.clone();
        // The reader (decompressing, on its blocking thread) hands each member's bytes to a writer
        // task, so decompression and blob writes (with their md5) overlap instead of taking turns.
        let (pieces, rx_pieces) = tokio::sync::mpsc::channel::<Piece>(16);
        let writer = tokio::spawn(store_members(blobs, rx_pieces, written.clone()));
        let reader = tokio::task::spawn_blocking(move || {
            let input = ChannelRead::new(rx);
            let mut n = 0usize;
            read_archive(input, &limits, |m, r| {
                // Keys follow member order: a retried attempt rewrites the same keys.
                let key = format!("{prefix}files/{n}");
                n += 1;
                send_member(&pieces, m.path.clone(), key, r, &stop)
                    .map_err(|e| ReadError::caller(&m.path, e))
            })
        });
        let mut meter = self.meter(t.id, upload.size).await?;
        let fed = self.feed_reader(&mut stream, tx, &mut meter, cancel).await;
        let read = reader.await.map_err(|e| {
            Failure::Transient(DomainError::Internal(
                format!("the import reader stopped: {e}").into(),
            ))
        })?;
        // The reader is done (its sender dropped): the writer finishes the last member and stops.
        let stored = writer.await.map_err(|e| {
            Failure::Transient(DomainError::Internal(
                format!("the import writer stopped: {e}").into(),
            ))
        })?;
        fed?;
        if let Err(e) = stored {
            return Err(Failure::Transient(DomainError::Internal(
                format!("storing an archive member failed: {e}").into(),
            )));
        }
        read.map_err(|e| {
            if cancel.is_cancelled() {
                Failure::Cancelled
            } else {
                Failure::Permanent(format!("the archive was refused: {e}"))
            }
        })
    }
}

/// The stored blob of a planned member (the reader stored every file member it passed).
fn stored(files: &HashMap<String, BlobRef>, member: &str) -> std::result::Result<BlobRef, Failure> {
    files
        .get(member)
        .cloned()
        .ok_or_else(|| Failure::Permanent(format!("the archive member {member} was not stored")))
}

/// What a checked bundle plan creates, its files pointing at the blobs stored for their members.
/// OS packages named by a bundle (`ospkg`) carry no content and are not kept.
pub(crate) fn bundle_parts(
    plan: &BundlePlan,
    files: &HashMap<String, BlobRef>,
    imported: bool,
) -> std::result::Result<NewBundleParts, Failure> {
    // Plan indices to kept indices (packages are skipped, so later indices shift).
    let mut index: Vec<Option<usize>> = Vec::with_capacity(plan.artifacts.len());
    let mut artifacts = Vec::with_capacity(plan.artifacts.len());
    for a in &plan.artifacts {
        let kind = match a.kind {
            ArtifactKind::File => "file",
            ArtifactKind::Folder => "folder",
            ArtifactKind::OsPackage => {
                index.push(None);
                continue;
            }
        };
        let blob = match (a.kind, &a.member) {
            (ArtifactKind::File, Some(m)) => Some(stored(files, m)?),
            (ArtifactKind::File, None) => {
                return Err(Failure::Permanent(format!(
                    "the file {} has no archive member",
                    a.name
                )))
            }
            _ => None,
        };
        index.push(Some(artifacts.len()));
        artifacts.push(NewArtifactPart {
            name: crate::names::nfc(&a.name),
            kind: kind.into(),
            parent: a.parent.and_then(|p| index.get(p).copied().flatten()),
            tag: a.tag.clone(),
            install_location: a.install_location.clone(),
            blob,
        });
    }
    let attach =
        |m: &Option<PlannedMember>| -> std::result::Result<Option<(String, BlobRef)>, Failure> {
            m.as_ref()
                .map(|m| Ok((crate::names::nfc(&m.name), stored(files, &m.member)?)))
                .transpose()
        };
    Ok(NewBundleParts {
        imported,
        name: crate::names::nfc(&plan.name),
        version: crate::names::nfc(&plan.version),
        description: plan.description.clone(),
        release: plan.release.clone(),
        install_location: plan.install_location.clone(),
        artifacts,
        license: attach(&plan.license)?,
        logo: attach(&plan.logo)?,
    })
}

/// What a reader hands its writer task: a member's start (its name: an archive path, or a
/// digest), its bytes, its end.
pub(crate) enum Piece {
    Start { name: String, key: String },
    Data(Bytes),
    End,
}

/// Sends one member's bytes (read on the reader's blocking thread) to the writer task. Fails when
/// the task stopped (a blob write failed) or the job was cancelled.
pub(crate) fn send_member(
    pieces: &tokio::sync::mpsc::Sender<Piece>,
    name: String,
    key: String,
    r: &mut dyn std::io::Read,
    cancel: &CancellationToken,
) -> std::result::Result<(), String> {
    let gone = |_| "the member could not be stored".to_string();
    pieces
        .blocking_send(Piece::Start { name, key })
        .map_err(gone)?;
    // One read buffer, and pieces of exactly what was read: a small member's piece must not hold
    // a whole read buffer while it waits in the channel (that doubled the peak RSS).
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if cancel.is_cancelled() {
            return Err("cancelled".into());
        }
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return pieces.blocking_send(Piece::End).map_err(gone);
        }
        let piece = Bytes::copy_from_slice(&buf[..n]);
        pieces.blocking_send(Piece::Data(piece)).map_err(gone)?;
    }
}

/// The writer task: each member into a new blob. The sha256 comes from the reader, which hashes
/// every member anyway, so the writer adds only md5. A member the reader did not end (it stopped)
/// is aborted, leaving nothing.
async fn store_members(
    blobs: Arc<dyn BlobStore>,
    mut pieces: tokio::sync::mpsc::Receiver<Piece>,
    written: Written,
) -> std::result::Result<(), String> {
    let hashes = Hashes {
        sha256: false,
        md5: true,
        sha1: false,
        crc32: true,
    };
    let mut open: Option<(String, String, satchel_blob::BlobWriter)> = None;
    while let Some(p) = pieces.recv().await {
        let step: std::result::Result<(), String> = async {
            match p {
                Piece::Start { name, key } => {
                    let w = blobs
                        .writer(&key, hashes)
                        .await
                        .map_err(|e| e.to_string())?;
                    open = Some((name, key, w));
                }
                Piece::Data(b) => {
                    if let Some((_, _, w)) = open.as_mut() {
                        w.write(b).await.map_err(|e| e.to_string())?;
                    }
                }
                Piece::End => {
                    if let Some((path, key, w)) = open.take() {
                        let done = w.finish().await.map_err(|e| e.to_string())?;
                        written.push(path, key, done);
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = step {
            if let Some((_, _, w)) = open.take() {
                w.abort().await;
            }
            return Err(e);
        }
    }
    if let Some((_, _, w)) = open.take() {
        w.abort().await;
    }
    Ok(())
}

/// The file members an attempt stored: (archive path, blob key, what the writer measured), shared
/// with the blocking reader.
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<(String, String, satchel_blob::Written)>>>);

impl Written {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String, satchel_blob::Written)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn push(&self, path: String, key: String, w: satchel_blob::Written) {
        self.lock().push((path, key, w));
    }
    fn keys(&self) -> Vec<String> {
        self.lock().iter().map(|(_, k, _)| k.clone()).collect()
    }
    /// Every stored member as a blob reference, with the sha256 the reader computed.
    fn by_path(&self, read: &ReadSummary) -> HashMap<String, BlobRef> {
        let sha: HashMap<&str, &[u8; 32]> = read
            .members
            .iter()
            .map(|m| (m.path.as_str(), &m.sha256))
            .collect();
        let now = now_millis();
        self.lock()
            .iter()
            .map(|(path, key, w)| {
                let blob = BlobRef {
                    key: key.clone(),
                    size: w.size as i64,
                    sha256: sha.get(path.as_str()).map(hex::encode).unwrap_or_default(),
                    md5: w.md5.clone(),
                    uploaded: now,
                    crc32: w.crc32,
                };
                (path.clone(), blob)
            })
            .collect()
    }
}

/// `std::io::Read` over the chunks an async task sends (a stored archive's blob stream).
pub(crate) struct ChannelRead {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelRead {
    pub(crate) fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> ChannelRead {
        ChannelRead {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}
