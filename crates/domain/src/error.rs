//! The domain's one error type. Faces map each variant to their own wire error once.

use thiserror::Error;

pub type Result<T, E = DomainError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum DomainError {
    /// Missing, or owned by someone else: the two are indistinguishable on purpose.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// The request is valid but the resource is not in a state that allows it (e.g. archive not ready).
    #[error("{0}")]
    Conflict(String),
    /// The resource existed but is gone for good (expired archive).
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    TooLarge(String),
    /// Too many requests of this kind right now; worth retrying after `retry_after` seconds.
    #[error("{message}")]
    Throttled { retry_after: u64, message: String },
    /// The caller's quota (bytes stored, archives kept, tickets outstanding) does not allow it.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The disk or bucket refused a write for lack of space.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A named domain rule refused the request (e.g. `NotMantaPathOwner`); faces map the code.
    #[error("{message}")]
    Rule { code: RuleCode, message: String },
    #[error("storage error: {0}")]
    Storage(#[source] Cause),
    #[error("blob error: {0}")]
    Blob(#[source] Cause),
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

/// The named rules of the CloudAPI domain (IMGAPI's and Manta's error codes). A closed set, so every
/// face maps each one exhaustively: a new rule cannot silently become a 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleCode {
    ResourceNotFound,
    InvalidArgument,
    MissingParameter,
    BadRequest,
    NotImageOwner,
    NotMantaPathOwner,
    ImageFilesImmutable,
    ImageAlreadyActivated,
    NoActivationNoFile,
    DirectoryDoesNotExist,
    DirectoryNotEmpty,
    OperationNotAllowedOnRootDirectory,
    /// Only an operator may do this (e.g. create a public image).
    NotAuthorized,
    /// An upload's body did not match what it declared (Content-MD5, Content-Length).
    Upload,
}

impl RuleCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleCode::ResourceNotFound => "ResourceNotFound",
            RuleCode::InvalidArgument => "InvalidArgument",
            RuleCode::MissingParameter => "MissingParameter",
            RuleCode::BadRequest => "BadRequest",
            RuleCode::NotImageOwner => "NotImageOwner",
            RuleCode::NotMantaPathOwner => "NotMantaPathOwner",
            RuleCode::ImageFilesImmutable => "ImageFilesImmutable",
            RuleCode::ImageAlreadyActivated => "ImageAlreadyActivated",
            RuleCode::NoActivationNoFile => "NoActivationNoFile",
            RuleCode::DirectoryDoesNotExist => "DirectoryDoesNotExist",
            RuleCode::DirectoryNotEmpty => "DirectoryNotEmpty",
            RuleCode::OperationNotAllowedOnRootDirectory => "OperationNotAllowedOnRootDirectory",
            RuleCode::NotAuthorized => "NotAuthorized",
            RuleCode::Upload => "Upload",
        }
    }
}

impl std::fmt::Display for RuleCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DomainError {
    pub fn rule(code: RuleCode, message: impl Into<String>) -> Self {
        DomainError::Rule {
            code,
            message: message.into(),
        }
    }
    pub fn throttled(retry_after: u64, message: impl Into<String>) -> Self {
        DomainError::Throttled {
            retry_after: retry_after.max(1),
            message: message.into(),
        }
    }
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        DomainError::NotFound(format!("{what} not found"))
    }
}

/// Why a storage, blob or internal failure happened: a message for the log and, when an error of a
/// layer below caused it, that error, reachable through `source()` (a driver's own error can be
/// inspected or downcast; it is not flattened into text).
#[derive(Debug)]
pub struct Cause {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// `e` as the cause, with its text as the message.
    pub fn of(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause {
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
    /// `e` as the cause, described by `context`.
    pub fn context(
        context: impl std::fmt::Display,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Cause {
            message: format!("{context}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl From<satchel_blob::BlobError> for DomainError {
    fn from(e: satchel_blob::BlobError) -> Self {
        match e {
            satchel_blob::BlobError::NotFound(k) => {
                DomainError::Blob(format!("stored object missing: {k}").into())
            }
            // What went wrong with a client's upload is the client's to hear, on every face.
            satchel_blob::BlobError::TooLarge(n) => {
                DomainError::TooLarge(format!("uploads are limited to {n} bytes"))
            }
            satchel_blob::BlobError::Source(s) => {
                DomainError::Invalid(format!("upload interrupted: {s}"))
            }
            satchel_blob::BlobError::NoSpace(s) => {
                tracing::error!(error = %s, "blob store full");
                DomainError::InsufficientStorage(
                    "the server has no space left to store this; nothing was written".into(),
                )
            }
            other => DomainError::Blob(Cause::of(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn causes_keep_their_source() {
        let io = std::io::Error::other("disk on fire");
        let e = DomainError::Storage(Cause::context("writing", io));
        assert_eq!(e.to_string(), "storage error: writing: disk on fire");
        let cause = e.source().expect("the cause");
        let io = cause.source().expect("the driver's error");
        assert!(io.downcast_ref::<std::io::Error>().is_some());
        // A plain message has no source below it.
        let e = DomainError::Internal("no source".into());
        assert!(e.source().and_then(|c| c.source()).is_none());
    }
}
