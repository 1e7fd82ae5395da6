//! Appliance templates: what an appliance holds (the owner's bundles, by reference and in order; one
//! OS profile with its package list; boot scripts whose bodies are blobs), its handle
//! [`OwnedAppliance`] and the operations the faces call. Ownership is decided once, by
//! [`Satchel::appliance`]; another user's appliance answers like a missing one, and a bundle of
//! another user cannot be attached (NotFound, as if it did not exist). Nothing here builds images:
//! an appliance is metadata plus boot script bodies.

use crate::model::*;
use crate::names;
use crate::service::Satchel;
use crate::{DomainError, Result};
use bytes::Bytes;
use futures::Stream;

/// An appliance template's own row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    pub id: Id,
    pub owner_id: Id,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub distribution: Option<DistributionRef>,
    /// Made by `hammr template import` (an import with `imported=true`).
    pub imported: bool,
    pub created: Millis,
    pub modified: Millis,
}

/// A new appliance: name and version are required (NFC, validated by the domain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAppliance {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub distribution: Option<DistributionRef>,
    /// Set by template imports with `imported=true`.
    pub imported: bool,
}

/// A change to an appliance: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ApplianceInput {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub distribution: Option<DistributionRef>,
}

/// The appliance's OS profile (one at most): its name, e.g. `Minimal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsProfile {
    pub id: Id,
    pub appliance_id: Id,
    pub name: String,
    pub created: Millis,
    pub modified: Millis,
}

/// A package of an OS profile, in the profile's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsPackage {
    pub name: String,
    pub version: Option<String>,
    pub arch: Option<String>,
}

/// When a boot script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootType {
    FirstBoot,
    EveryBoot,
}

impl BootType {
    pub fn as_str(self) -> &'static str {
        match self {
            BootType::FirstBoot => "firstboot",
            BootType::EveryBoot => "everyboot",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firstboot" => Some(BootType::FirstBoot),
            "everyboot" => Some(BootType::EveryBoot),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootScript {
    pub id: Id,
    pub appliance_id: Id,
    pub name: String,
    pub order: i64,
    pub kind: BootType,
    /// The script body; None until uploaded.
    pub blob: Option<BlobRef>,
    pub created: Millis,
    pub modified: Millis,
}

/// A boot script's row as created (its body is uploaded afterwards, or given in
/// [`NewApplianceParts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBootScript {
    pub name: String,
    pub order: i64,
    pub kind: BootType,
}

/// A change to a boot script: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct BootScriptInput {
    pub name: Option<String>,
    pub order: Option<i64>,
    pub kind: Option<BootType>,
}

/// Everything an appliance is, read in one consistent snapshot (`ApplianceStore::appliance_parts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceParts {
    pub appliance: Appliance,
    /// Its bundles, in the appliance's order.
    pub bundles: Vec<Bundle>,
    pub os_profile: Option<OsProfile>,
    /// The profile's packages (empty without a profile).
    pub packages: Vec<OsPackage>,
    /// By boot order, then id.
    pub boot_scripts: Vec<BootScript>,
}

/// The OS profile of a new appliance, with its packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOsProfile {
    pub name: String,
    pub packages: Vec<OsPackage>,
}

/// A whole appliance written at once (`ApplianceStore::create_appliance_with_parts`): the bundles
/// are existing bundle ids of the owner, the boot scripts' bodies are already uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplianceParts {
    pub appliance: NewAppliance,
    pub bundles: Vec<Id>,
    pub os_profile: Option<NewOsProfile>,
    pub boot_scripts: Vec<(NewBootScript, BlobRef)>,
}

/// An appliance the caller may see, resolved once by [`Satchel::appliance`]. Only the domain makes one.
#[derive(Debug, Clone)]
pub struct OwnedAppliance {
    pub(crate) owner: Owner,
    pub(crate) appliance: Appliance,
}

impl OwnedAppliance {
    pub fn appliance(&self) -> &Appliance {
        &self.appliance
    }
    pub fn owner(&self) -> &User {
        &self.owner.user
    }
}

/// The OS profile name when a request names none (UForge's smallest profile).
pub const DEFAULT_OS_PROFILE: &str = "Minimal";

fn not_found(aid: Id) -> DomainError {
    DomainError::not_found(format!("appliance {aid}"))
}

fn validate_distribution(d: &Option<DistributionRef>) -> Result<()> {
    if let Some(d) = d {
        names::validate_label("distribution name", &d.name)?;
        for (what, v) in [
            ("distribution version", &d.version),
            ("distribution arch", &d.arch),
        ] {
            if v.len() > 255 {
                return Err(DomainError::Invalid(format!(
                    "{what} is longer than 255 bytes"
                )));
            }
        }
    }
    Ok(())
}

