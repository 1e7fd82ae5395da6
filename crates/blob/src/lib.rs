//! Satchel's blob layer. Everything big goes through here, streamed: uploads are written with
//! multipart puts (published atomically on completion, aborted on error), reads are ranged streams.
//! Backed by the `object_store` crate: a local directory in the embedded default, S3-compatible
//! stores in scale-out.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use md5::Md5;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::sync::Arc;

mod leftovers;
mod port;
pub use leftovers::{Listed, Staged, UploadJournal};
pub use port::BlobStore;

/// A fresh, unique key under `prefix`.
pub fn new_key(prefix: &str) -> String {
    format!("{prefix}/{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error("upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
    #[error("reading the request body: {0}")]
    Source(String),
    #[error("object store: {0}")]
    Store(String),
    /// The disk or bucket refused a write for lack of space (ENOSPC, EDQUOT, S3 507).
    #[error("no space left in the blob store: {0}")]
    NoSpace(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => BlobError::NotFound(path),
            other if is_no_space(&other) => BlobError::NoSpace(other.to_string()),
            other => BlobError::Store(other.to_string()),
        }
    }
}

/// Whether a store error, anywhere in its source chain, is a full disk or bucket.
fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // EDQUOT (122 on Linux) has no stable ErrorKind yet.
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(122) {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("No space left on device") || text.contains("Insufficient Storage") {
            return true;
        }
        cur = err.source();
    }
    false
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// Size of each multipart part; bounds the memory one upload holds (parts × concurrency).
const PART_SIZE: usize = 5 * 1024 * 1024;
const PART_CONCURRENCY: usize = 2;

/// Where an S3-compatible bucket is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// `s3://BUCKET[/PREFIX]`
    pub url: String,
    /// e.g. `http://127.0.0.1:3900` for Garage; AWS when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `BUCKET.host` instead of `host/BUCKET` (AWS style); path style is the default with an endpoint.
    pub virtual_hosted: bool,
}

/// What a finished upload wrote. Digests that were not asked for are empty / `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
    pub sha1: Option<String>,
    /// CRC-32 (IEEE) of the content, computed with the sha256: what an export checks a stored file
    /// against on its way into an archive (~0.05 ns/byte, where a second sha256 pass costs 0.6).
    pub crc32: Option<u32>,
}

/// Which digests a writer computes while it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashes {
    pub sha256: bool,
    pub md5: bool,
    pub sha1: bool,
    /// The CRC-32 too (on the first digest's thread; nearly free).
    pub crc32: bool,
}

impl Hashes {
    /// sha256 + md5: what bundle files and archives record.
    pub const DEFAULT: Hashes = Hashes {
        sha256: true,
        md5: true,
        sha1: false,
        crc32: true,
    };
    pub const NONE: Hashes = Hashes {
        sha256: false,
        md5: false,
        sha1: false,
        crc32: false,
    };
    /// sha1 + md5: image files (IMGAPI records sha1; Manta serves Content-MD5).
    pub const IMAGE: Hashes = Hashes {
        sha256: false,
        md5: true,
        sha1: true,
        crc32: false,
    };
}

#[derive(Debug, Clone)]
pub struct ObjectMeta {
    pub size: u64,
    pub e_tag: Option<String>,
}

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store: its unfinished uploads (`KEY#N` files) are found there.
    local: Option<Arc<std::path::PathBuf>>,
    /// The bucket of an S3 store, for the multipart calls that `ObjectStore` does not expose.
    s3: Option<leftovers::S3Multipart>,
    /// Where S3 multipart uploads are recorded while they run (see [`UploadJournal`]).
    journal: Option<Arc<dyn UploadJournal>>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.store)
    }
}

fn path(key: &str) -> Result<Path> {
    // Keys are made by the domain, never by users; still refuse anything that is not a clean relative path.
    if key.is_empty()
        || key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(BlobError::InvalidKey(key.to_string()));
    }
    Path::parse(key).map_err(|_| BlobError::InvalidKey(key.to_string()))
}

