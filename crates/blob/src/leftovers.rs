//! What a crash leaves in a blob store, and how to find it again.
//!
//! Writes publish atomically (see [`crate::BlobWriter`]), so a writer that dies leaves nothing
//! visible at its key, but it does leave something behind:
//! - on a local store, object_store's `LocalFileSystem` writes `KEY#N` and renames it to `KEY` on
//!   completion; a dead writer's `KEY#N` stays, and `list` never shows it ([`Blobs::staged_uploads`]
//!   walks the directory for them);
//! - on S3, the parts of an unfinished multipart upload stay (billed, invisible) until the upload is
//!   aborted, and object_store cannot list multipart uploads: with an [`UploadJournal`], each upload is
//!   recorded before its first part is sent and forgotten when it completes or is aborted, so
//!   [`Blobs::abort_upload`] can end the ones a crash left;
//! - on both, a published object whose database row was never written ([`Blobs::list`] finds them; the
//!   caller decides, from the database, which keys are orphans).

use crate::{path, BlobError, Blobs, Result};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A published object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// An unfinished upload on a local store: the `KEY#N` file a multipart or single put writes before
/// renaming it to `KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The key the upload would have published.
    pub key: String,
    /// The file, relative to the store's directory (`KEY#N`).
    pub name: String,
    pub size: u64,
    /// Last written: a live writer keeps this recent (every part is a write).
    pub modified: SystemTime,
}

/// Where multipart uploads on S3 are recorded while they run. object_store cannot list a bucket's
/// unfinished multipart uploads, so without a record a crash mid-upload leaves its parts for ever.
#[async_trait::async_trait]
pub trait UploadJournal: Send + Sync + 'static {
    /// Called before the first part is sent. An error fails (and aborts) the upload: an upload must
    /// never run unrecorded.
    async fn begin(&self, key: &str, upload_id: &str) -> Result<()>;
    /// The upload is still sending parts (called at most every [`TOUCH_EVERY`]), so a sweep can tell
    /// a long upload from a dead one.
    async fn touch(&self, key: &str, upload_id: &str) -> Result<()>;
    /// The upload completed or was aborted.
    async fn end(&self, key: &str, upload_id: &str) -> Result<()>;
}

/// How often a running S3 upload refreshes its journal record. A sweep's grace period must be well
/// above this (its default is an hour).
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// An S3 bucket (and key prefix) for the multipart calls `ObjectStore` does not expose.
#[derive(Clone)]
pub(crate) struct S3Multipart {
    s3: Arc<object_store::aws::AmazonS3>,
    prefix: Path,
}

impl S3Multipart {
    pub(crate) fn new(s3: object_store::aws::AmazonS3, prefix: &str) -> Self {
        S3Multipart {
            s3: Arc::new(s3),
            prefix: Path::from(prefix),
        }
    }

    /// The bucket path of a key, as `PrefixStore` makes it.
    fn full(&self, p: &Path) -> Path {
        self.prefix.parts().chain(p.parts()).collect()
    }
}

/// What a writer needs to make a recorded multipart upload.
pub(crate) struct Journaled {
    s3: S3Multipart,
    journal: Arc<dyn UploadJournal>,
    key: String,
}

fn generic(e: BlobError) -> object_store::Error {
    object_store::Error::Generic {
        store: "satchel upload journal",
        source: Box::new(e),
    }
}

impl Journaled {
    /// Creates the multipart upload and records it before any part is sent.
    pub(crate) async fn start(&self, p: &Path) -> Result<Box<dyn MultipartUpload>> {
        let full = self.s3.full(p);
        let id = self.s3.s3.create_multipart(&full).await?;
        if let Err(e) = self.journal.begin(&self.key, &id).await {
            // Nothing was sent yet; do not leave even an empty upload behind.
            if let Err(a) = self.s3.s3.abort_multipart(&full, &id).await {
                tracing::warn!(key = %self.key, error = %a, "aborting an unrecorded multipart upload");
            }
            return Err(e);
        }
        Ok(Box::new(JournaledUpload {
            s3: self.s3.s3.clone(),
            full,
            key: self.key.clone(),
            id,
            parts: Arc::new(Mutex::new(Vec::new())),
            next: 0,
            journal: self.journal.clone(),
            touched: Arc::new(Mutex::new(Instant::now())),
        }))
    }
}

