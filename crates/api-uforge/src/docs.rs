//! UForge documents as the SDK's schema has them (uforge-python-sdk 3.8.13, `uforge/objects/uforge.py`).
//! Field order is the schema's xs:sequence order, base type first (`created, dbId, digest,
//! lastModified`); optional fields are omitted when unset. The same structs render JSON.

use serde::{Deserialize, Serialize};

pub const NS: &str = "http://www.usharesoft.com/uforge";
pub const SDK_VERSION: &str = "3.8.13";

pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub alive: bool,
    pub version: String,
}

#[derive(Serialize, Default)]
pub struct LocalizedMessage {
    pub message: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UForgeError {
    pub localized_error_msg: LocalizedMessage,
    pub request_method: String,
    pub request_uri: String,
    pub status_code: u16,
    pub timestamp: String,
}

#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct OpStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    pub bytes_loaded: i64,
    pub bytes_total: i64,
    pub cancelled: bool,
    pub complete: bool,
    pub detailed_error: bool,
    pub error: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_uri: Option<String>,
    pub percentage: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareBundleExport {
    pub created: String,
    pub db_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub last_modified: String,
    pub bundle_name: String,
    pub bundle_version: String,
    pub download_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub parent_uri: String,
    pub status: OpStatus,
    pub uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceExport {
    pub created: String,
    pub db_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub last_modified: String,
    pub appliance_name: String,
    pub appliance_version: String,
    pub download_uri: String,
    pub downloaded: bool,
    pub parent_uri: String,
    pub status: OpStatus,
    pub uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareBundleExports {
    pub total: i64,
    pub software_bundle_exports: SoftwareBundleExportItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareBundleExportItems {
    pub software_bundle_export: Vec<SoftwareBundleExport>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceExports {
    pub total: i64,
    pub appliance_exports: ApplianceExportItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceExportItems {
    pub appliance_export: Vec<ApplianceExport>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct OpStatuses {
    pub total: i64,
    pub statuses: StatusItems,
}

#[derive(Serialize, Default)]
pub struct StatusItems {
    pub status: Vec<OpStatus>,
}

/// Fields of UForgeUploadObject, which License and Logo are (SoftwareArtifact shares them with
/// optional digests); the document's root element names which one it is.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadObject {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub md5sum: String,
    pub sha256sum: String,
    pub size: i64,
    pub uploaded: bool,
    pub uploaded_time: String,
    pub name: String,
    pub parent_uri: String,
    pub uri: String,
}

pub type License = UploadObject;
pub type Logo = UploadObject;

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareArtifact {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5sum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sum: Option<String>,
    pub size: i64,
    pub uploaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_time: Option<String>,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_uri: Option<String>,
    pub parent_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_location: Option<String>,
    pub name: String,
    pub full_name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareArtifacts {
    pub total: i64,
    pub software_artifacts: ArtifactItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactItems {
    pub software_artifact: Vec<SoftwareArtifact>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MySoftware {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_location: Option<String>,
    pub size: i64,
    pub revision: i64,
    pub artifacts_uri: String,
    pub uri: String,
    pub export_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<License>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo: Option<Logo>,
    pub clone_uri: String,
    pub imported: bool,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MySoftwareList {
    pub total: i64,
    pub my_software_list: MySoftwareItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct MySoftwareItems {
    pub my_software: Vec<MySoftware>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub created: String,
    pub db_id: i64,
    pub login_name: String,
    pub active: bool,
    pub admin: bool,
    pub base_exports_uri: String,
    pub base_my_software_library_uri: String,
    pub uri: String,
}

// ------------------------------------------------------------------ request bodies (lenient: unknown fields ignored)

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct MySoftwareIn {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub release: Option<String>,
    pub install_location: Option<String>,
    pub restricted: Option<bool>,
    pub revision: Option<i64>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct SoftwareArtifactIn {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub tag: Option<String>,
    pub install_location: Option<String>,
    pub extract: Option<bool>,
    pub install: Option<bool>,
    pub size: Option<i64>,
}

// ------------------------------------------------------------------ container templates and images

/// Distribution: only what a container template records (`arch`, `name`, `version`, in the
/// schema's order; `name` and `arch` are schema enumerations).
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct Distribution {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `distribution` as `GET /distributions[/{id}]` answers it: a registered base. UForgeObject's
/// fields, then the schema's sequence (`active, arch, ..., description, ..., name, ..., size, ...,
/// uri, version, ..., visible`); `name` and `arch` are the schema's spellings where it has them.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredDistribution {
    pub created: String,
    pub db_id: i64,
    pub digest: String,
    pub last_modified: String,
    pub active: bool,
    pub arch: String,
    pub description: String,
    pub name: String,
    pub size: i64,
    pub uri: String,
    pub version: String,
    pub visible: bool,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Distributions {
    pub total: i64,
    pub distributions: DistributionItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DistributionItems {
    pub distribution: Vec<RegisteredDistribution>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplate {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    pub images_uri: String,
    pub formats_uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplates {
    pub total: i64,
    pub container_templates: ContainerTemplateItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerTemplateItems {
    pub container_template: Vec<ContainerTemplate>,
}

#[derive(Serialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ImageFormat {
    pub access: bool,
    pub active: bool,
    pub name: String,
    pub preselected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageFormats {
    pub total: i64,
    pub image_formats: ImageFormatItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageFormatItems {
    pub image_format: Vec<ImageFormat>,
}

/// `image`: UForgeObject, then UForgeUploadObject, then Image's own fields, each in schema order.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub created: String,
    pub db_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub last_modified: String,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sum: Option<String>,
    pub size: i64,
    pub status: OpStatus,
    pub uploaded: bool,
    pub parent_uri: String,
    pub compress: bool,
    /// The registered base the image is built on (absent: the bundle's files only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_uri: Option<String>,
    pub file_extension: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub file_size: i64,
    pub format: ImageFormat,
    pub target_format: TargetFormat,
    pub image_created: bool,
    pub name: String,
    pub status_uri: String,
    pub uri: String,
    pub version: String,
    /// hammr's `image info` prints it (`.replace`), so it is always there, empty when unset.
    pub entrypoint: String,
    /// `<host>/<login>/<name>:<version>`: what `docker pull` takes once published (a complete
    /// image says the name it is, or would be, published under).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registering_name: Option<String>,
}

/// What hammr reads of an image's target (`targetFormat.name`, `targetFormat.format.name`).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetFormat {
    pub name: String,
    pub format: ImageFormat,
    #[serde(rename = "type")]
    pub kind: String,
    pub access: bool,
    pub active: bool,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    pub total: i64,
    pub images: ImageItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageItems {
    pub image: Vec<Image>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerTemplateIn {
    pub distribution: Option<Distribution>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageFormatIn {
    pub name: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageIn {
    pub name: Option<String>,
    pub compress: Option<bool>,
    pub format: Option<ImageFormatIn>,
    pub target_format: Option<ImageFormatIn>,
}

// ------------------------------------------------------------------ API key pairs

/// `apiKeyPair` (APIKeyPair): UForgeObject's fields, then `name, description, publicKey, secretKey,
/// uri`. `secretKey` only in the answer that created the pair; `lastModified` is the pair's last
/// use (absent while unused: the schema has no other place for it).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPair {
    pub created: String,
    pub db_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    pub uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPairs {
    pub total: i64,
    pub api_key_pairs: ApiKeyPairItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyPairItems {
    pub api_key_pair: Vec<ApiKeyPair>,
}

/// What a creation request may say; keys and ids are the server's to choose.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiKeyPairIn {
    pub name: Option<String>,
    pub description: Option<String>,
}

// ------------------------------------------------------------------ appliance templates

/// `UriList`: a list of `uri` children (`imageUris`, `mySoftwareUris`, `bootScriptUris`...).
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct UriList {
    pub uri: Vec<String>,
}

/// `appliance`: UForgeObject's fields, then Appliance's, in schema order. `imageUris` is always
/// present (hammr's `template delete` counts it); `nbUpdates`, `imported`, `shared` too (hammr's
/// `template list` shows them).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Appliance {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub arch_name: String,
    pub base_my_software_uri: String,
    pub base_os_profile_uri: String,
    pub boot_scripts_uri: String,
    pub boot_script_uris: UriList,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub distribution_name: String,
    pub exports_uri: String,
    pub image_uris: UriList,
    pub imported: bool,
    pub my_software_uris: UriList,
    pub name: String,
    pub nb_security_updates: i64,
    pub nb_updates: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_profile_uri: Option<String>,
    pub shared: bool,
    pub uri: String,
    pub version: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Appliances {
    pub total: i64,
    pub appliances: ApplianceItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceItems {
    pub appliance: Vec<Appliance>,
}

/// `linuxProfile` (LinuxProfile, a DistribProfile): the appliance's OS profile.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LinuxProfile {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub active: bool,
    pub appliance_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub name: String,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub packages_uri: String,
}

/// `pkg` (Pkg): what an OS profile's package list records.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pkg {
    pub size: i64,
    pub uploaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `packages` (PkgList).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Packages {
    pub pkgs: PkgItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PkgItems {
    pub pkg: Vec<Pkg>,
}

/// `bootScript` (BootScript, a SoftwareArtifact): the body's digests once uploaded.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BootScript {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5sum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sum: Option<String>,
    pub size: i64,
    pub uploaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_time: Option<String>,
    pub uri: String,
    pub binary_uri: String,
    pub parent_uri: String,
    pub name: String,
    pub full_name: String,
    pub boot_order: i64,
    pub boot_type: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BootScripts {
    pub total: i64,
    pub boot_scripts: BootScriptItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BootScriptItems {
    pub boot_script: Vec<BootScript>,
}

/// A bundle named in an appliance document: by `dbId`, or by its `uri` (`.../mysoftware/{id}`).
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct MySoftwareRef {
    pub db_id: Option<i64>,
    pub uri: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct MySoftwareRefs {
    pub my_software: Vec<MySoftwareRef>,
}

/// The name of an OS profile, embedded in an appliance or posted alone.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct OsProfileIn {
    pub name: Option<String>,
}

/// What an appliance request may say. The distribution is `distributionName` (e.g. `CentOS 7`)
/// with `archName`, or a `distribution` element as container templates take it; the bundles are
/// `mySoftwareList` or `mySoftwareUris` (either replaces the appliance's list).
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ApplianceIn {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub distribution_name: Option<String>,
    pub arch_name: Option<String>,
    pub distribution: Option<Distribution>,
    pub os_profile: Option<OsProfileIn>,
    pub my_software_list: Option<MySoftwareRefs>,
    pub my_software_uris: Option<UriList>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct PkgIn {
    pub name: Option<String>,
    pub version: Option<String>,
    pub arch: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct PkgItemsIn {
    pub pkg: Vec<PkgIn>,
}

/// `packages` as a request: the profile's whole new list.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct PackagesIn {
    pub pkgs: Option<PkgItemsIn>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct BootScriptIn {
    pub name: Option<String>,
    pub boot_order: Option<i64>,
    pub boot_type: Option<String>,
}

/// `softwareBundleImport` (an UForgeUploadObject): the import ticket of a bundle archive.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareBundleImport {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    pub status: OpStatus,
    pub uploaded: bool,
    pub parent_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_uri: Option<String>,
    pub upload_uri: String,
    pub status_uri: String,
    pub imported: bool,
    pub uri: String,
}

/// `applianceImport` (an UForgeUploadObject): the import ticket of a template archive.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceImport {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256sum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    pub status: OpStatus,
    pub uploaded: bool,
    pub use_major: bool,
    pub reuse_bundles: bool,
    #[serde(rename = "force_rw")]
    pub force_rw: bool,
    pub imported: bool,
    pub parent_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_uri: Option<String>,
    pub upload_uri: String,
    pub uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceImports {
    pub total: i64,
    pub appliance_imports: ApplianceImportItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplianceImportItems {
    pub appliance_import: Vec<ApplianceImport>,
}

/// `takeout`: a Satchel ticket with no UForge counterpart (UForge has the seed-002 steps by hand).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Takeout {
    pub created: String,
    pub db_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub last_modified: String,
    pub format: String,
    pub include: Vec<String>,
    pub download_uri: String,
    pub status: OpStatus,
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The webhook signing secret, only in the `201` of the takeout that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_secret: Option<String>,
}

/// `notifySecret`: a user's new takeout webhook signing secret (shown once).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct NotifySecret {
    pub secret: String,
    pub signature_header: String,
    pub uri: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Takeouts {
    pub total: i64,
    pub takeouts: TakeoutItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TakeoutItems {
    pub takeout: Vec<Takeout>,
}

/// `takeoutEstimate`: what a takeout would hold now.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TakeoutEstimate {
    pub include: Vec<String>,
    pub items: i64,
    pub bytes: i64,
}

/// `downloadId`: a one-time download id for a ticket's archive, and the URI that spends it.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DownloadId {
    pub download_id: String,
    pub uri: String,
}

// ------------------------------------------------------------------ cloud accounts

/// `targetPlatform` in the user's list: UForgeObject's `dbId`, then TargetPlatform's fields in
/// schema order.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlatform {
    pub db_id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub access: bool,
    pub active: bool,
    pub uri: String,
}

/// `targetPlatforms`: what `Users(u).Targetplatforms.Getall()` reads (`.targetPlatforms.targetPlatform`).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlatforms {
    pub target_platforms: TargetPlatformItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlatformItems {
    pub target_platform: Vec<TargetPlatform>,
}

/// `targetPlatform` as an account shows it: its name and platform type.
#[derive(Serialize, Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase", default)]
pub struct TargetPlatformRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `certificate` inside an account: UForgeObject's and UForgeUploadObject's fields, then
/// Certificate's, in schema order. `content` (base64) only when revealed (hence no `Debug`).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDoc {
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub size: i64,
    pub uploaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub name: String,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub uri: String,
}

#[derive(Serialize, Default)]
pub struct CertificateItems {
    pub certificate: Vec<CertificateDoc>,
}

/// `credAccount` of any subtype. Its fields differ per subtype, so it serialises as a map in the
/// schema's order (base type, `CredAccountCert`'s certificates, then the subtype's own); in XML it
/// carries `xsi:type` (declared on the element itself, so it also holds inside `credAccounts`),
/// in JSON a `type` member. Not `Debug`: a revealed document holds secrets in the clear.
pub struct CredAccountDoc {
    pub xml: bool,
    pub xsi_type: &'static str,
    pub created: String,
    pub db_id: i64,
    pub last_modified: String,
    pub name: String,
    pub uri: String,
    pub target_platform: TargetPlatformRef,
    pub certificates: Option<CertificateItems>,
    /// (field, value) in schema order. Revealed secrets are here only for the owner's `reveal`.
    pub values: Vec<(&'static str, String)>,
}

pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

impl Serialize for CredAccountDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if self.xml {
            m.serialize_entry("@xmlns:xsi", XSI)?;
            m.serialize_entry("@xsi:type", &format!("ns0:{}", self.xsi_type))?;
        } else {
            m.serialize_entry("type", self.xsi_type)?;
        }
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("dbId", &self.db_id)?;
        m.serialize_entry("lastModified", &self.last_modified)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("uri", &self.uri)?;
        m.serialize_entry("targetPlatform", &self.target_platform)?;
        if let Some(c) = &self.certificates {
            if !c.certificate.is_empty() {
                m.serialize_entry("certificates", c)?;
            }
        }
        for (k, v) in &self.values {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredAccounts {
    pub total: i64,
    pub cred_accounts: CredAccountItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CredAccountItems {
    pub cred_account: Vec<CredAccountDoc>,
}

/// A certificate in a request (`content` is base64, as the schema's base64Binary).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CertificateIn {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub content: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CertificateInItems {
    pub certificate: Vec<CertificateIn>,
}

/// What a `credAccount` request may carry: every field of every subtype (which ones count is the
/// subtype's, decided by the domain). Not `Debug`: it holds secrets in the clear.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct CredAccountIn {
    /// `xsi:type` in XML (`ns1:CredAccountAws`), `type` in JSON.
    #[serde(rename = "@xsi:type", alias = "@type", alias = "type")]
    pub xsi_type: Option<String>,
    pub name: Option<String>,
    pub target_platform: Option<TargetPlatformRef>,
    pub certificates: Option<CertificateInItems>,
    #[serde(rename = "accessKeyId", deserialize_with = "text_or_number")]
    pub access_key_id: Option<String>,
    #[serde(rename = "accountNumber", deserialize_with = "text_or_number")]
    pub account_number: Option<String>,
    #[serde(rename = "keyPairName", deserialize_with = "text_or_number")]
    pub key_pair_name: Option<String>,
    #[serde(rename = "secretAccessKeyId", deserialize_with = "text_or_number")]
    pub secret_access_key_id: Option<String>,
    #[serde(rename = "tenantId", deserialize_with = "text_or_number")]
    pub tenant_id: Option<String>,
    #[serde(rename = "subscriptionId", deserialize_with = "text_or_number")]
    pub subscription_id: Option<String>,
    #[serde(rename = "applicationId", deserialize_with = "text_or_number")]
    pub application_id: Option<String>,
    #[serde(rename = "applicationKey", deserialize_with = "text_or_number")]
    pub application_key: Option<String>,
    #[serde(rename = "endpointUrl", deserialize_with = "text_or_number")]
    pub endpoint_url: Option<String>,
    #[serde(rename = "glanceUrl", deserialize_with = "text_or_number")]
    pub glance_url: Option<String>,
    #[serde(rename = "keystoneUrl", deserialize_with = "text_or_number")]
    pub keystone_url: Option<String>,
    #[serde(rename = "keystoneVersion", deserialize_with = "text_or_number")]
    pub keystone_version: Option<String>,
    #[serde(rename = "login", deserialize_with = "text_or_number")]
    pub login: Option<String>,
    #[serde(rename = "password", deserialize_with = "text_or_number")]
    pub password: Option<String>,
    #[serde(rename = "hostname", deserialize_with = "text_or_number")]
    pub hostname: Option<String>,
    #[serde(rename = "port", deserialize_with = "text_or_number")]
    pub port: Option<String>,
    #[serde(rename = "proxyHost", deserialize_with = "text_or_number")]
    pub proxy_host: Option<String>,
    #[serde(rename = "proxyPort", deserialize_with = "text_or_number")]
    pub proxy_port: Option<String>,
    #[serde(rename = "publicApiKey", deserialize_with = "text_or_number")]
    pub public_api_key: Option<String>,
    #[serde(rename = "secretApiKey", deserialize_with = "text_or_number")]
    pub secret_api_key: Option<String>,
    #[serde(rename = "domainName", deserialize_with = "text_or_number")]
    pub domain_name: Option<String>,
    #[serde(rename = "organizationName", deserialize_with = "text_or_number")]
    pub organization_name: Option<String>,
    #[serde(rename = "registryUrl", deserialize_with = "text_or_number")]
    pub registry_url: Option<String>,
    #[serde(rename = "token", deserialize_with = "text_or_number")]
    pub token: Option<String>,
}

impl CredAccountIn {
    /// Every field name this document knows (the union of the subtypes' fields).
    pub const FIELDS: &'static [&'static str] = &[
        "accessKeyId",
        "accountNumber",
        "keyPairName",
        "secretAccessKeyId",
        "tenantId",
        "subscriptionId",
        "applicationId",
        "applicationKey",
        "endpointUrl",
        "glanceUrl",
        "keystoneUrl",
        "keystoneVersion",
        "login",
        "password",
        "hostname",
        "port",
        "proxyHost",
        "proxyPort",
        "publicApiKey",
        "secretApiKey",
        "domainName",
        "organizationName",
        "registryUrl",
        "token",
    ];

    /// The value of the field named as in the schema.
    pub fn get(&self, name: &str) -> Option<&String> {
        match name {
            "accessKeyId" => self.access_key_id.as_ref(),
            "accountNumber" => self.account_number.as_ref(),
            "keyPairName" => self.key_pair_name.as_ref(),
            "secretAccessKeyId" => self.secret_access_key_id.as_ref(),
            "tenantId" => self.tenant_id.as_ref(),
            "subscriptionId" => self.subscription_id.as_ref(),
            "applicationId" => self.application_id.as_ref(),
            "applicationKey" => self.application_key.as_ref(),
            "endpointUrl" => self.endpoint_url.as_ref(),
            "glanceUrl" => self.glance_url.as_ref(),
            "keystoneUrl" => self.keystone_url.as_ref(),
            "keystoneVersion" => self.keystone_version.as_ref(),
            "login" => self.login.as_ref(),
            "password" => self.password.as_ref(),
            "hostname" => self.hostname.as_ref(),
            "port" => self.port.as_ref(),
            "proxyHost" => self.proxy_host.as_ref(),
            "proxyPort" => self.proxy_port.as_ref(),
            "publicApiKey" => self.public_api_key.as_ref(),
            "secretApiKey" => self.secret_api_key.as_ref(),
            "domainName" => self.domain_name.as_ref(),
            "organizationName" => self.organization_name.as_ref(),
            "registryUrl" => self.registry_url.as_ref(),
            "token" => self.token.as_ref(),
            _ => None,
        }
    }
}

/// A text field that JSON may also give as a number (ports).
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a text or a number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        // Every scalar is taken as its text, so no type error ever echoes a (secret) value.
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        /// XML: an element is a map whose text is under `$text` (an empty element has none).
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut text = None;
            while let Some(k) = m.next_key::<String>()? {
                if k == "$text" || k == "$value" {
                    text = Some(m.next_value::<String>()?);
                } else {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(text.or(Some(String::new())))
        }
    }
    d.deserialize_any(V)
}

/// `publishImage` of subtype `PublishImageDocker` (a publication to Satchel's pull endpoint):
/// UForgeObject's, UForgeUploadObject's, Image's, PublishImage's and PublishImageDocker's fields,
/// each in schema order; in XML it carries `xsi:type`, in JSON a `type` member.
pub struct PublishImageDoc {
    pub xml: bool,
    pub created: String,
    pub db_id: i64,
    pub digest: Option<String>,
    pub last_modified: String,
    pub size: i64,
    pub status: OpStatus,
    pub parent_uri: String,
    /// The endpoint and login it is published with (what `hammr image list` prints).
    pub cred_account: CredAccountDoc,
    pub name: String,
    pub status_uri: String,
    pub uri: String,
    pub version: String,
    pub registering_name: Option<String>,
    pub cloud_id: Option<String>,
    pub image_uri: String,
    pub namespace: String,
    pub repository_name: String,
    pub tag_name: String,
}

impl Serialize for PublishImageDoc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        if self.xml {
            m.serialize_entry("@xmlns:xsi", XSI)?;
            m.serialize_entry("@xsi:type", "ns0:PublishImageDocker")?;
        } else {
            m.serialize_entry("type", "PublishImageDocker")?;
        }
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("dbId", &self.db_id)?;
        if let Some(d) = &self.digest {
            m.serialize_entry("digest", d)?;
        }
        m.serialize_entry("lastModified", &self.last_modified)?;
        m.serialize_entry("size", &self.size)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("uploaded", &self.cloud_id.is_some())?;
        m.serialize_entry("parentUri", &self.parent_uri)?;
        m.serialize_entry("credAccount", &self.cred_account)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("statusUri", &self.status_uri)?;
        m.serialize_entry("uri", &self.uri)?;
        m.serialize_entry("version", &self.version)?;
        if let Some(r) = &self.registering_name {
            m.serialize_entry("registeringName", r)?;
        }
        if let Some(c) = &self.cloud_id {
            m.serialize_entry("cloudId", c)?;
        }
        m.serialize_entry("imageUri", &self.image_uri)?;
        m.serialize_entry("namespace", &self.namespace)?;
        m.serialize_entry("repositoryName", &self.repository_name)?;
        m.serialize_entry("tagName", &self.tag_name)?;
        m.end()
    }
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PublishImages {
    pub total: i64,
    pub publish_images: PublishImageItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PublishImageItems {
    pub publish_image: Vec<PublishImageDoc>,
}

/// What a publish request may say: the repository and tag (the image's name and version when
/// absent); anything else hammr sends (its cloud account) is not used.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct PublishImageIn {
    pub repository_name: Option<String>,
    pub tag_name: Option<String>,
}

/// `imagePkgs`: an image's packages (`ImagePkg`); Satchel's images hold a bundle's files, no
/// distribution packages, so the list is empty.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImagePkgs {
    pub total: i64,
    pub image_pkgs: ImagePkgItems,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImagePkgItems {
    pub image_pkg: Vec<()>,
}