impl Blobs {
    /// A local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BlobError::Store(format!("creating {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)?;
        // The same directory object_store resolved (it canonicalises its prefix).
        let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        Ok(Blobs {
            store: Arc::new(fs),
            local: Some(Arc::new(root)),
            s3: None,
            journal: None,
        })
    }

    /// An S3-compatible bucket (AWS S3, Garage, MinIO): `url` is `s3://BUCKET[/PREFIX]`. Settings not
    /// given fall back to the standard `AWS_*` environment variables, as `object_store` reads them.
    pub fn s3(cfg: &S3Config) -> Result<Self> {
        let rest = cfg.url.strip_prefix("s3://").ok_or_else(|| {
            BlobError::InvalidKey(format!("{}: expected s3://BUCKET[/PREFIX]", cfg.url))
        })?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(BlobError::InvalidKey(format!("{}: no bucket", cfg.url)));
        }
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &cfg.endpoint {
            // Garage and MinIO are usually reached by path (http://host:3900/BUCKET/key).
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(cfg.virtual_hosted);
        }
        if let Some(r) = &cfg.region {
            b = b.with_region(r);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let s3 = b.build()?;
        let multipart = leftovers::S3Multipart::new(s3.clone(), prefix);
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
        };
        Ok(Blobs {
            store,
            local: None,
            s3: Some(multipart),
            journal: None,
        })
    }

    pub fn from_store(store: Arc<dyn ObjectStore>) -> Self {
        Blobs {
            store,
            local: None,
            s3: None,
            journal: None,
        }
    }

    /// A fresh, unique key under `prefix` (see [`new_key`]).
    pub fn new_key(prefix: &str) -> String {
        new_key(prefix)
    }

    /// Streams `body` into `key`, hashing as it goes. Nothing is visible at `key` until the whole
    /// body has been written; on any error the partial upload is aborted.
    pub async fn put_stream<S, E>(&self, key: &str, body: S, limit: Option<u64>) -> Result<Written>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.put_stream_with(key, body, limit, Hashes::DEFAULT)
            .await
    }

    /// [`Blobs::put_stream`] computing the chosen digests.
    pub async fn put_stream_with<S, E>(
        &self,
        key: &str,
        body: S,
        limit: Option<u64>,
        hashes: Hashes,
    ) -> Result<Written>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut w = self.writer_opts(key, hashes).await?;
        futures::pin_mut!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    w.abort().await;
                    return Err(BlobError::Source(e.to_string()));
                }
            };
            if let Some(max) = limit {
                if w.size + chunk.len() as u64 > max {
                    w.abort().await;
                    return Err(BlobError::TooLarge(max));
                }
            }
            if let Err(e) = w.write(chunk).await {
                w.abort().await;
                return Err(e);
            }
        }
        w.finish().await
    }

    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<Written> {
        let written = digest_of(&data);
        self.store
            .put(&path(key)?, PutPayload::from_bytes(data))
            .await?;
        Ok(written)
    }

    /// A streaming writer for `key` that hashes what it writes; see [`BlobWriter`].
    pub async fn writer(&self, key: &str) -> Result<BlobWriter> {
        self.writer_opts(key, Hashes::DEFAULT).await
    }

    /// A streaming writer that does not hash (the caller hashes already, e.g. the archive encoder).
    pub async fn writer_unhashed(&self, key: &str) -> Result<BlobWriter> {
        self.writer_opts(key, Hashes::NONE).await
    }

    pub async fn writer_opts(&self, key: &str, hashes: Hashes) -> Result<BlobWriter> {
        let p = path(key)?;
        let mut digests = Vec::new();
        for (on, kind) in [
            (hashes.sha256, DigestKind::Sha256),
            (hashes.md5, DigestKind::Md5),
            (hashes.sha1, DigestKind::Sha1),
        ] {
            if on {
                digests.push(Digester::spawn(kind, hashes.crc32 && digests.is_empty()));
            }
        }
        let local = match &self.local {
            Some(root) if plain_key(key) => Some(LocalStage {
                final_path: root.join(key),
                staging: root.join(format!(
                    "{key}#{}",
                    uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000_000_000
                )),
                file: None,
                inflight: None,
            }),
            _ => None,
        };
        Ok(BlobWriter {
            inner: None,
            local,
            pending: Vec::new(),
            pending_len: 0,
            closed: false,
            digests,
            size: 0,
            store: self.store.clone(),
            path: p,
            journaled: self.journaled(key),
        })
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let m = self.store.head(&path(key)?).await?;
        Ok(ObjectMeta {
            size: m.size,
            e_tag: m.e_tag,
        })
    }

    /// Streams `range` (or all) of `key`.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let res = self.store.get_opts(&path(key)?, opts).await?;
        match res.payload {
            // object_store reads local files in 8 KiB blocking reads; 1 MiB reads cost far less
            // per byte and still bound memory to one chunk per stream.
            object_store::GetResultPayload::File(file, _) => Ok(file_stream(file, res.range)),
            object_store::GetResultPayload::Stream(s) => Ok(s.map_err(BlobError::from).boxed()),
        }
    }

    /// Reads small objects whole, in order, one result per key. On a local store they are all read
    /// in one blocking call: through `object_store` each costs two thread hand-offs (open, then
    /// read), which with thousands of small files was the export's largest cost after compression.
    /// Elsewhere (S3) they are fetched a few at a time.
    pub async fn read_whole(&self, keys: Vec<String>) -> Vec<Result<Bytes>> {
        let Some(root) = self.local.clone() else {
            return futures::stream::iter(keys)
                .map(|k| async move {
                    let parts: Vec<Bytes> = self.get(&k, None).await?.try_collect().await?;
                    Ok(Bytes::from(parts.concat()))
                })
                .buffered(8)
                .collect()
                .await;
        };
        let n = keys.len();
        let read = tokio::task::spawn_blocking(move || {
            keys.iter()
                .map(|k| {
                    // object_store percent-encodes other characters in file names; such keys (never
                    // made by the domain) are refused rather than guessed at.
                    if !plain_key(k) {
                        return Err(BlobError::InvalidKey(k.clone()));
                    }
                    match std::fs::read(root.join(k)) {
                        Ok(v) => Ok(Bytes::from(v)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            Err(BlobError::NotFound(k.clone()))
                        }
                        Err(e) => Err(BlobError::Store(format!("reading {k}: {e}"))),
                    }
                })
                .collect::<Vec<_>>()
        })
        .await;
        read.unwrap_or_else(|e| {
            (0..n)
                .map(|_| Err(BlobError::Store(format!("reading: {e}"))))
                .collect()
        })
    }

    /// Deletes `key`; a missing object is not an error (deletes are retried after crashes).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// A key whose local file name is the key itself (object_store percent-encodes other characters).
