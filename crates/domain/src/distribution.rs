//! Base distributions: OCI images an admin registers (`satchel admin distribution add NAME VERSION
//! ARCH --oci-archive FILE`) for container templates to be built on (`crate::container`).
//!
//! What it owns: reading an OCI image layout archive (a tar, or a tar.gz, as `skopeo copy ...
//! oci-archive:` or `podman save --format oci-archive` write it) through the hostile-safe reader
//! (`satchel_archive::reader`: no links, no `..`, bounded sizes), picking the manifest for the arch
//! (index → [index →] manifest → config + layers), checking every blob it uses against its digest
//! and size, and storing the config and layers under content-addressed keys ([`blob_key`]), shared
//! by the distributions that have the same blob. Two passes over the file: the first checks
//! everything and keeps only the small documents; the second streams the layers into the blob store
//! (verified again on the way: nothing is published under a digest it does not have).
//!
//! Matching: a template's distribution names a base by name (any case), version, and arch through
//! its OCI name (`x86_64` = `amd64`).

use crate::model::*;
use crate::ports::{DeletedDistribution, Store};
use crate::service::Satchel;
use crate::{DomainError, Result};
use bytes::Bytes;
use satchel_archive::reader::{read_archive, Limits, ReadError};
use satchel_blob::BlobStore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::sync::Arc;

