//! OCI image layout archives (image-spec v1.1): `oci-layout`, `index.json` and `blobs/sha256/...`
//! (config, manifest, one gzip layer), written as one streamed tar, byte-for-byte deterministic for
//! the same input: fixed mtimes, uid/gid 0, canonical JSON (sorted keys), and gzip members that only
//! depend on the data.
//!
//! Building one takes two passes because descriptors name their blobs by digest: first the layer is
//! streamed to a sink of the caller's (a blob) with [`LayerWriter`], which yields its digest and
//! `diff_id`; then [`write_layout`] writes the small documents and streams the stored layer again.
//! An image on a base ([`Base`], see [`documents_on`]) lists the base's layers before its own and
//! keeps the base's config; the caller streams each base layer in with [`write_blob`] after
//! [`write_layout_head`].

use crate::{ArchiveError, Finished, GzOptions, MemberWrite, Mode, Result, Sink, TarGzWriter};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};

pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Every member's mtime: the content alone decides the digests.
pub const EPOCH: u64 = 0;

/// A content descriptor: what `index.json` and manifests point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, data: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: format!("sha256:{}", hex::encode(Sha256::digest(data))),
            size: data.len() as u64,
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
    /// The digest's hex part.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// A finished layer: its descriptor, and the digest of its uncompressed tar (the config's `diff_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// Writes a layer (a gzip-compressed tar of files under one root) to a sink.
pub struct LayerWriter<S: Sink> {
    tar: TarGzWriter<S>,
    dirs: std::collections::BTreeSet<String>,
}

impl<S: Sink> LayerWriter<S> {
    pub fn new(sink: S, mut opts: GzOptions) -> Self {
        opts.hash_input = true;
        LayerWriter {
            tar: TarGzWriter::new(sink, opts),
            dirs: Default::default(),
        }
    }

    /// Adds `path`'s parent directories once each (image tools expect them), then starts the file.
    /// Callers add files in a stable order (e.g. sorted) for reproducible digests.
    pub async fn begin_file(&mut self, path: &str, size: u64, mode: u32) -> Result<()> {
        let path = clean(path)?;
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            prefix.push_str(p);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                self.tar.add_dir(&prefix, EPOCH).await?;
            }
        }
        self.tar.begin_file(&path, size, EPOCH, mode).await
    }

    /// Adds a directory (and its parents) once; for folders that hold no file.
    pub async fn add_dir(&mut self, path: &str) -> Result<()> {
        let path = clean(path.trim_end_matches('/'))?;
        let mut prefix = String::new();
        for p in path.split('/') {
            prefix.push_str(p);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                self.tar.add_dir(&prefix, EPOCH).await?;
            }
        }
        Ok(())
    }

    pub async fn write_data(&mut self, data: &[u8]) -> Result<()> {
        self.tar.write_data(data, Mode::Deflate).await
    }

    pub async fn end_file(&mut self) -> Result<()> {
        self.tar.end_file().await
    }

    /// Gives the sink back without finishing (to abort it).
    pub fn into_sink(self) -> S {
        self.tar.into_sink()
    }

    pub async fn finish(self) -> Result<(Finished<S>, Layer)> {
        let f = self.tar.finish().await?;
        let diff = f
            .uncompressed_sha256
            .clone()
            .ok_or_else(|| ArchiveError::Tar("layer input was not hashed".into()))?;
        let layer = Layer {
            descriptor: Descriptor {
                media_type: MEDIA_LAYER_GZIP.to_string(),
                digest: format!("sha256:{}", f.sha256),
                size: f.size,
            },
            diff_id: format!("sha256:{diff}"),
        };
        Ok((f, layer))
    }
}

/// Members get the fixed [`EPOCH`] mtime whatever `mtime` says; data may be stored instead of deflated
/// (already compressed files): the layer stays valid gzip and its digests depend only on the data and
/// the modes chosen for it.
#[async_trait]
impl<S: Sink> MemberWrite for LayerWriter<S> {
    async fn begin_member(&mut self, path: &str, size: u64, _mtime: u64, mode: u32) -> Result<()> {
        self.begin_file(path, size, mode).await
    }
    async fn member_data(&mut self, data: &[u8], mode: Mode) -> Result<()> {
        self.tar.write_data(data, mode).await
    }
    async fn end_member(&mut self) -> Result<()> {
        self.end_file().await
    }
    async fn dir_member(&mut self, path: &str, _mtime: u64) -> Result<()> {
        self.add_dir(path).await
    }
}