fn plain_key(key: &str) -> bool {
    path(key).is_ok()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
}

fn io_error(what: &str, e: std::io::Error) -> BlobError {
    if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) {
        BlobError::NoSpace(format!("{what}: {e}"))
    } else {
        BlobError::Store(format!("{what}: {e}"))
    }
}

/// A local store's upload, written straight into its `KEY#N` staging file and renamed to `KEY` when
/// finished: the same files object_store's local multipart upload makes (so the crash sweep finds
/// them the same way), without its 5 MiB parts, three of which it held in memory at a time (the
/// largest buffer an export had). One write is in flight while the caller prepares the next.
struct LocalStage {
    final_path: std::path::PathBuf,
    staging: std::path::PathBuf,
    /// The staging file when no write is in flight (`None` before the first write).
    file: Option<std::fs::File>,
    inflight: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
}

impl LocalStage {
    /// The staging file, once the write in flight (if any) is done.
    async fn file(&mut self) -> Result<std::fs::File> {
        if let Some(h) = self.inflight.take() {
            return h
                .await
                .map_err(|e| BlobError::Store(format!("writing: {e}")))?
                .map_err(|e| io_error("writing", e));
        }
        if let Some(f) = self.file.take() {
            return Ok(f);
        }
        let staging = self.staging.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = staging.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&staging)
        })
        .await
        .map_err(|e| BlobError::Store(format!("creating: {e}")))?
        .map_err(|e| io_error("creating a staging file", e))
    }

    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut f = self.file().await?;
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            f.write_all(&data)?;
            Ok(f)
        }));
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        let f = self.file().await?;
        drop(f);
        let (from, to) = (self.staging.clone(), self.final_path.clone());
        tokio::task::spawn_blocking(move || std::fs::rename(from, to))
            .await
            .map_err(|e| BlobError::Store(format!("publishing: {e}")))?
            .map_err(|e| io_error("publishing", e))
    }

    async fn abort(&mut self) {
        if let Some(h) = self.inflight.take() {
            let _ = h.await;
        }
        self.file = None;
        let staging = self.staging.clone();
        let gone = tokio::task::spawn_blocking(move || match std::fs::remove_file(&staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await;
        if let Ok(Err(e)) = gone {
            tracing::warn!(file = %self.staging.display(), error = %e, "removing a staging file");
        }
    }
}

const READ_CHUNK: u64 = 1 << 20;

fn file_stream(file: std::fs::File, range: Range<u64>) -> BoxStream<'static, Result<Bytes>> {
    futures::stream::try_unfold(
        (Some(file), range.start, range.end),
        |(file, pos, end)| async move {
            let Some(file) = file else { return Ok(None) };
            if pos >= end {
                return Ok(None);
            }
            let want = (end - pos).min(READ_CHUNK) as usize;
            let (file, buf) = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                // read_to_end reads into the spare capacity as it is: no zeroing of the buffer
                // first (a few % of a large export's CPU once buffers are reused).
                let mut buf = Vec::with_capacity(want);
                let mut f = &file;
                f.seek(std::io::SeekFrom::Start(pos))?;
                f.take(want as u64).read_to_end(&mut buf)?;
                Ok::<_, std::io::Error>((file, buf))
            })
            .await
            .map_err(|e| BlobError::Store(e.to_string()))?
            .map_err(|e| BlobError::Store(format!("reading: {e}")))?;
            if buf.is_empty() {
                return Err(BlobError::Store("object shorter than expected".into()));
            }
            let n = buf.len() as u64;
            Ok(Some((Bytes::from(buf), (Some(file), pos + n, end))))
        },
    )
    .boxed()
}

