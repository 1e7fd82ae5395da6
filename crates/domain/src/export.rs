//! The bundle export job: turns a ticket into a published `.tar.gz` in hammr's layout. Also home of
//! [`TicketRunner`], the job handler for every ticket kind (container images build in `container.rs`),
//! and of the file-streaming loop both builds share (`copy_member`).
//!
//! Layout (what `hammr bundle import` reads):
//! ```text
//! bundle.yml | bundle.json           name, version, files[name, source, ...], license.source, sourceLogo
//! manifest.json                      every other member with its size and sha256
//! bundles/<name>/<version>/<path>    the uploaded files, byte for byte (folders as directories)
//! bundles/<name>/<license file>      license, beside the version folder
//! bundles/<name>/<logo file>         logo
//! ```
//! The archive is streamed from blob storage through the parallel gzip encoder into a multipart
//! upload that becomes visible only when complete; progress is written to the ticket as it goes.

use crate::model::*;
use crate::names::path_segment;
use crate::ports::{JobHandler, Store};
use crate::service::archive_key;
use crate::{DomainError, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use satchel_archive::{
    file_mode, looks_incompressible, ArchiveError, GzOptions, MemberWrite, Mode, ModeProbe, Probed,
    Reserved, Sink, TarGzWriter,
};
use satchel_blob::{BlobStore, BlobWriter, Hashes};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// One member of the archive, planned before anything is read.
#[derive(Debug, Clone)]
pub struct PlannedMember {
    pub path: String,
    pub blob: Option<BlobRef>,
}

#[derive(Debug, Serialize)]
struct FileEntry {
    name: String,
    source: String,
    #[serde(rename = "installLocation", skip_serializing_if = "Option::is_none")]
    install_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileEntry>,
}

#[derive(Debug, Serialize)]
struct LicenseEntry {
    source: String,
}

/// A bundle's descriptor, as `bundle.yml` holds it and as each entry of a template's `bundles`.
#[derive(Debug, Serialize)]
pub(crate) struct BundleDoc {
    name: String,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<String>,
    #[serde(rename = "installLocation", skip_serializing_if = "Option::is_none")]
    install_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<LicenseEntry>,
    #[serde(rename = "sourceLogo", skip_serializing_if = "Option::is_none")]
    source_logo: Option<String>,
    files: Vec<FileEntry>,
}

/// One file of `manifest.json`, borrowed from the documents and the planned members.
#[derive(Debug, Serialize)]
struct ManifestEntry<'a> {
    path: &'a str,
    size: i64,
    sha256: &'a str,
}

/// `manifest.json`: every other member with its size and sha256. `bundle` names the bundle of a
/// bundle export, `template` the appliance of a template export.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<&'a str>,
    version: &'a str,
    files: Vec<ManifestEntry<'a>>,
}

/// What an archive is, for its manifest (owned: the manifest is written on a thread of its own).
#[derive(Debug, Clone)]
pub(crate) enum ArchiveOf {
    Bundle { name: String, version: String },
    Template { name: String, version: String },
}

/// A document as YAML (with hammr's leading `---`) or JSON.
pub(crate) fn render_doc<T: Serialize>(doc: &T, format: OutputFormat) -> Result<Vec<u8>> {
    Ok(match format {
        OutputFormat::Json => serde_json::to_vec_pretty(doc)
            .map_err(|e| DomainError::Internal(crate::Cause::of(e)))?,
        OutputFormat::Yaml => {
            let y = serde_yaml::to_string(doc)
                .map_err(|e| DomainError::Internal(crate::Cause::of(e)))?;
            // hammr's leading `---`, added in place (a bundle of 16,000 files has MiBs of YAML).
            let mut y = y.into_bytes();
            if !y.starts_with(b"---\n") {
                y.splice(0..0, *b"---\n");
            }
            y
        }
    })
}

/// The bundle document, its file name, and the members to stream, in archive order.
pub struct Plan {
    pub doc_name: &'static str,
    pub doc: Vec<u8>,
    pub members: Vec<PlannedMember>,
}

/// Plans an export: pure, no I/O. Folder artifacts become directories; files keep their names.
pub fn plan(
    bundle: &Bundle,
    artifacts: &[Artifact],
    license: Option<&Attachment>,
    logo: Option<&Attachment>,
    format: OutputFormat,
) -> Result<Plan> {
    let (doc_name, doc, members) = plan_unrendered(bundle, artifacts, license, logo, format)?;
    Ok(Plan {
        doc_name,
        doc: render_doc(&doc, format)?,
        members,
    })
}

/// [`plan`] with the bundle document not yet rendered.
fn plan_unrendered(
    bundle: &Bundle,
    artifacts: &[Artifact],
    license: Option<&Attachment>,
    logo: Option<&Attachment>,
    format: OutputFormat,
) -> Result<(&'static str, BundleDoc, Vec<PlannedMember>)> {
    let mut seen = std::collections::HashSet::new();
    let (doc, members) = bundle_plan(bundle, artifacts, license, logo, &mut seen)?;
    let doc_name = match format {
        OutputFormat::Json => "bundle.json",
        OutputFormat::Yaml => "bundle.yml",
    };
    Ok((doc_name, doc, members))
}

fn archive_err(e: ArchiveError) -> DomainError {
    DomainError::Internal(crate::Cause::of(e))
}

