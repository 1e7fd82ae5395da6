//! Streaming archive encoding: a tar stream compressed as concatenated gzip members (RFC 1952 allows
//! it; `gzip -d`, Python's `tarfile` and hammr read it) built on all cores with libdeflate.
//!
//! The tar stream is cut into chunks of a fixed size; each run of one mode inside a chunk becomes one
//! gzip member, compressed on the crate's compression threads (one per core). Many small files thus
//! share a chunk and a task. At most `max_inflight` chunks are in flight, and they are written to the
//! sink in order, so memory stays flat whatever the archive size. Data the caller marks incompressible
//! goes into *stored* deflate blocks: no CPU is spent trying to shrink what will not shrink. The
//! output's sha256 (and the input's, for OCI layers) is computed on a thread of its own
//! ([`HashThread`]) from the same buffers, never in a second pass.

pub mod oci;
pub mod reader;
pub mod zip;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive sink: {0}")]
    Sink(String),
    #[error("compression: {0}")]
    Compress(String),
    #[error("tar: {0}")]
    Tar(String),
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// Where compressed bytes go (a blob upload, a file, a test buffer).
#[async_trait]
pub trait Sink: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;
}

#[async_trait]
impl Sink for Vec<u8> {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.extend_from_slice(&data);
        Ok(())
    }
}

/// How a piece of data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Deflate,
    Store,
}

#[derive(Debug, Clone, Copy)]
pub struct GzOptions {
    pub level: i32,
    pub chunk_size: usize,
    pub max_inflight: usize,
    /// Also hash the uncompressed input (an OCI layer's `diff_id`); off for exports, where it would
    /// only cost time.
    pub hash_input: bool,
    /// No gzip framing at all: a plain stream (an uncompressed tar), still hashed and counted.
    pub raw: bool,
}

impl Default for GzOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        GzOptions {
            level: 6,
            chunk_size: 1 << 20,
            max_inflight: cores + 1,
            hash_input: false,
            raw: false,
        }
    }
}

/// One gzip member for `data`.
pub fn gzip_member(data: &[u8], mode: Mode, level: i32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    gzip_member_into(data, mode, level, &mut out)?;
    Ok(out)
}

thread_local! {
    /// Each compression thread keeps its compressor (libdeflate's level-6 state is ~0.5 MiB, worth
    /// not allocating per chunk), rebuilt only if the level changes.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, libdeflater::Compressor)>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends one gzip member for `data` to `out`.
pub fn gzip_member_into(data: &[u8], mode: Mode, level: i32, out: &mut Vec<u8>) -> Result<()> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    let crc = crc.finalize();
    let stored_len = data.len() + data.len().div_ceil(65535).max(1) * 5;
    out.reserve(
        18 + match mode {
            Mode::Store => stored_len,
            Mode::Deflate => data.len() / 2 + 64,
        },
    );
    // Header: magic, CM=deflate, no flags, mtime 0, XFL 0, OS=255 (unknown) => deterministic output.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    match mode {
        Mode::Store => store_blocks(data, out),
        Mode::Deflate => {
            let lvl = libdeflater::CompressionLvl::new(level)
                .map_err(|_| ArchiveError::Compress(format!("bad level {level}")))?;
            let start = out.len();
            let n = COMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                let c = match slot.as_mut() {
                    Some((l, c)) if *l == level => c,
                    _ => &mut slot.insert((level, libdeflater::Compressor::new(lvl))).1,
                };
                let bound = c.deflate_compress_bound(data.len());
                out.resize(start + bound, 0);
                c.deflate_compress(data, &mut out[start..])
                    .map_err(|e| ArchiveError::Compress(e.to_string()))
            })?;
            out.truncate(start + n);
            // libdeflate may expand incompressible input slightly; stored blocks are the floor.
            if n > stored_len {
                out.truncate(start);
                store_blocks(data, out);
            }
        }
    }
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(())
}

fn store_blocks(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        return;
    }
    let mut chunks = data.chunks(65535).peekable();
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = c.len() as u16;
        out.push(u8::from(last));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
}

/// A run of bytes of one chunk written in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    mode: Mode,
    len: usize,
}

/// Stored runs shorter than this, between deflated data, are deflated with their neighbours: a gzip
/// member of their own would cost more (18 bytes of framing and a broken deflate context) than
/// deflating a few KiB of noise. Decided per chunk, from its contents only (determinism).
const MIN_STORED_RUN: usize = 4096;

thread_local! {
    /// Each compression thread's output scratch: members are written here at libdeflate's worst-case
    /// bound, then copied out at their exact size (see [`encode_chunk`]).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one compression task does: the chunk's runs as gzip members (or the chunk itself, raw).
///
/// The returned buffer is exactly as large as its content: it travels on to the sink, which may
/// hold several (a 5 MiB multipart part is many of them), and a 1 MiB allocation behind a 300 KiB
/// deflated chunk would more than double the memory that holds.
fn encode_chunk(chunk: Bytes, runs: &[Run], level: i32, raw: bool) -> Result<Bytes> {
    if raw {
        return Ok(chunk);
    }
    // Fold short stored runs into deflate, then merge neighbours of the same mode.
    let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        let mode = if r.mode == Mode::Store && r.len < MIN_STORED_RUN && runs.len() > 1 {
            Mode::Deflate
        } else {
            r.mode
        };
        match merged.last_mut() {
            Some(last) if last.mode == mode => last.len += r.len,
            _ => merged.push(Run { mode, len: r.len }),
        }
    }
    if let [Run {
        mode: Mode::Store, ..
    }] = merged.as_slice()
    {
        // All stored: the size is known in advance, so write straight into an exact buffer.
        let mut out = Vec::new();
        gzip_member_into(&chunk, Mode::Store, level, &mut out)?;
        return Ok(Bytes::from(out));
    }
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        scratch.clear();
        let mut at = 0;
        for r in &merged {
            gzip_member_into(&chunk[at..at + r.len], r.mode, level, &mut scratch)?;
            at += r.len;
        }
        let out = Bytes::copy_from_slice(&scratch);
        // Do not keep a large scratch on a thread that may sit idle in the blocking pool.
        if scratch.capacity() > 4 << 20 {
            *scratch = Vec::new();
        }
        Ok(out)
    })
}