/// A multipart upload made with `MultipartStore` calls (which give the upload id to record) instead
/// of `ObjectStore::put_multipart` (which hides it). `WriteMultipart` drives it as any other upload.
struct JournaledUpload {
    s3: Arc<object_store::aws::AmazonS3>,
    full: Path,
    key: String,
    id: String,
    /// Part ids by index: parts finish in any order, completion needs them in order.
    parts: Arc<Mutex<Vec<Option<PartId>>>>,
    next: usize,
    journal: Arc<dyn UploadJournal>,
    touched: Arc<Mutex<Instant>>,
}

impl std::fmt::Debug for JournaledUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournaledUpload")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish()
    }
}

impl JournaledUpload {
    async fn forget(&self) {
        if let Err(e) = self.journal.end(&self.key, &self.id).await {
            // The record stays; a sweep aborts the (finished) upload, which S3 answers NoSuchUpload.
            tracing::warn!(key = %self.key, error = %e, "could not forget a multipart upload");
        }
    }
}

#[async_trait::async_trait]
impl MultipartUpload for JournaledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next;
        self.next += 1;
        let (s3, full, id) = (self.s3.clone(), self.full.clone(), self.id.clone());
        let (parts, touched) = (self.parts.clone(), self.touched.clone());
        let (journal, key) = (self.journal.clone(), self.key.clone());
        async move {
            let part = s3.put_part(&full, &id, idx, data).await?;
            {
                let mut parts = parts.lock().unwrap_or_else(|p| p.into_inner());
                if parts.len() <= idx {
                    parts.resize(idx + 1, None);
                }
                parts[idx] = Some(part);
            }
            let due = {
                let mut t = touched.lock().unwrap_or_else(|p| p.into_inner());
                let due = t.elapsed() >= TOUCH_EVERY;
                if due {
                    *t = Instant::now();
                }
                due
            };
            if due {
                if let Err(e) = journal.touch(&key, &id).await {
                    tracing::warn!(key = %key, error = %e, "could not refresh a multipart upload's record");
                }
            }
            Ok(())
        }
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let parts: Option<Vec<PartId>> = {
            let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
            parts.iter().cloned().collect()
        };
        let parts = parts.ok_or_else(|| {
            generic(BlobError::Store(format!(
                "multipart upload of {} completed with a part missing",
                self.key
            )))
        })?;
        let r = self
            .s3
            .complete_multipart(&self.full, &self.id, parts)
            .await?;
        self.forget().await;
        Ok(r)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        match self.s3.abort_multipart(&self.full, &self.id).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                self.forget().await;
                Ok(())
            }
            // The record stays, so a sweep aborts it later.
            Err(e) => Err(e),
        }
    }
}

