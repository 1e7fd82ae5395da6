//! Appliance exports (seed 002): a ticket whose job packs an appliance template into the archive
//! `hammr template import` reads. The ticket, its job, progress, cancel, download and expiry are the
//! bundle export's (`TicketKind::ApplianceExport` on the same machinery); only the plan differs:
//!
//! ```text
//! template.yml | template.json        stack: name, version, description, os {name, version, arch,
//!                                     profile, pkgs}, bundles [each as bundle.yml holds it], config
//! manifest.json                      every other member with its size and sha256
//! bundles/<name>/<version>/<path>    each bundle's files, as its own export lays them out
//! bundles/<name>/<license|logo>      its license and logo
//! config/<name>                      the boot scripts
//! ```

use crate::appliance::*;
use crate::export::{
    bundle_plan, ready_docs, render_doc, ArchiveOf, BundleDoc, Failure, PlannedMember, TicketRunner,
};
use crate::model::*;
use crate::names::path_segment;
use crate::service::Satchel;
use crate::{DomainError, Result};
use serde::Serialize;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize)]
struct TemplateDoc {
    stack: StackDoc,
}

#[derive(Debug, Serialize)]
struct StackDoc {
    name: String,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os: Option<OsDoc>,
    bundles: Vec<BundleDoc>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config: Vec<ConfigDoc>,
}

#[derive(Debug, Serialize)]
struct OsDoc {
    name: String,
    version: String,
    arch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pkgs: Vec<PkgDoc>,
}

/// hammr writes a package as its name; a version or architecture makes it a map.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum PkgDoc {
    Name(String),
    Spec {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        arch: Option<String>,
    },
}

#[derive(Debug, Serialize)]
struct ConfigDoc {
    name: String,
    source: String,
    order: i64,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// Everything an appliance export writes, planned before anything is read.
pub(crate) struct TemplatePlan {
    pub doc_name: &'static str,
    pub doc: Vec<u8>,
    pub members: Vec<PlannedMember>,
}

/// One bundle of the appliance with what its export needs.
pub(crate) struct BundleContent {
    pub bundle: Bundle,
    pub artifacts: Vec<Artifact>,
    pub license: Option<Attachment>,
    pub logo: Option<Attachment>,
}

/// Plans an appliance export: pure, no I/O.
pub(crate) fn plan_template(
    parts: &ApplianceParts,
    bundles: &[BundleContent],
    format: OutputFormat,
) -> Result<TemplatePlan> {
    let a = &parts.appliance;
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    let mut docs = Vec::new();
    for b in bundles {
        let (doc, m) = bundle_plan(
            &b.bundle,
            &b.artifacts,
            b.license.as_ref(),
            b.logo.as_ref(),
            &mut seen,
        )?;
        docs.push(doc);
        members.extend(m);
    }
    let mut config = Vec::new();
    for s in &parts.boot_scripts {
        let blob = s.blob.clone().ok_or_else(|| {
            DomainError::Invalid(format!(
                "the boot script {} has no body uploaded yet",
                s.name
            ))
        })?;
        let path = format!("config/{}", path_segment(&s.name));
        if !seen.insert(path.clone()) {
            return Err(DomainError::Invalid(format!(
                "two boot scripts map to the same archive path {path}"
            )));
        }
        members.push(PlannedMember {
            path: path.clone(),
            blob: Some(blob),
        });
        config.push(ConfigDoc {
            name: s.name.clone(),
            source: path,
            order: s.order,
            kind: s.kind.as_str(),
        });
    }
    let os = match (&a.distribution, &parts.os_profile) {
        (None, None) => None,
        (d, p) => {
            let d = d.clone().unwrap_or_default();
            Some(OsDoc {
                name: d.name,
                version: d.version,
                arch: d.arch,
                profile: p.as_ref().map(|p| p.name.clone()),
                pkgs: parts
                    .packages
                    .iter()
                    .map(|p| match (&p.version, &p.arch) {
                        (None, None) => PkgDoc::Name(p.name.clone()),
                        _ => PkgDoc::Spec {
                            name: p.name.clone(),
                            version: p.version.clone(),
                            arch: p.arch.clone(),
                        },
                    })
                    .collect(),
            })
        }
    };
    let doc = TemplateDoc {
        stack: StackDoc {
            name: a.name.clone(),
            version: a.version.clone(),
            description: a.description.clone(),
            os,
            bundles: docs,
            config,
        },
    };
    Ok(TemplatePlan {
        doc_name: match format {
            OutputFormat::Json => "template.json",
            OutputFormat::Yaml => "template.yml",
        },
        doc: render_doc(&doc, format)?,
        members,
    })
}

impl TicketRunner {
    /// A bundle with what its export needs (an appliance export's, a takeout's).
    pub(crate) async fn bundle_content(&self, b: &Bundle) -> Result<BundleContent> {
        Ok(BundleContent {
            artifacts: self.store.list_artifacts(b.id).await?,
            license: self
                .store
                .get_attachment(b.id, AttachmentKind::License)
                .await?,
            logo: self
                .store
                .get_attachment(b.id, AttachmentKind::Logo)
                .await?,
            bundle: b.clone(),
        })
    }

