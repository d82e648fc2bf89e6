//! The Postgres event store: the system of record for call events, and the
//! outbox they are published from.
//!
//! Scheduling appends the events a command produced with [`EventStore::append`]:
//! an optimistic-concurrency check per stream (one stream per call), then the
//! events, in a transaction the caller also writes its read models into
//! ([`UnitOfWork`]) before committing. Nothing is published from the request
//! path; a relay tails [`EventStore::read_feed`] and publishes what it reads,
//! so an event is published if and only if it was committed.
//!
//! # The feed and its watermark
//!
//! The feed is ordered by `(tx_id, position)`, where `tx_id` is the id of the
//! writing transaction (`xid8`, `pg_current_xact_id()`), and only returns events
//! of transactions below `pg_snapshot_xmin(pg_current_snapshot())`, the oldest
//! transaction still running on the server. Ordering by `position` alone
//! loses events: positions are handed out at insert, not at commit, so a
//! reader that resumes after the highest position it has seen skips a lower
//! one whose transaction commits later. Below the xmin every transaction has
//! finished, and any transaction that writes later gets a higher id, so what
//! the feed has returned never changes behind a reader's back: resuming
//! after the last [`FeedPosition`] seen misses nothing and repeats nothing.
//!
//! The costs: a writing transaction left open anywhere on the server holds the
//! feed back until it ends (set `idle_in_transaction_session_timeout`, alert on
//! relay lag), and the feed is in transaction-id order, which only equals each
//! stream's version order because [`EventStore::append`] takes all its stream
//! locks before the transaction's first write (see there).
//!
//! # Schema
//!
//! [`MIGRATOR`] holds the migrations of the whole system (`migrations/` at the
//! workspace root); this crate owns `0001_event_store.sql`.

pub mod deadline;
mod error;
mod store;
mod types;

pub use error::{InvalidFeedPosition, StoreError};
pub use store::{EventStore, UnitOfWork};
pub use types::{ExpectedVersion, FeedPosition, NewEvent, RecordedEvent, StreamAppend};

/// Every migration of the system, embedded at compile time. Services run it at
/// start; the test kit builds its template database from it.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a pooled connection may sit unused before it is checked with a
/// round trip on its way out of the pool.
pub const POOL_PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// The connection pool every service opens: `max_connections`, a bounded
/// wait for a connection, and a liveness check only for a connection that
/// has been idle.
///
/// sqlx's default pings every connection before every use, one extra round
/// trip per query: on the read path that is half the database work. A
/// connection that has been busy a moment ago is alive; one that has been
/// idle (a database restart, a dropped link) is checked as before, so a
/// dead one is still replaced before a caller sees it.
pub fn pool_options(max_connections: u32) -> sqlx::postgres::PgPoolOptions {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= POOL_PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}
