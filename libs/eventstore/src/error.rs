use uuid::Uuid;

use crate::types::ExpectedVersion;

/// What went wrong with a store operation, from the caller's side.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version: another command won the
    /// race, or the caller decided on stale state. Retryable after re-reading.
    #[error("stream {stream_id}: expected {expected}, found {}", found(.actual))]
    VersionConflict {
        stream_id: String,
        expected: ExpectedVersion,
        /// The stream's version when checked; `None` if it did not exist.
        actual: Option<u64>,
    },
    /// An event with this id is already stored (or appears twice in one
    /// append): usually a retried command that already went through.
    #[error("event {event_id} is already stored")]
    DuplicateEvent { event_id: Uuid },
    /// The append itself is malformed (no streams, a stream without events,
    /// the same stream twice); a bug in the caller, not a race.
    #[error("invalid append: {reason}")]
    InvalidAppend { reason: String },
    /// Any other database error, including the caller's own read-model writes
    /// through [`crate::UnitOfWork::conn`]; see [`StoreError::sqlstate`].
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The caller's deadline ([`crate::deadline`]) passed before or while
    /// the database worked: nothing was committed.
    #[error("the request's deadline passed before the database was done")]
    DeadlineExceeded,
    /// A stored row does not fit [`crate::RecordedEvent`].
    #[error("cannot decode stored event: {0}")]
    Decode(String),
}

fn found(actual: &Option<u64>) -> String {
    match actual {
        Some(version) => format!("version {version}"),
        None => "no stream".to_owned(),
    }
}

impl StoreError {
    /// The SQLSTATE of a database error, e.g. `23P01` (exclusion violation:
    /// double booking) or `23505` (unique violation) from a read-model write.
    /// `None` for the store's own typed errors and for errors that did not
    /// come from the server.
    pub fn sqlstate(&self) -> Option<String> {
        self.database_error()
            .and_then(|e| e.code())
            .map(|code| code.into_owned())
    }

    /// The name of the violated constraint, when the server reported one.
    pub fn constraint(&self) -> Option<String> {
        self.database_error()
            .and_then(|e| e.constraint())
            .map(str::to_owned)
    }

    fn database_error(&self) -> Option<&dyn sqlx::error::DatabaseError> {
        match self {
            Self::Database(e) => e.as_database_error(),
            _ => None,
        }
    }
}

/// A feed position token that is not of the form `<tx_id>-<position>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid feed position {token:?}: expected <tx_id>-<position>")]
pub struct InvalidFeedPosition {
    /// The offending token (truncated).
    pub token: String,
}