impl NewAppliance {
    /// Name and version in NFC, validated like a bundle's.
    pub fn checked(self) -> Result<Self> {
        let a = NewAppliance {
            name: names::nfc(&self.name),
            version: names::nfc(&self.version),
            ..self
        };
        names::validate_label("name", &a.name)?;
        names::validate_label("version", &a.version)?;
        validate_distribution(&a.distribution)?;
        Ok(a)
    }
}

impl ApplianceInput {
    fn checked(self) -> Result<Self> {
        let a = ApplianceInput {
            name: self.name.as_deref().map(names::nfc),
            version: self.version.as_deref().map(names::nfc),
            ..self
        };
        if let Some(n) = &a.name {
            names::validate_label("name", n)?;
        }
        if let Some(v) = &a.version {
            names::validate_label("version", v)?;
        }
        validate_distribution(&a.distribution)?;
        Ok(a)
    }
}

fn check_packages(pkgs: Vec<OsPackage>) -> Result<Vec<OsPackage>> {
    pkgs.into_iter()
        .map(|p| {
            let p = OsPackage {
                name: names::nfc(&p.name),
                ..p
            };
            names::validate_label("package name", &p.name)?;
            Ok(p)
        })
        .collect()
}

impl NewBootScript {
    /// The name is a file name (the body is downloaded under it), in NFC.
    pub fn checked(self) -> Result<Self> {
        let name = names::nfc(&self.name);
        names::validate_file_name(&name)?;
        Ok(NewBootScript { name, ..self })
    }
}

impl NewApplianceParts {
    /// Every name in NFC and validated, as the single-part operations do.
    pub fn checked(self) -> Result<Self> {
        Ok(NewApplianceParts {
            appliance: self.appliance.checked()?,
            bundles: self.bundles,
            os_profile: match self.os_profile {
                Some(p) => {
                    names::validate_label("osProfile name", &p.name)?;
                    Some(NewOsProfile {
                        name: p.name,
                        packages: check_packages(p.packages)?,
                    })
                }
                None => None,
            },
            boot_scripts: self
                .boot_scripts
                .into_iter()
                .map(|(s, b)| Ok((s.checked()?, b)))
                .collect::<Result<_>>()?,
        })
    }
}

impl Satchel {
    /// Resolves an appliance of the user the URL names.
    pub async fn appliance(&self, who: &Principal, uid: &str, aid: Id) -> Result<OwnedAppliance> {
        let owner = self.owner(who, uid).await?;
        let appliance = self
            .store
            .get_appliance(owner.user.id, aid)
            .await?
            .ok_or_else(|| not_found(aid))?;
        Ok(OwnedAppliance { owner, appliance })
    }

    /// The user's appliances with everything their documents show.
    pub async fn list_appliances(&self, who: &Principal, uid: &str) -> Result<Vec<ApplianceParts>> {
        let owner = self.target(who, uid).await?;
        let list = self.store.list_appliances(owner.id).await?;
        let mut out = Vec::with_capacity(list.len());
        for a in list {
            // Deleted meanwhile: it is simply not listed.
            if let Some(p) = self.store.appliance_parts(owner.id, a.id).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// One appliance with its bundles, OS profile, packages and boot scripts.
    pub async fn appliance_parts(&self, a: &OwnedAppliance) -> Result<ApplianceParts> {
        let aid = a.appliance.id;
        self.store
            .appliance_parts(a.owner().id, aid)
            .await?
            .ok_or_else(|| not_found(aid))
    }

    /// Creates an appliance; `bundles` (ids of the owner's bundles, in order) are attached and
    /// `os_profile` set in the same transaction.
    pub async fn create_appliance(
        &self,
        owner: &Owner,
        new: NewAppliance,
        bundles: Vec<Id>,
        os_profile: Option<String>,
    ) -> Result<ApplianceParts> {
        self.require(&owner.who, ENT_SOFTWARE_UPLOAD)?;
        let parts = NewApplianceParts {
            appliance: new,
            bundles,
            os_profile: os_profile.map(|name| NewOsProfile {
                name,
                packages: Vec::new(),
            }),
            boot_scripts: Vec::new(),
        }
        .checked()?;
        let (a, _) = self
            .store
            .create_appliance_with_parts(owner.user.id, &parts, None)
            .await?;
        self.store
            .appliance_parts(owner.user.id, a.id)
            .await?
            .ok_or_else(|| not_found(a.id))
    }

    /// Changes the appliance's fields; `bundles`, when given, replaces its bundle list.
    pub async fn update_appliance(
        &self,
        a: &OwnedAppliance,
        input: ApplianceInput,
        bundles: Option<Vec<Id>>,
    ) -> Result<ApplianceParts> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let (owner, aid) = (a.owner().id, a.appliance.id);
        let input = input.checked()?;
        self.store
            .update_appliance(owner, aid, &input)
            .await?
            .ok_or_else(|| not_found(aid))?;
        if let Some(b) = bundles {
            self.store.set_appliance_bundles(owner, aid, &b).await?;
        }
        self.appliance_parts(a).await
    }

    /// Deletes the appliance with its profile and boot scripts (and their bodies); its bundles stay.
    pub async fn delete_appliance(&self, who: &Principal, uid: &str, aid: Id) -> Result<()> {
        let a = self.appliance(who, uid, aid).await?;
        self.require(who, ENT_SOFTWARE_UPLOAD)?;
        let keys = self
            .store
            .delete_appliance(a.owner().id, aid)
            .await?
            .ok_or_else(|| not_found(aid))?;
        self.delete_blobs(keys).await;
        Ok(())
    }

    // ------------------------------------------------------------ bundles of an appliance

    pub async fn appliance_bundles(&self, a: &OwnedAppliance) -> Result<Vec<BundleView>> {
        let mut out = Vec::new();
        for b in self.appliance_parts(a).await?.bundles {
            out.push(self.view(b).await?);
        }
        Ok(out)
    }

    /// Attaches one of the owner's bundles at the end of the list (already attached: unchanged).
    pub async fn attach_bundle(&self, a: &OwnedAppliance, msid: Id) -> Result<()> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        self.store
            .attach_bundle(a.owner().id, a.appliance.id, msid)
            .await
    }

