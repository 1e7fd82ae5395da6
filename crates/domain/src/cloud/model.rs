//! CloudAPI resources as the domain sees them.

use crate::model::{Id, Millis};

/// An SSH public key registered to an account; requests are signed with the private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKey {
    pub id: Id,
    pub owner_id: Id,
    pub name: String,
    /// MD5 fingerprint, `aa:bb:...`: the form CloudAPI clients put in `keyId`.
    pub fingerprint: String,
    /// The OpenSSH public key line.
    pub key: String,
    pub created: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
    None,
}

impl Compression {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gzip" => Compression::Gzip,
            "bzip2" => Compression::Bzip2,
            "xz" => Compression::Xz,
            "none" => Compression::None,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::None => "none",
        }
    }
    /// The suffix after `.zfs` in exported file names, as IMGAPI names them.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
            Compression::None => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Unactivated,
    Active,
}

impl ImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Unactivated => "unactivated",
            ImageState::Active => "active",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unactivated" => Some(ImageState::Unactivated),
            "active" => Some(ImageState::Active),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    pub blob_key: String,
    pub size: i64,
    pub sha1: String,
    /// Hex md5, served as `Content-MD5` of objects exported from the image.
    pub md5: String,
    pub compression: Compression,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// A UUID, as IMGAPI names images.
    pub id: String,
    pub owner_id: Id,
    pub name: String,
    pub version: String,
    pub os: String,
    pub kind: String,
    pub description: Option<String>,
    pub state: ImageState,
    pub public: bool,
    pub published_at: Option<Millis>,
    pub created: Millis,
    pub file: Option<ImageFile>,
}

/// What UpdateImage may change (IMGAPI's other mutable fields, homepage, eula, acl and tags, are
/// not kept by this server and are refused by the face).
#[derive(Debug, Clone, Default)]
pub struct ImageUpdate {
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
}

/// What a client may set when creating an image.
#[derive(Debug, Clone, Default)]
pub struct ImageInput {
    pub name: Option<String>,
    pub version: Option<String>,
    pub os: Option<String>,
    pub kind: Option<String>,
    pub description: Option<String>,
    pub public: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Object,
    Directory,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Object => "object",
            EntryKind::Directory => "directory",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "object" => Some(EntryKind::Object),
            "directory" => Some(EntryKind::Directory),
            _ => None,
        }
    }
}

/// One name in an account's object namespace: a directory, or an object backed by a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorEntry {
    pub owner_id: Id,
    /// Full normalised path, `/<login>/stor/a/b`.
    pub path: String,
    /// The parent directory's full path.
    pub parent: String,
    pub name: String,
    pub kind: EntryKind,
    pub size: i64,
    /// Hex MD5 of the object's bytes (Manta's `Content-MD5`, base64 on the wire).
    pub md5: Option<String>,
    pub content_type: Option<String>,
    pub blob_key: Option<String>,
    pub etag: String,
    pub mtime: Millis,
}

/// What an object write replaced, so the caller can delete the old blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorPut {
    Done {
        replaced_blob: Option<String>,
    },
    /// The parent directory does not exist.
    NoParent,
    /// A directory is in the way.
    IsDirectory,
    /// Linking from an image whose file is no longer that blob (deleted or replaced meanwhile).
    SourceGone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorMkdir {
    Created,
    Existed,
    NoParent,
    /// An object is in the way.
    IsObject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorDelete {
    Deleted { blob: Option<String> },
    Missing,
    NotEmpty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportState {
    Queued,
    Running,
    Complete,
    Error,
}

impl ExportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::Queued => "queued",
            ExportState::Running => "running",
            ExportState::Complete => "complete",
            ExportState::Error => "error",
        }
    }
    /// Complete or error: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, ExportState::Complete | ExportState::Error)
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => ExportState::Queued,
            "running" => ExportState::Running,
            "complete" => ExportState::Complete,
            "error" => ExportState::Error,
            _ => return None,
        })
    }
}

/// An ExportImage run with `async=true`, pollable by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageExport {
    pub id: String,
    pub owner_id: Id,
    pub image_id: String,
    pub manta_path: String,
    pub state: ExportState,
    pub bytes_copied: i64,
    pub bytes_total: i64,
    pub image_path: Option<String>,
    pub manifest_path: Option<String>,
    pub error: Option<String>,
    pub created: Millis,
    pub modified: Millis,
}

/// Where ExportImage put the two objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTargets {
    pub image_path: String,
    pub manifest_path: String,
}
