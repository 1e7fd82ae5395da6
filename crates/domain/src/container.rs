//! Container templates and the images generated from them (their one-time download ids are
//! `crate::download_ids`').
//!
//! A template packages one bundle as a container image. Generating one creates a ticket of kind
//! `ContainerImage`, so images share the export tickets' lifecycle, job queue and downloads. The
//! image is an OCI image layout archive (see `satchel_archive::oci`): one gzip layer holding the
//! bundle's files under `opt/<bundle>/` (license under `usr/share/licenses/<bundle>/`), built by
//! streaming and deterministic for the same bundle content.
//!
//! On a base: when the template's distribution is registered (`crate::distribution`) at the time
//! the image is requested, the image is that base's layers followed by the bundle's, with the
//! base's config (Env, Entrypoint, Cmd, WorkingDir kept; our labels added), and the image
//! document names the distribution (`distributionName`). A distribution that is not registered
//! gives the bundle-only image as before, labelled `io.satchel.base` = `none: ...` saying what to
//! register; a template without a distribution is unchanged.

use crate::distribution::{blob_key, oci_arch};
use crate::export::{plan, BlobSink, Failure, TicketRunner};
use crate::model::*;
use crate::names::path_segment;
use crate::service::Satchel;
use crate::{DomainError, Result};
use satchel_archive::oci::{
    documents_on, write_blob, write_layout_head, Base, Descriptor, ImageInfo, LayerWriter,
};
use satchel_archive::TarGzWriter;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

/// The only image format generated: an OCI image layout, which docker, podman and skopeo read.
pub const FORMAT_DOCKER: &str = "docker";

/// What a client asks to generate.
#[derive(Debug, Clone, Default)]
pub struct ImageRequest {
    pub format: Option<String>,
    pub name: Option<String>,
    pub compress: bool,
}

pub fn image_key(owner: Id, ticket: Id) -> String {
    format!("u/{owner}/images/{ticket}/image.oci.tar")
}

fn layer_key(owner: Id, ticket: Id) -> String {
    format!("u/{owner}/images/{ticket}/layer.tar.gz.partial")
}

/// Every blob an image may have: the archive (either way it was compressed) and a temporary layer.
pub(crate) fn image_blobs(t: &Ticket) -> [String; 3] {
    let k = image_key(t.owner_id, t.id);
    [format!("{k}.gz"), k, layer_key(t.owner_id, t.id)]
}

/// OCI reference names are lowercase `[a-z0-9._-]`; anything else becomes `-`.
pub(crate) fn ref_component(s: &str, fallback: &str) -> String {
    let out: String = s
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let out = out
        .trim_matches(|c| matches!(c, '.' | '_' | '-'))
        .to_string();
    if out.is_empty() {
        fallback.to_string()
    } else {
        out.chars().take(128).collect()
    }
}

/// `<name>-<version>.oci.tar[.gz]`, safe for a URL segment and a Content-Disposition header.
pub fn image_file_name(name: &str, version: &str, compress: bool) -> String {
    format!(
        "{}-{}.oci.tar{}",
        ref_component(name, "image"),
        ref_component(version, "latest"),
        if compress { ".gz" } else { "" }
    )
}

