//! The blob port: what the domain and the faces need of blob storage, as an object-safe trait.
//! [`Blobs`] (object_store: a local directory or S3) is its implementation; services hold an
//! `Arc<dyn BlobStore>`, so only the composition root (`satchel serve`) names the concrete store,
//! and a test can put any other implementation behind them.

use crate::{BlobWriter, Blobs, Hashes, Listed, Result, Staged, Written};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use std::ops::Range;

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Streams `range` (or all) of `key`.
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>>;
    /// Streams `body` into `key` (published only when complete), at most `limit` bytes, computing
    /// `hashes`. See [`BlobStore::put_stream`] for any stream.
    async fn put_boxed<'b>(
        &self,
        key: &str,
        body: BoxStream<'b, std::result::Result<Bytes, String>>,
        limit: Option<u64>,
        hashes: Hashes,
    ) -> Result<Written>;
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<Written>;
    /// A streaming writer for `key` computing `hashes` (none when the caller hashes already).
    async fn writer(&self, key: &str, hashes: Hashes) -> Result<BlobWriter>;
    /// Reads small objects whole, in order (see [`Blobs::read_whole`]).
    async fn read_whole(&self, keys: Vec<String>) -> Vec<Result<Bytes>>;
    /// Deletes `key`; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    async fn exists(&self, key: &str) -> Result<bool>;
    /// Every object under `prefix`, with its last modification (the orphan sweep's listing).
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<Listed>>;
    /// Staging files a crashed local write left under `prefix` (none on S3).
    async fn staged_uploads(&self, prefix: &str) -> Result<Vec<Staged>>;
    async fn remove_staged(&self, s: &Staged) -> Result<()>;
    /// Aborts a multipart upload a crash left on S3 (nothing to do locally).
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()>;
}

impl dyn BlobStore {
    /// Streams `body` into `key`, computing the default digests.
    pub async fn put_stream<'b, S, E>(
        &self,
        key: &str,
        body: S,
        limit: Option<u64>,
    ) -> Result<Written>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'b,
        E: std::fmt::Display,
    {
        self.put_stream_with(key, body, limit, Hashes::DEFAULT)
            .await
    }

    /// [`BlobStore::put_stream`] computing the chosen digests.
    pub async fn put_stream_with<'b, S, E>(
        &self,
        key: &str,
        body: S,
        limit: Option<u64>,
        hashes: Hashes,
    ) -> Result<Written>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'b,
        E: std::fmt::Display,
    {
        let body = body.map(|r| r.map_err(|e| e.to_string())).boxed();
        self.put_boxed(key, body, limit, hashes).await
    }
}

#[async_trait::async_trait]
impl BlobStore for Blobs {
    async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        Blobs::get(self, key, range).await
    }
    async fn put_boxed<'b>(
        &self,
        key: &str,
        body: BoxStream<'b, std::result::Result<Bytes, String>>,
        limit: Option<u64>,
        hashes: Hashes,
    ) -> Result<Written> {
        Blobs::put_stream_with(self, key, body, limit, hashes).await
    }
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<Written> {
        Blobs::put_bytes(self, key, data).await
    }
    async fn writer(&self, key: &str, hashes: Hashes) -> Result<BlobWriter> {
        Blobs::writer_opts(self, key, hashes).await
    }
    async fn read_whole(&self, keys: Vec<String>) -> Vec<Result<Bytes>> {
        Blobs::read_whole(self, keys).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        Blobs::delete(self, key).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        Blobs::exists(self, key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'static, Result<Listed>> {
        Blobs::list(self, prefix)
    }
    async fn staged_uploads(&self, prefix: &str) -> Result<Vec<Staged>> {
        Blobs::staged_uploads(self, prefix).await
    }
    async fn remove_staged(&self, s: &Staged) -> Result<()> {
        Blobs::remove_staged(self, s).await
    }
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        Blobs::abort_upload(self, key, upload_id).await
    }
}
