//! The orphan sweep: blob keys that nothing owns any more, which crashes leave behind.
//!
//! A write publishes its blob atomically and the database row that references it is written right
//! after (see `satchel_blob`). A crash during the write leaves an unfinished upload (a local
//! `KEY#N` staging file, or an S3 multipart upload, which the blob layer records in the store because
//! object_store cannot list them); a crash between publishing and recording leaves a published
//! object that no row references. The sweep removes all three, except:
//! - anything touched within the grace period: a write in flight publishes before its row exists,
//!   and a live writer keeps its staging file or upload record fresh, so only what has been idle
//!   longer than any write pauses is taken;
//! - the keys of queued or running tickets: a job writes its archive under a fixed key and records
//!   it only when it finishes, so an earlier attempt's leftover may be where the next attempt writes.
//!   Those go at the first sweep after the ticket ends.
//!
//! Against writers racing the sweep: each page of listed keys reads the live tickets first and the
//! references second, so a ticket that completes in between is seen by the second read; ticket ids
//! are never reused (AUTOINCREMENT / identity), so a finished ticket's keys are never written again.

use crate::container::image_blobs;
use crate::model::*;
use crate::ports::Store;
use crate::service::archive_key;
use crate::Result;
use futures::StreamExt;
use satchel_blob::{BlobError, BlobStore, Listed};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where every user's blobs live (`u/{owner}/...`); nothing outside it is the sweep's business.
pub const USER_PREFIX: &str = "u";

/// Keys checked against the database at once.
const PAGE: usize = 500;
/// Recorded uploads handled per sweep (more wait for the next one).
const UPLOADS_PER_SWEEP: i64 = 10_000;

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Published objects that no row referenced.
    pub objects: u64,
    /// Staging files of dead local writes.
    pub staged: u64,
    /// S3 multipart uploads aborted.
    pub uploads: u64,
    /// Bytes freed by the objects and staging files.
    pub bytes: u64,
    /// Removals that failed (the next sweep tries again).
    pub failed: u64,
}

impl SweepReport {
    pub fn is_empty(&self) -> bool {
        self.objects + self.staged + self.uploads + self.failed == 0
    }
}

/// The keys the jobs of queued or running tickets may write: fixed keys for the archives they
/// publish, a key prefix for what an import stores (its upload and the files it unpacks).
#[derive(Debug, Default)]
struct Live {
    keys: HashSet<String>,
    prefixes: Vec<String>,
}

impl Live {
    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

fn live_keys(tickets: &[Ticket]) -> Live {
    let mut out = Live::default();
    for t in tickets {
        match t.kind {
            TicketKind::BundleExport | TicketKind::ApplianceExport => {
                out.keys.insert(archive_key(t.owner_id, t.id));
            }
            TicketKind::ContainerImage => out.keys.extend(image_blobs(t)),
            TicketKind::BundleImport | TicketKind::TemplateImport => out
                .prefixes
                .push(crate::service::import_prefix(t.owner_id, t.id)),
            // Its archive and the parts it builds on the way, beside it.
            TicketKind::Takeout => out
                .prefixes
                .push(crate::takeout::parts_prefix(t.owner_id, t.id)),
            // Content-addressed blobs it may be writing (shared keys: none is known in advance).
            TicketKind::ImagePublish => out
                .prefixes
                .push(crate::registry::registry_prefix(t.owner_id)),
        }
    }
    out
}

async fn live(store: &dyn Store) -> Result<Live> {
    Ok(live_keys(&store.live_tickets().await?))
}

/// Removes what nothing owns and nobody touched for `grace` (see the module documentation).
pub async fn sweep_orphans(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    grace: Duration,
) -> Result<SweepReport> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut report = SweepReport::default();
    sweep_objects(store, blobs, cutoff, &mut report).await?;
    sweep_staged(store, blobs, cutoff, &mut report).await?;
    let before = now_millis().saturating_sub(grace.as_millis().min(i64::MAX as u128) as i64);
    sweep_uploads(store, blobs, before, &mut report).await?;
    Ok(report)
}

async fn sweep_objects(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    cutoff: SystemTime,
    report: &mut SweepReport,
) -> Result<()> {
    let mut listing = blobs.list(USER_PREFIX);
    let mut page: Vec<Listed> = Vec::with_capacity(PAGE);
    while let Some(item) = listing.next().await {
        let o = item?;
        if o.modified > cutoff {
            continue;
        }
        page.push(o);
        if page.len() == PAGE {
            delete_unowned(store, blobs, &mut page, report).await?;
        }
    }
    if !page.is_empty() {
        delete_unowned(store, blobs, &mut page, report).await?;
    }
    Ok(())
}