pub fn digest_of(data: &[u8]) -> Written {
    Written {
        size: data.len() as u64,
        sha256: hex::encode(Sha256::digest(data)),
        md5: hex::encode(Md5::digest(data)),
        sha1: Some(hex::encode(Sha1::digest(data))),
        crc32: Some(crc32fast::hash(data)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DigestKind {
    Sha256,
    Md5,
    Sha1,
}

/// One digest computed on a blocking thread of its own, fed through a bounded channel: hashing
/// (md5 alone is ~1.4 ns/byte) then runs beside the network and disk work instead of after it, and
/// several digests of one upload run in parallel.
struct Digester {
    kind: DigestKind,
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    /// The digest in hex, and with the sha256 the content's CRC-32.
    done: tokio::task::JoinHandle<(String, Option<u32>)>,
}

impl Digester {
    /// `crc`: also compute the content's CRC-32.
    fn spawn(kind: DigestKind, crc: bool) -> Digester {
        // 32 chunks in flight bound the memory held for hashing (chunks are shared, not copied).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let done = tokio::task::spawn_blocking(move || {
            let crc = crc.then(crc32fast::Hasher::new);
            fn run<D: Digest>(
                mut d: D,
                mut crc: Option<crc32fast::Hasher>,
                rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
            ) -> (String, Option<u32>) {
                while let Some(b) = rx.blocking_recv() {
                    d.update(&b);
                    if let Some(c) = crc.as_mut() {
                        c.update(&b);
                    }
                }
                (hex::encode(d.finalize()), crc.map(|c| c.finalize()))
            }
            match kind {
                DigestKind::Sha256 => run(Sha256::new(), crc, &mut rx),
                DigestKind::Md5 => run(Md5::new(), crc, &mut rx),
                DigestKind::Sha1 => run(Sha1::new(), crc, &mut rx),
            }
        });
        Digester {
            kind,
            tx: Some(tx),
            done,
        }
    }
}

/// A multipart upload in progress. Call [`BlobWriter::finish`] to publish or [`BlobWriter::abort`] to
/// drop it; dropping without either leaves only an unreferenced partial upload, never a visible object.
pub struct BlobWriter {
    /// The multipart upload, started only once more than one part's worth has arrived: a small
    /// object is one plain PUT (three fewer round trips to S3, and S3 refuses multipart uploads
    /// without parts, i.e. empty objects).
    inner: Option<WriteMultipart>,
    /// A local store's upload (see [`LocalStage`]); then `inner` and `pending` stay unused.
    local: Option<LocalStage>,
    pending: Vec<Bytes>,
    pending_len: usize,
    closed: bool,
    digests: Vec<Digester>,
    size: u64,
    store: Arc<dyn ObjectStore>,
    path: Path,
    /// S3 with a journal: the multipart upload is made (and recorded) by hand, see [`UploadJournal`].
    journaled: Option<leftovers::Journaled>,
}

impl BlobWriter {
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.closed {
            return Err(BlobError::Store("writer already closed".into()));
        }
        for d in &self.digests {
            if let Some(tx) = &d.tx {
                tx.send(data.clone())
                    .await
                    .map_err(|_| BlobError::Store("digest thread ended early".into()))?;
            }
        }
        self.size += data.len() as u64;
        if let Some(l) = self.local.as_mut() {
            return l.write(data).await;
        }
        if self.inner.is_none() {
            self.pending_len += data.len();
            self.pending.push(data);
            if self.pending_len <= PART_SIZE {
                return Ok(());
            }
            let upload = match &self.journaled {
                Some(j) => j.start(&self.path).await?,
                None => self.store.put_multipart(&self.path).await?,
            };
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for b in self.pending.drain(..) {
                w.put(b);
            }
            self.pending_len = 0;
            self.inner = Some(w);
            return Ok(());
        }
        if let Some(w) = self.inner.as_mut() {
            // Back-pressure: never hold more than PART_CONCURRENCY parts in flight.
            w.wait_for_capacity(PART_CONCURRENCY).await?;
            w.put(data);
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn finish(mut self) -> Result<Written> {
        if self.closed {
            return Err(BlobError::Store("writer already closed".into()));
        }
        self.closed = true;
        let mut written = Written {
            size: self.size,
            sha256: String::new(),
            md5: String::new(),
            sha1: None,
            crc32: None,
        };
        // Digests first: a failed digest must not leave a published object behind.
        for mut d in std::mem::take(&mut self.digests) {
            drop(d.tx.take());
            let (hex, crc32) = match (&mut d.done).await {
                Ok(h) => h,
                Err(e) => {
                    self.abort_inner().await;
                    return Err(BlobError::Store(format!("digest thread failed: {e}")));
                }
            };
            if crc32.is_some() {
                written.crc32 = crc32;
            }
            match d.kind {
                DigestKind::Sha256 => written.sha256 = hex,
                DigestKind::Md5 => written.md5 = hex,
                DigestKind::Sha1 => written.sha1 = Some(hex),
            }
        }
        if let Some(l) = self.local.as_mut() {
            if let Err(e) = l.finish().await {
                l.abort().await;
                return Err(e);
            }
            return Ok(written);
        }
        match self.inner.take() {
            Some(mut w) => {
                // A part that failed earlier (a full disk) is reported here, while the upload can
                // still be aborted: `WriteMultipart::finish` would return the error and drop the
                // upload unaborted (a local staging file removed only later, in the background;
                // an S3 upload left for the orphan sweep).
                if let Err(e) = w.wait_for_capacity(0).await {
                    if let Err(a) = w.abort().await {
                        tracing::warn!(error = %a, "aborting a multipart upload");
                    }
                    return Err(e.into());
                }
                w.finish().await?;
            }
            None => {
                let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
                self.store.put(&self.path, payload).await?;
            }
        }
        Ok(written)
    }

    async fn abort_inner(&mut self) {
        self.pending.clear();
        if let Some(l) = self.local.as_mut() {
            l.abort().await;
        }
        if let Some(w) = self.inner.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(error = %e, "aborting a multipart upload");
            }
        }
    }

    pub async fn abort(mut self) {
        self.closed = true;
        self.abort_inner().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_whole_local() {
        let dir = tempfile::tempdir().unwrap();
        check_read_whole(&Blobs::local(dir.path()).unwrap()).await;
    }

    #[tokio::test]
    async fn roundtrip_range_and_atomicity() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::local(dir.path()).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<std::result::Result<Bytes, std::io::Error>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let w = blobs
            .put_stream("a/b", futures::stream::iter(chunks), None)
            .await
            .unwrap();
        assert_eq!(
            w,
            Written {
                sha1: None,
                ..digest_of(&data)
            }
        );
        let w = blobs
            .put_stream_with(
                "a/e",
                futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"abc"))]),
                None,
                Hashes::IMAGE,
            )
            .await
            .unwrap();
        assert_eq!(
            w.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(w.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(w.sha256, "");
        let got: Vec<Bytes> = blobs
            .get("a/b", Some(10..20))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), &data[10..20]);

        // An upload that fails half-way publishes nothing.
        let bad = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"partial")),
            Err(std::io::Error::other("client went away")),
        ]);
        assert!(blobs.put_stream("a/c", bad, None).await.is_err());
        assert!(!blobs.exists("a/c").await.unwrap());

        // Limits abort too.
        let big = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 100]))]);
        assert!(matches!(
            blobs.put_stream("a/d", big, Some(10)).await,
            Err(BlobError::TooLarge(10))
        ));
        assert!(!blobs.exists("a/d").await.unwrap());
        assert!(blobs.get("../x", None).await.is_err());
    }
}