/// Relative, `/`-separated, no `.`/`..`/empty segments: layers never carry paths that escape.
fn clean(path: &str) -> Result<String> {
    let p = path.trim_start_matches('/');
    if p.is_empty()
        || p.split('/').any(|s| s.is_empty() || s == "." || s == "..")
        || p.contains('\0')
    {
        return Err(ArchiveError::Tar(format!("unsafe layer path {path:?}")));
    }
    Ok(p.to_string())
}

/// What the image says about itself.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// `ref.name` annotation in index.json (e.g. `myapp:1.0`).
    pub ref_name: String,
    pub os: String,
    pub architecture: String,
    pub labels: Vec<(String, String)>,
    /// RFC 3339; fixed by the caller (e.g. the template's modification time) to stay reproducible.
    pub created: String,
}

/// The three JSON documents of a one-layer image.
pub struct Documents {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub index: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub manifest_descriptor: Descriptor,
}

/// serde_json's map is sorted by key: canonical enough for stable digests.
fn bytes(v: &serde_json::Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ArchiveError::Tar(e.to_string()))
}

pub fn documents(layer: &Layer, info: &ImageInfo) -> Result<Documents> {
    documents_on(None, layer, info)
}

/// A base image the generated one is built on: its config document as the base has it, and its
/// layers in order (their `diff_ids` are the config's).
#[derive(Debug, Clone)]
pub struct Base {
    pub config: serde_json::Value,
    pub layers: Vec<Descriptor>,
}

impl Base {
    /// The base's `diff_ids`, one per layer, or why the config is unusable.
    pub fn diff_ids(&self) -> Result<Vec<String>> {
        let ids: Vec<String> = self
            .config
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if ids.len() != self.layers.len() {
            return Err(ArchiveError::Tar(format!(
                "the base config lists {} diff_ids for {} layers",
                ids.len(),
                self.layers.len()
            )));
        }
        Ok(ids)
    }
}

/// The documents of an image made of `base`'s layers (if any) followed by `layer`. On a base, the
/// config is the base's (Env, Entrypoint, Cmd, WorkingDir... kept) with our labels added,
/// `created` and `architecture` set from `info`, and `diff_ids` and `history` extended by ours.
pub fn documents_on(base: Option<&Base>, layer: &Layer, info: &ImageInfo) -> Result<Documents> {
    let mut labels: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    let ours = json!({"created": info.created, "created_by": "satchel"});
    let config = match base {
        None => {
            labels.extend(
                info.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into())),
            );
            json!({
                "created": info.created,
                "architecture": info.architecture,
                "os": info.os,
                "config": {"Labels": labels},
                "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
                "history": [ours],
            })
        }
        Some(b) => {
            let mut diff_ids = b.diff_ids()?;
            diff_ids.push(layer.diff_id.clone());
            let mut c = b
                .config
                .as_object()
                .cloned()
                .ok_or_else(|| ArchiveError::Tar("the base config is not an object".into()))?;
            let mut run = c
                .get("config")
                .and_then(|v| v.as_object())
                .cloned()
                .unwrap_or_default();
            if let Some(l) = run.get("Labels").and_then(|v| v.as_object()) {
                labels.extend(l.clone());
            }
            labels.extend(
                info.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into())),
            );
            run.insert("Labels".into(), labels.into());
            let mut history = c
                .get("history")
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default();
            history.push(ours);
            c.insert("created".into(), info.created.clone().into());
            c.insert("architecture".into(), info.architecture.clone().into());
            if !c.get("os").is_some_and(|o| o.is_string()) {
                c.insert("os".into(), info.os.clone().into());
            }
            c.insert("config".into(), run.into());
            c.insert(
                "rootfs".into(),
                json!({"type": "layers", "diff_ids": diff_ids}),
            );
            c.insert("history".into(), history.into());
            c.into()
        }
    };
    let config = bytes(&config)?;
    let config_descriptor = Descriptor::of(MEDIA_CONFIG, &config);
    let mut layers: Vec<serde_json::Value> = base
        .map(|b| b.layers.iter().map(Descriptor::json).collect())
        .unwrap_or_default();
    layers.push(layer.descriptor.json());
    let manifest = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor.json(),
        "layers": layers,
    }))?;
    let manifest_descriptor = Descriptor::of(MEDIA_MANIFEST, &manifest);
    let mut m = manifest_descriptor.json();
    if let Some(o) = m.as_object_mut() {
        o.insert(
            "annotations".into(),
            json!({"org.opencontainers.image.ref.name": info.ref_name}),
        );
    }
    let index = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [m],
    }))?;
    Ok(Documents {
        config,
        manifest,
        index,
        config_descriptor,
        manifest_descriptor,
    })
}

