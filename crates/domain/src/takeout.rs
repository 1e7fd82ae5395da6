//! Takeouts: everything a user owns in one archive, one request (seed 002 in one call). A takeout is
//! a ticket (`TicketKind::Takeout`) on the same machinery as exports: queued with its job, progress,
//! cancel, download, expiry. Its archive (`.zip`, the default, or `.tar.gz`):
//!
//! ```text
//! index.json                                  user, time, Satchel version, what is in and what is not,
//!                                             every entry (kind, id, name, version, path, size, sha256)
//! bundles/<name>-<version>-<id>.tar.gz        each bundle exactly as its export makes it (re-imports)
//! templates/<name>-<version>-<id>.tar.gz      each appliance exactly as its export makes it
//! container-images/<name>-<id>.oci.tar.gz     each generated container image's archive
//! accounts/accounts.json.age                  the cloud accounts with their credentials, encrypted
//!                                             with the request's passphrase (age, scrypt): `age -d`
//!                                             opens it; `accounts.json` only on credentials=plaintext
//! ```
//!
//! Each inner export is built with the export's own writer (`write_archive_to`) to a part beside the
//! takeout's archive, then streamed into it (stored: it is compressed already) and deleted; memory
//! stays flat whatever the sizes. The accounts document is built in (zeroizing) memory: it is
//! bounded by the account limits (200 accounts of at most 8 certificates of 64 KiB) and is a few
//! KiB in practice. The passphrase waits for the job sealed with the server's secrets key in the
//! ticket's parameters and is dropped from them when the job is over; without one, the accounts
//! are left out and `index.json` says so.

use crate::accounts::Secret;
use crate::appliance_export::{plan_template, BundleContent};
use crate::export::{
    plan, ready_docs, ArchiveOf, BlobSink, Failure, Meter, PlannedMember, TicketRunner,
};
use crate::model::*;
use crate::names::path_segment;
use crate::service::{archive_key, Satchel};
use crate::{DomainError, Result};
use async_trait::async_trait;
use satchel_archive::zip::ZipStreamWriter;
use satchel_archive::{ArchiveError, MemberWrite, Mode, TarGzWriter};
use satchel_blob::Hashes;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where a takeout's archive and the parts it builds live (the sweep spares it while it runs).
pub fn parts_prefix(owner: Id, ticket: Id) -> String {
    format!("u/{owner}/exports/{ticket}/")
}

/// Shortest passphrase a takeout accepts for the credentials (scrypt slows guessing, it does not
/// make a short passphrase safe).
pub const MIN_PASSPHRASE: usize = 8;
const MAX_PASSPHRASE: usize = 1024;

/// A takeout as asked for.
#[derive(Debug, Clone)]
pub struct TakeoutRequest {
    pub format: TakeoutFormat,
    pub include: Vec<TakeoutPart>,
    /// Encrypts the cloud accounts' credentials (age, scrypt).
    pub passphrase: Option<Secret>,
    /// `credentials=plaintext`: the credentials in the clear, explicitly asked for.
    pub plaintext_credentials: bool,
    /// Where the final status is POSTed, signed (`crate::notify`).
    pub notify_url: Option<String>,
}

/// What a takeout would hold, before it starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    pub items: i64,
    /// Bytes of the files the archive will carry (uncompressed), and of the image archives.
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
struct IndexEntry {
    kind: &'static str,
    id: Id,
    name: String,
    version: String,
    path: String,
    size: i64,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct Excluded {
    kind: &'static str,
    reason: &'static str,
}

const NO_PASSPHRASE: &str = "cloud accounts are left out: their credentials go in a takeout only \
     encrypted with a passphrase of the request (passphrase=..., opened with `age -d`) or, asked \
     for explicitly, in the clear (credentials=plaintext)";

#[derive(Debug, Serialize)]
struct Index<'a> {
    format: &'static str,
    user: &'a str,
    created: String,
    satchel: &'static str,
    includes: Vec<&'static str>,
    excluded: Vec<Excluded>,
    entries: &'a [IndexEntry],
}

/// The outer archive, in either format (one per running takeout: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Outer {
    Tar(TarGzWriter<BlobSink>),
    Zip(ZipStreamWriter<BlobSink>),
}

