//! The documents of an import archive (`bundle.yml|json`, `template.yml|json`, `manifest.json`) as
//! Satchel's export and hammr 3.8.13 write them, and the checks that turn them, with the members the
//! reader saw, into a plan of what to create.
//!
//! Mandatory fields follow hammr's own validation (`bundle_utils.check_bundle`/`check_files`,
//! `hammr_utils.check_mandatory_stack`). Beyond hammr: every `source` must be a member of the
//! archive, no member may be claimed twice, every file member must be claimed, and a manifest, when
//! present, must match the bytes actually read.

use crate::names::{nfc, validate_file_name, validate_label};
use crate::{DomainError, Result};
use satchel_archive::reader::{MemberKind, ReadMember, ReadSummary};
use serde::{Deserialize, Deserializer};
use std::collections::{HashMap, HashSet};

/// Folder nesting in a descriptor (as the export's own bound).
pub const MAX_NESTING: usize = 64;

/// A scalar as written: YAML and JSON numbers and booleans are accepted where hammr users write
/// `version: 7`, and kept as their text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Text(s)),
            serde_json::Value::Number(n) => Ok(Text(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Text(b.to_string())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

fn text(t: &Option<Text>) -> Option<String> {
    t.as_ref().map(|t| t.0.clone())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleDescriptor {
    pub name: Option<Text>,
    pub version: Option<Text>,
    pub description: Option<Text>,
    pub release: Option<Text>,
    pub install_location: Option<Text>,
    pub license: Option<LicenseDescriptor>,
    pub source_logo: Option<Text>,
    pub files: Option<Vec<FileDescriptor>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LicenseDescriptor {
    pub source: Option<Text>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileDescriptor {
    pub name: Option<Text>,
    pub source: Option<Text>,
    pub install_location: Option<Text>,
    pub tag: Option<Text>,
    #[serde(default)]
    pub files: Vec<FileDescriptor>,
    pub boot_order: Option<Text>,
    pub boot_type: Option<Text>,
    pub owner_group: Option<Text>,
    pub rights: Option<Text>,
    pub symlink: Option<Text>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TemplateDescriptor {
    pub stack: Option<StackDescriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackDescriptor {
    pub name: Option<Text>,
    pub version: Option<Text>,
    pub description: Option<Text>,
    pub os: Option<OsDescriptor>,
    #[serde(default)]
    pub bundles: Vec<BundleDescriptor>,
    #[serde(default)]
    pub config: Vec<ConfigDescriptor>,
    /// hammr's `template create` reads `source_logo`; its export writes `sourceLogo`.
    #[serde(alias = "source_logo")]
    pub source_logo: Option<Text>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsDescriptor {
    pub name: Option<Text>,
    pub version: Option<Text>,
    pub arch: Option<Text>,
    pub profile: Option<Text>,
    #[serde(default)]
    pub pkgs: Vec<PackageDescriptor>,
}

/// An OS package: a bare name, or a name with a version and architecture.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PackageDescriptor {
    Name(Text),
    Spec {
        name: Text,
        version: Option<Text>,
        arch: Option<Text>,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConfigDescriptor {
    pub name: Option<Text>,
    pub source: Option<Text>,
    pub order: Option<Text>,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
}

/// `manifest.json` as Satchel's export writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: Option<String>,
    pub files: Vec<ManifestEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    File,
    Folder,
    /// An `ospkg` entry: a package of the OS, named, not carried in the archive.
    OsPackage,
}

/// One artifact to create, in order: a parent always comes before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedArtifact {
    pub name: String,
    pub kind: ArtifactKind,
    /// Index of the parent folder in [`BundlePlan::artifacts`].
    pub parent: Option<usize>,
    /// The archive member holding it (files and folders); an `ospkg` has none.
    pub member: Option<String>,
    pub size: u64,
    pub install_location: Option<String>,
    pub tag: Option<String>,
}

/// A file carried by the archive for an attachment (license, logo) or a boot script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMember {
    /// Its file name (the member path's last component).
    pub name: String,
    pub member: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundlePlan {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub release: Option<String>,
    pub install_location: Option<String>,
    pub artifacts: Vec<PlannedArtifact>,
    pub license: Option<PlannedMember>,
    pub logo: Option<PlannedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagePlan {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsPlan {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub profile: Option<String>,
    pub pkgs: Vec<PackagePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootScriptPlan {
    pub name: String,
    pub order: Option<u32>,
    pub kind: Option<String>,
    pub script: PlannedMember,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePlan {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub os: OsPlan,
    pub bundles: Vec<BundlePlan>,
    pub boot_scripts: Vec<BootScriptPlan>,
    pub logo: Option<PlannedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportPlan {
    Bundle(BundlePlan),
    Template(TemplatePlan),
}

fn invalid(m: impl Into<String>) -> DomainError {
    DomainError::Invalid(m.into())
}

/// Parses a document as YAML or JSON, chosen by its file name.
fn parse<T: for<'de> Deserialize<'de>>(file_name: &str, bytes: &[u8]) -> Result<T> {
    let r = if file_name.ends_with(".json") {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else if file_name.ends_with(".yml") || file_name.ends_with(".yaml") {
        // serde_yaml 0.9 bounds alias expansion and nesting itself (see the billion-laughs test).
        serde_yaml::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        return Err(invalid(format!(
            "{file_name}: a descriptor is a .yml or .json file"
        )));
    };
    r.map_err(|e| invalid(format!("{file_name} cannot be read: {e}")))
}

pub fn parse_bundle(file_name: &str, bytes: &[u8]) -> Result<BundleDescriptor> {
    parse(file_name, bytes)
}

pub fn parse_template(file_name: &str, bytes: &[u8]) -> Result<TemplateDescriptor> {
    parse(file_name, bytes)
}

pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest> {
    parse("manifest.json", bytes)
}

/// Finds the archive's descriptor among its root documents, parses it and the manifest, and checks
/// them against the members: what an import job calls after `read_archive`.
pub fn plan_import(summary: &ReadSummary) -> Result<ImportPlan> {
    let bundle_docs: Vec<_> = summary
        .docs
        .keys()
        .filter(|k| k.starts_with("bundle."))
        .collect();
    let template_docs: Vec<_> = summary
        .docs
        .keys()
        .filter(|k| k.starts_with("template."))
        .collect();
    let manifest = summary
        .docs
        .get("manifest.json")
        .map(|m| parse_manifest(m))
        .transpose()?;
    match (bundle_docs.as_slice(), template_docs.as_slice()) {
        ([b], []) => {
            let doc = parse_bundle(b, &summary.docs[*b])?;
            check_bundle(&doc, &summary.members, manifest.as_ref()).map(ImportPlan::Bundle)
        }
        ([], [t]) => {
            let doc = parse_template(t, &summary.docs[*t])?;
            check_template(&doc, &summary.members, manifest.as_ref()).map(ImportPlan::Template)
        }
        ([], []) => Err(invalid(
            "the archive has no bundle.yml, bundle.json, template.yml or template.json at its root",
        )),
        _ => Err(invalid(
            "the archive has more than one descriptor at its root (bundle.* / template.*)",
        )),
    }
}

/// The members read, and which of them the descriptor claimed so far.
struct Members<'a> {
    by_path: HashMap<&'a str, &'a ReadMember>,
    /// Directories: explicit entries and every parent of a member.
    dirs: HashSet<&'a str>,
    claimed: HashMap<String, String>,
    doc: &'static str,
}

impl<'a> Members<'a> {
    fn new(members: &'a [ReadMember], doc: &'static str) -> Self {
        let mut dirs = HashSet::new();
        for m in members {
            if m.kind == MemberKind::Dir {
                dirs.insert(m.path.as_str());
            }
            let mut p = m.path.as_str();
            while let Some(i) = p.rfind('/') {
                p = &p[..i];
                dirs.insert(p);
            }
        }
        Members {
            by_path: members
                .iter()
                .filter(|m| m.kind == MemberKind::File)
                .map(|m| (m.path.as_str(), m))
                .collect(),
            dirs,
            claimed: HashMap::new(),
            doc,
        }
    }

    /// Claims `source` for `what` (a field path in the descriptor); it must be a file member, or a
    /// directory when `folder_ok`.
    fn claim(
        &mut self,
        what: &str,
        source: &str,
        folder_ok: bool,
    ) -> Result<(String, Option<&'a ReadMember>)> {
        let path = normalise_source(source).ok_or_else(|| {
            invalid(format!(
                "{}: {what} has an invalid source {source:?}",
                self.doc
            ))
        })?;
        let found = self.by_path.get(path.as_str()).copied();
        if found.is_none() && !(folder_ok && self.dirs.contains(path.as_str())) {
            return Err(invalid(format!(
                "{}: {what} names {path:?}, which is not in the archive",
                self.doc
            )));
        }
        if let Some(first) = self.claimed.insert(path.clone(), what.to_string()) {
            return Err(invalid(format!(
                "{}: the member {path:?} is claimed twice, by {first} and by {what}",
                self.doc
            )));
        }
        Ok((path, found))
    }

    fn attachment(&mut self, what: &str, source: &str) -> Result<PlannedMember> {
        let (path, m) = self.claim(what, source, false)?;
        let m = m.ok_or_else(|| invalid(format!("{}: {what} must be a file", self.doc)))?;
        Ok(planned_member(&path, m))
    }
}

fn planned_member(path: &str, m: &ReadMember) -> PlannedMember {
    PlannedMember {
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        member: path.to_string(),
        size: m.size,
        sha256: m.sha256,
    }
}

/// A template's `os`, checked (hammr's mandatory name, version and arch).
fn os_plan(d: &str, os: &OsDescriptor) -> Result<OsPlan> {
    let os = OsPlan {
        name: required(d, "stack.os.name", &os.name)?.to_string(),
        version: required(d, "stack.os.version", &os.version)?.to_string(),
        arch: required(d, "stack.os.arch", &os.arch)?.to_string(),
        profile: text(&os.profile),
        pkgs: os
            .pkgs
            .iter()
            .map(|p| match p {
                PackageDescriptor::Name(n) => PackagePlan {
                    name: n.0.clone(),
                    version: None,
                    arch: None,
                },
                PackageDescriptor::Spec {
                    name,
                    version,
                    arch,
                } => PackagePlan {
                    name: name.0.clone(),
                    version: text(version),
                    arch: text(arch),
                },
            })
            .collect(),
    };
    validate_label("stack.os.name", &os.name)?;
    validate_label("stack.os.version", &os.version)?;
    validate_label("stack.os.arch", &os.arch)?;
    Ok(os)
}

/// A descriptor's `source` as a member path (the reader's normalisation); `None` if it escapes.
fn normalise_source(s: &str) -> Option<String> {
    if s.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn required<'t>(doc: &str, what: &str, v: &'t Option<Text>) -> Result<&'t str> {
    match v {
        Some(t) => Ok(t.0.as_str()),
        None => Err(invalid(format!("{doc}: no attribute [{what}]"))),
    }
}

/// Checks the manifest against what was read: every entry is a file of that size and sha256, and
/// every file but the manifest itself is listed.
pub fn check_manifest(manifest: &Manifest, members: &[ReadMember]) -> Result<()> {
    let files: HashMap<&str, &ReadMember> = members
        .iter()
        .filter(|m| m.kind == MemberKind::File)
        .map(|m| (m.path.as_str(), m))
        .collect();
    let mut listed = HashSet::new();
    for e in &manifest.files {
        let path = normalise_source(&e.path)
            .ok_or_else(|| invalid(format!("manifest.json lists an invalid path {:?}", e.path)))?;
        if !listed.insert(path.clone()) {
            return Err(invalid(format!("manifest.json lists {path:?} twice")));
        }
        let m = files.get(path.as_str()).ok_or_else(|| {
            invalid(format!(
                "manifest.json lists {path:?}, which is not in the archive"
            ))
        })?;
        let actual = hex::encode(m.sha256);
        if m.size != e.size || !actual.eq_ignore_ascii_case(&e.sha256) {
            return Err(invalid(format!(
                "manifest.json says {path:?} is {} bytes with sha256 {}; the archive holds {} bytes with sha256 {actual}",
                e.size, e.sha256, m.size
            )));
        }
    }
    let mut missing: Vec<&&str> = files
        .keys()
        .filter(|p| **p != "manifest.json" && !listed.contains(**p))
        .collect();
    missing.sort();
    match missing.first() {
        None => Ok(()),
        Some(p) => Err(invalid(format!(
            "the archive member {p:?} is not listed in manifest.json"
        ))),
    }
}

/// Checks a bundle descriptor against the members read; the plan of what to create.
pub fn check_bundle(
    doc: &BundleDescriptor,
    members: &[ReadMember],
    manifest: Option<&Manifest>,
) -> Result<BundlePlan> {
    if let Some(m) = manifest {
        check_manifest(m, members)?;
    }
    let mut ms = Members::new(members, "bundle descriptor");
    // Members the descriptor does not name are not imported (the job removes their blobs): hammr
    // 3.8.13 adds a folder recursively *and* names its nested files under other paths (`conf` +
    // `sub` gives `confsub/b.cfg`), so its own archives carry members nothing names. A manifest,
    // when present, still has to list every member.
    bundle_plan(doc, &mut ms, "bundle")
}

/// Checks a template descriptor (its bundles, boot scripts, logo) against the members read.
pub fn check_template(
    doc: &TemplateDescriptor,
    members: &[ReadMember],
    manifest: Option<&Manifest>,
) -> Result<TemplatePlan> {
    if let Some(m) = manifest {
        check_manifest(m, members)?;
    }
    let d = "template descriptor";
    let stack = doc
        .stack
        .as_ref()
        .ok_or_else(|| invalid(format!("{d}: no attribute [stack]")))?;
    let name = nfc(required(d, "stack.name", &stack.name)?);
    validate_label("stack.name", &name)?;
    let version = nfc(required(d, "stack.version", &stack.version)?);
    validate_label("stack.version", &version)?;
    // hammr requires `os`; Satchel's export of an appliance recorded without a distribution has
    // none (nothing to invent), and reads back as such an appliance again.
    let os = match stack.os.as_ref() {
        None => OsPlan {
            name: String::new(),
            version: String::new(),
            arch: String::new(),
            profile: None,
            pkgs: Vec::new(),
        },
        Some(os) => os_plan(d, os)?,
    };
    for p in &os.pkgs {
        validate_label("stack.os.pkgs name", &p.name)?;
    }
    let mut ms = Members::new(members, d);
    let mut bundles = Vec::new();
    for (i, b) in stack.bundles.iter().enumerate() {
        bundles.push(bundle_plan(b, &mut ms, &format!("stack.bundles[{i}]"))?);
    }
    let mut boot_scripts = Vec::new();
    for (i, c) in stack.config.iter().enumerate() {
        let what = format!("stack.config[{i}]");
        let source = required(d, &format!("{what}.source"), &c.source)?;
        let script = ms.attachment(&what, source)?;
        let name = match &c.name {
            Some(n) => nfc(&n.0),
            None => script.name.clone(),
        };
        validate_file_name(&name)?;
        let order = c
            .order
            .as_ref()
            .map(|o| {
                o.0.trim().parse::<u32>().map_err(|_| {
                    invalid(format!(
                        "{d}: {what}.order must be a whole number, not {:?}",
                        o.0
                    ))
                })
            })
            .transpose()?;
        boot_scripts.push(BootScriptPlan {
            name,
            order,
            kind: text(&c.kind),
            script,
        });
    }
    let logo = stack
        .source_logo
        .as_ref()
        .map(|l| ms.attachment("stack.sourceLogo", &l.0))
        .transpose()?;
    Ok(TemplatePlan {
        name,
        version,
        description: text(&stack.description),
        os,
        bundles,
        boot_scripts,
        logo,
    })
}

fn bundle_plan(doc: &BundleDescriptor, ms: &mut Members<'_>, at: &str) -> Result<BundlePlan> {
    let d = ms.doc;
    let name = nfc(required(d, &format!("{at}.name"), &doc.name)?);
    validate_label(&format!("{at}.name"), &name)?;
    let version = nfc(required(d, &format!("{at}.version"), &doc.version)?);
    validate_label(&format!("{at}.version"), &version)?;
    let files = doc
        .files
        .as_ref()
        .ok_or_else(|| invalid(format!("{d}: no attribute [files] for [{at}]")))?;
    let mut artifacts = Vec::new();
    walk(files, None, 0, &format!("{at}.files"), ms, &mut artifacts)?;
    let license = match doc.license.as_ref().and_then(|l| l.source.as_ref()) {
        Some(s) => Some(ms.attachment(&format!("{at}.license.source"), &s.0)?),
        None => None,
    };
    let logo = match &doc.source_logo {
        Some(s) => Some(ms.attachment(&format!("{at}.sourceLogo"), &s.0)?),
        None => None,
    };
    Ok(BundlePlan {
        name,
        version,
        description: text(&doc.description),
        release: text(&doc.release),
        install_location: text(&doc.install_location),
        artifacts,
        license,
        logo,
    })
}

/// hammr's `check_files` rules, then each source resolved and claimed.
fn walk(
    files: &[FileDescriptor],
    parent: Option<usize>,
    level: usize,
    at: &str,
    ms: &mut Members<'_>,
    out: &mut Vec<PlannedArtifact>,
) -> Result<()> {
    let d = ms.doc;
    if level > MAX_NESTING && !files.is_empty() {
        return Err(invalid(format!(
            "{d}: {at}: files are nested more than {MAX_NESTING} deep"
        )));
    }
    for (i, f) in files.iter().enumerate() {
        let what = format!("{at}[{i}]");
        let name = nfc(required(d, &format!("{what}.name"), &f.name)?);
        validate_file_name(&name).map_err(|e| invalid(format!("{d}: {what}.name: {e}")))?;
        let source = required(d, &format!("{what}.source"), &f.source)?;
        let tag = text(&f.tag);
        let tag_is = |t: &str| tag.as_deref() == Some(t);
        if level > 0 && (tag_is("ospkg") || tag_is("bootscript")) {
            return Err(invalid(format!(
                "{d}: {what} ({name}) is tagged {:?} and must be in the first level files section",
                tag.as_deref().unwrap_or_default()
            )));
        }
        if (f.boot_order.is_some() || f.boot_type.is_some()) && !tag_is("bootscript") {
            return Err(invalid(format!(
                "{d}: {what} ({name}) has bootOrder or bootType but is not tagged 'bootscript'"
            )));
        }
        if (f.owner_group.is_some() || f.rights.is_some() || f.symlink.is_some())
            && tag.is_some()
            && !tag_is("softwarefile")
        {
            return Err(invalid(format!(
                "{d}: {what} ({name}) has ownerGroup, rights or symlink but is not tagged 'softwarefile'"
            )));
        }
        if !f.files.is_empty() && tag.is_some() && !tag_is("softwarefile") {
            return Err(invalid(format!(
                "{d}: {what} ({name}) lists files but is not tagged 'softwarefile'"
            )));
        }
        let index = out.len();
        if tag_is("ospkg") {
            // A package of the OS, named by its source; nothing in the archive.
            out.push(PlannedArtifact {
                name,
                kind: ArtifactKind::OsPackage,
                parent,
                member: None,
                size: 0,
                install_location: text(&f.install_location),
                tag,
            });
            continue;
        }
        let (path, member) = ms.claim(&what, source, true)?;
        let kind = if member.is_some() {
            ArtifactKind::File
        } else {
            ArtifactKind::Folder
        };
        if kind == ArtifactKind::File && !f.files.is_empty() {
            return Err(invalid(format!(
                "{d}: {what} ({name}) lists files but its source {path:?} is not a folder"
            )));
        }
        out.push(PlannedArtifact {
            name,
            kind,
            parent,
            member: Some(path),
            size: member.map(|m| m.size).unwrap_or(0),
            install_location: text(&f.install_location),
            tag,
        });
        walk(
            &f.files,
            Some(index),
            level + 1,
            &format!("{what}.files"),
            ms,
            out,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn file(path: &str, data: &[u8]) -> ReadMember {
        ReadMember {
            path: path.into(),
            kind: MemberKind::File,
            size: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    fn dir(path: &str) -> ReadMember {
        ReadMember {
            path: path.into(),
            kind: MemberKind::Dir,
            size: 0,
            sha256: Sha256::digest([]).into(),
        }
    }

    fn msg(e: DomainError) -> String {
        match e {
            DomainError::Invalid(m) => m,
            other => panic!("not Invalid: {other:?}"),
        }
    }

    /// What Satchel's export writes for a bundle "my app" 1.0 (see `export::plan`).
    const EXPORT_YML: &str = r#"---
name: my app
version: '1.0'
license:
  source: bundles/my app/LICENSE
files:
- name: a.sh
  source: bundles/my app/1.0/a.sh
  tag: softwarefile
- name: conf
  source: bundles/my app/1.0/conf
  tag: softwarefile
  files:
  - name: x.cfg
    source: bundles/my app/1.0/conf/x.cfg
    installLocation: /etc/app
    tag: softwarefile
"#;

    fn export_members() -> Vec<ReadMember> {
        vec![
            file("bundle.yml", EXPORT_YML.as_bytes()),
            file("bundles/my app/1.0/a.sh", b"#!/bin/sh\n"),
            dir("bundles/my app/1.0/conf"),
            file("bundles/my app/1.0/conf/x.cfg", b"x=1\n"),
            file("bundles/my app/LICENSE", b"MIT"),
        ]
    }

    fn manifest_for(members: &[ReadMember]) -> Manifest {
        Manifest {
            format: Some("satchel-bundle-export/1".into()),
            files: members
                .iter()
                .filter(|m| m.kind == MemberKind::File)
                .map(|m| ManifestEntry {
                    path: m.path.clone(),
                    size: m.size,
                    sha256: hex::encode(m.sha256),
                })
                .collect(),
        }
    }

    #[test]
    fn an_export_plans_its_artifacts_in_order() {
        let doc = parse_bundle("bundle.yml", EXPORT_YML.as_bytes()).unwrap();
        let members = export_members();
        let m = manifest_for(&members);
        let p = check_bundle(&doc, &members, Some(&m)).unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("my app", "1.0"));
        let arts: Vec<_> = p
            .artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.parent, a.member.as_deref()))
            .collect();
        assert_eq!(
            arts,
            [
                (
                    "a.sh",
                    ArtifactKind::File,
                    None,
                    Some("bundles/my app/1.0/a.sh")
                ),
                (
                    "conf",
                    ArtifactKind::Folder,
                    None,
                    Some("bundles/my app/1.0/conf")
                ),
                (
                    "x.cfg",
                    ArtifactKind::File,
                    Some(1),
                    Some("bundles/my app/1.0/conf/x.cfg")
                ),
            ]
        );
        assert_eq!(p.artifacts[2].install_location.as_deref(), Some("/etc/app"));
        assert_eq!(p.artifacts[0].size, 10);
        let lic = p.license.unwrap();
        assert_eq!((lic.name.as_str(), lic.size), ("LICENSE", 3));
        assert!(p.logo.is_none());
        // The same document in JSON.
        let v: serde_yaml::Value = serde_yaml::from_str(EXPORT_YML).unwrap();
        let json = serde_json::to_vec(&v).unwrap();
        let doc = parse_bundle("bundle.json", &json).unwrap();
        assert_eq!(
            check_bundle(&doc, &members, None).unwrap().artifacts.len(),
            3
        );
    }

    #[test]
    fn plan_import_picks_the_descriptor() {
        let members = export_members();
        let mut summary = ReadSummary {
            members: members.clone(),
            ..Default::default()
        };
        summary
            .docs
            .insert("bundle.yml".into(), EXPORT_YML.as_bytes().to_vec());
        assert!(matches!(plan_import(&summary), Ok(ImportPlan::Bundle(_))));
        summary.docs.insert(
            "manifest.json".into(),
            serde_json::to_vec(
                &serde_json::json!({"files": [{"path": "bundle.yml", "size": 1, "sha256": "00"}]}),
            )
            .unwrap(),
        );
        assert!(
            msg(plan_import(&summary).unwrap_err()).contains("manifest.json says \"bundle.yml\"")
        );
        summary.docs.remove("manifest.json");
        summary
            .docs
            .insert("template.yml".into(), b"stack: {}".to_vec());
        assert!(msg(plan_import(&summary).unwrap_err()).contains("more than one descriptor"));
        summary.docs.clear();
        assert!(msg(plan_import(&summary).unwrap_err()).contains("no bundle.yml"));
    }

    #[test]
    fn a_lying_manifest_is_refused() {
        let doc = parse_bundle("bundle.yml", EXPORT_YML.as_bytes()).unwrap();
        let members = export_members();
        let mut m = manifest_for(&members);
        m.files[1].size += 1;
        let e = msg(check_bundle(&doc, &members, Some(&m)).unwrap_err());
        assert!(
            e.contains("bundles/my app/1.0/a.sh") && e.contains("11 bytes"),
            "{e}"
        );
        let mut m = manifest_for(&members);
        m.files[2].sha256 = hex::encode([7u8; 32]);
        let e = msg(check_bundle(&doc, &members, Some(&m)).unwrap_err());
        assert!(e.contains("conf/x.cfg") && e.contains("sha256"), "{e}");
        let mut m = manifest_for(&members);
        m.files.pop();
        let e = msg(check_bundle(&doc, &members, Some(&m)).unwrap_err());
        assert!(e.contains("LICENSE") && e.contains("not listed"), "{e}");
        let mut m = manifest_for(&members);
        m.files.push(ManifestEntry {
            path: "bundles/ghost".into(),
            size: 0,
            sha256: String::new(),
        });
        let e = msg(check_bundle(&doc, &members, Some(&m)).unwrap_err());
        assert!(
            e.contains("bundles/ghost") && e.contains("not in the archive"),
            "{e}"
        );
        let mut m = manifest_for(&members);
        m.files.push(m.files[0].clone());
        assert!(msg(check_bundle(&doc, &members, Some(&m)).unwrap_err()).contains("twice"));
        // Upper-case hex is the same digest.
        let mut m = manifest_for(&members);
        m.files[0].sha256 = m.files[0].sha256.to_uppercase();
        assert!(check_bundle(&doc, &members, Some(&m)).is_ok());
    }

    #[test]
    fn descriptors_naming_missing_or_shared_members_are_refused() {
        let members = export_members();
        let doc = parse_bundle(
            "bundle.yml",
            EXPORT_YML.replace("1.0/a.sh", "1.0/b.sh").as_bytes(),
        )
        .unwrap();
        let e = msg(check_bundle(&doc, &members, None).unwrap_err());
        assert!(
            e.contains("bundles/my app/1.0/b.sh") && e.contains("not in the archive"),
            "{e}"
        );
        // Claimed twice: the license is also a file of the bundle.
        let twice = EXPORT_YML.replace(
            "source: bundles/my app/LICENSE",
            "source: ./bundles/my app/1.0/a.sh",
        );
        let e = msg(check_bundle(
            &parse_bundle("bundle.yml", twice.as_bytes()).unwrap(),
            &members,
            None,
        )
        .unwrap_err());
        assert!(
            e.contains("claimed twice") && e.contains("bundle.license.source"),
            "{e}"
        );
        // A member nobody names is not planned (hammr's archives carry such members).
        let mut extra = members.clone();
        extra.push(file("bundles/my app/1.0/stowaway", b"x"));
        let doc = parse_bundle("bundle.yml", EXPORT_YML.as_bytes()).unwrap();
        let plan = check_bundle(&doc, &extra, None).unwrap();
        assert!(plan
            .artifacts
            .iter()
            .all(|a| a.member.as_deref() != Some("bundles/my app/1.0/stowaway")));
        // Escaping sources.
        let esc = EXPORT_YML.replace("bundles/my app/1.0/a.sh", "../a.sh");
        let e = msg(check_bundle(
            &parse_bundle("bundle.yml", esc.as_bytes()).unwrap(),
            &members,
            None,
        )
        .unwrap_err());
        assert!(e.contains("invalid source"), "{e}");
        // A license that is a folder.
        let lic = EXPORT_YML.replace(
            "source: bundles/my app/LICENSE",
            "source: bundles/my app/1.0",
        );
        let e = msg(check_bundle(
            &parse_bundle("bundle.yml", lic.as_bytes()).unwrap(),
            &members,
            None,
        )
        .unwrap_err());
        assert!(
            e.contains("bundle.license.source names \"bundles/my app/1.0\""),
            "{e}"
        );
    }

    #[test]
    fn hammr_mandatory_fields_and_tag_rules() {
        let members = vec![file("bundles/b/1/f", b"x"), file("bundles/b/1/g", b"y")];
        let cases: &[(&str, &str)] = &[
            ("version: '1'\nfiles: []", "[bundle.name]"),
            ("name: b\nfiles: []", "[bundle.version]"),
            ("name: b\nversion: '1'", "[files]"),
            ("name: b\nversion: '1'\nfiles: [{source: bundles/b/1/f}]", ".name]"),
            ("name: b\nversion: '1'\nfiles: [{name: f}]", ".source]"),
            ("name: ''\nversion: '1'\nfiles: []", "must not be empty"),
            ("name: b\nversion: \"1\\n\"\nfiles: []", "control characters"),
            ("name: b\nversion: '1'\nfiles: [{name: 'a/b', source: bundles/b/1/f}]", "path separator"),
            ("name: b\nversion: '1'\nfiles: [{name: f, source: bundles/b/1/f, bootOrder: 1}]", "bootscript"),
            ("name: b\nversion: '1'\nfiles: [{name: f, source: bundles/b/1/f, tag: bootscript, rights: '755'}]", "softwarefile"),
            (
                "name: b\nversion: '1'\nfiles: [{name: d, source: bundles/b/1, files: [{name: f, source: bundles/b/1/f, tag: ospkg}]}]",
                "first level",
            ),
            ("name: b\nversion: '1'\nfiles: [{name: f, source: bundles/b/1/f, files: [{name: g, source: bundles/b/1/g}]}]", "not a folder"),
        ];
        for (doc, want) in cases {
            let d = parse_bundle("bundle.yml", doc.as_bytes()).unwrap();
            let e = msg(check_bundle(&d, &members, None).unwrap_err());
            assert!(e.contains(want), "{doc}: {e}");
        }
        // Numbers are accepted where hammr users write them, and ospkg entries carry no member.
        let ok = "name: b\nversion: 1.0\nfiles: [{name: f, source: bundles/b/1/f}, {name: g, source: bundles/b/1/g}, {name: vim, source: vim, tag: ospkg}]";
        let p = check_bundle(
            &parse_bundle("bundle.yml", ok.as_bytes()).unwrap(),
            &members,
            None,
        )
        .unwrap();
        assert_eq!(p.version, "1.0");
        assert_eq!(p.artifacts[2].kind, ArtifactKind::OsPackage);
        assert_eq!(p.artifacts[2].member, None);
    }

    #[test]
    fn nesting_is_bounded() {
        // The parsers stop at 128 levels (64 of files); a descriptor built otherwise stops here.
        let leaf = |name: &str, source: String, files| FileDescriptor {
            name: Some(Text(name.into())),
            source: Some(Text(source)),
            install_location: None,
            tag: None,
            files,
            boot_order: None,
            boot_type: None,
            owner_group: None,
            rights: None,
            symlink: None,
        };
        let deep = |levels: usize| {
            let path = vec!["d"; levels].join("/");
            let mut f = leaf("f", format!("{path}/f"), Vec::new());
            for l in (1..=levels).rev() {
                f = leaf("d", vec!["d"; l].join("/"), vec![f]);
            }
            let doc = BundleDescriptor {
                name: Some(Text("b".into())),
                version: Some(Text("1".into())),
                description: None,
                release: None,
                install_location: None,
                license: None,
                source_logo: None,
                files: Some(vec![f]),
            };
            check_bundle(&doc, &[file(&format!("{path}/f"), b"x")], None)
        };
        assert_eq!(deep(MAX_NESTING).unwrap().artifacts.len(), MAX_NESTING + 1);
        assert!(msg(deep(MAX_NESTING + 1).unwrap_err()).contains("nested more than"));
    }

    #[test]
    fn yaml_bombs_are_refused() {
        // Billion laughs: nine levels of nine aliases each.
        let mut y = String::from(
            "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
            ));
        }
        y.push_str("name: *a9\nversion: '1'\nfiles: []\n");
        let t = std::time::Instant::now();
        let e = msg(parse_bundle("bundle.yml", y.as_bytes()).unwrap_err());
        assert!(e.contains("repetition limit exceeded"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Behind an untagged enum (buffered before it is matched): refused the same way.
        let tpl = y.replace(
            "name: *a9\nversion: '1'\nfiles: []\n",
            "stack: {name: t, version: '1', os: {name: o, version: '1', arch: x, pkgs: *a9}}\n",
        );
        let e = msg(parse_template("template.yml", tpl.as_bytes()).unwrap_err());
        assert!(e.contains("repetition limit exceeded"), "{e}");
        // A field nobody reads is skipped without being expanded.
        let t = std::time::Instant::now();
        let y2 = y.replace("name: *a9", "name: b\nextra: *a9");
        assert!(parse_bundle("bundle.yml", y2.as_bytes()).is_ok());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        // Deep nesting.
        let deep = format!("name: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_bundle("bundle.yml", deep.as_bytes()).is_err());
        let deep = format!("{{\"name\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_bundle("bundle.json", deep.as_bytes()).is_err());
    }

    /// hammr's template archive: `template.yml`, bundle files under `bundles/`, boot scripts under
    /// `config/`, the logo under `logo/`.
    #[test]
    fn a_template_plans_os_bundles_boot_scripts_and_logo() {
        let yml = r#"---
stack:
  name: web
  version: '2'
  os:
    name: CentOS
    version: 7
    arch: x86_64
    profile: Minimal
    pkgs:
    - vim
    - name: nginx
      version: '1.20'
  bundles:
  - name: app
    version: '1.0'
    files:
    - name: run.sh
      source: bundles/app/1.0/run.sh
  config:
  - name: init.sh
    source: config/init.sh
    order: 2
    type: firstboot
  source_logo: logo/logo.png
"#;
        let members = vec![
            file("template.yml", yml.as_bytes()),
            file("bundles/app/1.0/run.sh", b"#!/bin/sh"),
            file("config/init.sh", b"echo"),
            file("logo/logo.png", b"\x89PNG"),
        ];
        let d = parse_template("template.yml", yml.as_bytes()).unwrap();
        let m = manifest_for(&members);
        let p = check_template(&d, &members, Some(&m)).unwrap();
        assert_eq!(p.os.version, "7");
        assert_eq!(p.os.pkgs[0].name, "vim");
        assert_eq!(p.os.pkgs[1].version.as_deref(), Some("1.20"));
        assert_eq!(
            p.bundles[0].artifacts[0].member.as_deref(),
            Some("bundles/app/1.0/run.sh")
        );
        assert_eq!(p.boot_scripts[0].order, Some(2));
        assert_eq!(p.boot_scripts[0].kind.as_deref(), Some("firstboot"));
        assert_eq!(p.boot_scripts[0].script.member, "config/init.sh");
        assert_eq!(p.logo.unwrap().name, "logo.png");
        // hammr's mandatory stack fields.
        for (drop, want) in [
            ("  name: web\n", "[stack.name]"),
            ("    arch: x86_64\n", "[stack.os.arch]"),
        ] {
            let d = parse_template("template.yml", yml.replacen(drop, "", 1).as_bytes()).unwrap();
            assert!(msg(check_template(&d, &members, None).unwrap_err()).contains(want));
        }
        let d = parse_template(
            "template.yml",
            yml.replace("order: 2", "order: soon").as_bytes(),
        )
        .unwrap();
        assert!(msg(check_template(&d, &members, None).unwrap_err()).contains("order"));
        let d = parse_template(
            "template.yml",
            yml.replace("config/init.sh", "config/gone.sh").as_bytes(),
        )
        .unwrap();
        assert!(msg(check_template(&d, &members, None).unwrap_err()).contains("config/gone.sh"));
        let d = parse_template("template.yml", b"{}").unwrap();
        assert!(msg(check_template(&d, &members, None).unwrap_err()).contains("[stack]"));
    }

    /// What Satchel exports, Satchel imports: `export::plan` written as the export job writes it
    /// (descriptor, manifest, members), read back by the archive reader, planned here.
    #[test]
    fn an_export_archive_imports_as_it_was() {
        use crate::export::plan;
        use crate::model::*;
        use satchel_archive::{reader, GzOptions, TarGzWriter};
        let content = |p: &str| format!("content of {p}\n").into_bytes();
        let blob = |name: &str| BlobRef {
            key: name.into(),
            size: 0,
            sha256: String::new(),
            md5: String::new(),
            uploaded: 0,
            crc32: None,
        };
        let art = |id: Id, parent: Option<Id>, name: &str, kind: &str| Artifact {
            id,
            bundle_id: 1,
            parent_id: parent,
            name: name.into(),
            kind: kind.into(),
            tag: None,
            install_location: (name == "x.cfg").then(|| "/etc".to_string()),
            blob: (kind == "file").then(|| blob(name)),
            created: 0,
            modified: 0,
        };
        let bundle = Bundle {
            id: 1,
            owner_id: 1,
            name: "caf\u{e9} app".into(),
            version: "2.0".into(),
            description: Some("d".into()),
            release: None,
            install_location: None,
            revision: 1,
            imported: false,
            created: 0,
            modified: 0,
        };
        let arts = vec![
            art(1, None, "run me.sh", "file"),
            art(2, None, "conf", "folder"),
            art(3, Some(2), "x.cfg", "file"),
            art(4, Some(2), "empty", "folder"),
        ];
        let logo = Attachment {
            id: 1,
            bundle_id: 1,
            kind: AttachmentKind::Logo,
            name: "logo.png".into(),
            blob: blob("logo.png"),
        };
        for format in [OutputFormat::Yaml, OutputFormat::Json] {
            let p = plan(&bundle, &arts, None, Some(&logo), format).unwrap();
            let mut manifest = vec![serde_json::json!({"path": p.doc_name, "size": p.doc.len(),
                "sha256": hex::encode(Sha256::digest(&p.doc))})];
            for m in p.members.iter().filter(|m| m.blob.is_some()) {
                let c = content(&m.path);
                manifest.push(serde_json::json!({"path": m.path, "size": c.len(),
                    "sha256": hex::encode(Sha256::digest(&c))}));
            }
            let manifest =
                serde_json::to_vec(&serde_json::json!({"format": "satchel-bundle-export/1",
                "files": manifest}))
                .unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let archive = rt.block_on(async {
                let mut w = TarGzWriter::new(Vec::new(), GzOptions::default());
                w.add_bytes(p.doc_name, &p.doc, 0).await.unwrap();
                w.add_bytes("manifest.json", &manifest, 0).await.unwrap();
                for m in &p.members {
                    match m.blob {
                        None => w.add_dir(&m.path, 0).await.unwrap(),
                        Some(_) => w.add_bytes(&m.path, &content(&m.path), 0).await.unwrap(),
                    }
                }
                w.finish().await.unwrap().sink
            });
            let summary = reader::read_archive(&archive[..], &reader::Limits::default(), |_, r| {
                std::io::copy(r, &mut std::io::sink())
                    .map(drop)
                    .map_err(|e| reader::ReadError::new(None, reader::Rule::Io, e.to_string()))
            })
            .unwrap();
            let ImportPlan::Bundle(b) = plan_import(&summary).unwrap() else {
                panic!("a bundle")
            };
            assert_eq!(
                (b.name.as_str(), b.version.as_str()),
                ("caf\u{e9} app", "2.0")
            );
            assert_eq!(b.description.as_deref(), Some("d"));
            let got: Vec<_> = b
                .artifacts
                .iter()
                .map(|a| {
                    (
                        a.name.as_str(),
                        a.kind,
                        a.parent,
                        a.install_location.as_deref(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("run me.sh", ArtifactKind::File, None, None),
                    ("conf", ArtifactKind::Folder, None, None),
                    ("x.cfg", ArtifactKind::File, Some(1), Some("/etc")),
                    ("empty", ArtifactKind::Folder, Some(1), None),
                ]
            );
            assert_eq!(
                b.artifacts[0].size,
                content("bundles/caf\u{e9} app/2.0/run me.sh").len() as u64
            );
            assert_eq!(b.logo.unwrap().member, "bundles/caf\u{e9} app/logo.png");
        }
    }

    /// What hammr 3.8.13 uploads (the reader's corpus file, built by Python's tarfile as hammr does).
    #[test]
    fn a_hammr_archive_imports() {
        use satchel_archive::reader;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../archive/tests/corpus/hammr-bundle.tar.gz"
        );
        let data = std::fs::read(path).unwrap();
        let summary = reader::read_archive(&data[..], &reader::Limits::default(), |_, r| {
            std::io::copy(r, &mut std::io::sink())
                .map(drop)
                .map_err(|e| reader::ReadError::new(None, reader::Rule::Io, e.to_string()))
        })
        .unwrap();
        let ImportPlan::Bundle(b) = plan_import(&summary).unwrap() else {
            panic!("a bundle")
        };
        let got: Vec<_> = b
            .artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.kind, a.parent))
            .collect();
        assert_eq!(
            got,
            [
                ("run.sh", ArtifactKind::File, None),
                ("conf", ArtifactKind::Folder, None),
                ("a.cfg", ArtifactKind::File, Some(1)),
                ("sub", ArtifactKind::Folder, Some(1)),
                ("b.cfg", ArtifactKind::File, Some(3)),
            ]
        );
        assert_eq!(b.license.unwrap().member, "bundles/my app/LICENSE");
    }
}
