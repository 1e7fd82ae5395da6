//! Domain records. Timestamps are milliseconds since the Unix epoch (UTC).

use serde::{Deserialize, Serialize};

pub type Id = i64;
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// Entitlement needed to create, change and export software bundles (UForge's name for it).
pub const ENT_SOFTWARE_UPLOAD: &str = "software_upload";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Id,
    pub login: String,
    pub admin: bool,
    pub entitlements: Vec<String>,
    pub created: Millis,
}

/// The job queue as operators see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub waiting: i64,
    pub running: i64,
    /// Creation time of the oldest waiting job.
    pub oldest_waiting: Option<Millis>,
    /// Bytes of completed archives kept.
    pub archive_bytes: i64,
}

/// What one user holds, as quotas count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uploaded files, attachments, boot script bodies, archives, CloudAPI image files and objects.
    pub bytes: i64,
    /// Completed archives kept (exports and images).
    pub archives: i64,
    /// Tickets queued or running.
    pub outstanding: i64,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub login: String,
    pub password_hash: String,
    pub admin: bool,
    pub entitlements: Vec<String>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
}

impl Principal {
    pub fn has(&self, entitlement: &str) -> bool {
        self.user.admin || self.user.entitlements.iter().any(|e| e == entitlement)
    }
}

/// A stored file: where it lives in blob storage and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub key: String,
    pub size: i64,
    pub sha256: String,
    pub md5: String,
    pub uploaded: Millis,
    /// CRC-32 of the content, recorded at upload (absent on rows written before it was): exports
    /// check files against it, and against the sha256 only where it is absent.
    pub crc32: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub id: Id,
    pub owner_id: Id,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub release: Option<String>,
    pub install_location: Option<String>,
    pub revision: i64,
    /// Made by `hammr bundle import` (an import with `imported=true`).
    pub imported: bool,
    pub created: Millis,
    pub modified: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct BundleInput {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    pub release: Option<String>,
    pub install_location: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub id: Id,
    pub bundle_id: Id,
    pub parent_id: Option<Id>,
    pub name: String,
    /// `file` or `folder`.
    pub kind: String,
    pub tag: Option<String>,
    pub install_location: Option<String>,
    pub blob: Option<BlobRef>,
    pub created: Millis,
    pub modified: Millis,
}

#[derive(Debug, Clone, Default)]
pub struct ArtifactInput {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    pub install_location: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentKind {
    License,
    Logo,
}

impl AttachmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::License => "license",
            AttachmentKind::Logo => "logo",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "license" => Some(AttachmentKind::License),
            "logo" => Some(AttachmentKind::Logo),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: Id,
    pub bundle_id: Id,
    pub kind: AttachmentKind,
    pub name: String,
    pub blob: BlobRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

impl OutputFormat {
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.map(|s| s.to_ascii_lowercase()) {
            None => Some(OutputFormat::Yaml),
            Some(s) if s == "yaml" || s == "yml" => Some(OutputFormat::Yaml),
            Some(s) if s == "json" => Some(OutputFormat::Json),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Yaml => "yaml",
            OutputFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketState {
    /// An import created but whose archive is not uploaded yet (it has no job).
    AwaitingUpload,
    Queued,
    Running,
    Complete,
    Error,
    Cancelled,
    Expired,
}

impl TicketState {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::AwaitingUpload => "awaiting_upload",
            TicketState::Queued => "queued",
            TicketState::Running => "running",
            TicketState::Complete => "complete",
            TicketState::Error => "error",
            TicketState::Cancelled => "cancelled",
            TicketState::Expired => "expired",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "awaiting_upload" => TicketState::AwaitingUpload,
            "queued" => TicketState::Queued,
            "running" => TicketState::Running,
            "complete" => TicketState::Complete,
            "error" => TicketState::Error,
            "cancelled" => TicketState::Cancelled,
            "expired" => TicketState::Expired,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            TicketState::AwaitingUpload | TicketState::Queued | TicketState::Running
        )
    }

    /// The states a ticket may enter this one from: the ticket lifecycle, in one place (the store
    /// persists a move only if the ticket is still in one of these, in the same statement). A
    /// ticket is created `Queued` (an import `AwaitingUpload`, queued once its archive is in); a
    /// retried job marks its ticket `Running` again.
    pub fn entered_from(self) -> &'static [TicketState] {
        match self {
            TicketState::AwaitingUpload => &[],
            TicketState::Queued => &[TicketState::AwaitingUpload],
            TicketState::Running | TicketState::Complete | TicketState::Error => {
                &[TicketState::Queued, TicketState::Running]
            }
            TicketState::Cancelled => &[
                TicketState::AwaitingUpload,
                TicketState::Queued,
                TicketState::Running,
            ],
            TicketState::Expired => &[TicketState::Complete],
        }
    }