#[async_trait]
impl MemberWrite for Outer {
    async fn begin_member(
        &mut self,
        path: &str,
        size: u64,
        mtime: u64,
        mode: u32,
    ) -> std::result::Result<(), ArchiveError> {
        match self {
            Outer::Tar(w) => w.begin_member(path, size, mtime, mode).await,
            Outer::Zip(w) => w.begin_member(path, size, mtime, mode).await,
        }
    }
    async fn member_data(
        &mut self,
        data: &[u8],
        mode: Mode,
    ) -> std::result::Result<(), ArchiveError> {
        match self {
            Outer::Tar(w) => w.member_data(data, mode).await,
            Outer::Zip(w) => w.member_data(data, mode).await,
        }
    }
    async fn end_member(&mut self) -> std::result::Result<(), ArchiveError> {
        match self {
            Outer::Tar(w) => w.end_member().await,
            Outer::Zip(w) => w.end_member().await,
        }
    }
}

impl Outer {
    async fn add_bytes(
        &mut self,
        path: &str,
        data: &[u8],
        mtime: u64,
    ) -> std::result::Result<(), ArchiveError> {
        match self {
            Outer::Tar(w) => w.add_bytes(path, data, mtime).await,
            Outer::Zip(w) => w.add_bytes(path, data).await,
        }
    }
    async fn abort(self) {
        match self {
            Outer::Tar(w) => w.into_sink().0.abort().await,
            Outer::Zip(w) => w.into_sink().0.abort().await,
        }
    }
    /// Finishes the archive and publishes it: (size, sha256).
    async fn finish(self) -> std::result::Result<(u64, String), Failure> {
        let (sink, size, sha256) = match self {
            Outer::Tar(w) => {
                let f = w.finish().await?;
                (f.sink, f.size, f.sha256)
            }
            Outer::Zip(w) => {
                let f = w.finish().await?;
                (f.sink, f.size, f.sha256)
            }
        };
        sink.0
            .finish()
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        Ok((size, sha256))
    }
}

/// One inner archive of a takeout, planned.
struct Part {
    kind: &'static str,
    id: Id,
    name: String,
    version: String,
    path: String,
    build: PartBuild,
}

enum PartBuild {
    /// Built here with the export's writer, from its plan.
    Export {
        of_template: bool,
        doc: (&'static str, Vec<u8>),
        members: std::sync::Arc<[PlannedMember]>,
        mtime: u64,
    },
    /// Copied as it is (a container image's archive).
    Existing(ArchiveRef),
}

impl TicketRunner {
    /// Every part the takeout will hold, and the bytes its files weigh.
    async fn takeout_parts(&self, owner: Id, spec: &TakeoutSpec) -> Result<(Vec<Part>, i64)> {
        let mut parts = Vec::new();
        let mut bytes = 0i64;
        let weigh = |c: &BundleContent| -> i64 {
            c.artifacts
                .iter()
                .filter_map(|a| a.blob.as_ref())
                .map(|b| b.size)
                .sum::<i64>()
                + c.license
                    .iter()
                    .chain(c.logo.iter())
                    .map(|a| a.blob.size)
                    .sum::<i64>()
        };
        if spec.include.contains(&TakeoutPart::Bundles) {
            for b in self.store.list_bundles(owner).await? {
                let c = self.bundle_content(&b).await?;
                bytes += weigh(&c);
                let p = plan(
                    &b,
                    &c.artifacts,
                    c.license.as_ref(),
                    c.logo.as_ref(),
                    OutputFormat::Yaml,
                )?;
                parts.push(Part {
                    kind: "bundle",
                    id: b.id,
                    path: format!(
                        "bundles/{}-{}-{}.tar.gz",
                        path_segment(&b.name),
                        path_segment(&b.version),
                        b.id
                    ),
                    name: b.name.clone(),
                    version: b.version.clone(),
                    build: PartBuild::Export {
                        of_template: false,
                        doc: (p.doc_name, p.doc),
                        members: p.members.into(),
                        mtime: (b.modified / 1000).max(0) as u64,
                    },
                });
            }
        }
        if spec.include.contains(&TakeoutPart::Templates) {
            for a in self.store.list_appliances(owner).await? {
                let Some(ap) = self.store.appliance_parts(owner, a.id).await? else {
                    continue; // deleted meanwhile
                };
                let mut contents = Vec::with_capacity(ap.bundles.len());
                for b in &ap.bundles {
                    let c = self.bundle_content(b).await?;
                    bytes += weigh(&c);
                    contents.push(c);
                }
                bytes += ap
                    .boot_scripts
                    .iter()
                    .filter_map(|s| s.blob.as_ref())
                    .map(|b| b.size)
                    .sum::<i64>();
                let p = plan_template(&ap, &contents, OutputFormat::Yaml)?;
                parts.push(Part {
                    kind: "template",
                    id: a.id,
                    path: format!(
                        "templates/{}-{}-{}.tar.gz",
                        path_segment(&a.name),
                        path_segment(&a.version),
                        a.id
                    ),
                    name: a.name.clone(),
                    version: a.version.clone(),
                    build: PartBuild::Export {
                        of_template: true,
                        doc: (p.doc_name, p.doc),
                        members: p.members.into(),
                        mtime: (a.modified / 1000).max(0) as u64,
                    },
                });
            }
        }
        if spec.include.contains(&TakeoutPart::Images) {
            for i in self.store.list_tickets(owner).await? {
                if i.kind != TicketKind::ContainerImage || i.state != TicketState::Complete {
                    continue;
                }
                let Some(a) = i.archive.clone() else { continue };
                let name = i.image.as_ref().map(|s| s.name.clone()).unwrap_or_default();
                let ext = if a.file_name.ends_with(".gz") {
                    "oci.tar.gz"
                } else {
                    "oci.tar"
                };
                bytes += a.size;
                parts.push(Part {
                    kind: "container-image",
                    id: i.id,
                    path: format!("container-images/{}-{}.{ext}", path_segment(&name), i.id),
                    name,
                    version: i.subject_version.clone(),
                    build: PartBuild::Existing(a),
                });
            }
        }
        Ok((parts, bytes))
    }