/// Writes the whole layout of a one-layer image into `tar`, streaming the stored layer's bytes
/// (`layer_bytes`) into its blob ([`write_blob`]).
pub async fn write_layout<S, L, E>(
    tar: &mut TarGzWriter<S>,
    docs: &Documents,
    layer: &Layer,
    layer_bytes: L,
) -> Result<()>
where
    S: Sink,
    L: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    write_layout_head(tar, docs).await?;
    write_blob(tar, &layer.descriptor, layer_bytes).await
}

/// Writes everything but the layers: `oci-layout`, `index.json`, the config and the manifest. The
/// layers follow, one [`write_blob`] each, in the manifest's order.
pub async fn write_layout_head<S: Sink>(tar: &mut TarGzWriter<S>, docs: &Documents) -> Result<()> {
    tar.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, EPOCH)
        .await?;
    tar.add_bytes("index.json", &docs.index, EPOCH).await?;
    tar.add_dir("blobs/", EPOCH).await?;
    tar.add_dir("blobs/sha256/", EPOCH).await?;
    for (d, data) in [
        (&docs.config_descriptor, &docs.config),
        (&docs.manifest_descriptor, &docs.manifest),
    ] {
        tar.add_bytes(&format!("blobs/sha256/{}", d.hex()), data, EPOCH)
            .await?;
    }
    Ok(())
}