/// An archive's root documents (name, content), made when the archive asks: on a blocking thread,
/// while the members stream.
pub(crate) type Docs = Box<dyn FnOnce() -> Result<Vec<(&'static str, Vec<u8>)>> + Send>;

/// Documents already rendered.
pub(crate) fn ready_docs(docs: Vec<(&'static str, Vec<u8>)>) -> Docs {
    Box::new(move || Ok(docs))
}

/// Adds `manifest.json` to `place`: the documents (name, size, sha256), then every stored member.
/// Streamed into the place (its size measured by a first pass): a bundle of 16,000 files has a
/// 4 MiB manifest, which is never held whole.
fn write_manifest(
    place: &mut Reserved,
    docs: &[(&'static str, i64, String)],
    members: &[PlannedMember],
    of: &ArchiveOf,
    mtime: u64,
) -> Result<()> {
    let (format, bundle, template, version) = match of {
        ArchiveOf::Bundle { name, version } => (
            "satchel-bundle-export/1",
            Some(name.as_str()),
            None,
            version,
        ),
        ArchiveOf::Template { name, version } => (
            "satchel-template-export/1",
            None,
            Some(name.as_str()),
            version,
        ),
    };
    let files = docs
        .iter()
        .map(|(path, size, sha256)| ManifestEntry {
            path,
            size: *size,
            sha256,
        })
        .chain(members.iter().filter_map(|m| {
            m.blob.as_ref().map(|b| ManifestEntry {
                path: &m.path,
                size: b.size,
                sha256: &b.sha256,
            })
        }))
        .collect();
    let doc = Manifest {
        format,
        bundle,
        template,
        version,
        files,
    };
    let json = |e: serde_json::Error| DomainError::Internal(crate::Cause::of(e));
    let mut size = CountingWriter(0);
    serde_json::to_writer_pretty(&mut size, &doc).map_err(json)?;
    place
        .begin_file("manifest.json", size.0 as u64, mtime)
        .map_err(archive_err)?;
    serde_json::to_writer_pretty(&mut *place, &doc).map_err(json)?;
    place.end_file().map_err(archive_err)
}

/// One bundle's descriptor and members, under `bundles/<name>/`; `seen` holds the archive paths
/// already taken (a template's bundles share one archive).
pub(crate) fn bundle_plan(
    bundle: &Bundle,
    artifacts: &[Artifact],
    license: Option<&Attachment>,
    logo: Option<&Attachment>,
    seen: &mut std::collections::HashSet<String>,
) -> Result<(BundleDoc, Vec<PlannedMember>)> {
    let root = format!("bundles/{}", path_segment(&bundle.name));
    let base = format!("{root}/{}", path_segment(&bundle.version));
    let mut children: HashMap<Option<Id>, Vec<&Artifact>> = HashMap::new();
    let ids: std::collections::HashSet<Id> = artifacts.iter().map(|a| a.id).collect();
    for a in artifacts {
        // An orphan (parent vanished mid-read) is treated as top level rather than lost.
        let parent = a.parent_id.filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(a);
    }
    let mut members = Vec::new();
    fn walk(
        parent: Option<Id>,
        dir: &str,
        children: &HashMap<Option<Id>, Vec<&Artifact>>,
        members: &mut Vec<PlannedMember>,
        seen: &mut std::collections::HashSet<String>,
        depth: usize,
    ) -> Result<Vec<FileEntry>> {
        if depth > 64 {
            return Err(DomainError::Invalid(
                "artifact folders are nested too deeply".into(),
            ));
        }
        let mut out = Vec::new();
        for a in children.get(&parent).map(|v| v.as_slice()).unwrap_or(&[]) {
            let path = format!("{dir}/{}", path_segment(&a.name));
            if !seen.insert(path.clone()) {
                return Err(DomainError::Invalid(format!(
                    "two files of the bundle map to the same archive path {path}"
                )));
            }
            let files = if a.kind == "folder" {
                members.push(PlannedMember {
                    path: format!("{path}/"),
                    blob: None,
                });
                walk(Some(a.id), &path, children, members, seen, depth + 1)?
            } else {
                let blob = a.blob.clone().ok_or_else(|| {
                    DomainError::Invalid(format!("the file {} has no content uploaded yet", a.name))
                })?;
                members.push(PlannedMember {
                    path: path.clone(),
                    blob: Some(blob),
                });
                Vec::new()
            };
            out.push(FileEntry {
                name: a.name.clone(),
                source: path,
                install_location: a.install_location.clone(),
                tag: a.tag.clone().or_else(|| Some("softwarefile".into())),
                files,
            });
        }
        Ok(out)
    }
    let files = walk(None, &base, &children, &mut members, seen, 0)?;
    // License and logo sit beside the version folder (hammr's layout); in a template holding two
    // versions of one bundle that place is taken by the first, so the second's go in its version
    // folder (the descriptor names each path, so readers follow either).
    let mut place = |what: &str, a: &Attachment| -> Result<String> {
        let file = path_segment(&a.name);
        for path in [format!("{root}/{file}"), format!("{base}/{file}")] {
            if seen.insert(path.clone()) {
                members.push(PlannedMember {
                    path: path.clone(),
                    blob: Some(a.blob.clone()),
                });
                return Ok(path);
            }
        }
        Err(DomainError::Invalid(format!(
            "the {what} {file} maps to an archive path already used"
        )))
    };
    let license_entry = license
        .map(|l| place("license", l).map(|source| LicenseEntry { source }))
        .transpose()?;
    let source_logo = logo.map(|l| place("logo", l)).transpose()?;
    let doc = BundleDoc {
        name: bundle.name.clone(),
        version: bundle.version.clone(),
        description: bundle.description.clone(),
        release: bundle.release.clone(),
        install_location: bundle.install_location.clone(),
        license: license_entry,
        source_logo,
        files,
    };
    Ok((doc, members))
}

pub(crate) struct BlobSink(pub(crate) BlobWriter);

#[async_trait]
impl Sink for BlobSink {
    async fn write(&mut self, data: Bytes) -> std::result::Result<(), ArchiveError> {
        self.0
            .write(data)
            .await
            .map_err(|e| ArchiveError::Sink(e.to_string()))
    }
}

/// Why an attempt stopped: permanent failures end the ticket at once, transient ones are retried.
pub(crate) enum Failure {
    Permanent(String),
    Transient(DomainError),
    Cancelled,
}

impl From<DomainError> for Failure {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Invalid(m) | DomainError::NotFound(m) | DomainError::Conflict(m) => {
                Failure::Permanent(m)
            }
            other => Failure::Transient(other),
        }
    }
}

impl From<ArchiveError> for Failure {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::Tar(m) => Failure::Permanent(m),
            other => Failure::Transient(DomainError::Internal(crate::Cause::of(other))),
        }
    }
}