    /// Whether a ticket in this state may move to `to`.
    pub fn may_move_to(self, to: TicketState) -> bool {
        to.entered_from().contains(&self)
    }

    /// The message a ticket of `kind` shows on entering this state. None for `Error`, whose
    /// message says what failed.
    pub fn message(self, kind: TicketKind) -> Option<&'static str> {
        use TicketKind::*;
        Some(match (self, kind) {
            (TicketState::AwaitingUpload, _) => "waiting for the archive upload",
            (TicketState::Queued, BundleExport | ApplianceExport) => "export queued",
            (TicketState::Queued, ContainerImage) => "generation queued",
            (TicketState::Queued, BundleImport | TemplateImport) => "import queued",
            (TicketState::Queued, Takeout) => "takeout queued",
            (TicketState::Queued, ImagePublish) => "publication queued",
            (TicketState::Running, ImagePublish) => "publication in progress",
            (TicketState::Complete, ImagePublish) => "image published",
            (TicketState::Running, Takeout) => "takeout in progress",
            (TicketState::Complete, Takeout) => "takeout complete",
            (TicketState::Running, BundleExport | ApplianceExport) => "export in progress",
            (TicketState::Running, ContainerImage) => "generation in progress",
            (TicketState::Running, BundleImport | TemplateImport) => "import in progress",
            (TicketState::Complete, BundleExport | ApplianceExport) => "export complete",
            (TicketState::Complete, ContainerImage) => "image generated",
            (TicketState::Complete, BundleImport | TemplateImport) => "import complete",
            (TicketState::Cancelled, _) => "cancelled",
            (TicketState::Expired, _) => "archive expired and deleted",
            (TicketState::Error, _) => return None,
        })
    }
}

/// What `cancel` did, for the face to say.
#[derive(Debug, Clone)]
pub struct Cancelled {
    /// The ticket as it is afterwards.
    pub ticket: Ticket,
    /// False: it had finished already (or was cancelled before), and nothing changed.
    pub now: bool,
}

impl Cancelled {
    /// The status message: the ticket's own, or why nothing was cancelled.
    pub fn message(&self) -> Option<String> {
        if self.now {
            return self.ticket.message.clone();
        }
        Some(format!(
            "nothing to cancel: the ticket is already {}",
            self.ticket.state.as_str()
        ))
    }
}

/// The published archive of a completed ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveRef {
    pub key: String,
    pub file_name: String,
    pub size: i64,
    pub sha256: String,
}

/// What a ticket works on. Every kind shares the ticket lifecycle, the job queue, status polls,
/// cancel and (for the kinds that publish an archive) downloads and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    /// A software bundle's `.tar.gz` export (kept for the retention period).
    BundleExport,
    /// A container image generated from a template (kept until deleted).
    ContainerImage,
    /// An appliance template's `.tar.gz` export (kept for the retention period).
    ApplianceExport,
    /// An uploaded bundle archive made into a new bundle (`subject_id` once complete).
    BundleImport,
    /// An uploaded template archive made into a new appliance and its bundles.
    TemplateImport,
    /// Everything a user owns in one archive (zip or tar.gz), each bundle and template inside as
    /// its own export (kept for the retention period).
    Takeout,
    /// A container image published to the pull endpoint (`crate::registry`): `subject_id` is the
    /// image's ticket, `subject_name` / `subject_version` the repository and tag.
    ImagePublish,
}

