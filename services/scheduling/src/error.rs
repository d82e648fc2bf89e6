//! The service's error type and its one mapping to gRPC statuses.
//!
//! Handlers return `ApiError`; only `From<ApiError> for Status` builds a
//! `tonic::Status`, with rich details (google.rpc.ErrorInfo, BadRequest,
//! RetryInfo) so that callers can act on an error without parsing messages.

use std::{collections::HashMap, time::Duration};

use skileez_domain::{DomainError, ErrorKind};
use skileez_eventstore::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The ErrorInfo domain of every error this service reports.
pub const ERROR_DOMAIN: &str = "scheduling.skileez.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Another change to the same call committed first; retrying is safe.
    #[error("the call was changed concurrently; retry the request")]
    ConcurrentChange,
    /// A request id was reused for a different request.
    #[error("request_id {request_id:?} was already used for a different request ({method})")]
    RequestIdReused { request_id: String, method: String },
    #[error("{0}")]
    Unavailable(String),
    /// The request's deadline passed while the database worked; nothing
    /// was committed.
    #[error("the request's deadline passed before it was done; nothing was changed")]
    DeadlineExceeded,
    /// The caller made more booking or change requests than its rate allows.
    #[error("too many booking and change requests; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: Duration },
    /// Something on our side failed; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::VersionConflict { .. } => ApiError::ConcurrentChange,
            StoreError::DeadlineExceeded => ApiError::DeadlineExceeded,
            StoreError::Database(error) => ApiError::from(error),
            other => ApiError::from_database(other.to_string()),
        }
    }
}

/// SQLSTATEs of transactions that lost a race and may simply be retried:
/// serialization_failure and deadlock_detected (two bookings each waiting on
/// the other's exclusion-constraint check).
const RETRYABLE_SQLSTATES: &[&str] = &["40001", "40P01"];

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if let Some(code) = error.as_database_error().and_then(|e| e.code())
            && RETRYABLE_SQLSTATES.contains(&code.as_ref())
        {
            tracing::debug!(%error, "transaction lost a race; retryable");
            return ApiError::ConcurrentChange;
        }
        // query_canceled: the statement_timeout the request's deadline set.
        if error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "57014")
        {
            return ApiError::DeadlineExceeded;
        }
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            _ => ApiError::from_database(error.to_string()),
        }
    }
}

impl ApiError {
    fn from_database(detail: String) -> Self {
        tracing::error!(error = %detail, "database error");
        ApiError::Internal(detail)
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match error {
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::with_error_details(
                Code::PermissionDenied,
                message,
                ErrorDetails::with_error_info("PERMISSION_DENIED", ERROR_DOMAIN, []),
            ),
            ApiError::InvalidArgument(violations) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| FieldViolation::new(v.field, v.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            ApiError::RequestIdReused { .. } => Status::with_error_details(
                Code::InvalidArgument,
                message.clone(),
                ErrorDetails::with_bad_request_violation("request_id", message),
            ),
            ApiError::NotFound(_) => Status::not_found(message),
            ApiError::Domain(domain) => domain_status(&domain, message),
            ApiError::ConcurrentChange => {
                let mut details =
                    ErrorDetails::with_error_info("CONCURRENT_CHANGE", ERROR_DOMAIN, []);
                details.set_retry_info(Some(Duration::from_millis(50)));
                Status::with_error_details(Code::Aborted, message, details)
            }
            ApiError::Unavailable(_) => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
            ),
            ApiError::DeadlineExceeded => Status::deadline_exceeded(message),
            ApiError::RateLimited { retry_after } => {
                let mut details = ErrorDetails::with_error_info("RATE_LIMITED", ERROR_DOMAIN, []);
                details.set_retry_info(Some(retry_after.max(Duration::from_millis(1))));
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Internal(_) => Status::internal("internal error; it has been logged"),
        }
    }
}

fn domain_status(error: &DomainError, message: String) -> Status {
    let reason = error.reason();
    match error.kind() {
        ErrorKind::InvalidArgument => {
            let field = error.field().unwrap_or("request");
            let mut details = ErrorDetails::with_bad_request_violation(field, message.clone());
            details.set_error_info(reason, ERROR_DOMAIN, []);
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        ErrorKind::FailedPrecondition => Status::with_error_details(
            Code::FailedPrecondition,
            message,
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, domain_metadata(error)),
        ),
        ErrorKind::AlreadyExists => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, domain_metadata(error)),
        ),
        ErrorKind::PermissionDenied => Status::with_error_details(
            Code::PermissionDenied,
            message,
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, []),
        ),
        ErrorKind::NotFound => Status::not_found(message),
    }
}

/// Machine-readable facts of a domain error, for ErrorInfo metadata.
fn domain_metadata(error: &DomainError) -> HashMap<String, String> {
    error
        .metadata()
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}