/// How far a build is, for its ticket's progress.
pub(crate) struct Meter {
    pub(crate) ticket: Id,
    pub(crate) loaded: i64,
    pub(crate) total: i64,
    pub(crate) started: Instant,
    pub(crate) last_report: Instant,
}

pub struct TicketRunner {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn BlobStore>,
    pub retention: Duration,
    pub gz: GzOptions,
    /// How often progress is written to the ticket.
    pub progress_every: Duration,
    /// Test hook: pause this long after each chunk (makes "kill mid-export" tests deterministic).
    pub throttle: Option<Duration>,
    /// What an import archive may be (size, members, expansion ratio, ...).
    pub import_limits: satchel_archive::reader::Limits,
    /// Opens cloud-account secrets and a takeout's sealed passphrase.
    pub secrets: crate::apikeys::SealKey,
}

impl TicketRunner {
    async fn build_export(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let bundle = self
            .store
            .get_bundle(t.owner_id, t.subject_id)
            .await?
            .ok_or_else(|| {
                Failure::Permanent(format!("mySoftware {} was deleted", t.subject_id))
            })?;
        let c = self.bundle_content(&bundle).await?;
        let (doc_name, doc, members) = plan_unrendered(
            &bundle,
            &c.artifacts,
            c.license.as_ref(),
            c.logo.as_ref(),
            t.format,
        )?;
        // The plan holds what the archive needs; the rows (MiBs for a bundle of many files) go
        // now rather than stay alive for the whole build.
        drop(c);
        let mtime = (bundle.modified / 1000).max(0) as u64;
        let of = ArchiveOf::Bundle {
            name: bundle.name.clone(),
            version: bundle.version.clone(),
        };
        let format = t.format;
        // Rendered while the first members compress (a bundle of 16,000 files: ~50 ms of YAML).
        let docs: Docs = Box::new(move || Ok(vec![(doc_name, render_doc(&doc, format)?)]));
        self.write_archive(
            t,
            of,
            docs,
            members.into(),
            mtime,
            crate::names::archive_file_name(&bundle.name),
            cancel,
        )
        .await
    }