impl TicketKind {
    pub const ALL: [TicketKind; 7] = [
        TicketKind::BundleExport,
        TicketKind::ContainerImage,
        TicketKind::ApplianceExport,
        TicketKind::BundleImport,
        TicketKind::TemplateImport,
        TicketKind::Takeout,
        TicketKind::ImagePublish,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketKind::BundleExport => JOB_BUNDLE_EXPORT,
            TicketKind::ContainerImage => JOB_CONTAINER_IMAGE,
            TicketKind::ApplianceExport => JOB_APPLIANCE_EXPORT,
            TicketKind::BundleImport => JOB_BUNDLE_IMPORT,
            TicketKind::TemplateImport => JOB_TEMPLATE_IMPORT,
            TicketKind::Takeout => JOB_TAKEOUT,
            TicketKind::ImagePublish => JOB_IMAGE_PUBLISH,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        TicketKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
    /// Imports consume an upload and create things; the other kinds publish an archive.
    pub fn is_import(self) -> bool {
        matches!(self, TicketKind::BundleImport | TicketKind::TemplateImport)
    }
}

/// The archive format of a takeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TakeoutFormat {
    #[serde(rename = "zip")]
    Zip,
    #[serde(rename = "tar.gz")]
    TarGz,
}

impl TakeoutFormat {
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("zip") => Some(TakeoutFormat::Zip),
            Some("tar.gz") | Some("tgz") | Some("targz") => Some(TakeoutFormat::TarGz),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoutFormat::Zip => "zip",
            TakeoutFormat::TarGz => "tar.gz",
        }
    }
}

/// What a takeout may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TakeoutPart {
    Bundles,
    Templates,
    Images,
    Accounts,
}

impl TakeoutPart {
    pub const ALL: [TakeoutPart; 4] = [
        TakeoutPart::Bundles,
        TakeoutPart::Templates,
        TakeoutPart::Images,
        TakeoutPart::Accounts,
    ];
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bundles" | "mysoftware" => Some(TakeoutPart::Bundles),
            "templates" | "appliances" => Some(TakeoutPart::Templates),
            "images" | "container-images" => Some(TakeoutPart::Images),
            "accounts" | "cloud-accounts" => Some(TakeoutPart::Accounts),
            _ => None,
        }
    }
    /// Its folder in the archive.
    pub fn folder(self) -> &'static str {
        match self {
            TakeoutPart::Bundles => "bundles",
            TakeoutPart::Templates => "templates",
            TakeoutPart::Images => "container-images",
            TakeoutPart::Accounts => "accounts",
        }
    }
}

/// How a takeout carries the credentials of cloud accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    /// Left out (no passphrase was given); `index.json` says so.
    #[default]
    Omitted,
    /// `accounts/accounts.json.age`, encrypted with the request's passphrase (age, scrypt).
    Encrypted,
    /// `accounts/accounts.json` in the clear, only on an explicit `credentials=plaintext`.
    Plaintext,
}

/// A value sealed with the server's secrets key, as kept in a ticket's parameters until its job
/// has used it. Its `Debug` shows no bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedParam {
    pub uid: String,
    pub key_id: String,
    /// Hex of version + nonce + ciphertext + tag.
    pub blob: String,
}

impl std::fmt::Debug for SealedParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedParam")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// What a takeout packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoutSpec {
    pub format: TakeoutFormat,
    /// Sorted, each once.
    pub include: Vec<TakeoutPart>,
    #[serde(default)]
    pub credentials: Credentials,
    /// The passphrase for `Credentials::Encrypted`, sealed; dropped once the job is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<SealedParam>,
    /// Where the final status is POSTed, signed (`crate::notify`); checked by `notify::check_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

/// How an import treats what it finds (hammr's `imported`, `force`, `reusebundles`, `usemajor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSpec {
    /// `hammr ... import` (true) or `hammr ... create` (false): the same work, told apart in messages.
    pub imported: bool,
    /// Replace an appliance (or bundle) of the same name and version.
    pub force: bool,
    /// Reuse the user's bundles of the same name and version instead of importing them again.
    pub reuse_bundles: bool,
    /// Accepted and recorded; distributions are matched by name and version as given.
    pub use_major: bool,
}

/// What a container-image ticket generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    pub template_id: Id,
    /// The image's name (the OCI reference name); the bundle's name when the request had none.
    pub name: String,
    /// Image format; only `docker` (an OCI image layout) is generated.
    pub format: String,
    /// Generated as a `.tar.gz`; an uncompressed image is kept but not downloadable.
    pub compress: bool,
    /// The registered base distribution the image is built on (resolved when it was requested),
    /// None: the bundle's files only.
    pub base: Option<ImageBase>,
}

/// The base distribution of an image: its id, and its label as it was (e.g. `Debian 12 x86_64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBase {
    pub id: Id,
    pub label: String,
}

