//! The caller's deadline, carried to the database: a request handler runs
//! inside [`with_deadline`], and every transaction [`crate::EventStore`]
//! opens meanwhile gets `SET LOCAL statement_timeout` to the time that is
//! left. Without it, a request the caller has given up on (its future
//! dropped by the gRPC server) leaves its statement running, or waiting on
//! a lock, inside PostgreSQL until it finishes on its own.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the deadline of the database work it
/// does (none: no limit).
pub async fn with_deadline<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, work).await,
        None => work.await,
    }
}

/// The time left before the current deadline, if there is one.
pub fn remaining() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// The statement that opens a transaction under the current deadline:
/// `None` without a deadline, `Err` when it has passed already.
pub(crate) fn begin_statement() -> Result<Option<String>, crate::StoreError> {
    match remaining() {
        None => Ok(None),
        Some(left) if left < Duration::from_millis(1) => Err(crate::StoreError::DeadlineExceeded),
        Some(left) => Ok(Some(format!(
            "BEGIN; SET LOCAL statement_timeout = {}",
            left.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_deadline_is_the_scopes_and_a_passed_one_refuses_to_begin() {
        assert_eq!(remaining(), None);
        assert!(matches!(begin_statement(), Ok(None)));
        let soon = Instant::now() + Duration::from_secs(2);
        with_deadline(Some(soon), async {
            let left = remaining().expect("a deadline");
            assert!(left <= Duration::from_secs(2) && left > Duration::from_secs(1));
            let statement = begin_statement().unwrap().expect("a statement");
            assert!(statement.starts_with("BEGIN; SET LOCAL statement_timeout = "));
        })
        .await;
        let past = Instant::now() - Duration::from_millis(5);
        with_deadline(Some(past), async {
            assert!(matches!(
                begin_statement(),
                Err(crate::StoreError::DeadlineExceeded)
            ));
        })
        .await;
    }
}