    /// Streams an export archive to its key: the root documents, `manifest.json` (every other
    /// member with its size and sha256), then the members from blob storage, through the parallel
    /// gzip encoder into an upload published only when complete (dropped on any failure or cancel).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_archive(
        &self,
        t: &Ticket,
        of: ArchiveOf,
        docs: Docs,
        members: Arc<[PlannedMember]>,
        mtime: u64,
        file_name: String,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let key = archive_key(t.owner_id, t.id);
        self.write_archive_to(t, of, docs, members, mtime, file_name, key, None, cancel)
            .await
    }

    /// [`Self::write_archive`] to `key`, counting progress on `meter` if given (a takeout counts
    /// all its parts on one) or on a meter of its own.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_archive_to(
        &self,
        t: &Ticket,
        of: ArchiveOf,
        docs: Docs,
        members: Arc<[PlannedMember]>,
        mtime: u64,
        file_name: String,
        key: String,
        meter: Option<&mut Meter>,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let total: i64 = members
            .iter()
            .filter_map(|m| m.blob.as_ref())
            .map(|b| b.size)
            .sum::<i64>();
        let writer = self
            .blobs
            // The encoder hashes what it emits (the archive's sha256): the writer need not.
            .writer(&key, Hashes::NONE)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut tar = TarGzWriter::new(BlobSink(writer), self.gz);
        // The documents come first in the archive but are rendered on a blocking thread while the
        // members stream into the places after theirs (both cores busy from the start).
        let place = match tar.reserve().await {
            Ok(p) => p,
            Err(e) => {
                tar.into_sink().0.abort().await;
                return Err(e.into());
            }
        };
        let listed = members.clone();
        let render = tokio::task::spawn_blocking(move || {
            let mut place = place;
            let made = (|| {
                let docs = docs()?;
                let mut digests = Vec::with_capacity(docs.len());
                // Each document goes into the archive, then away; the manifest needs only its
                // size and digest.
                for (name, doc) in docs {
                    digests.push((name, doc.len() as i64, hex::encode(Sha256::digest(&doc))));
                    place.add_file(name, &doc, mtime).map_err(archive_err)?;
                }
                write_manifest(&mut place, &digests, &listed, &of, mtime)
            })();
            match made {
                Ok(()) => place.finish().map_err(archive_err),
                Err(e) => {
                    place.fail(format!("the archive's documents: {e}"));
                    Err(e)
                }
            }
        });

        let result: std::result::Result<(), Failure> = async {
            let mut own;
            let meter = match meter {
                Some(m) => m,
                None => {
                    own = self.meter(t.id, total).await?;
                    &mut own
                }
            };
            let entries: Vec<(&str, Option<&BlobRef>)> = members
                .iter()
                .map(|m| (m.path.as_str(), m.blob.as_ref()))
                .collect();
            self.copy_members(&mut tar, &entries, mtime, meter, cancel)
                .await?;
            if cancel.is_cancelled() {
                return Err(Failure::Cancelled);
            }
            Ok(())
        }
        .await;
        // The documents' own error says more than the encoder's "never filled".
        let rendered = render
            .await
            .map_err(|e| Failure::Transient(DomainError::Internal(crate::Cause::of(e))))
            .and_then(|r| r.map_err(Failure::from));
        if let Err(e) = rendered.and(result) {
            // Nothing was published: drop the partial upload.
            let sink = tar.into_sink();
            sink.0.abort().await;
            return Err(e);
        }
        let fin = tar.finish().await?;
        let written = fin
            .sink
            .0
            .finish()
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        debug_assert_eq!(written.size, fin.size);
        Ok(ArchiveRef {
            key,
            file_name,
            size: fin.size as i64,
            sha256: fin.sha256,
        })
    }

    /// Starts measuring a build of `total` bytes, reporting 0% to the ticket.
    pub(crate) async fn meter(
        &self,
        ticket: Id,
        total: i64,
    ) -> std::result::Result<Meter, Failure> {
        let m = Meter {
            ticket,
            loaded: 0,
            total,
            started: Instant::now(),
            last_report: Instant::now(),
        };
        self.report(&m).await?;
        Ok(m)
    }

    /// Streams one stored file into a new member of `w` (see [`Self::copy_members`]).
    pub(crate) async fn copy_member<W: MemberWrite>(
        &self,
        w: &mut W,
        path: &str,
        blob: &BlobRef,
        mtime: u64,
        meter: &mut Meter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        self.copy_members(w, &[(path, Some(blob))], mtime, meter, cancel)
            .await
    }

    /// Streams `entries` in order into `w`: a directory for each `(path, None)`, a member for each
    /// stored file. Each file's permissions come from its first bytes (scripts and ELF binaries are
    /// executable), already-compressed data is stored rather than deflated again, and the content is
    /// checked against its recorded size (on the way) and sha256 (on a thread of its own, see
    /// [`MemberDigests`]; a mismatch fails the build before anything is published). Progress is
    /// reported every `progress_every`, and `cancel` stops it between chunks.
    ///
    /// The blobs are read ahead by a task of their own ([`read_ahead`]), a bounded number of pieces in
    /// front of the encoder, so the next files' opens and reads overlap the current compression.
    pub(crate) async fn copy_members<W: MemberWrite>(
        &self,
        w: &mut W,
        entries: &[(&str, Option<&BlobRef>)],
        mtime: u64,
        meter: &mut Meter,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), Failure> {
        let files: Vec<ToRead> = entries
            .iter()
            .filter_map(|(_, b)| {
                b.map(|b| ToRead {
                    key: b.key.clone(),
                    size: b.size,
                    check: Check::of(b),
                })
            })
            .collect();
        let mut feed = read_ahead(self.blobs.clone(), files);
        let mut digests = MemberDigests::spawn()
            .map_err(|e| Failure::Transient(DomainError::Internal(crate::Cause::of(e))))?;
        for (path, blob) in entries {
            let Some(blob) = blob else {
                w.dir_member(path, mtime).await?;
                continue;
            };
            let mut probe = ModeProbe::default();
            let mut read: i64 = 0;
            let mut begun = false;
            let verified = loop {
                if cancel.is_cancelled() {
                    return Err(Failure::Cancelled);
                }
                let chunk = match feed.rx.recv().await {
                    Some(Piece::Data(c)) => c,
                    Some(Piece::End) => break None,
                    Some(Piece::Whole {
                        data,
                        mode,
                        verified,
                    }) => {
                        read = data.len() as i64;
                        if verified {
                            w.begin_member(path, blob.size as u64, mtime, file_mode(&data))
                                .await?;
                            begun = true;
                            if !data.is_empty() {
                                w.member_data(&data, mode).await?;
                            }
                            meter.loaded += read;
                            self.pace(meter).await?;
                        }
                        break Some(verified);
                    }
                    Some(Piece::Failed(satchel_blob::BlobError::NotFound(_))) => {
                        return Err(Failure::Permanent(format!(
                            "the stored content of {path} is missing"
                        )))
                    }
                    Some(Piece::Failed(e)) => return Err(Failure::Transient(e.into())),
                    None => {
                        return Err(Failure::Transient(DomainError::Internal(
                            "the blob reader stopped early".into(),
                        )))
                    }
                };
                if chunk.is_empty() {
                    continue;
                }
                read += chunk.len() as i64;
                if read > blob.size {
                    return Err(Failure::Permanent(format!(
                        "the stored content of {path} changed size"
                    )));
                }
                if !begun {
                    w.begin_member(path, blob.size as u64, mtime, file_mode(&chunk))
                        .await?;
                    begun = true;
                    // A streamed file is checked on the digest thread (small ones by the reader).
                    digests.begin(Check::of(blob)).await?;
                }
                meter.loaded += chunk.len() as i64;
                match probe.push(&chunk, read == blob.size) {
                    Probed::Sampling => {}
                    Probed::Decided(data, md) => w.member_data(&data, md).await?,
                    Probed::Chunk(data, md) => w.member_data(data, md).await?,
                }
                // Hashed on the digest thread after the encoder copied it (the piece is shared);
                // only streamed files come in pieces, small ones were hashed by the reader.
                digests.data(chunk).await?;
                self.pace(meter).await?;
            };
            if read != blob.size || verified == Some(false) {
                return Err(Failure::Permanent(format!(
                    "the stored content of {path} does not match its recorded size and checksum"
                )));
            }
            if verified.is_none() {
                digests.end(path).await?;
            }
            if !begun {
                // An empty file: no chunk came to decide anything.
                w.begin_member(path, 0, mtime, file_mode(&[])).await?;
            }
            if let Some((data, md)) = probe.finish() {
                w.member_data(&data, md).await?;
            }
            w.end_member().await?;
        }
        if let Some(path) = digests.finish().await? {
            return Err(Failure::Permanent(format!(
                "the stored content of {path} does not match its recorded size and checksum"
            )));
        }
        Ok(())
    }

    /// Removes what an earlier attempt of this ticket was still writing when its process died (a
    /// local `KEY#N` staging file): this attempt writes the same keys again, and the sweep spares a
    /// live ticket's keys, so nothing else would. S3's unfinished uploads are the journal's.
    async fn discard_staged(&self, t: &Ticket) {
        let (owner, id) = (t.owner_id, t.id);
        // The directory of the keys each kind writes (a takeout's parts sit beside its archive).
        let key = match t.kind {
            TicketKind::BundleExport | TicketKind::ApplianceExport | TicketKind::Takeout => {
                archive_key(owner, id)
            }
            TicketKind::ContainerImage => crate::container::image_key(owner, id),
            TicketKind::BundleImport | TicketKind::TemplateImport => {
                crate::importer::upload_key(owner, id)
            }
            // Its keys are shared by the owner's publications (a live one may be staging the same
            // blob): the sweep takes a dead attempt's staging files once they are idle.
            TicketKind::ImagePublish => return,
        };
        let Some((prefix, _)) = key.rsplit_once('/') else {
            return;
        };
        match self.blobs.staged_uploads(prefix).await {
            Ok(staged) => {
                for s in staged {
                    if let Err(e) = self.blobs.remove_staged(&s).await {
                        tracing::warn!(file = %s.name, error = %e, "could not remove a dead attempt's staging file");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%prefix, error = %e, "could not list a dead attempt's staging files")
            }
        }
    }

    /// Between two pieces of a build: the test throttle, and a progress report when one is due.
    pub(crate) async fn pace(&self, meter: &mut Meter) -> std::result::Result<(), Failure> {
        if let Some(d) = self.throttle {
            tokio::time::sleep(d).await;
        }
        if meter.last_report.elapsed() >= self.progress_every {
            meter.last_report = Instant::now();
            self.report(meter).await?;
        }
        Ok(())
    }

    pub(crate) async fn report(&self, m: &Meter) -> std::result::Result<(), Failure> {
        let (loaded, total) = (m.loaded, m.total);
        let pct = ((loaded as f64 / total.max(1) as f64) * 100.0)
            .floor()
            .clamp(0.0, 99.0) as i32;
        let elapsed = m.started.elapsed().as_secs_f64();
        let eta = if loaded > 0 && elapsed > 0.0 {
            let rate = loaded as f64 / elapsed;
            Some(now_millis() + (((total - loaded).max(0) as f64 / rate) * 1000.0) as i64)
        } else {
            None
        };
        let still_running = self
            .store
            .update_progress(
                m.ticket,
                &Progress {
                    percentage: pct,
                    bytes_loaded: loaded,
                    bytes_total: total,
                    eta,
                },
            )
            .await?;
        if still_running {
            Ok(())
        } else {
            Err(Failure::Cancelled)
        }
    }
}