/// A bundle an import creates, with everything in it, written in one transaction
/// (`ImportStore::complete_bundle_import`). Every file's content is already in blob storage.
#[derive(Debug, Clone, Default)]
pub struct NewBundleParts {
    /// The import was `hammr ... import` (not `create`).
    pub imported: bool,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub release: Option<String>,
    pub install_location: Option<String>,
    /// Parents come before their children.
    pub artifacts: Vec<NewArtifactPart>,
    pub license: Option<(String, BlobRef)>,
    pub logo: Option<(String, BlobRef)>,
}

/// A bundle of an imported template: created from the archive, or (with `reusebundles`) one the
/// user has already.
#[derive(Debug, Clone)]
pub enum ImportedBundle {
    New(Box<NewBundleParts>),
    Existing(Id),
}

/// One file or folder of a [`NewBundleParts`].
#[derive(Debug, Clone)]
pub struct NewArtifactPart {
    pub name: String,
    /// `file` or `folder`.
    pub kind: String,
    /// Index of the parent folder in `NewBundleParts::artifacts` (always an earlier one).
    pub parent: Option<usize>,
    pub tag: Option<String>,
    pub install_location: Option<String>,
    /// Set for files.
    pub blob: Option<BlobRef>,
}

/// A container template: a bundle packaged as a container image, on an optional base distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerTemplate {
    pub id: Id,
    pub owner_id: Id,
    pub bundle_id: Id,
    pub distribution: Option<DistributionRef>,
    pub created: Millis,
    pub modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DistributionRef {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// A registered base distribution (`crate::distribution`): an OCI image whose config and layers are
/// in the blob store under content-addressed keys (`distribution::blob_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    pub id: Id,
    pub name: String,
    pub version: String,
    /// As registered (e.g. `x86_64`); matched through its OCI name (`amd64`).
    pub arch: String,
    pub config: BaseBlob,
    pub layers: Vec<BaseBlob>,
    pub created: Millis,
}

/// One blob of a base image: a descriptor (`mediaType`, `digest` = `sha256:<hex>`, `size`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseBlob {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// What registering a base writes (its blobs already stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDistribution {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub config: BaseBlob,
    pub layers: Vec<BaseBlob>,
}

/// An export ticket: the user-visible handle on an asynchronous archive build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: Id,
    pub owner_id: Id,
    pub kind: TicketKind,
    /// Set for container images.
    pub image: Option<ImageSpec>,
    /// Set for imports.
    pub import: Option<ImportSpec>,
    /// Set for takeouts.
    pub takeout: Option<TakeoutSpec>,
    /// What the ticket works on: the bundle (bundle exports, container images), the appliance
    /// (appliance exports), or what an import created (0 until it completes).
    pub subject_id: Id,
    /// The subject's name and version as they were when the ticket was made (for an import, once
    /// known: what the archive describes).
    pub subject_name: String,
    pub subject_version: String,
    pub format: OutputFormat,
    pub state: TicketState,
    pub percentage: i32,
    pub bytes_loaded: i64,
    pub bytes_total: i64,
    pub eta: Option<Millis>,
    pub message: Option<String>,
    pub error_message: Option<String>,
    pub archive: Option<ArchiveRef>,
    pub created: Millis,
    pub modified: Millis,
    pub expires_at: Option<Millis>,
}

impl Ticket {
    /// The template of a container image (None for exports).
    pub fn template_id(&self) -> Option<Id> {
        self.image.as_ref().map(|s| s.template_id)
    }

    /// The archive of a container image that may be downloaded: generated with `compress`, and
    /// complete. The one statement of the rule (the download and the image document both ask).
    pub fn downloadable_archive(&self) -> Option<&ArchiveRef> {
        let compressed = self.image.as_ref().is_some_and(|s| s.compress);
        match (compressed, self.state, &self.archive) {
            (true, TicketState::Complete, Some(a)) => Some(a),
            _ => None,
        }
    }
}

/// A user whose things the caller may see, as resolved by `Satchel::owner`: operations taking it
/// decide nothing more about ownership. Only the domain makes one.
#[derive(Debug, Clone)]
pub struct Owner {
    pub(crate) who: Principal,
    pub(crate) user: User,
}

impl Owner {
    /// The user the URL names.
    pub fn user(&self) -> &User {
        &self.user
    }
}

/// A bundle the caller may see, resolved once by `Satchel::bundle`.
#[derive(Debug, Clone)]
pub struct OwnedBundle {
    pub(crate) owner: Owner,
    pub(crate) bundle: Bundle,
}

