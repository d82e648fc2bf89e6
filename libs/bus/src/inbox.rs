//! The consumer side of exactly-once: dedupe and per-key order, recorded in
//! the consumer's own Postgres transaction.
//!
//! JetStream delivers at least once, and to several instances at once, so a
//! handler that changes the database does it like this, all in one
//! transaction:
//!
//! ```text
//! BEGIN
//!   claim(consumer, event_id)            -- false: done before; commit nothing, ack
//!   advance(consumer, call_id, version)  -- Stale: ack; Ahead: Retry later
//!   ... the handler's own writes ...
//! COMMIT                                 -- then the bus acks
//! ```
//!
//! Both rows are written in the transaction that applies the event, so either
//! the event is applied and recorded, or neither. A second instance handling
//! the same event at the same time waits on the first one's `claim` row and
//! then sees `false`; one handling a later event of the same key waits on the
//! `advance` row lock, so two instances never apply events of one key out of
//! order. Never hold such a transaction across a network call (NATS, SMTP):
//! it holds these locks.
//!
//! The tables are `consumer_inbox` and `consumer_positions`
//! (`migrations/0003_bus_inbox.sql`); `consumer` is the durable name, so
//! consumers do not see each other's rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Where an event stands against what its consumer applied before for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// The next one: apply it. The position has moved to it.
    Next,
    /// Applied already (this version or a later one): ack without applying.
    Stale,
    /// A predecessor is missing: answer [`crate::HandlerError::Retry`], so the
    /// event comes back once `expected` has been applied. Nothing was written.
    Ahead { expected: u64 },
}

/// Records that `consumer` processes `event_id` in the caller's transaction.
/// `false` if it did so before (a redelivery): the caller then commits
/// nothing else and acks. If another transaction is claiming the same event
/// right now, this waits for it to end: `false` if it committed, `true` if it
/// rolled back.
pub async fn claim(
    conn: &mut PgConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO consumer_inbox (consumer, event_id) VALUES ($1, $2)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Checks `version` against the last version `consumer` applied for `key`
/// (a call id), and moves the position to it if it is the next one. Versions
/// are the stream's own, 1-based and without gaps: a key never seen before
/// expects version 1, so a consumer that starts with an event it got before
/// its predecessor (another instance has version 1 in hand) waits for it
/// instead of skipping it.
///
/// The position's row stays locked until the caller's transaction ends, so a
/// second instance advancing the same key waits and then sees the new
/// position.
///
/// Only for a consumer that sees every version of a key. One that filters
/// out some event types sees gaps, would wait for them forever, and must use
/// [`advance_at_least`] instead.
pub async fn advance(
    conn: &mut PgConnection,
    consumer: &str,
    key: &str,
    version: u64,
) -> Result<Order, sqlx::Error> {
    let version = to_i64(version)?;
    // Two rounds at most: the insert below only fails to insert because
    // another transaction committed the row, which the second read then sees
    // (under READ COMMITTED; REPEATABLE READ raises a serialization failure
    // instead).
    for _ in 0..2 {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT version FROM consumer_positions WHERE consumer = $1 AND key = $2 FOR UPDATE",
        )
        .bind(consumer)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match last {
            Some(last) if version <= last => return Ok(Order::Stale),
            Some(last) if version == last + 1 => {
                sqlx::query(
                    "UPDATE consumer_positions SET version = $3 WHERE consumer = $1 AND key = $2",
                )
                .bind(consumer)
                .bind(key)
                .bind(version)
                .execute(&mut *conn)
                .await?;
                return Ok(Order::Next);
            }
            Some(last) => {
                return Ok(Order::Ahead {
                    expected: to_u64(last + 1),
                });
            }
            None if version != 1 => return Ok(Order::Ahead { expected: 1 }),
            None => {
                // Waits if another transaction is inserting the same key; if
                // that one commits, nothing is inserted here and the loop reads
                // (and locks) its row.
                let inserted = sqlx::query(
                    "INSERT INTO consumer_positions (consumer, key, version) VALUES ($1, $2, $3)
                     ON CONFLICT (consumer, key) DO NOTHING",
                )
                .bind(consumer)
                .bind(key)
                .bind(version)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok(Order::Next);
                }
            }
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "consumer_positions ({consumer}, {key}) neither readable nor insertable"
    )))
}

/// For consumers that see only some versions of a key (they filter event
/// types) or may start in the middle of a stream: `Next` for any version
/// above the last one applied, or for a key never seen; `Stale` otherwise.
/// Never `Ahead`, so it keeps no order beyond "never go back": two events of
/// one key handled at once by two instances may be applied in either order,
/// and the later-numbered one wins. Locks the position like [`advance`].
pub async fn advance_at_least(
    conn: &mut PgConnection,
    consumer: &str,
    key: &str,
    version: u64,
) -> Result<Order, sqlx::Error> {
    // ON CONFLICT DO UPDATE locks the conflicting row even when its WHERE
    // leaves it unchanged.
    let moved = sqlx::query(
        "INSERT INTO consumer_positions AS p (consumer, key, version) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, key) DO UPDATE SET version = excluded.version
         WHERE p.version < excluded.version",
    )
    .bind(consumer)
    .bind(key)
    .bind(to_i64(version)?)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(if moved == 1 {
        Order::Next
    } else {
        Order::Stale
    })
}

/// Deletes inbox rows processed before `older_than`, in batches so that no
/// single statement holds many locks; returns how many. Keep rows well past
/// the longest time a message can be redelivered (the JetStream duplicate
/// window and the consumers' retry horizon): an event redelivered after its
/// row is gone is processed again, unless [`advance`] reports it `Stale`.
/// Positions are never purged: they are one row per key.
pub async fn purge_inbox(pool: &PgPool, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 10_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM consumer_inbox WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM consumer_inbox WHERE processed_at < $1 LIMIT $2))",
        )
        .bind(older_than)
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        purged += deleted;
        if deleted < BATCH as u64 {
            return Ok(purged);
        }
    }
}

/// [`purge_inbox`] for rows older than `age` from now.
pub async fn purge_inbox_older_than(pool: &PgPool, age: Duration) -> Result<u64, sqlx::Error> {
    let age = chrono::Duration::from_std(age).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    purge_inbox(pool, Utc::now() - age).await
}

fn to_i64(version: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(version).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

fn to_u64(version: i64) -> u64 {
    // The column is checked to be >= 1.
    u64::try_from(version).unwrap_or(0)
}
