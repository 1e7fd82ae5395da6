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
        !matches!(self, TicketState::Queued | TicketState::Running)
    }

    /// The states a ticket may enter this one from: the ticket lifecycle, in one place (the store
    /// persists a move only if the ticket is still in one of these, in the same statement). A
    /// ticket is created `Queued`; a retried job marks its ticket `Running` again.
    pub fn entered_from(self) -> &'static [TicketState] {
        match self {
            TicketState::Queued => &[],
            TicketState::Running
            | TicketState::Complete
            | TicketState::Error
            | TicketState::Cancelled => &[TicketState::Queued, TicketState::Running],
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
        use TicketKind::{BundleExport as Export, ContainerImage as Image};
        Some(match (self, kind) {
            (TicketState::Queued, Export) => "export queued",
            (TicketState::Queued, Image) => "generation queued",
            (TicketState::Running, Export) => "export in progress",
            (TicketState::Running, Image) => "generation in progress",
            (TicketState::Complete, Export) => "export complete",
            (TicketState::Complete, Image) => "image generated",
            (TicketState::Cancelled, _) => "cancelled",
            (TicketState::Expired, _) => "archive expired and deleted",
            (TicketState::Error, _) => return None,
        })
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

/// What a ticket builds. Both kinds share the ticket lifecycle, the job queue and downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketKind {
    /// A software bundle's `.tar.gz` export (kept for the retention period).
    BundleExport,
    /// A container image generated from a template (kept until deleted).
    ContainerImage,
}

impl TicketKind {
    pub const ALL: [TicketKind; 2] = [TicketKind::BundleExport, TicketKind::ContainerImage];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketKind::BundleExport => JOB_BUNDLE_EXPORT,
            TicketKind::ContainerImage => JOB_CONTAINER_IMAGE,
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            JOB_BUNDLE_EXPORT => Some(TicketKind::BundleExport),
            JOB_CONTAINER_IMAGE => Some(TicketKind::ContainerImage),
            _ => None,
        }
    }
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

/// An export ticket: the user-visible handle on an asynchronous archive build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub id: Id,
    pub owner_id: Id,
    pub kind: TicketKind,
    /// Set for container images.
    pub image: Option<ImageSpec>,
    pub bundle_id: Id,
    pub bundle_name: String,
    pub bundle_version: String,
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
    pub bundle_id: Id,
    pub bundle_name: String,
    pub bundle_version: String,
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