    pub(crate) async fn build_appliance_export(
        &self,
        t: &Ticket,
        cancel: &CancellationToken,
    ) -> std::result::Result<ArchiveRef, Failure> {
        let parts = self
            .store
            .appliance_parts(t.owner_id, t.subject_id)
            .await?
            .ok_or_else(|| Failure::Permanent(format!("appliance {} was deleted", t.subject_id)))?;
        let mut bundles = Vec::with_capacity(parts.bundles.len());
        for b in &parts.bundles {
            bundles.push(self.bundle_content(b).await?);
        }
        let plan = plan_template(&parts, &bundles, t.format)?;
        let a = &parts.appliance;
        let mtime = (a.modified / 1000).max(0) as u64;
        self.write_archive(
            t,
            ArchiveOf::Template {
                name: a.name.clone(),
                version: a.version.clone(),
            },
            ready_docs(vec![(plan.doc_name, plan.doc)]),
            plan.members.into(),
            mtime,
            crate::names::archive_file_name(&a.name),
            cancel,
        )
        .await
    }
}

impl Satchel {
    /// Queues an export of the appliance (and wakes a worker); the ticket is returned at once.
    pub async fn create_appliance_export(
        &self,
        owned: &OwnedAppliance,
        format: OutputFormat,
    ) -> Result<Ticket> {
        let (owner, a) = (owned.owner(), owned.appliance());
        self.require(&owned.owner.who, ENT_SOFTWARE_UPLOAD)?;
        self.quota().check_ticket(owner.id).await?;
        let t = self
            .store
            .create_ticket(&NewTicket {
                import: None,
                takeout: None,
                owner_id: owner.id,
                kind: TicketKind::ApplianceExport,
                image: None,
                subject_id: a.id,
                subject_name: a.name.clone(),
                subject_version: a.version.clone(),
                format,
                max_attempts: self.config.max_attempts,
            })
            .await?;
        Ok(self.queued(t))
    }

    /// An export of this appliance. Exports of other appliances, or of bundles, do not exist here.
    pub async fn appliance_export(
        &self,
        who: &Principal,
        uid: &str,
        aid: Id,
        eid: Id,
    ) -> Result<Ticket> {
        self.ticket_of(
            who,
            uid,
            eid,
            TicketKind::ApplianceExport,
            Some(aid),
            || format!("export {eid} of appliance {aid}"),
        )
        .await
    }

    pub async fn cancel_appliance_export(
        &self,
        who: &Principal,
        uid: &str,
        aid: Id,
        eid: Id,
    ) -> Result<Cancelled> {
        let t = self.appliance_export(who, uid, aid, eid).await?;
        self.cancel_resolved(who, t).await
    }

    pub async fn delete_appliance_export(
        &self,
        who: &Principal,
        uid: &str,
        aid: Id,
        eid: Id,
    ) -> Result<()> {
        let t = self.appliance_export(who, uid, aid, eid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        self.delete_with_archive(&t, || format!("export {eid} of appliance {aid}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(k: &str) -> BlobRef {
        BlobRef {
            key: k.into(),
            size: 1,
            sha256: "s".into(),
            md5: "m".into(),
            uploaded: 0,
            crc32: None,
        }
    }

    fn content(id: Id, version: &str) -> BundleContent {
        BundleContent {
            bundle: Bundle {
                id,
                owner_id: 1,
                name: "same".into(),
                version: version.into(),
                description: None,
                release: None,
                install_location: None,
                revision: 1,
                imported: false,
                created: 0,
                modified: 0,
            },
            artifacts: Vec::new(),
            license: Some(Attachment {
                id,
                bundle_id: id,
                kind: AttachmentKind::License,
                name: "LICENSE".into(),
                blob: blob(&format!("l{id}")),
            }),
            logo: None,
        }
    }

    #[test]
    fn two_versions_of_one_bundle_keep_their_own_license() {
        let parts = ApplianceParts {
            appliance: Appliance {
                id: 1,
                owner_id: 1,
                name: "a".into(),
                version: "1".into(),
                description: None,
                distribution: None,
                imported: false,
                created: 0,
                modified: 0,
            },
            bundles: Vec::new(),
            os_profile: None,
            packages: Vec::new(),
            boot_scripts: Vec::new(),
        };
        let p = plan_template(
            &parts,
            &[content(1, "1"), content(2, "2")],
            OutputFormat::Yaml,
        )
        .unwrap();
        let paths: Vec<_> = p.members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["bundles/same/LICENSE", "bundles/same/2/LICENSE"]);
        let doc: serde_yaml::Value = serde_yaml::from_slice(&p.doc).unwrap();
        assert_eq!(
            doc["stack"]["bundles"][1]["license"]["source"],
            "bundles/same/2/LICENSE"
        );
        assert!(doc["stack"].get("os").is_none());
    }
}