/// Counts what is written to it (a document's size before it is rendered for real).
struct CountingWriter(usize);

impl std::io::Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the read-ahead task hands over, in file order: each file's pieces, then its end.
enum Piece {
    Data(Bytes),
    /// A small file read whole: its mode decided (on the reader's thread, as [`ModeProbe`] would on
    /// its first bytes) and whether it matched its recorded size and sha256. Nothing follows it.
    Whole {
        data: Bytes,
        mode: Mode,
        verified: bool,
    },
    /// A streamed file is complete (its sha256 is checked by [`MemberDigests`]).
    End,
    Failed(satchel_blob::BlobError),
}

/// The receiving end of [`read_ahead`]; dropping it stops the reader.
struct Feed {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Pieces (up to 1 MiB each) queued ahead of the encoder: bounds what the read-ahead holds.
const READ_AHEAD_PIECES: usize = 3;
/// Files at most this big are read whole, in batches, while earlier ones are being written, and
/// checked against their checksum right there: with many small files, the per-file hand-offs (open,
/// read, hash) were the cost, and they are then paid once per batch, off the encoder's path.
const SMALL_FILE: i64 = 256 * 1024;
/// A batch of small files: at most this many files, or this many bytes.
const BATCH_FILES: usize = 64;
const BATCH_BYTES: i64 = 2 << 20;
/// How many batches (or big files' openings) are prepared ahead of the one being handed over.
const UNITS_AHEAD: usize = 2;

/// One file to read: its key, recorded size and checksum.
struct ToRead {
    key: String,
    size: i64,
    check: Check,
}

/// What a stored file's content is checked against on its way into an archive: the CRC-32
/// recorded at upload, or on rows older than that column, the sha256. The check catches a store
/// that lost or garbled bytes (bit rot, a truncated or swapped object); the CRC does that at
/// ~0.05 ns/byte, a second sha256 pass cost ~0.6 and was a third of a large export's CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    Crc32(u32),
    Sha256(String),
}