impl Satchel {
    pub async fn template(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
    ) -> Result<(Bundle, ContainerTemplate)> {
        let b = self.bundle(who, uid, msid).await?;
        let t = self
            .store
            .get_template(b.owner().id, b.bundle().id, tid)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("container template {tid} of mySoftware {msid}"))
            })?;
        Ok((b.bundle, t))
    }

    pub async fn list_templates(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
    ) -> Result<Vec<ContainerTemplate>> {
        let b = self.bundle(who, uid, msid).await?;
        self.store.list_templates(b.owner().id, b.bundle().id).await
    }

    pub async fn create_template(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        distribution: Option<DistributionRef>,
    ) -> Result<ContainerTemplate> {
        let b = self.bundle(who, uid, msid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        if let Some(d) = &distribution {
            crate::names::validate_label("distribution name", &d.name)?;
            crate::names::validate_label("distribution version", &d.version)?;
            crate::names::validate_label("distribution arch", &d.arch)?;
        }
        self.store
            .create_template(b.owner().id, b.bundle().id, distribution.as_ref())
            .await
    }

    /// Deletes the template, its images and their archives (running generations stop).
    pub async fn delete_template(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
    ) -> Result<()> {
        let (b, t) = self.template(who, uid, msid, tid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        for i in self.store.list_template_images(t.owner_id, t.id).await? {
            self.unpublish_image(t.owner_id, i.id).await?;
        }
        let images = self
            .store
            .delete_template(t.owner_id, b.id, t.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("container template {tid}")))?;
        self.delete_blobs(images.iter().flat_map(image_blobs).collect())
            .await;
        Ok(())
    }

    /// Queues the generation of an image (and wakes a worker); the ticket is returned at once.
    pub async fn generate_image(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
        req: ImageRequest,
    ) -> Result<Ticket> {
        let (b, t) = self.template(who, uid, msid, tid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let format = req
            .format
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .unwrap_or(FORMAT_DOCKER)
            .to_ascii_lowercase();
        if format != FORMAT_DOCKER {
            return Err(DomainError::Invalid(format!(
                "image format {format:?} is not supported for container templates; use {FORMAT_DOCKER}"
            )));
        }
        let name = req
            .name
            .map(|n| crate::names::nfc(n.trim()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| b.name.clone());
        crate::names::validate_label("image name", &name)?;
        self.quota().check_ticket(t.owner_id).await?;
        let base = match &t.distribution {
            Some(d) => crate::distribution::find(self.store.as_ref(), d)
                .await?
                .map(|b| ImageBase {
                    id: b.id,
                    label: crate::distribution::label(&b),
                }),
            None => None,
        };
        let i = self
            .store
            .create_ticket(&NewTicket {
                import: None,
                takeout: None,
                owner_id: t.owner_id,
                kind: TicketKind::ContainerImage,
                image: Some(ImageSpec {
                    template_id: t.id,
                    name,
                    format,
                    compress: req.compress,
                    base,
                }),
                subject_id: b.id,
                subject_name: b.name.clone(),
                subject_version: b.version.clone(),
                format: OutputFormat::Yaml,
                max_attempts: self.config.max_attempts,
            })
            .await?;
        Ok(self.queued(i))
    }

    /// An image of this template; images of other templates, even the caller's, do not exist here.
    pub async fn image(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
        itid: Id,
    ) -> Result<Ticket> {
        let (_, t) = self.template(who, uid, msid, tid).await?;
        match self.store.get_ticket(t.owner_id, itid).await? {
            Some(i) if i.template_id() == Some(t.id) => Ok(i),
            _ => Err(DomainError::not_found(format!(
                "image {itid} of container template {tid}"
            ))),
        }
    }

    pub async fn list_images(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
    ) -> Result<Vec<Ticket>> {
        let (_, t) = self.template(who, uid, msid, tid).await?;
        self.store.list_template_images(t.owner_id, t.id).await
    }

    /// Every container image of the user, across bundles and templates.
    pub async fn list_user_images(&self, who: &Principal, uid: &str) -> Result<Vec<Ticket>> {
        self.tickets_of(who, uid, TicketKind::ContainerImage).await
    }

    pub async fn delete_image(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
        itid: Id,
    ) -> Result<()> {
        let i = self.image(who, uid, msid, tid, itid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        // Its publications first: nothing pullable outlives the image.
        self.unpublish_image(i.owner_id, i.id).await?;
        let gone = self
            .store
            .delete_ticket(i.owner_id, i.id)
            .await?
            .ok_or_else(|| DomainError::not_found(format!("image {itid}")))?;
        // Keys are deterministic: delete even if the job published just before the row went.
        self.delete_blobs(image_blobs(&gone).to_vec()).await;
        Ok(())
    }

    /// Cancels a queued or running generation; a finished one is left as it is (and the answer
    /// says so).
    pub async fn cancel_image(
        &self,
        who: &Principal,
        uid: &str,
        msid: Id,
        tid: Id,
        itid: Id,
    ) -> Result<Cancelled> {
        let i = self.image(who, uid, msid, tid, itid).await?;
        self.cancel_resolved(who, i).await
    }

    /// The archive of an image if it may be downloaded ([`Ticket::downloadable_archive`]), else why not.
    pub(crate) fn downloadable(i: &Ticket) -> Result<ArchiveRef> {
        let itid = i.id;
        if let Some(a) = i.downloadable_archive() {
            return Ok(a.clone());
        }
        if !i.image.as_ref().map(|s| s.compress).unwrap_or(false) {
            return Err(DomainError::Forbidden(format!(
                "image {itid} was generated without compress and cannot be downloaded; \
                 generate it again with compress=true"
            )));
        }
        match i.state {
            TicketState::Error => Err(DomainError::Conflict(format!(
                "the generation of image {itid} failed: {}",
                i.error_message.clone().unwrap_or_default()
            ))),
            TicketState::Cancelled => Err(DomainError::Conflict(format!(
                "the generation of image {itid} was cancelled"
            ))),
            _ => Err(DomainError::Conflict(format!(
                "image {itid} is not generated yet ({}%); poll its status until it is complete",
                i.percentage
            ))),
        }
    }
}

/// One layer member, planned: where it goes and what it holds (None: a directory).
struct LayerMember {
    path: String,
    blob: Option<BlobRef>,
}

/// The layer's members in path order (so the digests do not depend on upload order or ids).
fn layer_members(
    bundle: &Bundle,
    artifacts: &[Artifact],
    license: Option<&Attachment>,
    logo: Option<&Attachment>,
) -> Result<Vec<LayerMember>> {
    let name = path_segment(&bundle.name);
    let p = plan(bundle, artifacts, license, logo, OutputFormat::Yaml)?;
    let files_root = format!("bundles/{name}/{}/", path_segment(&bundle.version));
    let mut out = Vec::new();
    for m in p.members {
        let path = if let Some(rest) = m.path.strip_prefix(&files_root) {
            format!("opt/{name}/{rest}")
        } else if let Some(file) = m.path.strip_prefix(&format!("bundles/{name}/")) {
            let is_license = license.map(|l| path_segment(&l.name)) == Some(file.to_string());
            if is_license {
                format!("usr/share/licenses/{name}/{file}")
            } else {
                format!("usr/share/pixmaps/{name}/{file}")
            }
        } else {
            return Err(DomainError::Internal(
                format!("unplanned path {}", m.path).into(),
            ));
        };
        out.push(LayerMember { path, blob: m.blob });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

impl TicketRunner {
    /// Builds the image in two streamed passes: the layer into a temporary blob (its digest is
    /// only known at the end), then the layout archive, which copies the layer in.
    pub(crate) async fn build_image(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let spec = t
            .image
            .clone()
            .ok_or_else(|| Failure::Permanent("the image has no specification".into()))?;
        let bundle = self
            .store
            .get_bundle(t.owner_id, t.subject_id)
            .await?
            .ok_or_else(|| {
                Failure::Permanent(format!("mySoftware {} was deleted", t.subject_id))
            })?;
        let template = self
            .store
            .get_template(t.owner_id, bundle.id, spec.template_id)
            .await?
            .ok_or_else(|| Failure::Permanent("the container template was deleted".into()))?;
        let artifacts = self.store.list_artifacts(bundle.id).await?;
        let license = self
            .store
            .get_attachment(bundle.id, AttachmentKind::License)
            .await?;
        let logo = self
            .store
            .get_attachment(bundle.id, AttachmentKind::Logo)
            .await?;
        let members = layer_members(&bundle, &artifacts, license.as_ref(), logo.as_ref())?;
        // The members hold what the layer needs; the rows go now, not after the whole build.
        drop((artifacts, license, logo));
        let total: i64 = members
            .iter()
            .filter_map(|m| m.blob.as_ref())
            .map(|b| b.size)
            .sum();

        let lkey = layer_key(t.owner_id, t.id);
        let result = self
            .build_layout(t, &spec, &bundle, &template, &members, total, &lkey, cancel)
            .await;
        // The temporary layer never outlives the build.
        let _ = self.blobs.delete(&lkey).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_layout(
        &self,
        t: &Ticket,
        spec: &ImageSpec,
        bundle: &Bundle,
        template: &ContainerTemplate,
        members: &[LayerMember],
        total: i64,
        lkey: &str,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let writer = self
            .blobs
            // The layer writer hashes what it emits (the layer's digest): the blob writer need not.
            .writer(lkey, satchel_blob::Hashes::NONE)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut lw = LayerWriter::new(BlobSink(writer), self.gz);
        let pass: std::result::Result<(), Failure> = async {
            let mut meter = self.meter(t.id, total).await?;
            let entries: Vec<(&str, Option<&BlobRef>)> = members
                .iter()
                .map(|m| (m.path.as_str(), m.blob.as_ref()))
                .collect();
            self.copy_members(&mut lw, &entries, 0, &mut meter, cancel)
                .await
        }
        .await;
        if let Err(e) = pass {
            lw.into_sink().0.abort().await;
            return Err(e);
        }
        let (fin, layer) = lw.finish().await?;
        fin.sink
            .0
            .finish()
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        if cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }

        let distro = template.distribution.clone().unwrap_or_default();
        let base = match &spec.base {
            Some(b) => Some(self.load_base(b).await?),
            None => None,
        };
        let mut labels = vec![
            (
                "org.opencontainers.image.title".to_string(),
                spec.name.clone(),
            ),
            (
                "org.opencontainers.image.version".to_string(),
                bundle.version.clone(),
            ),
        ];
        if let Some(d) = &bundle.description {
            labels.push(("org.opencontainers.image.description".into(), d.clone()));
        }
        if !distro.name.is_empty() {
            labels.push((
                "org.opencontainers.image.base.name".into(),
                format!("{} {}", distro.name, distro.version)
                    .trim()
                    .to_string(),
            ));
            if base.is_none() {
                labels.push((
                    "io.satchel.base".into(),
                    format!(
                        "none: no base image is registered for {} {} {} (satchel admin \
                         distribution add); the image holds the bundle's files only",
                        distro.name, distro.version, distro.arch
                    ),
                ));
            }
        }
        let architecture = base
            .as_ref()
            .and_then(|b| b.config["architecture"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| oci_arch(&distro.arch));
        let info = ImageInfo {
            ref_name: format!(
                "{}:{}",
                ref_component(&spec.name, "image"),
                ref_component(&bundle.version, "latest")
            ),
            os: "linux".into(),
            architecture,
            labels,
            // The bundle's last change, not the build time: same content, same digests.
            created: chrono::DateTime::from_timestamp_millis(bundle.modified)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let docs = documents_on(base.as_ref(), &layer, &info)?;

        let key = image_key(t.owner_id, t.id);
        let key = if spec.compress {
            format!("{key}.gz")
        } else {
            key
        };
        let writer = self
            .blobs
            // The archive's sha256 comes from the encoder.
            .writer(&key, satchel_blob::Hashes::NONE)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut opts = self.gz;
        opts.raw = !spec.compress;
        let mut tar = TarGzWriter::new(BlobSink(writer), opts);
        let written: std::result::Result<(), Failure> = async {
            write_layout_head(&mut tar, &docs).await?;
            // The base's layers are streamed from their blobs, in the manifest's order; a blob
            // listed twice is one file of the layout.
            let mut seen = std::collections::HashSet::new();
            let base_layers = base.as_ref().map(|b| b.layers.as_slice()).unwrap_or(&[]);
            for d in base_layers {
                if !seen.insert(d.digest.clone()) {
                    continue;
                }
                if cancel.is_cancelled() {
                    return Err(Failure::Cancelled);
                }
                let bytes = self
                    .blobs
                    .get(&blob_key(&d.digest), None)
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?;
                write_blob(&mut tar, d, bytes).await?;
            }
            if seen.insert(layer.descriptor.digest.clone()) {
                let layer_bytes = self
                    .blobs
                    .get(lkey, None)
                    .await
                    .map_err(|e| Failure::Transient(e.into()))?;
                write_blob(&mut tar, &layer.descriptor, layer_bytes).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            tar.into_sink().0.abort().await;
            return Err(e);
        }
        let fin = tar.finish().await?;
        fin.sink
            .0
            .finish()
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        Ok(ArchiveRef {
            key,
            file_name: image_file_name(&spec.name, &bundle.version, spec.compress),
            size: fin.size as i64,
            sha256: fin.sha256,
        })
    }
}

impl TicketRunner {
    /// The base an image was requested on: its layers' descriptors and its config, read back from
    /// the blob store and checked against its digest.
    async fn load_base(&self, b: &ImageBase) -> std::result::Result<Base, Failure> {
        let d = self.store.get_distribution(b.id).await?.ok_or_else(|| {
            Failure::Permanent(format!(
                "the base distribution {} was removed; register it again, or use a template \
                 without it",
                b.label
            ))
        })?;
        if d.config.size > 4 << 20 {
            return Err(Failure::Permanent(format!(
                "the config of {} is over 4 MiB",
                b.label
            )));
        }
        let mut stream = self
            .blobs
            .get(&blob_key(&d.config.digest), None)
            .await
            .map_err(|e| Failure::Transient(e.into()))?;
        let mut config = Vec::with_capacity(d.config.size as usize);
        while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
            let chunk = chunk.map_err(|e| Failure::Transient(e.into()))?;
            if config.len() + chunk.len() > d.config.size as usize {
                break;
            }
            config.extend_from_slice(&chunk);
        }
        let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&config)));
        if got != d.config.digest {
            return Err(Failure::Permanent(format!(
                "the stored config of {} is {got}, not {}",
                b.label, d.config.digest
            )));
        }
        let config: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| Failure::Permanent(format!("the config of {}: {e}", b.label)))?;
        Ok(Base {
            config,
            layers: d
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size.max(0) as u64,
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_and_file_names_are_safe() {
        assert_eq!(ref_component("My App!", "x"), "my-app");
        assert_eq!(ref_component("..", "x"), "x");
        assert_eq!(
            image_file_name("My App", "1.0 beta", true),
            "my-app-1.0-beta.oci.tar.gz"
        );
        assert_eq!(image_file_name("", "", false), "image-latest.oci.tar");
        assert_eq!(oci_arch("x86_64"), "amd64");
        assert_eq!(oci_arch("aarch64"), "arm64");
    }

    #[test]
    fn layer_members_are_sorted_and_rooted() {
        let b = Bundle {
            id: 1,
            owner_id: 1,
            name: "demo".into(),
            version: "1.0".into(),
            description: None,
            release: None,
            install_location: None,
            revision: 1,
            imported: false,
            created: 0,
            modified: 0,
        };
        let blob = BlobRef {
            key: "k".into(),
            size: 1,
            sha256: "s".into(),
            md5: "m".into(),
            uploaded: 0,
            crc32: None,
        };
        let art = |id, parent, name: &str, kind: &str| Artifact {
            id,
            bundle_id: 1,
            parent_id: parent,
            name: name.into(),
            kind: kind.into(),
            tag: None,
            install_location: None,
            blob: (kind == "file").then(|| blob.clone()),
            created: 0,
            modified: 0,
        };
        let arts = vec![
            art(1, None, "z.sh", "file"),
            art(2, None, "etc", "folder"),
            art(3, Some(2), "a.conf", "file"),
        ];
        let lic = Attachment {
            id: 1,
            bundle_id: 1,
            kind: AttachmentKind::License,
            name: "LICENSE".into(),
            blob: blob.clone(),
        };
        let m = layer_members(&b, &arts, Some(&lic), None).unwrap();
        let paths: Vec<_> = m.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "opt/demo/etc/",
                "opt/demo/etc/a.conf",
                "opt/demo/z.sh",
                "usr/share/licenses/demo/LICENSE"
            ]
        );
    }
}
