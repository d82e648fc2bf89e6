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
