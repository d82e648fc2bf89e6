//! The `timers` table (`migrations/0006_timers.sql`): every statement the
//! service runs against it.
//!
//! The consumer writes in its own transaction ([`insert`], [`retire`]); the
//! claim loop takes due rows with a lease ([`claim`]), asks when to look
//! again ([`next_run_at`]) and settles what it fired in batches
//! ([`settle`]); housekeeping purges and measures.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::model::TimerKind;
use crate::plan::NewTimer;

/// The channel on which a written timer wakes the claim loops of every
/// instance (payload: its moment in Unix milliseconds). Only a wake-up: the
/// table is the queue.
pub const WAKE_CHANNEL: &str = "skileez_timers";

/// A timer this instance has claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub call_id: Uuid,
    pub kind: TimerKind,
    pub due_at: DateTime<Utc>,
    pub call_start: DateTime<Utc>,
    /// When to fire: `due_at`, or the retry's moment (`run_at` before the claim).
    pub fire_at: DateTime<Utc>,
    /// The claim's number: the fence of its settle.
    pub attempts: i32,
    pub traceparent: Option<String>,
}

/// How a claimed timer ended this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Answered OK: `applied` if an event was appended.
    Fired { applied: bool },
    /// A reminder whose moment came after the call's start.
    Dropped,
    /// Refused for good, or out of attempts.
    Failed { error: String },
    /// Try again at `at` (a retryable failure, or not due yet).
    Retry { at: DateTime<Utc>, error: String },
    /// Not fired (shutdown): back to pending at `at`, for any instance.
    Release { at: DateTime<Utc> },
}

/// Creates the timers of a newly booked call at `version`; a timer that
/// exists already (a redelivery) is left as it is. Returns the earliest
/// moment among those created.
pub async fn insert(
    conn: &mut PgConnection,
    call_id: Uuid,
    version: i64,
    call_start: DateTime<Utc>,
    timers: &[NewTimer],
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let kinds: Vec<&str> = timers.iter().map(|t| t.kind.as_str()).collect();
    let dues: Vec<DateTime<Utc>> = timers.iter().map(|t| t.due_at).collect();
    let created: Vec<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO timers (call_id, kind, due_at, call_start, call_version, run_at, traceparent, tracestate)
         SELECT $1, t.kind, t.due_at, $3, $4, t.due_at, $5, $6
           FROM unnest($2::text[], $7::timestamptz[]) AS t(kind, due_at)
         ON CONFLICT (call_id, kind) DO NOTHING
         RETURNING due_at",
    )
    .bind(call_id)
    .bind(&kinds)
    .bind(call_start)
    .bind(version)
    .bind(traceparent)
    .bind(tracestate)
    .bind(&dues)
    .fetch_all(conn)
    .await?;
    Ok(created.into_iter().min())
}

/// Retires the pending timers of `kinds` of a call, unless they were set by
/// an event of `version` or later. Returns how many.
pub async fn retire(
    conn: &mut PgConnection,
    call_id: Uuid,
    version: i64,
    kinds: &[TimerKind],
) -> Result<u64, sqlx::Error> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    Ok(sqlx::query(
        "UPDATE timers SET state = 'retired', call_version = $2, updated_at = now()
          WHERE call_id = $1 AND kind = ANY($3) AND state = 'pending' AND call_version < $2",
    )
    .bind(call_id)
    .bind(version)
    .bind(&kinds)
    .execute(conn)
    .await?
    .rows_affected())
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    call_id: Uuid,
    kind: String,
    due_at: DateTime<Utc>,
    call_start: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    attempts: i32,
    traceparent: Option<String>,
}

/// Claims up to `limit` pending timers whose run_at is within `ahead` of
/// now, for `lease`: their run_at moves to the lease's end, so that no
/// instance sees them again before it, and every instance may take them
/// after it (the holder died). Rows locked by another claim or by the
/// consumer are skipped, not waited for.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: Duration,
    ahead: Duration,
    limit: u32,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows: Vec<ClaimedRow> = sqlx::query_as(
        "UPDATE timers t
            SET lease_owner = $1,
                lease_until = now() + $2 * interval '1 millisecond',
                run_at = now() + $2 * interval '1 millisecond',
                attempts = t.attempts + 1
           FROM (SELECT id, run_at FROM timers
                  WHERE state = 'pending' AND run_at <= now() + $3 * interval '1 millisecond'
                  ORDER BY run_at
                  LIMIT $4
                  FOR UPDATE SKIP LOCKED) c
          WHERE t.id = c.id
      RETURNING t.id, t.call_id, t.kind, t.due_at, t.call_start, c.run_at AS fire_at, t.attempts,
                t.traceparent",
    )
    .bind(owner)
    .bind(millis(lease))
    .bind(millis(ahead))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut claimed: Vec<Claimed> = rows
        .into_iter()
        .filter_map(|row| {
            Some(Claimed {
                kind: TimerKind::parse(&row.kind)?,
                id: row.id,
                call_id: row.call_id,
                due_at: row.due_at,
                call_start: row.call_start,
                fire_at: row.fire_at,
                attempts: row.attempts,
                traceparent: row.traceparent,
            })
        })
        .collect();
    claimed.sort_by_key(|c| c.fire_at);
    Ok(claimed)
}