    pub(crate) async fn build_takeout(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let spec = t
            .takeout
            .clone()
            .ok_or_else(|| Failure::Permanent("the takeout has no parameters".into()))?;
        let user = self
            .store
            .user_by_id(t.owner_id)
            .await?
            .ok_or_else(|| Failure::Permanent("the user was deleted".into()))?;
        let (parts, bytes) = self.takeout_parts(t.owner_id, &spec).await?;
        // Files are read once into their part and the parts once into the takeout (at most their
        // size again): one figure across all of it.
        let mut meter = self.meter(t.id, bytes.saturating_mul(2)).await?;
        let key = archive_key(t.owner_id, t.id);
        let writer = self
            .blobs
            .writer(&key, Hashes::DEFAULT)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut outer = match spec.format {
            TakeoutFormat::TarGz => Outer::Tar(TarGzWriter::new(BlobSink(writer), self.gz)),
            TakeoutFormat::Zip => Outer::Zip(ZipStreamWriter::new(BlobSink(writer))),
        };
        let mtime = (now_millis() / 1000).max(0) as u64;
        let mut entries = Vec::with_capacity(parts.len());
        let part_key = |n: usize| format!("{}parts/{n}.tar.gz", parts_prefix(t.owner_id, t.id));
        let result: std::result::Result<(), Failure> = async {
            // A pipeline of two: part n+1 is built while part n is copied into the takeout (the
            // copy is a sequential pass on about one core; the build keeps both busy). The copy
            // counts on a meter of its own that never reports, added to the ticket's after.
            let mut pending: Option<(&Part, ArchiveRef, Option<String>)> = None;
            for (n, p) in parts.iter().enumerate() {
                let build = async {
                    match &p.build {
                        PartBuild::Existing(a) => Ok((a.clone(), None)),
                        PartBuild::Export {
                            of_template,
                            doc,
                            members,
                            mtime: part_mtime,
                        } => {
                            let of = if *of_template {
                                ArchiveOf::Template {
                                    name: p.name.clone(),
                                    version: p.version.clone(),
                                }
                            } else {
                                ArchiveOf::Bundle {
                                    name: p.name.clone(),
                                    version: p.version.clone(),
                                }
                            };
                            let key = part_key(n);
                            let a = self
                                .write_archive_to(
                                    t,
                                    of,
                                    ready_docs(vec![(doc.0, doc.1.clone())]),
                                    members.clone(),
                                    *part_mtime,
                                    p.path.clone(),
                                    key.clone(),
                                    Some(&mut meter),
                                    cancel,
                                )
                                .await?;
                            Ok((a, Some(key)))
                        }
                    }
                };
                let previous = pending.take();
                let mut copied = Meter {
                    ticket: t.id,
                    loaded: 0,
                    total: 0,
                    started: Instant::now(),
                    last_report: Instant::now() + Duration::from_secs(365 * 24 * 3600),
                };
                let copy = async {
                    match &previous {
                        Some((prev, archive, _)) => {
                            self.copy_part(&mut outer, prev, archive, mtime, &mut copied, cancel)
                                .await
                        }
                        None => Ok(()),
                    }
                };
                let ((archive, key), ()) = tokio::try_join!(build, copy)?;
                // The previous part is in the takeout now: its file is done with.
                if let Some((_, _, Some(k))) = &previous {
                    let _ = self.blobs.delete(k).await;
                }
                meter.loaded += copied.loaded;
                if let Some((prev, prev_archive, _)) = previous {
                    entries.push(IndexEntry::of(prev, prev_archive));
                }
                pending = Some((p, archive, key));
                if cancel.is_cancelled() {
                    return Err(Failure::Cancelled);
                }
            }
            if let Some((last, archive, key)) = pending.take() {
                self.copy_part(&mut outer, last, &archive, mtime, &mut meter, cancel)
                    .await?;
                if let Some(k) = key {
                    let _ = self.blobs.delete(&k).await;
                }
                entries.push(IndexEntry::of(last, archive));
            }
            let mut excluded = Vec::new();
            if spec.include.contains(&TakeoutPart::Accounts) {
                match self.accounts_member(&user, &spec).await? {
                    Some((path, data)) => {
                        outer.add_bytes(path, &data, mtime).await?;
                        entries.push(IndexEntry {
                            kind: "accounts",
                            id: user.id,
                            name: "cloud accounts".into(),
                            version: String::new(),
                            path: path.into(),
                            size: data.len() as i64,
                            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data[..])),
                        });
                    }
                    None => excluded.push(Excluded {
                        kind: "accounts",
                        reason: NO_PASSPHRASE,
                    }),
                }
            }
            let index = Index {
                format: "satchel-takeout/1",
                user: &user.login,
                created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                satchel: env!("CARGO_PKG_VERSION"),
                includes: spec.include.iter().map(|k| k.folder()).collect(),
                excluded,
                entries: &entries,
            };
            let doc = serde_json::to_vec_pretty(&index)
                .map_err(|e| Failure::Transient(DomainError::Internal(crate::Cause::of(e))))?;
            outer.add_bytes("index.json", &doc, mtime).await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Whichever parts were built and not yet copied (deleting one already gone is harmless).
            for (n, p) in parts.iter().enumerate() {
                if matches!(p.build, PartBuild::Export { .. }) {
                    let _ = self.blobs.delete(&part_key(n)).await;
                }
            }
            outer.abort().await;
            if !matches!(e, Failure::Transient(_)) {
                self.forget_passphrase(t.id, &spec).await;
            }
            return Err(e);
        }
        let (size, sha256) = outer.finish().await?;
        self.forget_passphrase(t.id, &spec).await;
        let ext = match spec.format {
            TakeoutFormat::Zip => "zip",
            TakeoutFormat::TarGz => "tar.gz",
        };
        let stem: String = crate::names::archive_file_name(&user.login)
            .trim_end_matches(".tar.gz")
            .to_string();
        Ok(ArchiveRef {
            key,
            file_name: format!("takeout-{stem}.{ext}"),
            size: size as i64,
            sha256,
        })
    }
}