/// Where a base blob is stored: `dist/blobs/sha256/<hex>` (outside `u/`: never swept as an orphan).
pub fn blob_key(digest: &str) -> String {
    format!("dist/blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// Blobs at most this big are kept in memory by the first pass (manifests, configs, small layers).
const SMALL_BLOB: u64 = 4 << 20;
/// All small blobs kept together.
const SMALL_TOTAL: u64 = 64 << 20;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Layer media types accepted, and the OCI name each is recorded under (same bytes).
const LAYER_TYPES: &[(&str, &str)] = &[
    (
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
];

/// OCI's architecture names for the usual distribution ones.
pub fn oci_arch(arch: &str) -> String {
    match arch.trim().to_ascii_lowercase().as_str() {
        "" | "x86_64" | "amd64" | "x64" => "amd64".into(),
        "aarch64" | "arm64" => "arm64".into(),
        "i386" | "i586" | "i686" | "x86" | "386" => "386".into(),
        other => other
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect(),
    }
}

/// Every spelling a template may use for this OCI arch (what removal looks for).
fn arch_spellings(oci: &str) -> Vec<String> {
    let known = [
        "x86_64", "amd64", "x64", "aarch64", "arm64", "i386", "i586", "i686", "x86", "386",
        "noarch", "ppc64le", "s390x",
    ];
    let mut out: Vec<String> = known
        .iter()
        .filter(|a| oci_arch(a) == oci)
        .map(|a| a.to_string())
        .collect();
    if !out.iter().any(|a| a == oci) {
        out.push(oci.to_string());
    }
    out
}

/// The one spelling an arch is registered under (UForge's where it has one).
fn registered_arch(arch: &str) -> String {
    match oci_arch(arch).as_str() {
        "amd64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        "386" => "i386".into(),
        other => other.into(),
    }
}

/// `Debian 12 x86_64`.
pub fn label(d: &Distribution) -> String {
    format!("{} {} {}", d.name, d.version, d.arch)
}

/// Does `d` serve a template asking for `want`?
pub fn matches(d: &Distribution, want: &DistributionRef) -> bool {
    d.name.eq_ignore_ascii_case(want.name.trim())
        && d.version == want.version.trim()
        && oci_arch(&d.arch) == oci_arch(&want.arch)
}

/// The registered base a template names, if any.
pub async fn find(store: &dyn Store, want: &DistributionRef) -> Result<Option<Distribution>> {
    Ok(store
        .list_distributions()
        .await?
        .into_iter()
        .find(|d| matches(d, want)))
}

/// Opens the archive file again for each pass.
pub type Opener = Arc<dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Send + Sync>;

fn refused(e: ReadError) -> DomainError {
    DomainError::Invalid(format!("the OCI archive is refused: {e}"))
}

fn invalid(m: impl std::fmt::Display) -> DomainError {
    DomainError::Invalid(format!("the OCI archive is refused: {m}"))
}

fn limits() -> Limits {
    Limits {
        plain_tar: true,
        // Layers are compressed already: the tar is about as big as the file.
        max_ratio: 1000,
        ..Limits::default()
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the first pass learnt: the root documents, every blob's size, the small blobs' bytes.
#[derive(Default)]
struct Scan {
    index: Option<Vec<u8>>,
    sizes: HashMap<String, u64>,
    small: HashMap<String, Vec<u8>>,
}

fn scan(open: &Opener) -> Result<Scan> {
    let input = open().map_err(|e| DomainError::Invalid(format!("opening the archive: {e}")))?;
    let mut sc = Scan::default();
    let mut kept = 0u64;
    let summary = read_archive(input, &limits(), |m, r| {
        if m.path == "index.json" {
            if m.size > 1 << 20 {
                return Err(ReadError::caller(&m.path, "index.json is over 1 MiB"));
            }
            let mut v = Vec::new();
            r.read_to_end(&mut v)
                .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
            sc.index = Some(v);
        } else if let Some(hex) = m.path.strip_prefix("blobs/sha256/") {
            if !is_hex64(hex) {
                return Err(ReadError::caller(
                    &m.path,
                    "a blob's name must be its sha256 (64 lowercase hex digits)",
                ));
            }
            sc.sizes.insert(hex.to_string(), m.size);
            if m.size <= SMALL_BLOB && kept + m.size <= SMALL_TOTAL {
                let mut v = Vec::with_capacity(m.size as usize);
                r.read_to_end(&mut v)
                    .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
                kept += m.size;
                sc.small.insert(hex.to_string(), v);
            }
        }
        // Anything else (oci-layout, a docker manifest.json) is read past: only the blobs the
        // chosen manifest names are used.
        Ok(())
    })
    .map_err(refused)?;
    // The reader hashed every member: each blob must be what its name says.
    for m in &summary.members {
        if let Some(hex) = m.path.strip_prefix("blobs/sha256/") {
            let got = hex::encode(m.sha256);
            if got != hex {
                return Err(invalid(format!(
                    "blob {:?} does not match its digest (its content is sha256:{got})",
                    m.path
                )));
            }
        }
    }
    Ok(sc)
}

/// A descriptor as an OCI document has it.
fn descriptor(v: &serde_json::Value, what: &str) -> Result<BaseBlob> {
    let media_type = v["mediaType"].as_str().unwrap_or_default().to_string();
    let digest = v["digest"].as_str().unwrap_or_default().to_string();
    let size = v["size"].as_i64().unwrap_or(-1);
    match digest.strip_prefix("sha256:") {
        Some(h) if is_hex64(h) && size >= 0 => Ok(BaseBlob {
            media_type,
            digest,
            size,
        }),
        _ => Err(invalid(format!(
            "the {what} descriptor is not a sha256 descriptor with a size: {v}"
        ))),
    }
}

impl Scan {
    /// A blob the image uses: present, of the descriptor's size.
    fn check(&self, d: &BaseBlob, what: &str) -> Result<()> {
        let hex = d.digest.trim_start_matches("sha256:");
        match self.sizes.get(hex) {
            None => Err(invalid(format!(
                "the {what} {} is missing from the archive",
                d.digest
            ))),
            Some(&n) if n as i64 != d.size => Err(invalid(format!(
                "the {what} {} has {n} bytes, its descriptor says {}",
                d.digest, d.size
            ))),
            Some(_) => Ok(()),
        }
    }

    fn json(&self, d: &BaseBlob, what: &str) -> Result<serde_json::Value> {
        self.check(d, what)?;
        let data = self
            .small
            .get(d.digest.trim_start_matches("sha256:"))
            .ok_or_else(|| invalid(format!("the {what} {} is too large", d.digest)))?;
        serde_json::from_slice(data)
            .map_err(|e| invalid(format!("the {what} {} is not JSON: {e}", d.digest)))
    }
}

/// The image picked for an arch: its config (bytes as stored) and layers.
struct Picked {
    config: BaseBlob,
    layers: Vec<BaseBlob>,
}

fn pick(sc: &Scan, arch: &str) -> Result<Picked> {
    let index = sc
        .index
        .as_deref()
        .ok_or_else(|| invalid("it is not an OCI image layout (no index.json)"))?;
    let index: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| invalid(format!("index.json: {e}")))?;
    // Manifests, nested indexes opened (two levels at most).
    let mut todo: std::collections::VecDeque<(serde_json::Value, u8)> = index["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m, 0))
        .collect();
    let want = oci_arch(arch);
    let mut seen = BTreeSet::new();
    while let Some((m, depth)) = todo.pop_front() {
        let d = descriptor(&m, "manifest")?;
        if INDEX_TYPES.contains(&d.media_type.as_str()) {
            if depth >= 2 {
                return Err(invalid("image indexes are nested too deep"));
            }
            let nested = sc.json(&d, "image index")?;
            todo.extend(
                nested["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| (m, depth + 1)),
            );
            continue;
        }
        if !MANIFEST_TYPES.contains(&d.media_type.as_str()) {
            continue;
        }
        // A platform that says another arch is skipped without reading its manifest.
        if let Some(a) = m["platform"]["architecture"].as_str() {
            if oci_arch(a) != want {
                seen.insert(oci_arch(a));
                continue;
            }
        }
        let manifest = sc.json(&d, "manifest")?;
        let config = descriptor(&manifest["config"], "config")?;
        let conf = sc.json(&config, "config")?;
        let a = oci_arch(conf["architecture"].as_str().unwrap_or_default());
        if a != want {
            seen.insert(a);
            continue;
        }
        let mut layers = Vec::new();
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let mut l = descriptor(&l, "layer")?;
            let oci = LAYER_TYPES
                .iter()
                .find(|(t, _)| *t == l.media_type)
                .map(|(_, oci)| oci.to_string())
                .ok_or_else(|| {
                    invalid(format!(
                        "layer {} has media type {:?}, not a tar layer",
                        l.digest, l.media_type
                    ))
                })?;
            sc.check(&l, "layer")?;
            l.media_type = oci;
            layers.push(l);
        }
        if layers.is_empty() {
            return Err(invalid("the image has no layers"));
        }
        let ids = conf["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        if ids != layers.len() {
            return Err(invalid(format!(
                "the config lists {ids} diff_ids for {} layers",
                layers.len()
            )));
        }
        return Ok(Picked {
            config: BaseBlob {
                media_type: satchel_archive::oci::MEDIA_CONFIG.into(),
                ..config
            },
            layers,
        });
    }
    Err(invalid(format!(
        "it has no image for arch {arch} ({want}){}",
        if seen.is_empty() {
            String::new()
        } else {
            format!(
                "; it has: {}",
                seen.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
    )))
}

enum Piece {
    Start(String),
    Data(Bytes),
    End(String),
}

/// Second pass: streams the big blobs in `want` (by hex) into the blob store, each checked
/// before it is published.
async fn store_big(
    blobs: &Arc<dyn BlobStore>,
    open: &Opener,
    want: BTreeSet<String>,
) -> Result<()> {
    if want.is_empty() {
        return Ok(());
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(8);
    let open = open.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<()> {
        let input =
            open().map_err(|e| DomainError::Invalid(format!("opening the archive: {e}")))?;
        let gone = |p: &str| ReadError::caller(p, "the blob store stopped reading");
        read_archive(input, &limits(), |m, r| {
            let Some(hex) = m.path.strip_prefix("blobs/sha256/") else {
                return Ok(());
            };
            if !want.contains(hex) {
                return Ok(());
            }
            tx.blocking_send(Piece::Start(hex.to_string()))
                .map_err(|_| gone(&m.path))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r
                    .read(&mut buf)
                    .map_err(|e| ReadError::caller(&m.path, e.to_string()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                tx.blocking_send(Piece::Data(Bytes::copy_from_slice(&buf[..n])))
                    .map_err(|_| gone(&m.path))?;
            }
            tx.blocking_send(Piece::End(hex::encode(h.finalize())))
                .map_err(|_| gone(&m.path))
        })
        .map_err(refused)?;
        Ok(())
    });
    let mut current: Option<(String, satchel_blob::BlobWriter)> = None;
    let mut failure = None;
    while let Some(p) = rx.recv().await {
        match p {
            Piece::Start(hex) => {
                match blobs
                    .writer(&blob_key(&hex), satchel_blob::Hashes::NONE)
                    .await
                {
                    Ok(w) => current = Some((hex, w)),
                    Err(e) => {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
            Piece::Data(b) => {
                if let Some((_, w)) = current.as_mut() {
                    if let Err(e) = w.write(b).await {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
            Piece::End(got) => {
                if let Some((hex, w)) = current.take() {
                    if got != hex {
                        w.abort().await;
                        failure = Some(invalid(format!(
                            "blob sha256:{hex} changed between reads (now sha256:{got})"
                        )));
                        break;
                    }
                    if let Err(e) = w.finish().await {
                        failure = Some(e.into());
                        break;
                    }
                }
            }
        }
    }
    if let Some((_, w)) = current.take() {
        w.abort().await;
    }
    drop(rx);
    let read = reader
        .await
        .map_err(|e| DomainError::Internal(crate::Cause::of(e)))?;
    match failure {
        Some(e) => Err(e),
        None => read,
    }
}

/// Registers a base: reads the archive `open` gives (twice), stores its blobs, writes the row.
pub async fn register(
    store: &dyn Store,
    blobs: &Arc<dyn BlobStore>,
    name: &str,
    version: &str,
    arch: &str,
    open: Opener,
) -> Result<Distribution> {
    let (name, version) = (crate::names::nfc(name.trim()), version.trim().to_string());
    crate::names::validate_label("distribution name", &name)?;
    crate::names::validate_label("distribution version", &version)?;
    crate::names::validate_label("distribution arch", arch.trim())?;
    let arch = registered_arch(arch);
    let wanted = DistributionRef {
        name: name.clone(),
        version: version.clone(),
        arch: arch.clone(),
    };
    if let Some(d) = find(store, &wanted).await? {
        return Err(DomainError::Conflict(format!(
            "distribution {} is already registered (remove it first)",
            label(&d)
        )));
    }
    let o = open.clone();
    let sc = tokio::task::spawn_blocking(move || scan(&o))
        .await
        .map_err(|e| DomainError::Internal(crate::Cause::of(e)))??;
    let picked = pick(&sc, &arch)?;

    // What this registration writes: blobs no distribution has stored yet.
    let mut big = BTreeSet::new();
    let mut fresh = Vec::new();
    let mut small: BTreeMap<String, &Vec<u8>> = BTreeMap::new();
    for d in std::iter::once(&picked.config).chain(&picked.layers) {
        let hex = d.digest.trim_start_matches("sha256:").to_string();
        if blobs.exists(&blob_key(&hex)).await? {
            continue;
        }
        fresh.push(hex.clone());
        match sc.small.get(&hex) {
            Some(v) => {
                small.insert(hex, v);
            }
            None => {
                big.insert(hex);
            }
        }
    }
    let stored: Result<()> = async {
        for (hex, v) in &small {
            blobs
                .put_bytes(&blob_key(hex), Bytes::copy_from_slice(v))
                .await?;
        }
        store_big(blobs, &open, big).await
    }
    .await;
    let created = match stored {
        Ok(()) => {
            store
                .create_distribution(&NewDistribution {
                    name,
                    version,
                    arch,
                    config: picked.config,
                    layers: picked.layers,
                })
                .await
        }
        Err(e) => Err(e),
    };
    if created.is_err() {
        // Only what this registration wrote, and no other distribution uses meanwhile.
        let _ = drop_unused(store, blobs, fresh).await;
    }
    created
}

/// Deletes the blobs (by hex) no registered distribution uses.
async fn drop_unused(
    store: &dyn Store,
    blobs: &Arc<dyn BlobStore>,
    candidates: Vec<String>,
) -> Result<()> {
    let used: BTreeSet<String> = store
        .list_distributions()
        .await?
        .iter()
        .flat_map(|d| std::iter::once(&d.config).chain(&d.layers))
        .map(|b| b.digest.trim_start_matches("sha256:").to_string())
        .collect();
    for hex in candidates {
        if !used.contains(&hex) {
            let _ = blobs.delete(&blob_key(&hex)).await;
        }
    }
    Ok(())
}

/// Removes a base unless a container template names it (the error says how many do); its blobs
/// go unless another distribution shares them. Images already generated on it are unaffected
/// (their archives hold the layers); a queued generation on it fails with a message.
pub async fn remove(
    store: &dyn Store,
    blobs: &Arc<dyn BlobStore>,
    want: &DistributionRef,
) -> Result<Distribution> {
    let d = find(store, want).await?.ok_or_else(|| {
        DomainError::not_found(format!(
            "distribution {} {} {}",
            want.name, want.version, want.arch
        ))
    })?;
    match store
        .delete_distribution(d.id, &arch_spellings(&oci_arch(&d.arch)))
        .await?
    {
        DeletedDistribution::Deleted(d) => {
            let hexes = std::iter::once(&d.config)
                .chain(&d.layers)
                .map(|b| b.digest.trim_start_matches("sha256:").to_string())
                .collect();
            drop_unused(store, blobs, hexes).await?;
            Ok(d)
        }
        DeletedDistribution::NotFound => Err(DomainError::not_found(format!(
            "distribution {}",
            label(&d)
        ))),
        DeletedDistribution::InUse(n) => Err(DomainError::Conflict(format!(
            "distribution {} is used by {n} container template(s); delete them first",
            label(&d)
        ))),
    }
}

impl Satchel {
    /// The registered base distributions (any signed-in user may list them).
    pub async fn list_distributions(&self, _who: &Principal) -> Result<Vec<Distribution>> {
        self.store.list_distributions().await
    }

    pub async fn distribution(&self, _who: &Principal, id: Id) -> Result<Distribution> {
        self.store
            .get_distribution(id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("distribution {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arches_match_through_their_oci_names() {
        assert_eq!(registered_arch("amd64"), "x86_64");
        assert_eq!(registered_arch("X86_64"), "x86_64");
        assert_eq!(registered_arch("arm64"), "aarch64");
        let d = Distribution {
            id: 1,
            name: "debian".into(),
            version: "12".into(),
            arch: "x86_64".into(),
            config: BaseBlob {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
            },
            layers: vec![],
            created: 0,
        };
        let want = |n: &str, v: &str, a: &str| DistributionRef {
            name: n.into(),
            version: v.into(),
            arch: a.into(),
        };
        assert!(matches(&d, &want("Debian", "12", "amd64")));
        assert!(!matches(&d, &want("Debian", "11", "x86_64")));
        assert!(!matches(&d, &want("Debian", "12", "i686")));
        let s = arch_spellings("amd64");
        assert!(s.contains(&"x86_64".to_string()) && s.contains(&"amd64".to_string()));
        assert_eq!(blob_key("sha256:ab"), "dist/blobs/sha256/ab");
    }
}