async fn delete_unowned(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    page: &mut Vec<Listed>,
    report: &mut SweepReport,
) -> Result<()> {
    // Live tickets before references: see the module documentation.
    let live = live(store).await?;
    let keys: Vec<String> = page.iter().map(|o| o.key.clone()).collect();
    let referenced = store.referenced_blobs(&keys).await?;
    for o in page.drain(..) {
        if referenced.contains(&o.key) || live.contains(&o.key) {
            continue;
        }
        match blobs.delete(&o.key).await {
            Ok(()) => {
                tracing::info!(key = %o.key, size = o.size, "deleted a blob that nothing references");
                report.objects += 1;
                report.bytes += o.size;
            }
            Err(e) => {
                tracing::warn!(key = %o.key, error = %e, "could not delete an unreferenced blob");
                report.failed += 1;
            }
        }
    }
    Ok(())
}

async fn sweep_staged(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    cutoff: SystemTime,
    report: &mut SweepReport,
) -> Result<()> {
    let staged = blobs.staged_uploads(USER_PREFIX).await?;
    if staged.is_empty() {
        return Ok(());
    }
    let live = live(store).await?;
    for s in staged {
        // A staging file is never referenced: it is garbage once its writer is gone.
        if s.modified > cutoff || live.contains(&s.key) {
            continue;
        }
        match blobs.remove_staged(&s).await {
            Ok(()) => {
                tracing::info!(file = %s.name, size = s.size, "removed an unfinished upload");
                report.staged += 1;
                report.bytes += s.size;
            }
            Err(e) => {
                tracing::warn!(file = %s.name, error = %e, "could not remove an unfinished upload");
                report.failed += 1;
            }
        }
    }
    Ok(())
}

async fn sweep_uploads(
    store: &dyn Store,
    blobs: &dyn BlobStore,
    before: Millis,
    report: &mut SweepReport,
) -> Result<()> {
    let stale = store.stale_uploads(before, UPLOADS_PER_SWEEP).await?;
    if stale.is_empty() {
        return Ok(());
    }
    let live = live(store).await?;
    for u in stale {
        if live.contains(&u.key) {
            continue;
        }
        match blobs.abort_upload(&u.key, &u.upload_id).await {
            Ok(()) => {
                store.forget_upload(&u.key, &u.upload_id).await?;
                tracing::info!(key = %u.key, "aborted an unfinished multipart upload");
                report.uploads += 1;
            }
            Err(e) => {
                tracing::warn!(key = %u.key, error = %e, "could not abort a multipart upload");
                report.failed += 1;
            }
        }
    }
    Ok(())
}

/// Records the blob layer's S3 multipart uploads in the store, so [`sweep_orphans`] can abort the
/// ones a crash left (`Blobs::with_journal`).
pub struct StoreJournal(pub Arc<dyn Store>);

fn journal_err(e: crate::DomainError) -> BlobError {
    BlobError::Store(format!("recording a multipart upload: {e}"))
}

#[async_trait::async_trait]
impl satchel_blob::UploadJournal for StoreJournal {
    async fn begin(&self, key: &str, upload_id: &str) -> satchel_blob::Result<()> {
        self.0
            .record_upload(key, upload_id, now_millis())
            .await
            .map_err(journal_err)
    }

    async fn touch(&self, key: &str, upload_id: &str) -> satchel_blob::Result<()> {
        self.0
            .touch_upload(key, upload_id, now_millis())
            .await
            .map_err(journal_err)
    }

    async fn end(&self, key: &str, upload_id: &str) -> satchel_blob::Result<()> {
        self.0
            .forget_upload(key, upload_id)
            .await
            .map_err(journal_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_tickets_own_their_archive_keys() {
        let t = |id: Id, kind: TicketKind| Ticket {
            id,
            owner_id: 7,
            kind,
            image: None,
            import: None,
            takeout: None,
            subject_id: 1,
            subject_name: "b".into(),
            subject_version: "1".into(),
            format: OutputFormat::Yaml,
            state: TicketState::Running,
            percentage: 0,
            bytes_loaded: 0,
            bytes_total: 0,
            eta: None,
            message: None,
            error_message: None,
            archive: None,
            created: 0,
            modified: 0,
            expires_at: None,
        };
        let keys = live_keys(&[
            t(1, TicketKind::BundleExport),
            t(2, TicketKind::ContainerImage),
            t(3, TicketKind::BundleImport),
            t(4, TicketKind::ApplianceExport),
        ]);
        assert!(keys.contains("u/7/imports/3/upload.tar.gz"));
        assert!(keys.contains("u/7/imports/3/files/abc"));
        assert!(!keys.contains("u/7/imports/30/files/abc"));
        assert!(keys.contains("u/7/exports/4/archive.tar.gz"));
        assert!(keys.contains("u/7/exports/1/archive.tar.gz"));
        assert!(keys.contains("u/7/images/2/image.oci.tar"));
        assert!(keys.contains("u/7/images/2/image.oci.tar.gz"));
        assert!(keys.contains("u/7/images/2/layer.tar.gz.partial"));
        assert_eq!(keys.keys.len(), 5);
        assert_eq!(keys.prefixes, ["u/7/imports/3/"]);
    }
}
