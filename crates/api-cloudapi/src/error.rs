//! CloudAPI's error model: `{"code": "...", "message": "..."}` with the status restify/IMGAPI/Manta
//! give each code. Domain errors are mapped here, once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_domain::{DomainError, RuleCode};

/// Every code this face answers with. The status of each is decided in one exhaustive match, so a
/// new code needs its status before it compiles (no string typo can become a 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A rule of the domain (IMGAPI's and Manta's codes).
    Rule(RuleCode),
    InvalidCredentials,
    InvalidSignature,
    InvalidContent,
    BadMethod,
    UnsupportedMediaType,
    Conflict,
    ResourceGone,
    RequestEntityTooLarge,
    RequestedRangeNotSatisfiable,
    TooManyRequests,
    QuotaExceeded,
    InsufficientStorage,
    InternalError,
}

impl Code {
    pub const RESOURCE_NOT_FOUND: Code = Code::Rule(RuleCode::ResourceNotFound);
    pub const INVALID_ARGUMENT: Code = Code::Rule(RuleCode::InvalidArgument);
    pub const MISSING_PARAMETER: Code = Code::Rule(RuleCode::MissingParameter);
    pub const BAD_REQUEST: Code = Code::Rule(RuleCode::BadRequest);
    pub const NOT_AUTHORIZED: Code = Code::Rule(RuleCode::NotAuthorized);

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Rule(r) => r.as_str(),
            Code::InvalidCredentials => "InvalidCredentials",
            Code::InvalidSignature => "InvalidSignature",
            Code::InvalidContent => "InvalidContent",
            Code::BadMethod => "BadMethod",
            Code::UnsupportedMediaType => "UnsupportedMediaType",
            Code::Conflict => "Conflict",
            Code::ResourceGone => "ResourceGone",
            Code::RequestEntityTooLarge => "RequestEntityTooLarge",
            Code::RequestedRangeNotSatisfiable => "RequestedRangeNotSatisfiable",
            Code::TooManyRequests => "TooManyRequests",
            Code::QuotaExceeded => "QuotaExceeded",
            Code::InsufficientStorage => "InsufficientStorage",
            Code::InternalError => "InternalError",
        }
    }

    /// The status restify, IMGAPI and Manta give the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Rule(r) => match r {
                RuleCode::ResourceNotFound | RuleCode::DirectoryDoesNotExist => {
                    StatusCode::NOT_FOUND
                }
                RuleCode::InvalidArgument | RuleCode::MissingParameter => StatusCode::CONFLICT,
                RuleCode::NotImageOwner
                | RuleCode::NotMantaPathOwner
                | RuleCode::ImageFilesImmutable
                | RuleCode::ImageAlreadyActivated
                | RuleCode::NoActivationNoFile => StatusCode::UNPROCESSABLE_ENTITY,
                RuleCode::NotAuthorized => StatusCode::FORBIDDEN,
                RuleCode::DirectoryNotEmpty
                | RuleCode::OperationNotAllowedOnRootDirectory
                | RuleCode::BadRequest
                | RuleCode::Upload => StatusCode::BAD_REQUEST,
            },
            Code::InvalidCredentials | Code::InvalidSignature => StatusCode::UNAUTHORIZED,
            Code::InvalidContent => StatusCode::BAD_REQUEST,
            Code::BadMethod => StatusCode::METHOD_NOT_ALLOWED,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Conflict => StatusCode::CONFLICT,
            Code::ResourceGone => StatusCode::GONE,
            Code::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestedRangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::QuotaExceeded => StatusCode::FORBIDDEN,
            Code::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug)]
pub struct CloudError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Seconds for `Retry-After` on a 429.
    pub retry_after: Option<u64>,
}

impl CloudError {
    /// An error with its code's status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        CloudError {
            status: code.status(),
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// An error keeping a status decided elsewhere (a framework rejection answered in this format).
    pub fn with_status(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        CloudError {
            status,
            ..Self::new(code, message)
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
    }
    pub fn invalid_credentials(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidCredentials, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::RESOURCE_NOT_FOUND, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::INVALID_ARGUMENT, message)
    }
    pub fn missing_parameter(message: impl Into<String>) -> Self {
        Self::new(Code::MISSING_PARAMETER, message)
    }
}

impl From<DomainError> for CloudError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Rule { code, message } => CloudError::new(Code::Rule(code), message),
            DomainError::NotFound(m) => CloudError::not_found(m),
            DomainError::Invalid(m) => CloudError::invalid_argument(m),
            DomainError::Unauthenticated(m) => CloudError::invalid_credentials(m),
            DomainError::Forbidden(m) => CloudError::new(Code::NOT_AUTHORIZED, m),
            DomainError::Conflict(m) => CloudError::new(Code::Conflict, m),
            DomainError::Gone(m) => CloudError::new(Code::ResourceGone, m),
            DomainError::TooLarge(m) => CloudError::new(Code::RequestEntityTooLarge, m),
            DomainError::Throttled {
                retry_after,
                message,
            } => CloudError {
                retry_after: Some(retry_after),
                ..CloudError::new(Code::TooManyRequests, message)
            },
            DomainError::QuotaExceeded(m) => CloudError::new(Code::QuotaExceeded, m),
            DomainError::InsufficientStorage(m) => CloudError::new(Code::InsufficientStorage, m),
            e @ (DomainError::Storage(_) | DomainError::Blob(_) | DomainError::Internal(_)) => {
                tracing::error!(error = %e, "internal error");
                CloudError::internal("internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for CloudError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code.as_str(), "message": self.message});
        let mut r = crate::json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Signature"),
            );
        }
        // The rest of the request body is not read (too large, or no room left to write it): the
        // connection ends here, and the client must not pool it.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE
        ) {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}