impl IndexEntry {
    fn of(p: &Part, a: ArchiveRef) -> Self {
        IndexEntry {
            kind: p.kind,
            id: p.id,
            name: p.name.clone(),
            version: p.version.clone(),
            path: p.path.clone(),
            size: a.size,
            sha256: a.sha256,
        }
    }
}

impl TicketRunner {
    /// Copies a built part (or an existing image archive) into the takeout as one member.
    async fn copy_part(
        &self,
        outer: &mut Outer,
        p: &Part,
        archive: &ArchiveRef,
        mtime: u64,
        meter: &mut Meter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let blob = BlobRef {
            key: archive.key.clone(),
            size: archive.size,
            sha256: archive.sha256.clone(),
            md5: String::new(),
            uploaded: 0,
            crc32: None,
        };
        self.copy_member(outer, &p.path, &blob, mtime, meter, cancel)
            .await
    }

    /// The accounts member: its path and bytes, or None when the credentials are to be left out.
    async fn accounts_member(
        &self,
        user: &User,
        spec: &TakeoutSpec,
    ) -> std::result::Result<Option<(&'static str, zeroize::Zeroizing<Vec<u8>>)>, Failure> {
        let passphrase = match (spec.credentials, &spec.passphrase) {
            (Credentials::Omitted, _) => return Ok(None),
            (Credentials::Encrypted, None) => {
                return Err(Failure::Permanent(
                    "the takeout's passphrase is gone (was the job run before?); start the takeout again".into(),
                ))
            }
            (Credentials::Encrypted, Some(p)) => Some(
                crate::accounts::open_passphrase(&self.secrets, p).map_err(|_| {
                    Failure::Permanent(
                        "the takeout's passphrase does not open with this server's secrets key \
                         (rotated since the takeout was asked for?); start the takeout again"
                            .into(),
                    )
                })?,
            ),
            (Credentials::Plaintext, _) => None,
        };
        let accounts = self.store.list_accounts(user.id).await?;
        let doc = crate::accounts::accounts_document(&self.secrets, &user.login, &accounts)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let Some(passphrase) = passphrase else {
            return Ok(Some(("accounts/accounts.json", doc)));
        };
        // scrypt is slow on purpose (about a second): off the async workers.
        let sealed = tokio::task::spawn_blocking(move || age_encrypt(&passphrase, &doc))
            .await
            .map_err(|e| Failure::Transient(DomainError::Internal(crate::Cause::of(e))))?
            .map_err(|e| Failure::Permanent(format!("encrypting the accounts failed: {e}")))?;
        Ok(Some((
            "accounts/accounts.json.age",
            zeroize::Zeroizing::new(sealed),
        )))
    }