impl Check {
    fn of(b: &BlobRef) -> Check {
        match b.crc32 {
            Some(c) => Check::Crc32(c),
            None => Check::Sha256(b.sha256.clone()),
        }
    }

    fn matches(self, data: &[u8]) -> bool {
        let mut v = Verifier::new(self);
        v.update(data);
        v.matches()
    }
}

/// A [`Check`] run over content that arrives in pieces.
enum Verifier {
    Crc32(crc32fast::Hasher, u32),
    Sha256(Sha256, String),
}

impl Verifier {
    fn new(check: Check) -> Verifier {
        match check {
            Check::Crc32(c) => Verifier::Crc32(crc32fast::Hasher::new(), c),
            Check::Sha256(h) => Verifier::Sha256(Sha256::new(), h),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Verifier::Crc32(h, _) => h.update(data),
            Verifier::Sha256(h, _) => h.update(data),
        }
    }

    fn matches(self) -> bool {
        match self {
            Verifier::Crc32(h, want) => h.finalize() == want,
            Verifier::Sha256(h, want) => hex::encode(h.finalize()) == want,
        }
    }
}

/// Reads `files` in order on a task of its own, a bounded amount ahead of the consumer.
fn read_ahead(blobs: Arc<dyn BlobStore>, files: Vec<ToRead>) -> Feed {
    enum Unit {
        Small(Vec<ToRead>),
        Big(String),
    }
    enum Opened {
        Whole(Vec<satchel_blob::Result<(Bytes, Mode, bool)>>),
        Stream(futures::stream::BoxStream<'static, satchel_blob::Result<Bytes>>),
        Failed(satchel_blob::BlobError),
    }
    // Consecutive small files go in batches; a big file is a unit of its own.
    let mut units: Vec<Unit> = Vec::new();
    let mut batch: Vec<ToRead> = Vec::new();
    let mut batch_bytes = 0;
    for f in files {
        if f.size > SMALL_FILE {
            if !batch.is_empty() {
                units.push(Unit::Small(std::mem::take(&mut batch)));
                batch_bytes = 0;
            }
            units.push(Unit::Big(f.key));
            continue;
        }
        if batch.len() >= BATCH_FILES || batch_bytes + f.size > BATCH_BYTES {
            units.push(Unit::Small(std::mem::take(&mut batch)));
            batch_bytes = 0;
        }
        batch_bytes += f.size;
        batch.push(f);
    }
    if !batch.is_empty() {
        units.push(Unit::Small(batch));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_PIECES);
    let task = tokio::spawn(async move {
        let mut opened = futures::stream::iter(units)
            .map(|u| {
                let blobs = blobs.clone();
                async move {
                    match u {
                        Unit::Big(key) => match blobs.get(&key, None).await {
                            Ok(s) => Opened::Stream(s),
                            Err(e) => Opened::Failed(e),
                        },
                        Unit::Small(files) => {
                            let keys = files.iter().map(|f| f.key.clone()).collect();
                            let read = blobs.read_whole(keys).await;
                            // Hashed where the bytes already are, one hand-off per batch.
                            let checked = tokio::task::spawn_blocking(move || {
                                read.into_iter()
                                    .zip(files)
                                    .map(|(r, f)| {
                                        r.map(|b| {
                                            let ok =
                                                b.len() as i64 == f.size && f.check.matches(&b);
                                            let mode = if looks_incompressible(&b) {
                                                Mode::Store
                                            } else {
                                                Mode::Deflate
                                            };
                                            (b, mode, ok)
                                        })
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .await;
                            match checked {
                                Ok(v) => Opened::Whole(v),
                                Err(e) => Opened::Failed(satchel_blob::BlobError::Store(format!(
                                    "checking what was read: {e}"
                                ))),
                            }
                        }
                    }
                }
            })
            .buffered(UNITS_AHEAD);
        while let Some(o) = opened.next().await {
            match o {
                Opened::Failed(e) => {
                    let _ = tx.send(Piece::Failed(e)).await;
                    return;
                }
                Opened::Whole(files) => {
                    for f in files {
                        let msg = match f {
                            Ok((data, mode, verified)) => Piece::Whole {
                                data,
                                mode,
                                verified,
                            },
                            Err(e) => {
                                let _ = tx.send(Piece::Failed(e)).await;
                                return;
                            }
                        };
                        if tx.send(msg).await.is_err() {
                            return; // the consumer stopped (error or cancel)
                        }
                    }
                }
                Opened::Stream(mut s) => {
                    while let Some(piece) = s.next().await {
                        let msg = match piece {
                            Ok(b) => Piece::Data(b),
                            Err(e) => {
                                let _ = tx.send(Piece::Failed(e)).await;
                                return;
                            }
                        };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                    }
                    if tx.send(Piece::End).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Feed { rx, task }
}

/// Each streamed member's checksum ([`Check`]), computed on a thread of its own from the pieces
/// the encoder was given (no second read, and not on the async thread that feeds the encoder);
/// remembers the first member whose checksum differs from the recorded one.
struct MemberDigests {
    tx: Option<std::sync::mpsc::SyncSender<DigestMsg>>,
    done: Option<std::thread::JoinHandle<Option<String>>>,
}

enum DigestMsg {
    /// A member's first piece follows; what it is checked against.
    Begin(Check),
    Data(Bytes),
    End {
        path: String,
    },
}

impl MemberDigests {
    fn spawn() -> std::io::Result<MemberDigests> {
        // A few pieces: the checksums outpace the encoder, so the queue is mostly empty.
        let (tx, rx) = std::sync::mpsc::sync_channel::<DigestMsg>(4);
        let done = std::thread::Builder::new()
            .name("satchel-verify".into())
            .spawn(move || {
                let mut current: Option<Verifier> = None;
                let mut first_bad = None;
                while let Ok(m) = rx.recv() {
                    match m {
                        DigestMsg::Begin(check) => current = Some(Verifier::new(check)),
                        DigestMsg::Data(b) => {
                            if let Some(v) = current.as_mut() {
                                v.update(&b);
                            }
                        }
                        DigestMsg::End { path } => {
                            let ok = current.take().is_some_and(Verifier::matches);
                            if !ok && first_bad.is_none() {
                                first_bad = Some(path);
                            }
                        }
                    }
                }
                first_bad
            })?;
        Ok(MemberDigests {
            tx: Some(tx),
            done: Some(done),
        })
    }

    async fn send(&mut self, m: DigestMsg) -> std::result::Result<(), Failure> {
        let gone = || Failure::Transient(DomainError::Internal("the digest thread ended".into()));
        let Some(tx) = &self.tx else {
            return Err(gone());
        };
        match tx.try_send(m) {
            Ok(()) => Ok(()),
            // Behind by a full queue: wait for it off the async threads.
            Err(std::sync::mpsc::TrySendError::Full(m)) => {
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || tx.send(m))
                    .await
                    .map_err(|_| gone())?
                    .map_err(|_| gone())
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(gone()),
        }
    }

    async fn data(&mut self, b: Bytes) -> std::result::Result<(), Failure> {
        self.send(DigestMsg::Data(b)).await
    }

    async fn begin(&mut self, check: Check) -> std::result::Result<(), Failure> {
        self.send(DigestMsg::Begin(check)).await
    }

    async fn end(&mut self, path: &str) -> std::result::Result<(), Failure> {
        self.send(DigestMsg::End {
            path: path.to_string(),
        })
        .await
    }

    /// The first member whose content does not match its recorded checksum, if any.
    async fn finish(mut self) -> std::result::Result<Option<String>, Failure> {
        drop(self.tx.take());
        let gone = || Failure::Transient(DomainError::Internal("the digest thread failed".into()));
        let done = self.done.take().ok_or_else(gone)?;
        tokio::task::spawn_blocking(move || done.join())
            .await
            .map_err(|_| gone())?
            .map_err(|_| gone())
    }
}

impl Drop for MemberDigests {
    fn drop(&mut self) {
        // Closing the channel ends the thread (an abandoned build); it is not joined.
        drop(self.tx.take());
    }
}

fn failed_message(kind: TicketKind) -> &'static str {
    match kind {
        TicketKind::BundleExport | TicketKind::ApplianceExport => "export failed",
        TicketKind::ContainerImage => "image generation failed",
        TicketKind::BundleImport | TicketKind::TemplateImport => "import failed",
        TicketKind::Takeout => "takeout failed",
        TicketKind::ImagePublish => "publication failed",
    }
}

/// Runs every kind of ticket: exports, container images and imports share the lifecycle (claim,
/// running, progress, publish-or-discard, cancel, retry); only what is built differs. An import
/// publishes no archive: it completes its ticket in the transaction that writes what it created.
#[async_trait]
impl JobHandler for TicketRunner {
    async fn run(&self, job: &Job, cancel: CancellationToken) -> Result<()> {
        let Some(id) = job.ticket_id() else {
            return Err(DomainError::Internal(
                format!("a {} job reached the ticket runner", job.subject).into(),
            ));
        };
        let Some(t) = self.store.get_ticket_any(id).await? else {
            return Ok(()); // deleted while queued
        };
        if t.state.is_final() {
            // Finished by an earlier attempt that died before removing its job, or cancelled while
            // queued: an import's upload is not needed any more.
            self.discard_upload(&t).await;
            return Ok(());
        }
        if !self.store.mark_running(t.id).await? {
            return Ok(());
        }
        self.discard_staged(&t).await;
        let built = match t.kind {
            TicketKind::BundleExport => self.build_export(&t, &cancel).await.map(Some),
            TicketKind::ContainerImage => self.build_image(&t, &cancel).await.map(Some),
            TicketKind::ApplianceExport => self.build_appliance_export(&t, &cancel).await.map(Some),
            TicketKind::Takeout => self.build_takeout(&t, &cancel).await.map(Some),
            TicketKind::BundleImport | TicketKind::TemplateImport => {
                self.run_import(&t, &cancel).await.map(|()| None)
            }
            TicketKind::ImagePublish => self.publish_image(&t, &cancel).await.map(|()| None),
        };
        match built {
            Ok(None) => {
                self.discard_upload(&t).await;
                Ok(())
            }
            Ok(Some(archive)) => {
                let expires_at = match t.kind {
                    TicketKind::ContainerImage => None,
                    _ => Some(now_millis() + self.retention.as_millis() as i64),
                };
                if !self
                    .store
                    .finish_ticket(
                        t.id,
                        &Outcome::Complete {
                            archive: archive.clone(),
                            expires_at,
                        },
                    )
                    .await?
                {
                    // Deleted or cancelled while we built: do not leave the archive behind. But a
                    // rebuild writes the same key, so if another worker (which took over an expired
                    // lease) completed the ticket with it, the archive is theirs and stays.
                    let published = self
                        .store
                        .get_ticket_any(t.id)
                        .await?
                        .and_then(|now| now.archive)
                        .is_some_and(|a| a.key == archive.key);
                    if !published {
                        let _ = self.blobs.delete(&archive.key).await;
                    }
                }
                Ok(())
            }
            Err(Failure::Cancelled) => {
                // Cancelled by its owner (or deleted): done. Otherwise the worker is stopping or
                // lost its lease: the job must stay queued, or the ticket would stay `running`
                // for ever (a shutdown used to drop exports in flight this way).
                match self.store.get_ticket_any(t.id).await? {
                    Some(now) if !now.state.is_final() => Err(DomainError::Internal(
                        "interrupted before it finished; it will be retried".into(),
                    )),
                    _ => {
                        self.discard_upload(&t).await;
                        Ok(())
                    }
                }
            }
            Err(Failure::Permanent(msg)) => {
                self.store
                    .finish_ticket(
                        t.id,
                        &Outcome::Error {
                            message: failed_message(t.kind).into(),
                            error_message: msg,
                        },
                    )
                    .await?;
                self.discard_upload(&t).await;
                Ok(())
            }
            Err(Failure::Transient(e)) => Err(e),
        }
    }

    async fn give_up(&self, job: &Job, error: &str) -> Result<()> {
        let kind = TicketKind::parse(&job.kind).unwrap_or(TicketKind::BundleExport);
        let Some(id) = job.ticket_id() else {
            return Ok(());
        };
        self.store
            .finish_ticket(
                id,
                &Outcome::Error {
                    message: failed_message(kind).into(),
                    error_message: format!("gave up after {} attempts: {error}", job.attempts),
                },
            )
            .await?;
        if let Some(t) = self.store.get_ticket_any(id).await? {
            self.discard_upload(&t).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn art(id: Id, parent: Option<Id>, name: &str, kind: &str) -> Artifact {
        Artifact {
            id,
            bundle_id: 1,
            parent_id: parent,
            name: name.into(),
            kind: kind.into(),
            tag: None,
            install_location: None,
            blob: (kind == "file").then(|| BlobRef {
                key: format!("k{id}"),
                size: 3,
                sha256: "x".into(),
                md5: "y".into(),
                uploaded: 0,
                crc32: None,
            }),
            created: 0,
            modified: 0,
        }
    }

    #[test]
    fn plan_layout_matches_hammr() {
        let b = Bundle {
            id: 1,
            owner_id: 1,
            name: "my app".into(),
            version: "1.0".into(),
            description: None,
            release: None,
            install_location: None,
            revision: 1,
            imported: false,
            created: 0,
            modified: 0,
        };
        let arts = vec![
            art(1, None, "a.sh", "file"),
            art(2, None, "conf", "folder"),
            art(3, Some(2), "x.cfg", "file"),
        ];
        let lic = Attachment {
            id: 1,
            bundle_id: 1,
            kind: AttachmentKind::License,
            name: "LICENSE".into(),
            blob: arts[0].blob.clone().unwrap(),
        };
        let p = plan(&b, &arts, Some(&lic), None, OutputFormat::Yaml).unwrap();
        let paths: Vec<_> = p.members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bundles/my app/1.0/a.sh",
                "bundles/my app/1.0/conf/",
                "bundles/my app/1.0/conf/x.cfg",
                "bundles/my app/LICENSE"
            ]
        );
        let doc: serde_yaml::Value = serde_yaml::from_slice(&p.doc).unwrap();
        assert_eq!(doc["name"], "my app");
        assert_eq!(
            doc["files"][1]["files"][0]["source"],
            "bundles/my app/1.0/conf/x.cfg"
        );
        assert_eq!(doc["license"]["source"], "bundles/my app/LICENSE");
        let pj = plan(&b, &arts, None, None, OutputFormat::Json).unwrap();
        assert_eq!(pj.doc_name, "bundle.json");
        let doc: serde_json::Value = serde_json::from_slice(&pj.doc).unwrap();
        assert_eq!(doc["files"][0]["name"], "a.sh");
    }

    #[test]
    fn plan_refuses_missing_content_and_collisions() {
        let b = Bundle {
            id: 1,
            owner_id: 1,
            name: "n".into(),
            version: "v".into(),
            description: None,
            release: None,
            install_location: None,
            revision: 1,
            imported: false,
            created: 0,
            modified: 0,
        };
        let mut a = art(1, None, "f", "file");
        a.blob = None;
        assert!(plan(&b, &[a], None, None, OutputFormat::Yaml).is_err());
        let dup = vec![art(1, None, "a?", "file"), art(2, None, "a", "file")];
        assert!(plan(&b, &dup, None, None, OutputFormat::Yaml).is_err());
    }
}