impl OwnedBundle {
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }
    pub fn owner(&self) -> &User {
        &self.owner.user
    }
}

/// A file or folder of a bundle the caller may see, resolved once by `Satchel::artifact`.
#[derive(Debug, Clone)]
pub struct OwnedArtifact {
    pub(crate) bundle: OwnedBundle,
    pub(crate) artifact: Artifact,
}

impl OwnedArtifact {
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }
    pub fn bundle(&self) -> &OwnedBundle {
        &self.bundle
    }
}

/// A bundle with what its document shows besides its own row: total size of its files, license
/// and logo.
#[derive(Debug, Clone)]
pub struct BundleView {
    pub bundle: Bundle,
    /// Sum of the sizes of its uploaded files.
    pub size: i64,
    pub license: Option<Attachment>,
    pub logo: Option<Attachment>,
}

#[derive(Debug, Clone)]
pub struct NewTicket {
    pub owner_id: Id,
    pub kind: TicketKind,
    pub image: Option<ImageSpec>,
    pub import: Option<ImportSpec>,
    pub takeout: Option<TakeoutSpec>,
    pub subject_id: Id,
    pub subject_name: String,
    pub subject_version: String,
    pub format: OutputFormat,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub percentage: i32,
    pub bytes_loaded: i64,
    pub bytes_total: i64,
    pub eta: Option<Millis>,
}

/// How a running ticket ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Complete {
        archive: ArchiveRef,
        /// None: kept until deleted.
        expires_at: Option<Millis>,
    },
    Error {
        message: String,
        error_message: String,
    },
}

/// A durable unit of work on the leased queue: builds one ticket's archive (`kind` is the ticket's) or
/// runs one CloudAPI image export (`kind` [`JOB_IMAGE_EXPORT`]).
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Id,
    pub kind: String,
    /// The user it works for (fair claiming counts running jobs per owner).
    pub owner_id: Id,
    pub subject: JobSubject,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
}

/// What a job works on: exactly one of these (a CHECK constraint in the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSubject {
    Ticket(Id),
    ImageExport(String),
}

impl Job {
    /// The ticket this job builds, if it builds one.
    pub fn ticket_id(&self) -> Option<Id> {
        match self.subject {
            JobSubject::Ticket(id) => Some(id),
            JobSubject::ImageExport(_) => None,
        }
    }
}

impl std::fmt::Display for JobSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobSubject::Ticket(id) => write!(f, "ticket {id}"),
            JobSubject::ImageExport(id) => write!(f, "image export {id}"),
        }
    }
}

pub const JOB_BUNDLE_EXPORT: &str = "bundle_export";
pub const JOB_CONTAINER_IMAGE: &str = "container_image";
pub const JOB_IMAGE_EXPORT: &str = "image_export";
pub const JOB_APPLIANCE_EXPORT: &str = "appliance_export";
pub const JOB_BUNDLE_IMPORT: &str = "bundle_import";
pub const JOB_TEMPLATE_IMPORT: &str = "template_import";
pub const JOB_TAKEOUT: &str = "takeout";
pub const JOB_IMAGE_PUBLISH: &str = "image_publish";
/// Delivers a finished takeout's webhook (`crate::notify`); its subject is the takeout's ticket.
pub const JOB_TAKEOUT_NOTIFY: &str = "takeout_notify";

/// A published image (a pimage): what the pull endpoint serves as `<login>/<repository>:<tag>`,
/// written in the transaction that completes its publish ticket (`ticket_id`) and gone with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub ticket_id: Id,
    pub owner_id: Id,
    /// The container image's ticket it was published from.
    pub image_ticket_id: Id,
    pub repository: String,
    pub tag: String,
    /// `sha256:<hex>` of the manifest (or index) the tag names.
    pub manifest_digest: String,
    pub media_type: String,
    pub manifest_size: i64,
    /// The manifest, config and layers together.
    pub total_size: i64,
    pub created: Millis,
}

/// One content-addressed blob of a published image (manifest, config or layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub key: String,
    pub size: i64,
    pub media_type: String,
}

/// What a publish job records on completion.
#[derive(Debug, Clone)]
pub struct NewPublished {
    pub image_ticket_id: Id,
    pub repository: String,
    pub tag: String,
    pub manifest_digest: String,
    pub media_type: String,
    pub manifest_size: i64,
    /// The manifest first, then the config and the layers.
    pub blobs: Vec<PublishedBlob>,
}