/// Streams one stored blob (`bytes`) into `blobs/sha256/<hex>`, checked against its descriptor on
/// the way (size and digest): a corrupt stored blob fails the archive instead of publishing a
/// broken image.
pub async fn write_blob<S, L, E>(tar: &mut TarGzWriter<S>, d: &Descriptor, bytes: L) -> Result<()>
where
    S: Sink,
    L: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    tar.begin_file(&format!("blobs/sha256/{}", d.hex()), d.size, EPOCH, 0o644)
        .await?;
    // Checked on a thread of its own while the encoder stores the same pieces (shared, not copied).
    let mut h = crate::HashThread::spawn(4)?;
    futures::pin_mut!(bytes);
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| ArchiveError::Tar(format!("reading the layer: {e}")))?;
        // Already compressed: stored, not deflated again.
        tar.write_data(&chunk, Mode::Store).await?;
        h.update(chunk).await?;
    }
    tar.end_file().await?;
    let got = format!("sha256:{}", h.finish().await?);
    if got != d.digest {
        return Err(ArchiveError::Tar(format!(
            "the stored layer is {got}, its descriptor says {}",
            d.digest
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn build(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let opts = GzOptions {
            chunk_size: 64 * 1024,
            ..Default::default()
        };
        let mut lw = LayerWriter::new(Vec::new(), opts);
        for (p, data) in files {
            lw.begin_file(p, data.len() as u64, 0o644).await.unwrap();
            lw.write_data(data).await.unwrap();
            lw.end_file().await.unwrap();
        }
        let (f, layer) = lw.finish().await.unwrap();
        let info = ImageInfo {
            ref_name: "demo:1.0".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            labels: vec![("org.opencontainers.image.title".into(), "demo".into())],
            created: "2026-01-01T00:00:00Z".into(),
        };
        let docs = documents(&layer, &info).unwrap();
        let mut tar = TarGzWriter::new(Vec::new(), opts);
        let stream = futures::stream::iter(
            f.sink
                .chunks(10_000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        write_layout(&mut tar, &docs, &layer, stream).await.unwrap();
        tar.finish().await.unwrap().sink
    }

    fn untar_gz(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        let mut a = tar::Archive::new(&out[..]);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().to_string();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                (p, v)
            })
            .collect()
    }

    #[tokio::test]
    async fn layout_digests_verify_and_builds_are_reproducible() {
        let files = vec![
            ("opt/demo/bin/run.sh", b"#!/bin/sh\necho hi\n".to_vec()),
            (
                "opt/demo/data.bin",
                (0..300_000u32).map(|i| (i % 251) as u8).collect(),
            ),
        ];
        let a = build(&files).await;
        assert_eq!(a, build(&files).await, "same input, same bytes");
        let m = untar_gz(&a);
        assert_eq!(m["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        // Every blob is named by its own digest.
        for (p, v) in &m {
            if let Some(h) = p.strip_prefix("blobs/sha256/") {
                if !h.is_empty() {
                    assert_eq!(hex::encode(Sha256::digest(v)), h, "{p}");
                }
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&m["index.json"]).unwrap();
        let md = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "demo:1.0"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&m[&format!("blobs/sha256/{}", &md[7..])]).unwrap();
        let ld = manifest["layers"][0]["digest"].as_str().unwrap();
        let layer = &m[&format!("blobs/sha256/{}", &ld[7..])];
        assert_eq!(manifest["layers"][0]["size"], layer.len());
        // The layer holds the files byte for byte, and its diff_id is its uncompressed tar's digest.
        let files_in = untar_gz(layer);
        assert_eq!(files_in["opt/demo/data.bin"], files[1].1);
        assert_eq!(files_in["opt/demo/bin/run.sh"], files[0].1);
        assert!(files_in.contains_key("opt/demo/bin/"));
        let cd = manifest["config"]["digest"].as_str().unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&m[&format!("blobs/sha256/{}", &cd[7..])]).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&layer[..]), &mut raw)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", hex::encode(Sha256::digest(&raw)))
        );
    }

    #[test]
    fn an_image_on_a_base_lists_its_layers_first_and_keeps_its_config() {
        let layer = Layer {
            descriptor: Descriptor {
                media_type: MEDIA_LAYER_GZIP.into(),
                digest: format!("sha256:{}", "b".repeat(64)),
                size: 10,
            },
            diff_id: format!("sha256:{}", "c".repeat(64)),
        };
        let base_layer = Descriptor {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 20,
        };
        let base = Base {
            config: json!({
                "architecture": "amd64", "os": "linux", "author": "someone",
                "config": {"Env": ["A=1"], "Cmd": ["/bin/sh"], "Labels": {"x": "base", "y": "base"}},
                "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "a".repeat(64))]},
                "history": [{"created_by": "base"}],
            }),
            layers: vec![base_layer.clone()],
        };
        let info = ImageInfo {
            ref_name: "demo:1".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            labels: vec![("y".into(), "ours".into())],
            created: "2026-01-01T00:00:00Z".into(),
        };
        let docs = documents_on(Some(&base), &layer, &info).unwrap();
        let m: serde_json::Value = serde_json::from_slice(&docs.manifest).unwrap();
        assert_eq!(m["layers"][0], base_layer.json());
        assert_eq!(m["layers"][1], layer.descriptor.json());
        let c: serde_json::Value = serde_json::from_slice(&docs.config).unwrap();
        assert_eq!(c["config"]["Env"], json!(["A=1"]));
        assert_eq!(c["config"]["Cmd"], json!(["/bin/sh"]));
        assert_eq!(c["config"]["Labels"], json!({"x": "base", "y": "ours"}));
        assert_eq!(c["author"], "someone");
        assert_eq!(c["created"], info.created);
        assert_eq!(c["rootfs"]["diff_ids"][1], layer.diff_id);
        assert_eq!(c["history"].as_array().unwrap().len(), 2);
        // Same input, same documents; a config whose diff_ids do not fit its layers is refused.
        assert_eq!(
            documents_on(Some(&base), &layer, &info).unwrap().manifest,
            docs.manifest
        );
        let bad = Base {
            layers: vec![base_layer.clone(), base_layer],
            ..base
        };
        assert!(documents_on(Some(&bad), &layer, &info).is_err());
    }

    #[tokio::test]
    async fn unsafe_paths_and_corrupt_layers_are_refused() {
        let mut lw = LayerWriter::new(Vec::new(), GzOptions::default());
        for bad in ["../etc/passwd", "a/../../b", "", "a//b", "a/./b"] {
            assert!(lw.begin_file(bad, 0, 0o644).await.is_err(), "{bad:?}");
        }
        let (f, layer) = LayerWriter::new(Vec::new(), GzOptions::default())
            .finish()
            .await
            .unwrap();
        let docs = documents(&layer, &ImageInfo::default()).unwrap();
        let mut corrupt = f.sink.clone();
        if let Some(b) = corrupt.last_mut() {
            *b ^= 1;
        }
        let mut tar = TarGzWriter::new(Vec::new(), GzOptions::default());
        let s = futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(corrupt))]);
        assert!(write_layout(&mut tar, &docs, &layer, s).await.is_err());
    }

    /// An independent reader: skopeo (containers/image) must accept the archive and report our digests.
    #[tokio::test]
    async fn skopeo_reads_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![("opt/demo/hello.txt", b"hello\n".to_vec())];
        let a = build(&files).await;
        let tgz = dir.path().join("image.tar.gz");
        std::fs::write(&tgz, &a).unwrap();
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci-archive:{}", tgz.display()))
            .output()
            .expect("skopeo is installed by .ci/run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let m = untar_gz(&a);
        let ld = manifest["layers"][0]["digest"].as_str().unwrap();
        assert!(m.contains_key(&format!("blobs/sha256/{}", &ld[7..])));
        // `copy` reads every blob and checks it against its digest.
        let copied = dir.path().join("copied");
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci-archive:{}", tgz.display()))
            .arg(format!("dir:{}", copied.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read(copied.join(&ld[7..])).unwrap(),
            m[&format!("blobs/sha256/{}", &ld[7..])]
        );
    }
}