/// The compression threads: one per core, shared by every archive being built, so each thread's
/// compressor state and output scratch (~1.5 MiB) exist once per core, not once per thread of tokio's
/// blocking pool (which grows to dozens under file I/O and keeps idle threads for a while).
struct Pool {
    tx: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

fn pool() -> &'static Pool {
    static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        for i in 0..n {
            let rx = rx.clone();
            // A thread the system refuses leaves the others; with none, `run` reports the error.
            let _ = std::thread::Builder::new()
                .name(format!("satchel-gzip-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
        }
        Pool {
            tx: std::sync::Mutex::new(tx),
        }
    })
}

/// Runs `f` on a compression thread; its result arrives through the returned receiver.
fn run_on_pool<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(f());
    });
    if let Ok(q) = pool().tx.lock() {
        // A send that fails drops the job and its sender: the receiver then reports the error.
        let _ = q.send(job);
    }
    rx
}

/// A sha256 computed on a thread of its own, fed in order through a bounded channel: the archive's
/// digest then costs the encoder's emitting loop nothing but a queue push (its bytes are shared, not
/// copied), and runs beside compression and the sink's writes.
pub struct HashThread {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    done: Option<std::thread::JoinHandle<[u8; 32]>>,
}

impl HashThread {
    /// `depth` pieces may wait; more block the sender (memory stays bounded).
    pub fn spawn(depth: usize) -> Result<HashThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(depth);
        let done = std::thread::Builder::new()
            .name("satchel-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                while let Ok(b) = rx.recv() {
                    h.update(&b);
                }
                h.finalize().into()
            })
            .map_err(|e| ArchiveError::Compress(format!("starting a hash thread: {e}")))?;
        Ok(HashThread {
            tx: Some(tx),
            done: Some(done),
        })
    }

    /// Queues `data`; waits (off the async threads) only when the hasher is `depth` pieces behind.
    pub async fn update(&mut self, data: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(ArchiveError::Compress(
                "hash thread already finished".into(),
            ));
        };
        match tx.try_send(data) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(data)) => {
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || tx.send(data))
                    .await
                    .map_err(|e| ArchiveError::Compress(e.to_string()))?
                    .map_err(|_| ArchiveError::Compress("hash thread ended early".into()))
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                Err(ArchiveError::Compress("hash thread ended early".into()))
            }
        }
    }

    /// The digest of everything queued, in hex.
    pub async fn finish(mut self) -> Result<String> {
        drop(self.tx.take());
        let done = self
            .done
            .take()
            .ok_or_else(|| ArchiveError::Compress("hash thread already finished".into()))?;
        let digest = tokio::task::spawn_blocking(move || done.join())
            .await
            .map_err(|e| ArchiveError::Compress(e.to_string()))?
            .map_err(|_| ArchiveError::Compress("hash thread panicked".into()))?;
        Ok(hex::encode(digest))
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is not joined (an abandoned archive).
        drop(self.tx.take());
    }
}

/// Parallel, order-preserving gzip over a [`Sink`]. Also hashes and counts what it emits.
///
/// The input is cut into chunks of exactly `chunk_size` bytes whatever the writes' sizes, and a
/// chunk may hold data of both modes (runs): many small files share one compression task instead of
/// a task (and a gzip member) each, so both cores stay busy on any shape of data. Each run of a chunk
/// becomes one gzip member. The output depends only on the bytes and the mode of each byte.
pub struct ParallelGz<S: Sink> {
    sink: S,
    opts: GzOptions,
    buf: BytesMut,
    runs: Vec<Run>,
    inflight: VecDeque<Pending>,
    /// Started at the first output (so `new` cannot fail); `None` until then.
    sha256: Option<HashThread>,
    in_sha256: Option<HashThread>,
    out_len: u64,
    in_len: u64,
}

/// A place in the output, in order: a chunk being compressed, or a [`Reserved`] place.
enum Pending {
    Chunk(tokio::sync::oneshot::Receiver<Result<Bytes>>),
    /// Its output and how many uncompressed bytes it holds.
    Reserved(tokio::sync::oneshot::Receiver<Result<(Bytes, u64)>>),
}

/// How many chunks beyond `max_inflight` may be compressed while a [`Reserved`] place is still
/// empty. One: more kept the other core busier while documents render (2-4 % faster on 16,000 small
/// files) but held their chunks beside the documents being rendered, past the 64 MiB goal.
const RESERVED_AHEAD: usize = 1;

/// A place held in a [`ParallelGz`]'s output for whole tar members written later (documents that
/// take time to render come first in an archive, but the data after them need not wait): the chunks
/// after it are compressed meanwhile, and written once it is [finished](Reserved::finish). Dropping
/// it unfinished fails the archive.
///
/// Its members are compressed as they are added, on the calling thread (blocking: use it off the
/// async threads), a chunk at a time: what it holds is the compressed output and one chunk.
pub struct Reserved {
    tx: tokio::sync::oneshot::Sender<Result<(Bytes, u64)>>,
    level: i32,
    chunk_size: usize,
    raw: bool,
    pending: Vec<u8>,
    out: Vec<u8>,
    len: u64,
    /// The file being written: its declared size and where its content began.
    open: Option<(u64, u64)>,
}