    /// Drops the sealed passphrase from the ticket once the job no longer needs it (a failure to
    /// do so is logged: it stays sealed, and goes with the ticket).
    async fn forget_passphrase(&self, ticket: Id, spec: &TakeoutSpec) {
        if spec.passphrase.is_none() {
            return;
        }
        let spec = TakeoutSpec {
            passphrase: None,
            ..spec.clone()
        };
        if let Err(e) = self.store.set_takeout_spec(ticket, &spec).await {
            tracing::warn!(ticket, error = %e, "could not drop a takeout's sealed passphrase");
        }
    }
}

/// `data` encrypted to the passphrase in the age format (scrypt recipient, binary).
fn age_encrypt(passphrase: &Secret, data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let pass = age::secrecy::SecretString::from(passphrase.expose_str().into_owned());
    let mut out = Vec::with_capacity(data.len() + 256);
    let mut w = age::Encryptor::with_user_passphrase(pass).wrap_output(&mut out)?;
    w.write_all(data)?;
    w.finish()?;
    Ok(out)
}

impl Satchel {
    /// Queues a takeout of what `uid` owns (and wakes a worker); the ticket is returned at once.
    pub async fn create_takeout(
        &self,
        who: &Principal,
        uid: &str,
        req: TakeoutRequest,
    ) -> Result<Ticket> {
        let owner = self.target(who, uid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let notify_url = match &req.notify_url {
            Some(u) => Some(crate::notify::check_url(
                u,
                self.config.notify_allow_private,
            )?),
            None => None,
        };
        let mut include = req.include;
        include.sort();
        include.dedup();
        if include.is_empty() {
            return Err(DomainError::Invalid(
                "a takeout must include something".into(),
            ));
        }
        if req.plaintext_credentials && req.passphrase.is_some() {
            return Err(DomainError::Invalid(
                "give a passphrase or credentials=plaintext, not both".into(),
            ));
        }
        // Checked on the bytes, never echoing them.
        if let Some(p) = &req.passphrase {
            let chars = p.expose_str().chars().count();
            if !(MIN_PASSPHRASE..=MAX_PASSPHRASE).contains(&chars) {
                return Err(DomainError::Invalid(format!(
                    "a takeout passphrase has {MIN_PASSPHRASE} to {MAX_PASSPHRASE} characters"
                )));
            }
        }
        self.quota().check_ticket(owner.id).await?;
        let with_accounts = include.contains(&TakeoutPart::Accounts);
        let (credentials, passphrase) = match (&req.passphrase, req.plaintext_credentials) {
            _ if !with_accounts => (Credentials::Omitted, None),
            (Some(p), _) => (
                Credentials::Encrypted,
                Some(crate::accounts::seal_passphrase(&self.secrets, p)?),
            ),
            (None, true) => (Credentials::Plaintext, None),
            (None, false) => (Credentials::Omitted, None),
        };
        let t = self
            .store
            .create_ticket(&NewTicket {
                owner_id: owner.id,
                kind: TicketKind::Takeout,
                image: None,
                import: None,
                takeout: Some(TakeoutSpec {
                    format: req.format,
                    include,
                    credentials,
                    passphrase,
                    notify_url,
                }),
                subject_id: owner.id,
                subject_name: owner.login.clone(),
                subject_version: String::new(),
                format: OutputFormat::Yaml,
                max_attempts: self.config.max_attempts,
            })
            .await?;
        Ok(self.queued(t))
    }

    pub async fn takeout(&self, who: &Principal, uid: &str, id: Id) -> Result<Ticket> {
        self.ticket_of(who, uid, id, TicketKind::Takeout, None, || {
            format!("takeout {id}")
        })
        .await
    }

    pub async fn list_takeouts(&self, who: &Principal, uid: &str) -> Result<Vec<Ticket>> {
        self.tickets_of(who, uid, TicketKind::Takeout).await
    }

    pub async fn cancel_takeout(&self, who: &Principal, uid: &str, id: Id) -> Result<Cancelled> {
        let t = self.takeout(who, uid, id).await?;
        self.cancel_resolved(who, t).await
    }

    pub async fn delete_takeout(&self, who: &Principal, uid: &str, id: Id) -> Result<()> {
        let t = self.takeout(who, uid, id).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        self.delete_with_archive(&t, || format!("takeout {id}"))
            .await
    }

    /// What a takeout of `include` would hold now: items and bytes.
    pub async fn estimate_takeout(
        &self,
        who: &Principal,
        uid: &str,
        include: &[TakeoutPart],
    ) -> Result<Estimate> {
        let owner = self.target(who, uid).await?;
        let mut e = Estimate::default();
        if include.contains(&TakeoutPart::Bundles) {
            let (sizes, atts) = self.store.bundle_extras(owner.id).await?;
            e.items += self.store.list_bundles(owner.id).await?.len() as i64;
            e.bytes += sizes.iter().map(|(_, s)| *s).sum::<i64>();
            e.bytes += atts.iter().map(|a| a.blob.size).sum::<i64>();
        }
        if include.contains(&TakeoutPart::Templates) {
            for a in self.store.list_appliances(owner.id).await? {
                e.items += 1;
                if let Some(p) = self.store.appliance_parts(owner.id, a.id).await? {
                    for b in &p.bundles {
                        e.bytes += self
                            .store
                            .list_artifacts(b.id)
                            .await?
                            .iter()
                            .filter_map(|x| x.blob.as_ref())
                            .map(|x| x.size)
                            .sum::<i64>();
                    }
                }
            }
        }
        if include.contains(&TakeoutPart::Accounts) {
            let n = self.store.list_accounts(owner.id).await?.len();
            e.items += n as i64;
        }
        if include.contains(&TakeoutPart::Images) {
            for i in self.store.list_tickets(owner.id).await? {
                if i.kind == TicketKind::ContainerImage && i.state == TicketState::Complete {
                    if let Some(a) = &i.archive {
                        e.items += 1;
                        e.bytes += a.size;
                    }
                }
            }
        }
        Ok(e)
    }
}