/// The earliest run_at of any pending timer: the next due one, or the end of
/// a lease held by an instance that may have died.
pub async fn next_run_at(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(run_at) FROM timers WHERE state = 'pending'")
        .fetch_one(pool)
        .await
}

/// Settles claimed timers in one statement. A row whose lease was taken over
/// meanwhile (another owner, or another claim number) is left alone, and so
/// is one retired meanwhile, unless its command was applied after all.
/// Returns how many rows changed.
pub async fn settle(
    pool: &PgPool,
    owner: &str,
    settled: &[(Claimed, Settle)],
) -> Result<u64, sqlx::Error> {
    if settled.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(settled.len());
    let mut attempts = Vec::with_capacity(settled.len());
    let mut states = Vec::with_capacity(settled.len());
    let mut outcomes: Vec<Option<&str>> = Vec::with_capacity(settled.len());
    let mut errors: Vec<Option<String>> = Vec::with_capacity(settled.len());
    let mut run_ats: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(settled.len());
    for (timer, settle) in settled {
        ids.push(timer.id);
        attempts.push(timer.attempts);
        let (state, outcome, error, run_at) = match settle {
            Settle::Fired { applied } => (
                "fired",
                Some(if *applied { "applied" } else { "not_applied" }),
                None,
                None,
            ),
            Settle::Dropped => ("dropped", Some("misfire"), None, None),
            Settle::Failed { error } => ("failed", None, Some(error.clone()), None),
            Settle::Retry { at, error } => ("pending", None, Some(error.clone()), Some(*at)),
            Settle::Release { at } => ("pending", None, None, Some(*at)),
        };
        states.push(state);
        outcomes.push(outcome);
        errors.push(error);
        run_ats.push(run_at);
    }
    Ok(sqlx::query(
        "UPDATE timers t
            SET state = s.state,
                outcome = COALESCE(s.outcome, t.outcome),
                last_error = CASE WHEN s.state = 'fired' THEN NULL ELSE COALESCE(s.error, t.last_error) END,
                run_at = COALESCE(s.run_at, t.run_at),
                -- Kept on a settled row: who settled it, and under which lease.
                lease_owner = CASE WHEN s.state = 'pending' THEN NULL ELSE t.lease_owner END,
                lease_until = CASE WHEN s.state = 'pending' THEN NULL ELSE t.lease_until END,
                fired_at = CASE WHEN s.state = 'fired' THEN now() ELSE t.fired_at END,
                updated_at = now()
           FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
                AS s(id, attempts, state, outcome, error, run_at)
          WHERE t.id = s.id AND t.lease_owner = $1 AND t.attempts = s.attempts
            AND (t.state = 'pending' OR (t.state = 'retired' AND s.outcome = 'applied'))",
    )
    .bind(owner)
    .bind(&ids)
    .bind(&attempts)
    .bind(&states)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&run_ats)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Wakes the claim loops of every instance for a timer due at `due_at`;
/// sent after the commit that wrote it.
pub async fn notify(pool: &PgPool, due_at: DateTime<Utc>) {
    if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WAKE_CHANNEL)
        .bind(due_at.timestamp_millis().to_string())
        .execute(pool)
        .await
    {
        tracing::debug!(%error, "cannot notify the other timer instances; they wake on their own");
    }
}

/// Pending timers, and how long the most overdue unclaimed one has waited
/// past its run_at (0 when none is overdue).
pub async fn pending_stats(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    let (pending, overdue): (i64, Option<f64>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM timers WHERE state = 'pending'),
                (SELECT extract(epoch FROM now() - min(run_at))::float8
                   FROM timers WHERE state = 'pending' AND run_at < now())",
    )
    .fetch_one(pool)
    .await?;
    Ok((pending, overdue.unwrap_or(0.0).max(0.0)))
}

/// Deletes settled timers that last changed before `older_than`, in batches;
/// returns how many.
pub async fn purge(pool: &PgPool, older_than: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    purge_in_batches(
        pool,
        "DELETE FROM timers WHERE id = ANY (ARRAY(
             SELECT id FROM timers WHERE state <> 'pending' AND updated_at < $1 LIMIT $2))",
        older_than,
    )
    .await
}

/// Deletes this consumer's inbox rows processed before `older_than` (the
/// version check of `inbox::advance` keeps refusing a very late redelivery).
pub async fn purge_inbox(
    pool: &PgPool,
    consumer: &str,
    older_than: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 10_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM consumer_inbox WHERE ctid = ANY (ARRAY(
                 SELECT ctid FROM consumer_inbox
                  WHERE consumer = $1 AND processed_at < $2 LIMIT $3))",
        )
        .bind(consumer)
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

async fn purge_in_batches(
    pool: &PgPool,
    statement: &'static str,
    older_than: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 10_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(statement)
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

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