impl std::io::Write for Reserved {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some((size, start)) = self.open else {
            return Err(std::io::Error::other("no open member"));
        };
        if self.len - start + buf.len() as u64 > size {
            return Err(std::io::Error::other(format!(
                "member longer than its declared {size} bytes"
            )));
        }
        self.push(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Reserved {
    /// Adds a regular file (mode 0644) as a tar member.
    pub fn add_file(&mut self, path: &str, data: &[u8], mtime: u64) -> Result<()> {
        self.begin_file(path, data.len() as u64, mtime)?;
        self.push(data)?;
        self.end_file()
    }

    /// Starts a regular file (mode 0644) of `size` bytes, whose content is then written through
    /// [`std::io::Write`] (a document serialized straight into the archive) and ended by
    /// [`Self::end_file`].
    pub fn begin_file(&mut self, path: &str, size: u64, mtime: u64) -> Result<()> {
        if self.open.is_some() {
            return Err(ArchiveError::Tar("previous member not finished".into()));
        }
        let mut header = Vec::with_capacity(1536);
        tar_header(
            path,
            tar::EntryType::Regular,
            size,
            mtime,
            0o644,
            &mut header,
        )?;
        self.push(&header)?;
        self.open = Some((size, self.len));
        Ok(())
    }

    /// Ends the file [`Self::begin_file`] started; its content must have been exactly its size.
    pub fn end_file(&mut self) -> Result<()> {
        let (size, start) = self
            .open
            .take()
            .ok_or_else(|| ArchiveError::Tar("no open member".into()))?;
        let written = self.len - start;
        if written != size {
            return Err(ArchiveError::Tar(format!(
                "member is {written} bytes, declared {size}"
            )));
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.push(&[0u8; 512][..pad])
    }

    fn push(&mut self, mut data: &[u8]) -> Result<()> {
        let size = self.chunk_size.max(1);
        self.len += data.len() as u64;
        while !data.is_empty() {
            let n = (size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() >= size {
                self.compress_pending()?;
            }
        }
        Ok(())
    }

    fn compress_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.raw {
            self.out.extend_from_slice(&self.pending);
        } else {
            gzip_member_into(&self.pending, Mode::Deflate, self.level, &mut self.out)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// Hands the members added to the archive, which writes them in their place.
    pub fn finish(mut self) -> Result<()> {
        let done = match self.open {
            Some(_) => Err(ArchiveError::Tar("member not finished".into())),
            None => self.compress_pending(),
        };
        let failed = done.as_ref().err().map(|e| e.to_string());
        let out = std::mem::take(&mut self.out);
        let msg = done.map(|()| (Bytes::from(out), self.len));
        // A receiver gone means the archive was abandoned: nothing to report to.
        let _ = self.tx.send(msg);
        match failed {
            Some(e) => Err(ArchiveError::Compress(e)),
            None => Ok(()),
        }
    }

    /// Fails the archive with `why` (what should have filled the place could not be made).
    pub fn fail(self, why: String) {
        let _ = self.tx.send(Err(ArchiveError::Compress(why)));
    }
}

/// Appends a tar header (with a GNU long-name member before it when `path` needs one) to `out`.
fn tar_header(
    path: &str,
    kind: tar::EntryType,
    size: u64,
    mtime: u64,
    mode: u32,
    out: &mut Vec<u8>,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mtime(mtime);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    let name = path.as_bytes();
    if name.len() > 100 {
        // GNU long name: a `././@LongLink` member carrying the full path, then the real header.
        let mut long = tar::Header::new_gnu();
        long.as_gnu_mut()
            .ok_or_else(|| ArchiveError::Tar("gnu header".into()))?
            .name[..13]
            .copy_from_slice(b"././@LongLink");
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_mode(0o644);
        long.set_size(name.len() as u64 + 1);
        long.set_mtime(0);
        long.set_cksum();
        out.extend_from_slice(long.as_bytes());
        let start = out.len();
        out.extend_from_slice(name);
        out.push(0);
        out.resize(start + (name.len() + 1).div_ceil(512) * 512, 0);
        let gnu = header
            .as_gnu_mut()
            .ok_or_else(|| ArchiveError::Tar("gnu header".into()))?;
        gnu.name.copy_from_slice(&name[..100]);
    } else {
        let gnu = header
            .as_gnu_mut()
            .ok_or_else(|| ArchiveError::Tar("gnu header".into()))?;
        gnu.name[..name.len()].copy_from_slice(name);
    }
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    Ok(())
}

/// What a finished archive is.
#[derive(Debug, Clone)]
pub struct Finished<S> {
    pub sink: S,
    pub size: u64,
    pub sha256: String,
    pub uncompressed: u64,
    /// sha256 of the uncompressed input, with [`GzOptions::hash_input`].
    pub uncompressed_sha256: Option<String>,
}

impl<S: Sink> ParallelGz<S> {
    pub fn new(sink: S, opts: GzOptions) -> Self {
        ParallelGz {
            sink,
            opts,
            buf: BytesMut::with_capacity(opts.chunk_size),
            runs: Vec::new(),
            inflight: VecDeque::new(),
            sha256: None,
            in_sha256: None,
            out_len: 0,
            in_len: 0,
        }
    }

    /// How many pieces a hash thread may lag behind, so memory stays bounded.
    fn hash_depth(&self) -> usize {
        // Two: the hasher is either faster than the compressors (compressible data) or the
        // slowest stage (stored data); either way a deeper queue only holds chunks longer.
        2
    }

    pub async fn write(&mut self, mut data: &[u8], mode: Mode) -> Result<()> {
        self.in_len += data.len() as u64;
        while !data.is_empty() {
            let room = self.opts.chunk_size.max(1) - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            match self.runs.last_mut() {
                Some(r) if r.mode == mode => r.len += n,
                _ => self.runs.push(Run { mode, len: n }),
            }
            data = &data[n..];
            if self.buf.len() >= self.opts.chunk_size.max(1) {
                self.flush_chunk().await?;
            }
        }
        Ok(())
    }

    async fn flush_chunk(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.opts.chunk_size))
            .freeze();
        if self.opts.hash_input {
            // The uncompressed stream is hashed on its own thread, from the chunk (no copy).
            if self.in_sha256.is_none() {
                self.in_sha256 = Some(HashThread::spawn(self.hash_depth())?);
            }
            if let Some(h) = self.in_sha256.as_mut() {
                h.update(chunk.clone()).await?;
            }
        }
        let runs = std::mem::take(&mut self.runs);
        let (level, raw) = (self.opts.level, self.opts.raw);
        self.inflight.push_back(Pending::Chunk(run_on_pool(move || {
            encode_chunk(chunk, &runs, level, raw)
        })));
        while self.inflight.len() >= self.limit() {
            self.emit_one().await?;
        }
        Ok(())
    }

    /// How many places may be in flight: more while a reserved one waits for its content.
    fn limit(&self) -> usize {
        let waiting = self
            .inflight
            .iter()
            .any(|p| matches!(p, Pending::Reserved(_)));
        self.opts.max_inflight.max(1) + if waiting { RESERVED_AHEAD } else { 0 }
    }

    /// Ends the current chunk and holds the next place of the output for a [`Reserved`]. Not
    /// with [`GzOptions::hash_input`] (the input's digest is taken in write order).
    pub async fn reserve(&mut self) -> Result<Reserved> {
        if self.opts.hash_input {
            return Err(ArchiveError::Compress(
                "a place cannot be reserved in a hashed input".into(),
            ));
        }
        self.flush_chunk().await?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inflight.push_back(Pending::Reserved(rx));
        Ok(Reserved {
            tx,
            level: self.opts.level,
            chunk_size: self.opts.chunk_size,
            raw: self.opts.raw,
            pending: Vec::new(),
            out: Vec::new(),
            len: 0,
            open: None,
        })
    }

    async fn emit_one(&mut self) -> Result<()> {
        match self.inflight.pop_front() {
            Some(Pending::Chunk(h)) => {
                let out = h
                    .await
                    .map_err(|_| ArchiveError::Compress("a compression thread failed".into()))??;
                self.emit(out).await?;
            }
            Some(Pending::Reserved(h)) => {
                let (out, n) = h.await.map_err(|_| {
                    ArchiveError::Compress("a reserved place was never filled".into())
                })??;
                self.in_len += n;
                if !out.is_empty() {
                    self.emit(out).await?;
                }
            }
            None => {}
        }
        Ok(())
    }

    async fn emit(&mut self, out: Bytes) -> Result<()> {
        self.out_len += out.len() as u64;
        if self.sha256.is_none() {
            self.sha256 = Some(HashThread::spawn(self.hash_depth())?);
        }
        if let Some(h) = self.sha256.as_mut() {
            h.update(out.clone()).await?;
        }
        self.sink.write(out).await
    }

    pub fn uncompressed_len(&self) -> u64 {
        self.in_len
    }

    pub async fn finish(mut self) -> Result<Finished<S>> {
        self.flush_chunk().await?;
        while !self.inflight.is_empty() {
            self.emit_one().await?;
        }
        if self.out_len == 0 && !self.opts.raw {
            // An empty input is still a valid (empty) gzip file.
            let out = gzip_member(&[], Mode::Store, self.opts.level)?;
            self.emit(Bytes::from(out)).await?;
        }
        let empty = || hex::encode(Sha256::digest([]));
        let sha256 = match self.sha256.take() {
            Some(h) => h.finish().await?,
            None => empty(),
        };
        let uncompressed_sha256 = match self.in_sha256.take() {
            Some(h) => Some(h.finish().await?),
            None => self.opts.hash_input.then(empty),
        };
        Ok(Finished {
            sink: self.sink,
            size: self.out_len,
            sha256,
            uncompressed: self.in_len,
            uncompressed_sha256,
        })
    }
}

/// A tar stream (ustar + GNU long names) written through [`ParallelGz`].
pub struct TarGzWriter<S: Sink> {
    gz: ParallelGz<S>,
    open_member: Option<(u64, u64)>, // (declared size, written so far)
    /// The last header's bytes: one buffer for every member's header.
    header: Vec<u8>,
}

impl<S: Sink> TarGzWriter<S> {
    pub fn new(sink: S, opts: GzOptions) -> Self {
        TarGzWriter {
            gz: ParallelGz::new(sink, opts),
            open_member: None,
            header: Vec::with_capacity(1536),
        }
    }

    /// Starts a regular-file member of `size` bytes at `path` (relative, `/`-separated).
    pub async fn begin_file(&mut self, path: &str, size: u64, mtime: u64, mode: u32) -> Result<()> {
        self.write_header(path, tar::EntryType::Regular, size, mtime, mode)
            .await?;
        self.open_member = Some((size, 0));
        Ok(())
    }

    async fn write_header(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        size: u64,
        mtime: u64,
        mode: u32,
    ) -> Result<()> {
        if self.open_member.is_some() {
            return Err(ArchiveError::Tar("previous member not finished".into()));
        }
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        tar_header(path, kind, size, mtime, mode, &mut header)?;
        let r = self.gz.write(&header, Mode::Deflate).await;
        self.header = header;
        r
    }

    /// Holds the next place of the archive for whole members written later (a [`Reserved`]);
    /// the members after it are compressed meanwhile.
    pub async fn reserve(&mut self) -> Result<Reserved> {
        if self.open_member.is_some() {
            return Err(ArchiveError::Tar("previous member not finished".into()));
        }
        self.gz.reserve().await
    }

    /// Appends content of the open member.
    pub async fn write_data(&mut self, data: &[u8], mode: Mode) -> Result<()> {
        let (size, written) = self
            .open_member
            .as_mut()
            .ok_or_else(|| ArchiveError::Tar("no open member".into()))?;
        if *written + data.len() as u64 > *size {
            return Err(ArchiveError::Tar(format!(
                "member longer than its declared {size} bytes"
            )));
        }
        *written += data.len() as u64;
        self.gz.write(data, mode).await
    }

    /// Ends the open member; its content must have been exactly the declared size.
    pub async fn end_file(&mut self) -> Result<()> {
        let (size, written) = self
            .open_member
            .take()
            .ok_or_else(|| ArchiveError::Tar("no open member".into()))?;
        if size != written {
            return Err(ArchiveError::Tar(format!(
                "member is {written} bytes, declared {size}"
            )));
        }
        let pad = (512 - (size % 512) as usize) % 512;
        if pad > 0 {
            self.gz.write(&[0u8; 512][..pad], Mode::Deflate).await?;
        }
        Ok(())
    }

    pub async fn add_bytes(&mut self, path: &str, data: &[u8], mtime: u64) -> Result<()> {
        self.begin_file(path, data.len() as u64, mtime, 0o644)
            .await?;
        self.write_data(data, Mode::Deflate).await?;
        self.end_file().await
    }

    /// Adds a directory member (`path` ends with `/`).
    pub async fn add_dir(&mut self, path: &str, mtime: u64) -> Result<()> {
        self.write_header(path, tar::EntryType::Directory, 0, mtime, 0o755)
            .await
    }

    pub fn uncompressed_len(&self) -> u64 {
        self.gz.uncompressed_len()
    }

    /// Gives the sink back without finishing (to abort it).
    pub fn into_sink(self) -> S {
        self.gz.sink
    }

    pub async fn finish(mut self) -> Result<Finished<S>> {
        if self.open_member.is_some() {
            return Err(ArchiveError::Tar("member not finished".into()));
        }
        self.gz.write(&[0u8; 1024], Mode::Deflate).await?;
        self.gz.finish().await
    }
}

/// A tar writer seen as a sequence of file members, whatever its framing (an export archive, an OCI
/// layer): what the domain's file-streaming loop writes to.
#[async_trait]
pub trait MemberWrite: Send {
    /// Starts a regular file of `size` bytes. `mtime` may be ignored (OCI layers use a fixed one).
    async fn begin_member(&mut self, path: &str, size: u64, mtime: u64, mode: u32) -> Result<()>;
    async fn member_data(&mut self, data: &[u8], mode: Mode) -> Result<()>;
    async fn end_member(&mut self) -> Result<()>;
    /// Adds a directory (`path` ends with `/`). Writers without directories (zip takeouts, which
    /// only ever copy files) refuse it.
    async fn dir_member(&mut self, path: &str, _mtime: u64) -> Result<()> {
        Err(ArchiveError::Tar(format!(
            "this archive holds no directories ({path})"
        )))
    }
}

#[async_trait]
impl<S: Sink> MemberWrite for TarGzWriter<S> {
    async fn begin_member(&mut self, path: &str, size: u64, mtime: u64, mode: u32) -> Result<()> {
        self.begin_file(path, size, mtime, mode).await
    }
    async fn member_data(&mut self, data: &[u8], mode: Mode) -> Result<()> {
        self.write_data(data, mode).await
    }
    async fn end_member(&mut self) -> Result<()> {
        self.end_file().await
    }
    async fn dir_member(&mut self, path: &str, mtime: u64) -> Result<()> {
        self.add_dir(path, mtime).await
    }
}

/// Permission bits for a file member from its first bytes: scripts (`#!`) and ELF executables are
/// executable, everything else is not. Deterministic: the content alone decides.
pub fn file_mode(head: &[u8]) -> u32 {
    if head.starts_with(b"#!") || head.starts_with(b"\x7fELF") {
        0o755
    } else {
        0o644
    }
}

/// Decides once per archive member, on its first 64 KiB, whether deflating it is worth it: feed it
/// the member's chunks in order; it holds them back while sampling, then says what to write and how.
#[derive(Debug, Default)]
pub struct ModeProbe {
    pending: Vec<u8>,
    mode: Option<Mode>,
}

/// What to write after [`ModeProbe::push`].
pub enum Probed<'a> {
    /// Still sampling: nothing to write yet.
    Sampling,
    /// The sample held back so far (including this chunk), now decided.
    Decided(Vec<u8>, Mode),
    /// This chunk, in the mode decided earlier.
    Chunk(&'a [u8], Mode),
}

impl ModeProbe {
    pub const SAMPLE: usize = 64 * 1024;

    /// `last`: no more data follows for this member (decide now whatever the sample size).
    pub fn push<'a>(&mut self, chunk: &'a [u8], last: bool) -> Probed<'a> {
        if let Some(md) = self.mode {
            return Probed::Chunk(chunk, md);
        }
        self.pending.extend_from_slice(chunk);
        if self.pending.len() < Self::SAMPLE && !last {
            return Probed::Sampling;
        }
        let md = if looks_incompressible(&self.pending) {
            Mode::Store
        } else {
            Mode::Deflate
        };
        self.mode = Some(md);
        Probed::Decided(std::mem::take(&mut self.pending), md)
    }

    /// What is still held back when the member ended before a decision (a short member).
    pub fn finish(self) -> Option<(Vec<u8>, Mode)> {
        (!self.pending.is_empty()).then(|| {
            let md = if looks_incompressible(&self.pending) {
                Mode::Store
            } else {
                Mode::Deflate
            };
            (self.pending, md)
        })
    }
}

/// Whether data is not worth deflating: a known compressed format by magic number, or a sample that
/// a fast deflate cannot shrink by 3%.
///
/// The sample's byte entropy settles most cases without the trial compression, which cost more
/// than the copy itself for thousands of small files: below 6 bits per byte Huffman coding alone
/// gains a quarter, and above 7.9 (corrected for the sample's size) the bytes are as good as
/// random, which LZ matches cannot help unless the sample repeats itself within itself (the trial
/// would not see longer-range repeats either). In between, a level-1 deflate decides.
pub fn looks_incompressible(sample: &[u8]) -> bool {
    const MAGICS: &[&[u8]] = &[
        &[0x1f, 0x8b],             // gzip
        b"PK\x03\x04",             // zip, jar, docx...
        b"BZh",                    // bzip2
        &[0xfd, b'7', b'z', b'X'], // xz
        &[0x28, 0xb5, 0x2f, 0xfd], // zstd
        b"7z\xbc\xaf",             // 7z
        &[0x89, b'P', b'N', b'G'], // png
        &[0xff, 0xd8, 0xff],       // jpeg
        b"\xed\xab\xee\xdb",       // rpm
    ];
    if MAGICS.iter().any(|m| sample.starts_with(m)) {
        return true;
    }
    if sample.len() < 4096 {
        return false;
    }
    let sample = &sample[..sample.len().min(64 * 1024)];
    let h = entropy_bits(sample);
    if h < 6.0 {
        return false;
    }
    if h > 7.9 && !repeats_early(sample) {
        return true;
    }
    thread_local! {
        static FAST: std::cell::RefCell<Option<libdeflater::Compressor>> =
            const { std::cell::RefCell::new(None) };
    }
    FAST.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match slot.as_mut() {
            Some(c) => c,
            None => match libdeflater::CompressionLvl::new(1) {
                Ok(l) => slot.insert(libdeflater::Compressor::new(l)),
                Err(_) => return false,
            },
        };
        let mut out = vec![0u8; c.deflate_compress_bound(sample.len())];
        match c.deflate_compress(sample, &mut out) {
            Ok(n) => n * 100 >= sample.len() * 97,
            Err(_) => false,
        }
    })
}