    /// Detaches a bundle (the bundle itself stays).
    pub async fn detach_bundle(&self, a: &OwnedAppliance, msid: Id) -> Result<()> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        if self.store.detach_bundle(a.appliance.id, msid).await? {
            Ok(())
        } else {
            Err(DomainError::not_found(format!(
                "mySoftware {msid} of appliance {}",
                a.appliance.id
            )))
        }
    }

    // ------------------------------------------------------------ OS profile

    /// The appliance's OS profile, if `osid` is its id.
    pub async fn os_profile(&self, a: &OwnedAppliance, osid: Id) -> Result<OsProfile> {
        match self.store.get_os_profile(a.appliance.id).await? {
            Some(p) if p.id == osid => Ok(p),
            _ => Err(DomainError::not_found(format!(
                "osProfile {osid} of appliance {}",
                a.appliance.id
            ))),
        }
    }

    /// Sets (creates or renames) the appliance's OS profile; its packages stay.
    pub async fn set_os_profile(
        &self,
        a: &OwnedAppliance,
        name: Option<String>,
    ) -> Result<OsProfile> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let name = name.unwrap_or_else(|| DEFAULT_OS_PROFILE.to_string());
        names::validate_label("osProfile name", &name)?;
        self.store.set_os_profile(a.appliance.id, &name).await
    }

    pub async fn delete_os_profile(&self, a: &OwnedAppliance, osid: Id) -> Result<()> {
        self.os_profile(a, osid).await?;
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        self.store.delete_os_profile(a.appliance.id).await?;
        Ok(())
    }

    pub async fn os_packages(
        &self,
        a: &OwnedAppliance,
        osid: Id,
    ) -> Result<(OsProfile, Vec<OsPackage>)> {
        let p = self.os_profile(a, osid).await?;
        let pkgs = self.store.list_os_packages(p.id).await?;
        Ok((p, pkgs))
    }

    /// Replaces the profile's package list.
    pub async fn set_os_packages(
        &self,
        a: &OwnedAppliance,
        osid: Id,
        pkgs: Vec<OsPackage>,
    ) -> Result<(OsProfile, Vec<OsPackage>)> {
        let p = self.os_profile(a, osid).await?;
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let pkgs = check_packages(pkgs)?;
        self.store.set_os_packages(p.id, &pkgs).await?;
        Ok((p, pkgs))
    }

    // ------------------------------------------------------------ boot scripts

    pub async fn boot_scripts(&self, a: &OwnedAppliance) -> Result<Vec<BootScript>> {
        self.store.list_boot_scripts(a.appliance.id).await
    }

    pub async fn boot_script(&self, a: &OwnedAppliance, bsid: Id) -> Result<BootScript> {
        self.store
            .get_boot_script(a.appliance.id, bsid)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("bootScript {bsid} of appliance {}", a.appliance.id))
            })
    }

    pub async fn create_boot_script(
        &self,
        a: &OwnedAppliance,
        new: NewBootScript,
    ) -> Result<BootScript> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let new = new.checked()?;
        self.store.create_boot_script(a.appliance.id, &new).await
    }

    pub async fn update_boot_script(
        &self,
        a: &OwnedAppliance,
        bsid: Id,
        input: BootScriptInput,
    ) -> Result<BootScript> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let input = BootScriptInput {
            name: input.name.as_deref().map(names::nfc),
            ..input
        };
        if let Some(n) = &input.name {
            names::validate_file_name(n)?;
        }
        self.store
            .update_boot_script(a.appliance.id, bsid, &input)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("bootScript {bsid} of appliance {}", a.appliance.id))
            })
    }

    pub async fn delete_boot_script(&self, a: &OwnedAppliance, bsid: Id) -> Result<()> {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        let key = self
            .store
            .delete_boot_script(a.appliance.id, bsid)
            .await?
            .ok_or_else(|| {
                DomainError::not_found(format!("bootScript {bsid} of appliance {}", a.appliance.id))
            })?;
        self.delete_blobs(key.into_iter().collect()).await;
        Ok(())
    }

    /// Streams a script body into blob storage (within the owner's byte quota), then points the
    /// boot script at it; the previous body is deleted after the switch.
    pub async fn upload_boot_script<S, E>(
        &self,
        a: &OwnedAppliance,
        bsid: Id,
        file_name: &str,
        body: S,
    ) -> Result<BootScript>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.require(&a.owner.who, ENT_SOFTWARE_UPLOAD)?;
        names::validate_file_name(file_name)?;
        // 404 before the body is stored.
        self.boot_script(a, bsid).await?;
        let blob = self.store_upload(a.owner().id, body).await?;
        match self
            .store
            .set_boot_script_blob(a.appliance.id, bsid, &blob)
            .await
        {
            Ok(Some(old)) => {
                self.delete_blobs(old.into_iter().collect()).await;
                self.boot_script(a, bsid).await
            }
            Ok(None) => {
                self.delete_blobs(vec![blob.key]).await;
                Err(DomainError::not_found(format!(
                    "bootScript {bsid} of appliance {}",
                    a.appliance.id
                )))
            }
            Err(e) => {
                self.delete_blobs(vec![blob.key]).await;
                Err(e)
            }
        }
    }

    /// A boot script's body, as the URL names it (by the script's name when the URL has one).
    pub async fn boot_script_body(
        &self,
        a: &OwnedAppliance,
        bsid: Id,
        file_name: Option<&str>,
    ) -> Result<(BootScript, BlobRef)> {
        let s = self.boot_script(a, bsid).await?;
        if let Some(f) = file_name {
            names::validate_file_name(f)?;
            if !names::same_name(f, &s.name) {
                return Err(DomainError::not_found(format!(
                    "file {f} of bootScript {bsid}"
                )));
            }
        }
        let blob = s
            .blob
            .clone()
            .ok_or_else(|| DomainError::not_found(format!("file of bootScript {bsid}")))?;
        Ok((s, blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(name: &str, script: &str, pkg: &str) -> NewApplianceParts {
        NewApplianceParts {
            appliance: NewAppliance {
                name: name.into(),
                version: "1-cafe\u{301}".into(),
                ..Default::default()
            },
            bundles: vec![1, 2],
            os_profile: Some(NewOsProfile {
                name: DEFAULT_OS_PROFILE.into(),
                packages: vec![OsPackage {
                    name: pkg.into(),
                    ..Default::default()
                }],
            }),
            boot_scripts: vec![(
                NewBootScript {
                    name: script.into(),
                    order: 1,
                    kind: BootType::FirstBoot,
                },
                BlobRef {
                    key: "k".into(),
                    size: 1,
                    sha256: String::new(),
                    md5: String::new(),
                    uploaded: 0,
                    crc32: None,
                },
            )],
        }
    }

    #[test]
    fn names_enter_as_nfc() {
        let p = parts("cafe\u{301}", "run-e\u{301}.sh", "pa\u{301}ckage")
            .checked()
            .unwrap();
        assert_eq!(p.appliance.name, "caf\u{e9}");
        assert_eq!(p.appliance.version, "1-caf\u{e9}");
        assert_eq!(p.boot_scripts[0].0.name, "run-\u{e9}.sh");
        assert_eq!(
            p.os_profile.map(|o| o.packages[0].name.clone()),
            Some("p\u{e1}ckage".to_string())
        );
        assert_eq!(p.bundles, [1, 2]);
    }

    #[test]
    fn bad_names_are_refused() {
        for p in [
            parts(" ", "a.sh", "vim"),
            parts("web", "../a.sh", "vim"),
            parts("web", "a.sh", ""),
        ] {
            assert!(matches!(p.checked(), Err(DomainError::Invalid(_))));
        }
    }

    #[test]
    fn boot_types() {
        for t in [BootType::FirstBoot, BootType::EveryBoot] {
            assert_eq!(BootType::parse(t.as_str()), Some(t));
        }
        assert_eq!(BootType::parse("sometimes"), None);
    }
}