impl Blobs {
    /// Records this store's S3 multipart uploads in `journal` (local stores need none: their
    /// unfinished uploads are files, found by [`Blobs::staged_uploads`]).
    pub fn with_journal(mut self, journal: Arc<dyn UploadJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Whether this is an S3 store (whose multipart uploads a journal can record).
    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    pub(crate) fn journaled(&self, key: &str) -> Option<Journaled> {
        match (&self.s3, &self.journal) {
            (Some(s3), Some(journal)) => Some(Journaled {
                s3: s3.clone(),
                journal: journal.clone(),
                key: key.to_string(),
            }),
            _ => None,
        }
    }

    /// The published objects under `prefix` (a key prefix ending at a `/` boundary, e.g. `u`).
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<Listed>> {
        let p = match path(prefix) {
            Ok(p) => p,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        self.store
            .list(Some(&p))
            .map(|m| {
                let m = m?;
                Ok(Listed {
                    key: m.location.to_string(),
                    size: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .boxed()
    }

    /// A local store's unfinished uploads under `prefix` (none on other stores).
    pub async fn staged_uploads(&self, prefix: &str) -> Result<Vec<Staged>> {
        let Some(root) = self.local.clone() else {
            return Ok(Vec::new());
        };
        path(prefix)?;
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk_staged(&root, &root.join(&prefix), &mut out)?;
            Ok(out)
        })
        .await
        .map_err(|e| BlobError::Store(e.to_string()))?
    }

    /// Removes an unfinished local upload (gone already is fine: it completed or was aborted).
    pub async fn remove_staged(&self, s: &Staged) -> Result<()> {
        let Some(root) = self.local.clone() else {
            return Ok(());
        };
        // Only ever a `KEY#N` file inside the store.
        match staged_base(&s.name) {
            Some(base) if path(base).is_ok() => {}
            _ => return Err(BlobError::InvalidKey(s.name.clone())),
        }
        let file = root.join(&s.name);
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BlobError::Store(format!(
                "removing {}: {e}",
                file.display()
            ))),
        })
        .await
        .map_err(|e| BlobError::Store(e.to_string()))?
    }

    /// Aborts a recorded S3 multipart upload. One that is gone already (completed or aborted) is
    /// fine; on a store without multipart uploads there is nothing to do.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        let Some(s3) = &self.s3 else {
            return Ok(());
        };
        let full = s3.full(&path(key)?);
        match s3.s3.abort_multipart(&full, &upload_id.to_string()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// `KEY` of a `KEY#N` file name (N all digits, as object_store names its staging files).
fn staged_base(name: &str) -> Option<&str> {
    let (base, n) = name.rsplit_once('#')?;
    (!base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

fn walk_staged(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<Staged>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BlobError::Store(format!("reading {}: {e}", dir.display()))),
    };
    for entry in entries {
        let entry =
            entry.map_err(|e| BlobError::Store(format!("reading {}: {e}", dir.display())))?;
        // Not followed: the store never makes links, and a link could lead outside it.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue; // removed meanwhile
        };
        if meta.is_dir() {
            walk_staged(root, &entry.path(), out)?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let full = entry.path();
        // Keys are UTF-8 with `/` separators; anything else was not written through this crate.
        let Some(name) = full
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(key) = staged_base(&name) else {
            continue;
        };
        out.push(Staged {
            key: key.to_string(),
            name: name.clone(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn local_staged_uploads_are_found_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        blobs
            .put_bytes("u/1/files/a", Bytes::from_static(b"a"))
            .await
            .unwrap();
        // A writer that died after its first write: its `KEY#N` staging file stays.
        let mut w = blobs.writer("u/1/files/b").await.unwrap();
        w.write(Bytes::from(vec![7u8; crate::PART_SIZE + 1]))
            .await
            .unwrap();
        let staged = blobs.staged_uploads("u").await.unwrap();
        assert_eq!(staged.len(), 1, "{staged:?}");
        assert_eq!(staged[0].key, "u/1/files/b");
        assert_eq!(staged_base(&staged[0].name), Some("u/1/files/b"));
        // `list` shows published objects only.
        let listed: Vec<Listed> = blobs.list("u").try_collect().await.unwrap();
        assert_eq!(
            listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["u/1/files/a"]
        );
        assert!(listed[0].modified <= SystemTime::now());
        blobs.remove_staged(&staged[0]).await.unwrap();
        assert!(blobs.staged_uploads("u").await.unwrap().is_empty());
        blobs.remove_staged(&staged[0]).await.unwrap(); // gone already is fine
                                                        // Only `KEY#N` names inside the store are ever removed.
        let bad = Staged {
            name: "../x#1".into(),
            ..staged[0].clone()
        };
        assert!(blobs.remove_staged(&bad).await.is_err());
        let bad = Staged {
            name: "u/1/files/a".into(),
            ..staged[0].clone()
        };
        assert!(blobs.remove_staged(&bad).await.is_err());
        assert!(blobs.exists("u/1/files/a").await.unwrap());
        drop(w);
        assert!(!blobs.exists("u/1/files/b").await.unwrap());
        assert!(blobs.list("../u").try_collect::<Vec<_>>().await.is_err());
    }

    #[test]
    fn staged_names() {
        assert_eq!(staged_base("u/1/a#1"), Some("u/1/a"));
        assert_eq!(staged_base("u/1/a#12"), Some("u/1/a"));
        assert_eq!(staged_base("u/1/a#"), None);
        assert_eq!(staged_base("u/1/a#x"), None);
        assert_eq!(staged_base("#1"), None);
        assert_eq!(staged_base("u/1/a"), None);
    }
}

/// The journal on a real S3-compatible store (Garage, started by satchel-testkit).
#[cfg(test)]
mod s3_tests {
    use super::*;
    use bytes::Bytes;
    use futures::TryStreamExt;

    /// Records in memory, as the database does in the server.
    #[derive(Default)]
    struct MemJournal(Mutex<Vec<(String, String)>>);

    #[async_trait::async_trait]
    impl UploadJournal for MemJournal {
        async fn begin(&self, key: &str, upload_id: &str) -> Result<()> {
            self.0.lock().unwrap().push((key.into(), upload_id.into()));
            Ok(())
        }
        async fn touch(&self, _key: &str, _upload_id: &str) -> Result<()> {
            Ok(())
        }
        async fn end(&self, key: &str, upload_id: &str) -> Result<()> {
            self.0
                .lock()
                .unwrap()
                .retain(|(k, i)| (k.as_str(), i.as_str()) != (key, upload_id));
            Ok(())
        }
    }

    fn garage() -> Blobs {
        let (url, t) = satchel_testkit::garage::test_bucket_url().expect("Garage");
        Blobs::s3(&crate::S3Config {
            url,
            endpoint: Some(t.endpoint.clone()),
            region: Some(t.region.clone()),
            access_key_id: Some(t.access_key_id.clone()),
            secret_access_key: Some(t.secret_access_key.clone()),
            virtual_hosted: false,
        })
        .expect("s3 blobs")
    }

    fn chunks(data: &[u8]) -> Vec<std::result::Result<Bytes, std::io::Error>> {
        data.chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_uploads_are_recorded_and_abortable_on_garage() {
        let journal = Arc::new(MemJournal::default());
        let blobs = tokio::task::spawn_blocking(garage)
            .await
            .unwrap()
            .with_journal(journal.clone());
        assert!(blobs.is_s3());
        // A finished upload (three parts) is recorded while it runs and forgotten at the end.
        let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let w = blobs
            .put_stream("u/1/big", futures::stream::iter(chunks(&data)), None)
            .await
            .unwrap();
        assert_eq!(w.sha256, crate::digest_of(&data).sha256);
        assert_eq!(blobs.head("u/1/big").await.unwrap().size, data.len() as u64);
        let got: Vec<Bytes> = blobs
            .get("u/1/big", Some(6_000_000..6_000_010))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), &data[6_000_000..6_000_010]);
        assert!(journal.0.lock().unwrap().is_empty());
        // A failed one is aborted and forgotten.
        let bad = futures::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 6 * 1024 * 1024])),
            Err(std::io::Error::other("client went away")),
        ]);
        assert!(blobs.put_stream("u/1/bad", bad, None).await.is_err());
        assert!(journal.0.lock().unwrap().is_empty());
        // A writer that dies mid-upload (a crash runs no abort) leaves its record. (Unhashed: a
        // forgotten digest thread would keep the test's runtime from shutting down.)
        let mut w = blobs.writer_unhashed("u/1/dead").await.unwrap();
        w.write(Bytes::from(vec![3u8; crate::PART_SIZE + 1]))
            .await
            .unwrap();
        std::mem::forget(w);
        let recorded = journal.0.lock().unwrap().clone();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        let (key, id) = recorded[0].clone();
        assert_eq!(key, "u/1/dead");
        // `list` shows only what was published.
        let listed: Vec<Listed> = blobs.list("u").try_collect().await.unwrap();
        assert_eq!(
            listed.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["u/1/big"]
        );
        // The upload is alive until aborted; then it takes no more parts. Aborting twice is fine.
        let s3 = blobs.s3.clone().unwrap();
        let full = s3.full(&Path::from(key.as_str()));
        s3.s3
            .put_part(&full, &id, 5, PutPayload::from_static(b"late"))
            .await
            .expect("the dead writer's upload is still open");
        blobs.abort_upload(&key, &id).await.unwrap();
        blobs.abort_upload(&key, &id).await.unwrap();
        assert!(matches!(
            s3.s3
                .put_part(&full, &id, 6, PutPayload::from_static(b"late"))
                .await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert!(!blobs.exists("u/1/dead").await.unwrap());
        assert!(blobs.staged_uploads("u").await.unwrap().is_empty());
    }
}