/// `read_whole` on any store: order kept, empty objects, a missing key's own error, a bad key.
#[cfg(test)]
async fn check_read_whole(blobs: &Blobs) {
    let a: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    blobs
        .put_bytes("rw/a", Bytes::from(a.clone()))
        .await
        .unwrap();
    blobs.put_bytes("rw/e", Bytes::new()).await.unwrap();
    blobs
        .put_bytes("rw/b-1.x", Bytes::from_static(b"bee"))
        .await
        .unwrap();
    let keys = ["rw/b-1.x", "rw/missing", "rw/a", "rw/e", "../x"];
    let got = blobs
        .read_whole(keys.iter().map(|k| k.to_string()).collect())
        .await;
    assert_eq!(got.len(), keys.len());
    assert_eq!(got[0].as_ref().unwrap().as_ref(), b"bee");
    assert!(
        matches!(&got[1], Err(BlobError::NotFound(k)) if k.ends_with("rw/missing")),
        "{:?}",
        got[1]
    );
    assert_eq!(got[2].as_ref().unwrap().as_ref(), &a[..]);
    assert!(got[3].as_ref().unwrap().is_empty());
    assert!(
        matches!(&got[4], Err(BlobError::InvalidKey(_))),
        "{:?}",
        got[4]
    );
}

