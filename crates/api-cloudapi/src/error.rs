//! CloudAPI's error model: `{"code": "...", "message": "..."}` with the status restify/IMGAPI/Manta
//! give each code. Domain errors are mapped here, once.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use satchel_domain::DomainError;

#[derive(Debug)]
pub struct CloudError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds for `Retry-After` on a 429.
    pub retry_after: Option<u64>,
}

impl CloudError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        CloudError {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid_credentials(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "InvalidCredentials", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "InvalidArgument", message)
    }
    pub fn missing_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "MissingParameter", message)
    }
}

/// The status each named code answers with (restify's built-ins, IMGAPI's and Manta's own).
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "ResourceNotFound" | "DirectoryDoesNotExist" => StatusCode::NOT_FOUND,
        "InvalidArgument" | "MissingParameter" => StatusCode::CONFLICT,
        "NotImageOwner"
        | "NotMantaPathOwner"
        | "ImageFilesImmutable"
        | "ImageAlreadyActivated"
        | "NoActivationNoFile"
        | "ValidationFailed" => StatusCode::UNPROCESSABLE_ENTITY,
        "NotAuthorized" => StatusCode::FORBIDDEN,
        "InvalidCredentials" | "InvalidSignature" => StatusCode::UNAUTHORIZED,
        "DirectoryNotEmpty"
        | "OperationNotAllowedOnRootDirectory"
        | "BadRequest"
        | "InvalidHeader"
        | "Upload" => StatusCode::BAD_REQUEST,
        "RequestEntityTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
        "RequestedRangeNotSatisfiable" => StatusCode::RANGE_NOT_SATISFIABLE,
        "TooManyRequests" => StatusCode::TOO_MANY_REQUESTS,
        "QuotaExceeded" => StatusCode::FORBIDDEN,
        "InsufficientStorage" => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<DomainError> for CloudError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Rule { code, message } => CloudError::new(status_of(code), code, message),
            DomainError::NotFound(m) => CloudError::not_found(m),
            DomainError::Invalid(m) => CloudError::invalid_argument(m),
            DomainError::Unauthenticated(m) => CloudError::invalid_credentials(m),
            DomainError::Forbidden(m) => CloudError::new(StatusCode::FORBIDDEN, "NotAuthorized", m),
            DomainError::Conflict(m) => CloudError::new(StatusCode::CONFLICT, "Conflict", m),
            DomainError::Gone(m) => CloudError::new(StatusCode::GONE, "ResourceGone", m),
            DomainError::TooLarge(m) => {
                CloudError::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", m)
            }
            DomainError::Throttled {
                retry_after,
                message,
            } => CloudError {
                retry_after: Some(retry_after),
                ..CloudError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message)
            },
            DomainError::QuotaExceeded(m) => {
                CloudError::new(StatusCode::FORBIDDEN, "QuotaExceeded", m)
            }
            DomainError::InsufficientStorage(m) => {
                CloudError::new(StatusCode::INSUFFICIENT_STORAGE, "InsufficientStorage", m)
            }
            e @ (DomainError::Storage(_) | DomainError::Blob(_) | DomainError::Internal(_)) => {
                tracing::error!(error = %e, "internal error");
                CloudError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl IntoResponse for CloudError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"code": self.code, "message": self.message});
        let mut r = crate::json_response(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Signature"),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
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
