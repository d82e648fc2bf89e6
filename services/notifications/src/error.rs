//! The API's error type and its one mapping to gRPC statuses.
//!
//! Handlers return `ApiError`; only `From<ApiError> for Status` builds a
//! `tonic::Status`, with rich details (google.rpc.ErrorInfo, BadRequest,
//! RetryInfo), like the scheduling service.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// The ErrorInfo domain of every error this service reports.
pub const ERROR_DOMAIN: &str = "notifications.skileez.com";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub description: String,
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
    Unavailable(String),
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
        Self::InvalidArgument(vec![Violation {
            field: field.into(),
            description: description.into(),
        }])
    }
}

impl From<skileez_auth::Unauthenticated> for ApiError {
    fn from(error: skileez_auth::Unauthenticated) -> Self {
        ApiError::Unauthenticated(error.0)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(%error, "database unavailable");
                ApiError::Unavailable("the database is unavailable; retry shortly".to_owned())
            }
            _ => {
                tracing::error!(%error, "database error");
                ApiError::Internal(error.to_string())
            }
        }
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
            ApiError::Unavailable(_) => Status::with_error_details(
                Code::Unavailable,
                message,
                ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
            ),
            ApiError::Internal(_) => Status::internal("internal error; it has been logged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_names_its_fields_and_internals_stay_inside() {
        let status = Status::from(ApiError::invalid("page_token", "not one of ours"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = status
            .get_error_details()
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["page_token"]);
        let status = Status::from(ApiError::Internal("secret detail".into()));
        assert!(!status.message().contains("secret"));
    }
}
