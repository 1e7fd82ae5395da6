//! A `.zip` written front to back to a [`Sink`] (no seeking back): the zip crate's streaming writer
//! (local headers with data descriptors, zip64 records when a member, the offsets or the entry count
//! need them) over an in-memory buffer drained to the sink after every call, so memory stays at
//! one chunk. Members are stored, not deflated: a takeout's members are archives already.

use crate::{ArchiveError, MemberWrite, Mode, Result, Sink};
use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::{Arc, Mutex};
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::{CompressionMethod, ZipWriter};

/// Bytes the zip writer produced and the sink has not taken yet.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// What a finished zip was: its sink, size and sha256.
pub struct ZipFinished<S> {
    pub sink: S,
    pub size: u64,
    pub sha256: String,
}

pub struct ZipStreamWriter<S: Sink> {
    zip: ZipWriter<StreamWriter<Pending>>,
    pending: Pending,
    sink: S,
    size: u64,
    sha256: Sha256,
}

fn zip_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Tar(format!("zip: {e}"))
}

impl<S: Sink> ZipStreamWriter<S> {
    pub fn new(sink: S) -> Self {
        let pending = Pending::default();
        ZipStreamWriter {
            zip: ZipWriter::new_stream(pending.clone()),
            pending,
            sink,
            size: 0,
            sha256: Sha256::new(),
        }
    }

    async fn drain(&mut self) -> Result<()> {
        let out = self.pending.take();
        if out.is_empty() {
            return Ok(());
        }
        self.size += out.len() as u64;
        self.sha256.update(&out);
        self.sink.write(Bytes::from(out)).await
    }

    /// Adds a small member whole.
    pub async fn add_bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.begin_member(path, data.len() as u64, 0, 0o644).await?;
        self.member_data(data, Mode::Store).await?;
        self.end_member().await
    }

    /// The sink, to abort it after a failure.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Writes the central directory (and the zip64 end records when needed).
    pub async fn finish(self) -> Result<ZipFinished<S>> {
        let ZipStreamWriter {
            zip,
            pending,
            mut sink,
            mut size,
            mut sha256,
        } = self;
        zip.finish().map_err(zip_err)?;
        let out = pending.take();
        size += out.len() as u64;
        sha256.update(&out);
        sink.write(Bytes::from(out)).await?;
        Ok(ZipFinished {
            sink,
            size,
            sha256: hex::encode(sha256.finalize()),
        })
    }
}

#[async_trait]
impl<S: Sink> MemberWrite for ZipStreamWriter<S> {
    async fn begin_member(&mut self, path: &str, size: u64, _mtime: u64, mode: u32) -> Result<()> {
        // A fixed date (1980, zip's epoch): the same takeout content gives the same zip.
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(mode)
            .large_file(size >= u32::MAX as u64);
        self.zip.start_file(path, opts).map_err(zip_err)?;
        self.drain().await
    }
    async fn member_data(&mut self, data: &[u8], _mode: Mode) -> Result<()> {
        // Cut into pieces so one member never buffers more than a chunk before the sink takes it.
        for piece in data.chunks(1 << 20) {
            self.zip.write_all(piece).map_err(zip_err)?;
            self.drain().await?;
        }
        Ok(())
    }
    async fn end_member(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn a_streamed_zip_reads_back() {
        let mut z = ZipStreamWriter::new(Vec::new());
        z.add_bytes("index.json", b"{}").await.unwrap();
        let big = vec![7u8; 3 << 20];
        z.begin_member("bundles/a b é.tar.gz", big.len() as u64, 0, 0o644)
            .await
            .unwrap();
        z.member_data(&big[..1000], Mode::Store).await.unwrap();
        z.member_data(&big[1000..], Mode::Store).await.unwrap();
        z.end_member().await.unwrap();
        z.add_bytes("empty", b"").await.unwrap();
        let fin = z.finish().await.unwrap();
        assert_eq!(fin.size as usize, fin.sink.len());
        assert_eq!(fin.sha256, hex::encode(Sha256::digest(&fin.sink)));
        let mut ar = zip::ZipArchive::new(std::io::Cursor::new(fin.sink)).unwrap();
        assert_eq!(ar.len(), 3);
        let mut out = Vec::new();
        ar.by_name("bundles/a b é.tar.gz")
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, big);
        let mut idx = String::new();
        ar.by_name("index.json")
            .unwrap()
            .read_to_string(&mut idx)
            .unwrap();
        assert_eq!(idx, "{}");
    }
}