/// Order-0 entropy of `data` in bits per byte, with the Miller–Madow correction (a short sample
/// of random bytes otherwise reads below 8).
fn entropy_bits(data: &[u8]) -> f64 {
    // Four tables: consecutive equal bytes would otherwise serialise on one counter.
    let mut t = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        t[0][q[0] as usize] += 1;
        t[1][q[1] as usize] += 1;
        t[2][q[2] as usize] += 1;
        t[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        t[0][b as usize] += 1;
    }
    let n = data.len() as f64;
    let mut h = 0.0;
    let mut used = 0u32;
    for (((a, b), c), d) in t[0].iter().zip(&t[1]).zip(&t[2]).zip(&t[3]) {
        let c = a + b + c + d;
        if c > 0 {
            used += 1;
            let p = c as f64 / n;
            h -= p * p.log2();
        }
    }
    h + (used.saturating_sub(1)) as f64 / (2.0 * n * std::f64::consts::LN_2)
}

/// Whether the sample's first 256 bytes occur again later in it: random-looking data that repeats
/// (a block copied over and over) is left to the trial compression.
fn repeats_early(sample: &[u8]) -> bool {
    let Some(head) = sample.get(..256) else {
        return false;
    };
    memchr::memmem::find(&sample[256..], head).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip_all(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn members_roundtrip() {
        for mode in [Mode::Deflate, Mode::Store] {
            for len in [0usize, 1, 65535, 65536, 200_000] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
                let gz = gzip_member(&data, mode, 6).unwrap();
                assert_eq!(gunzip_all(&gz), data, "{mode:?} {len}");
            }
        }
    }

    #[test]
    fn executables_are_recognised_by_content() {
        assert_eq!(file_mode(b"#!/bin/sh\n"), 0o755);
        assert_eq!(file_mode(b"\x7fELF\x02\x01"), 0o755);
        assert_eq!(file_mode(b"#include <stdio.h>"), 0o644);
        assert_eq!(file_mode(b""), 0o644);
    }

    #[test]
    fn mode_probe_samples_then_passes_chunks_through() {
        let mut p = ModeProbe::default();
        let text = b"hello world, hello world\n".repeat(2000); // 50 KB
        assert!(matches!(p.push(&text[..30_000], false), Probed::Sampling));
        match p.push(&text[30_000..], false) {
            Probed::Sampling => {}
            _ => panic!("50 KB is below the sample size"),
        }
        match p.push(&text, false) {
            Probed::Decided(v, Mode::Deflate) => assert_eq!(v.len(), 2 * text.len()),
            _ => panic!("text is deflated"),
        }
        assert!(matches!(
            p.push(b"x", false),
            Probed::Chunk(b"x", Mode::Deflate)
        ));
        assert!(p.finish().is_none());
        // A short member is decided at its end, or by `finish`.
        let mut p = ModeProbe::default();
        assert!(matches!(
            p.push(&[0x1f, 0x8b, 8, 0], true),
            Probed::Decided(_, Mode::Store)
        ));
        let mut p = ModeProbe::default();
        assert!(matches!(p.push(b"abc", false), Probed::Sampling));
        assert_eq!(p.finish(), Some((b"abc".to_vec(), Mode::Deflate)));
    }

    #[tokio::test]
    async fn raw_mode_writes_a_plain_tar() {
        let opts = GzOptions {
            chunk_size: 1000,
            raw: true,
            hash_input: true,
            ..Default::default()
        };
        let mut w = TarGzWriter::new(Vec::new(), opts);
        w.add_bytes("a.txt", b"hello", 0).await.unwrap();
        w.add_dir("d/", 0).await.unwrap();
        let f = w.finish().await.unwrap();
        assert_eq!(f.size as usize, f.sink.len());
        assert_eq!(f.size, f.uncompressed, "nothing compressed");
        assert_eq!(f.sink.len() % 512, 0);
        assert_eq!(
            f.uncompressed_sha256.as_deref(),
            Some(f.sha256.as_str()),
            "output is the input"
        );
        let mut ar = tar::Archive::new(&f.sink[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["a.txt", "d/"]);
    }

    /// Documents written into a place reserved at the start, from another thread and late, make the
    /// same tar as documents written first in order; the data after them did not wait for them.
    #[tokio::test]
    async fn a_reserved_place_holds_its_members_first_whatever_fills_it_later() {
        let long = format!("docs/{}/manifest.json", "d".repeat(120));
        let docs: Vec<(String, Vec<u8>)> = vec![
            ("bundle.yml".into(), b"---\nname: x\n".repeat(700)),
            (long, (0..9000u32).flat_map(|i| i.to_le_bytes()).collect()),
            ("empty".into(), Vec::new()),
        ];
        let files: Vec<(String, Vec<u8>, Mode)> = (0..40u32)
            .map(|i| {
                let n = (i as usize * 977) % 9000;
                let text: Vec<u8> = format!("line {i} ").repeat(n / 7 + 1).into_bytes();
                let noise: Vec<u8> = (0..n as u32)
                    .map(|j| (j.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect();
                if i % 3 == 0 {
                    (format!("f{i}.bin"), noise, Mode::Store)
                } else {
                    (format!("f{i}.txt"), text, Mode::Deflate)
                }
            })
            .collect();
        let opts = GzOptions {
            chunk_size: 4096,
            max_inflight: 2,
            ..GzOptions::default()
        };

        let mut plain = TarGzWriter::new(Vec::new(), opts);
        for (name, data) in &docs {
            plain.add_bytes(name, data, 7).await.unwrap();
        }
        for (name, data, mode) in &files {
            plain
                .begin_file(name, data.len() as u64, 7, 0o644)
                .await
                .unwrap();
            plain.write_data(data, *mode).await.unwrap();
            plain.end_file().await.unwrap();
        }
        let plain = plain.finish().await.unwrap();

        let mut held = TarGzWriter::new(Vec::new(), opts);
        let mut place = held.reserve().await.unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let filler = std::thread::spawn(move || {
            // Filled only once the first data chunks were handed out.
            started_rx.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
            for (i, (name, data)) in docs.iter().enumerate() {
                if i == 1 {
                    // Streamed in small writes, as a serializer does.
                    use std::io::Write;
                    place.begin_file(name, data.len() as u64, 7)?;
                    for piece in data.chunks(333) {
                        place
                            .write_all(piece)
                            .map_err(|e| ArchiveError::Sink(e.to_string()))?;
                    }
                    place.end_file()?;
                } else {
                    place.add_file(name, data, 7)?;
                }
            }
            place.finish()
        });
        for (i, (name, data, mode)) in files.iter().enumerate() {
            held.begin_file(name, data.len() as u64, 7, 0o644)
                .await
                .unwrap();
            held.write_data(data, *mode).await.unwrap();
            held.end_file().await.unwrap();
            if i == 0 {
                started_tx.send(()).unwrap();
            }
        }
        filler.join().unwrap().unwrap();
        let held = held.finish().await.unwrap();

        assert_eq!(gunzip_all(&held.sink), gunzip_all(&plain.sink));
        assert_eq!(held.uncompressed, plain.uncompressed);
        assert_eq!(held.size, held.sink.len() as u64);
        assert_eq!(held.sha256, hex::encode(Sha256::digest(&held.sink)));
        let mut names = Vec::new();
        let inflated = gunzip_all(&held.sink);
        for e in tar::Archive::new(inflated.as_slice()).entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(names.len(), 43);
        assert_eq!(names[0], "bundle.yml");
        assert!(names[1].ends_with("/manifest.json") && names[1].len() > 100);
        assert_eq!(names[3], "f0.bin");
    }

    #[tokio::test]
    async fn an_unfilled_place_fails_the_archive_and_hashed_input_refuses_one() {
        let mut w = TarGzWriter::new(Vec::new(), GzOptions::default());
        let place = w.reserve().await.unwrap();
        w.add_bytes("a", b"data", 0).await.unwrap();
        drop(place);
        let e = w.finish().await.unwrap_err();
        assert!(e.to_string().contains("never filled"), "{e}");

        // A streamed member must be exactly its declared size.
        let mut w = TarGzWriter::new(Vec::new(), GzOptions::default());
        let mut place = w.reserve().await.unwrap();
        place.begin_file("m", 4, 0).unwrap();
        assert!(std::io::Write::write_all(&mut place, b"12345").is_err());
        std::io::Write::write_all(&mut place, b"123").unwrap();
        assert!(place.end_file().is_err(), "short");
        place.begin_file("n", 2, 0).unwrap();
        assert!(place.finish().is_err(), "a member left open");
        assert!(w.finish().await.is_err());

        let mut w = TarGzWriter::new(Vec::new(), GzOptions::default());
        w.reserve().await.unwrap().fail("rendering broke".into());
        let e = w.finish().await.unwrap_err();
        assert!(e.to_string().contains("rendering broke"), "{e}");

        let mut h = ParallelGz::new(
            Vec::new(),
            GzOptions {
                hash_input: true,
                ..GzOptions::default()
            },
        );
        assert!(h.reserve().await.is_err());
    }

    #[tokio::test]
    async fn tar_roundtrip_with_long_names_and_mixed_modes() {
        let opts = GzOptions {
            level: 6,
            chunk_size: 4096,
            max_inflight: 3,
            hash_input: false,
            raw: false,
        };
        let mut w = TarGzWriter::new(Vec::new(), opts);
        let long = format!("bundles/{}/file.txt", "d".repeat(150));
        let noise: Vec<u8> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        w.add_bytes("a.txt", b"hello", 1).await.unwrap();
        w.begin_file(&long, noise.len() as u64, 2, 0o644)
            .await
            .unwrap();
        for c in noise.chunks(3000) {
            w.write_data(c, Mode::Store).await.unwrap();
        }
        w.end_file().await.unwrap();
        w.add_bytes("empty", b"", 3).await.unwrap();
        let long_dir = format!("{}/", "e".repeat(120));
        w.add_dir(&long_dir, 4).await.unwrap();
        let fin = w.finish().await.unwrap();
        assert_eq!(fin.size as usize, fin.sink.len());
        assert_eq!(fin.sha256, hex::encode(Sha256::digest(&fin.sink)));
        let tarball = gunzip_all(&fin.sink);
        let mut ar = tar::Archive::new(&tarball[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().to_string();
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((p, body));
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3].0, long_dir);
        assert_eq!(seen[0], ("a.txt".to_string(), b"hello".to_vec()));
        assert_eq!(seen[1].0, long);
        assert_eq!(seen[1].1, noise);
        assert_eq!(seen[2].1.len(), 0);
    }

    #[tokio::test]
    async fn size_mismatch_is_an_error() {
        let mut w = TarGzWriter::new(Vec::new(), GzOptions::default());
        w.begin_file("x", 10, 0, 0o644).await.unwrap();
        assert!(w.write_data(&[0u8; 11], Mode::Deflate).await.is_err());
        w.write_data(&[0u8; 5], Mode::Deflate).await.unwrap();
        assert!(w.end_file().await.is_err());
    }

    #[test]
    fn incompressible_detection() {
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(2000);
        assert!(!looks_incompressible(&text));
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let noise: Vec<u8> = (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(looks_incompressible(&noise));
        assert!(looks_incompressible(&[0x1f, 0x8b, 8, 0]));
        // Random-looking bytes that repeat within the sample are left to the trial, which deflates.
        let repeated = noise[..4096].repeat(16);
        assert!(entropy_bits(&repeated) > 7.9);
        assert!(!looks_incompressible(&repeated));
        // A short random sample still reads as random (the size correction), a long run of one
        // byte as nothing.
        assert!(entropy_bits(&noise[..4096]) > 7.9);
        assert!(entropy_bits(&[7u8; 10_000]) < 0.01);
        // Middle entropy (random bytes over 96 symbols: ~6.6 bits) goes to the trial: deflate's
        // Huffman stage shrinks it by ~17%.
        let mid: Vec<u8> = noise.iter().map(|b| 32 + b % 96).collect();
        let h = entropy_bits(&mid);
        assert!(h > 6.0 && h < 7.9, "{h}");
        assert!(!looks_incompressible(&mid));
    }

    proptest::proptest! {
        #[test]
        fn any_chunking_roundtrips(data in proptest::collection::vec(proptest::num::u8::ANY, 0..20_000),
                                   chunk in 1usize..5000, store in proptest::bool::ANY) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let out = rt.block_on(async {
                let mut gz = ParallelGz::new(Vec::new(), GzOptions { level: 1, chunk_size: chunk, max_inflight: 2, hash_input: false, raw: false });
                for (i, c) in data.chunks(777).enumerate() {
                    let mode = if store && i % 2 == 0 { Mode::Store } else { Mode::Deflate };
                    gz.write(c, mode).await.unwrap();
                }
                gz.finish().await.unwrap().sink
            });
            proptest::prop_assert_eq!(gunzip_all(&out), data);
        }

        /// Stored files arrive in chunks whose sizes depend on the blob store (local files, S3
        /// parts): a member written through the probe must come out byte-identical whatever they are.
        #[test]
        fn probed_members_do_not_depend_on_read_chunking(
            len in 0usize..200_000,
            noisy in proptest::bool::ANY,
            cuts in proptest::collection::vec(1usize..70_000, 1..8),
        ) {
            let mut x: u64 = 0x2545F4914F6CDD1D;
            let data: Vec<u8> = (0..len)
                .map(|i| if noisy { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 32) as u8 } else { b"abcdefgh"[i % 8] })
                .collect();
            let build = |sizes: Vec<usize>| {
                let data = data.clone();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let opts = GzOptions { chunk_size: 32 * 1024, ..Default::default() };
                    let mut w = TarGzWriter::new(Vec::new(), opts);
                    w.begin_member("f", data.len() as u64, 0, file_mode(&data)).await.unwrap();
                    let mut probe = ModeProbe::default();
                    let (mut at, mut k) = (0, 0);
                    while at < data.len() {
                        let n = sizes[k % sizes.len()].min(data.len() - at);
                        k += 1;
                        match probe.push(&data[at..at + n], at + n == data.len()) {
                            Probed::Sampling => {}
                            Probed::Decided(d, m) => w.member_data(&d, m).await.unwrap(),
                            Probed::Chunk(d, m) => w.member_data(d, m).await.unwrap(),
                        }
                        at += n;
                    }
                    if let Some((d, m)) = probe.finish() {
                        w.member_data(&d, m).await.unwrap();
                    }
                    w.end_member().await.unwrap();
                    w.finish().await.unwrap().sink
                })
            };
            let one_piece = build(vec![usize::MAX]);
            proptest::prop_assert_eq!(build(cuts), one_piece);
        }
    }
}