/// The same contract on a real S3-compatible store (Garage, started by satchel-testkit).
#[cfg(test)]
mod s3_tests {
    use super::*;

    fn garage() -> Blobs {
        let (url, t) = satchel_testkit::garage::test_bucket_url().expect("Garage");
        Blobs::s3(&S3Config {
            url,
            endpoint: Some(t.endpoint.clone()),
            region: Some(t.region.clone()),
            access_key_id: Some(t.access_key_id.clone()),
            secret_access_key: Some(t.secret_access_key.clone()),
            virtual_hosted: false,
        })
        .expect("s3 blobs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_whole_on_garage() {
        let blobs = tokio::task::spawn_blocking(garage).await.unwrap();
        check_read_whole(&blobs).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_empty_ranges_and_aborts_on_garage() {
        let blobs = tokio::task::spawn_blocking(garage).await.unwrap();
        // Three parts: 12 MiB in 100 KB chunks.
        let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
        let chunks: Vec<std::result::Result<Bytes, std::io::Error>> = data
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let w = blobs
            .put_stream("x/big", futures::stream::iter(chunks), None)
            .await
            .unwrap();
        assert_eq!(w.sha256, digest_of(&data).sha256);
        assert_eq!(blobs.head("x/big").await.unwrap().size, data.len() as u64);
        let got: Vec<Bytes> = blobs
            .get("x/big", Some(5_000_000..5_000_100))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.concat(), &data[5_000_000..5_000_100]);
        // The empty object (S3 refuses a multipart upload without parts).
        let w = blobs
            .put_stream(
                "x/empty",
                futures::stream::empty::<std::result::Result<Bytes, std::io::Error>>(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(w.size, 0);
        assert!(blobs.exists("x/empty").await.unwrap());
        // A failed upload publishes nothing.
        let bad = futures::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 6 * 1024 * 1024])),
            Err(std::io::Error::other("client went away")),
        ]);
        assert!(blobs.put_stream("x/bad", bad, None).await.is_err());
        assert!(!blobs.exists("x/bad").await.unwrap());
        blobs.delete("x/big").await.unwrap();
        assert!(!blobs.exists("x/big").await.unwrap());
        blobs.delete("x/missing").await.unwrap();
    }
}
