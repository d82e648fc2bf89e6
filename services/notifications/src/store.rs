//! The service's tables (`migrations/0007_notifications.sql`,
//! `0008_live_feed.sql`) and its read-only view of the directory
//! (`participants`).
//!
//! Functions taking a `&mut PgConnection` run inside the caller's
//! transaction (the consumer's); those taking a pool stand alone.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use skileez_proto::{call as ev, notifications as pb};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::convert::timestamp;
use crate::feed::{FeedItem, FeedKind};
use crate::model::{Channel, DeliveryState, NotificationKind};

/// A participant as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Participant {
    pub user_id: String,
    pub display_name: String,
    pub email: String,
    pub time_zone: String,
    pub locale: String,
    pub email_enabled: bool,
}

/// Reads the directory rows of `ids` (those it has).
pub async fn participants(
    conn: &mut PgConnection,
    ids: &[&str],
) -> Result<HashMap<String, Participant>, sqlx::Error> {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    let rows: Vec<Participant> = sqlx::query_as(
        "SELECT user_id, display_name, email, time_zone, locale, email_enabled
         FROM participants WHERE user_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|p| (p.user_id.clone(), p)).collect())
}

/// What the service knows of a call (`notification_calls`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CallRow {
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub version: i64,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub reschedule_count: i32,
    pub card: Vec<u8>,
}

impl CallRow {
    pub fn card(&self) -> Option<ev::CallCard> {
        ev::CallCard::decode(self.card.as_slice()).ok()
    }
}

/// Records the call's newest card; an older version changes nothing. The
/// reschedule count is only known from `CallScheduled` (`Some`) and kept
/// from then on.
pub async fn record_call(
    conn: &mut PgConnection,
    call_id: Uuid,
    chain_id: Uuid,
    card: &ev::CallCard,
    starts_at: DateTime<Utc>,
    reschedule_count: Option<u32>,
) -> Result<(), sqlx::Error> {
    let status = ev::CallStatus::try_from(card.status)
        .map(|s| s.as_str_name())
        .unwrap_or("CALL_STATUS_UNSPECIFIED");
    sqlx::query(
        "INSERT INTO notification_calls AS c
             (call_id, chain_id, version, status, starts_at, reschedule_count, card)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, 0), $7)
         ON CONFLICT (call_id) DO UPDATE SET
             version = excluded.version, status = excluded.status,
             starts_at = excluded.starts_at, card = excluded.card,
             reschedule_count = COALESCE($6, c.reschedule_count), updated_at = now()
         WHERE c.version < excluded.version",
    )
    .bind(call_id)
    .bind(chain_id)
    .bind(i64::try_from(card.version).unwrap_or(i64::MAX))
    .bind(status)
    .bind(starts_at)
    .bind(reschedule_count.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
    .bind(card.encode_to_vec())
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn call_row(
    executor: impl sqlx::PgExecutor<'_>,
    call_id: Uuid,
) -> Result<Option<CallRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT call_id, chain_id, version, status, starts_at, reschedule_count, card
         FROM notification_calls WHERE call_id = $1",
    )
    .bind(call_id)
    .fetch_optional(executor)
    .await
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub kind: NotificationKind,
    pub recipient_id: &'a str,
    pub channel: Channel,
    pub state: DeliveryState,
    pub address: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub invite_method: Option<&'static str>,
    pub invite_sequence: Option<u32>,
    pub message: Option<&'a [u8]>,
    /// Why it was skipped or went stale.
    pub note: Option<&'a str>,
    pub event_id: Uuid,
    /// The trace the consumer handled the event in (W3C), continued by the
    /// worker's SMTP span.
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

/// Inserts a delivery unless one exists for its (call, kind, recipient,
/// channel): `Some(id)` if this call made it.
pub async fn insert_delivery(
    conn: &mut PgConnection,
    d: &NewDelivery<'_>,
) -> Result<Option<i64>, sqlx::Error> {
    let pending = d.state == DeliveryState::Pending;
    sqlx::query_scalar(
        "INSERT INTO notification_deliveries
             (call_id, chain_id, kind, recipient_id, channel, state, address, message_id,
              invite_method, invite_sequence, message, next_attempt_at, last_error, event_id, sent_at,
              traceparent, tracestate)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 CASE WHEN $12 THEN now() END, $13, $14, CASE WHEN $6 = 'sent' THEN now() END,
                 $15, $16)
         ON CONFLICT ON CONSTRAINT notification_deliveries_once DO NOTHING
         RETURNING delivery_id",
    )
    .bind(d.call_id)
    .bind(d.chain_id)
    .bind(d.kind.as_str())
    .bind(d.recipient_id)
    .bind(d.channel.as_str())
    .bind(d.state.as_str())
    .bind(d.address)
    .bind(d.message_id)
    .bind(d.invite_method)
    .bind(d.invite_sequence.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
    .bind(d.message)
    .bind(pending)
    .bind(d.note)
    .bind(d.event_id)
    .bind(d.traceparent)
    .bind(d.tracestate)
    .fetch_optional(conn)
    .await
}

/// Whether the (call, kind, recipient, channel) delivery exists already.
pub async fn delivery_exists(
    conn: &mut PgConnection,
    call_id: Uuid,
    kind: NotificationKind,
    recipient_id: &str,
    channel: Channel,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notification_deliveries
             WHERE call_id = $1 AND kind = $2 AND recipient_id = $3 AND channel = $4)",
    )
    .bind(call_id)
    .bind(kind.as_str())
    .bind(recipient_id)
    .bind(channel.as_str())
    .fetch_one(conn)
    .await
}

/// The highest invite SEQUENCE recorded for the chain and recipient.
pub async fn max_invite_sequence(
    conn: &mut PgConnection,
    chain_id: Uuid,
    recipient_id: &str,
) -> Result<Option<u32>, sqlx::Error> {
    let max: Option<i32> = sqlx::query_scalar(
        "SELECT max(invite_sequence) FROM notification_deliveries
         WHERE chain_id = $1 AND recipient_id = $2 AND channel = 'email'",
    )
    .bind(chain_id)
    .bind(recipient_id)
    .fetch_one(conn)
    .await?;
    Ok(max.and_then(|n| u32::try_from(n).ok()))
}

/// An in-app notification as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NotificationRow {
    pub notification_id: Uuid,
    pub user_id: String,
    pub sequence: i64,
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub card: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
}

impl NotificationRow {
    pub fn to_proto(&self) -> pb::Notification {
        pb::Notification {
            notification_id: self.notification_id.to_string(),
            user_id: self.user_id.clone(),
            sequence: u64::try_from(self.sequence).unwrap_or(0),
            kind: NotificationKind::parse(&self.kind)
                .map(|k| k.to_proto() as i32)
                .unwrap_or_default(),
            call_id: self.call_id.to_string(),
            chain_id: self.chain_id.to_string(),
            title: self.title.clone(),
            body: self.body.clone(),
            created_at: Some(timestamp(self.created_at)),
            read_at: self.read_at.map(timestamp),
            card: ev::CallCard::decode(self.card.as_slice()).ok(),
        }
    }
}

pub struct NewNotification<'a> {
    pub user_id: &'a str,
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub kind: NotificationKind,
    pub title: &'a str,
    pub body: &'a str,
    pub card: &'a ev::CallCard,
    pub event_id: Uuid,
}

const NOTIFICATION_COLUMNS: &str = "notification_id, user_id, sequence, call_id, chain_id, kind, title, body, card, created_at, read_at";

/// Stores an in-app notification under the user's next sequence. The
/// counter row stays locked until the transaction ends, which keeps each
/// user's sequences in commit order; a transaction that writes for several
/// users must take them in one order (sorted ids) to avoid deadlocks.
pub async fn insert_notification(
    conn: &mut PgConnection,
    n: &NewNotification<'_>,
) -> Result<NotificationRow, sqlx::Error> {
    let sequence: i64 = sqlx::query_scalar(
        "INSERT INTO notification_users AS u (user_id, last_sequence) VALUES ($1, 1)
         ON CONFLICT (user_id) DO UPDATE SET last_sequence = u.last_sequence + 1
         RETURNING last_sequence",
    )
    .bind(n.user_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO notifications
             (notification_id, user_id, sequence, call_id, chain_id, kind, title, body, card, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {NOTIFICATION_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(n.user_id)
    .bind(sequence)
    .bind(n.call_id)
    .bind(n.chain_id)
    .bind(n.kind.as_str())
    .bind(n.title)
    .bind(n.body)
    .bind(n.card.encode_to_vec())
    .bind(n.event_id)
    .fetch_one(conn)
    .await
}

/// The user's notifications below `before` (a sequence; `None`: from the
/// newest), newest first.
pub async fn list_notifications(
    pool: &PgPool,
    user_id: &str,
    unread_only: bool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications
         WHERE user_id = $1 AND ($2 = false OR read_at IS NULL)
           AND ($3::bigint IS NULL OR sequence < $3)
         ORDER BY sequence DESC LIMIT $4"
    )))
    .bind(user_id)
    .bind(unread_only)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The user's notifications after `after`, oldest first.
pub async fn notifications_after(
    pool: &PgPool,
    user_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<NotificationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications
         WHERE user_id = $1 AND sequence > $2
         ORDER BY sequence LIMIT $3"
    )))
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The user's last sequence (0: none yet). Purged notifications keep their
/// numbers taken: the counter never goes back.
pub async fn last_sequence(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_sequence FROM notification_users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(last.unwrap_or(0))
}

/// Appends an item to the user's live feed under their next position
/// (`migrations/0008_live_feed.sql`). Takes the same per-user counter row
/// as [`insert_notification`], so the same ordering rule holds: several
/// users in one transaction in sorted id order.
pub async fn insert_feed_item(
    conn: &mut PgConnection,
    user_id: &str,
    kind: FeedKind,
    call_id: Uuid,
    event_id: Uuid,
    body: &serde_json::Value,
) -> Result<FeedItem, sqlx::Error> {
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO notification_users AS u (user_id, last_sequence, last_position) VALUES ($1, 0, 1)
         ON CONFLICT (user_id) DO UPDATE SET last_position = u.last_position + 1
         RETURNING last_position",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO live_feed (user_id, position, kind, call_id, event_id, item)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(user_id)
    .bind(position)
    .bind(kind.as_str())
    .bind(call_id)
    .bind(event_id)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(FeedItem {
        user_id: user_id.to_owned(),
        position,
        body: body.clone(),
    })
}

/// The user's feed items after `after`, oldest first.
pub async fn feed_after(
    pool: &PgPool,
    user_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<FeedItem>, sqlx::Error> {
    let rows: Vec<(i64, serde_json::Value)> = sqlx::query_as(
        "SELECT position, item FROM live_feed
         WHERE user_id = $1 AND position > $2
         ORDER BY position LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(position, body)| FeedItem {
            user_id: user_id.to_owned(),
            position,
            body,
        })
        .collect())
}

/// The user's last feed position (0: none yet). Purged items keep their
/// numbers taken.
pub async fn last_position(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_position FROM notification_users WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    Ok(last.unwrap_or(0))
}

/// Deletes feed items made before `before`, in batches; how many.
pub async fn purge_feed(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 5_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM live_feed WHERE (user_id, position) IN (
                 SELECT user_id, position FROM live_feed WHERE created_at < $1 LIMIT $2)",
        )
        .bind(before)
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

pub async fn unread_count(pool: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL")
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// Marks the user's notifications `ids` (or all, with `None`) read; how many
/// were unread.
pub async fn mark_read(
    pool: &PgPool,
    user_id: &str,
    ids: Option<&[Uuid]>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET read_at = now()
         WHERE user_id = $1 AND read_at IS NULL
           AND ($2::uuid[] IS NULL OR notification_id = ANY($2))",
    )
    .bind(user_id)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes read notifications read before `read_before`, in batches; how many.
pub async fn purge_read(pool: &PgPool, read_before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const BATCH: i64 = 5_000;
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM notifications WHERE notification_id = ANY (ARRAY(
                 SELECT notification_id FROM notifications
                 WHERE read_at IS NOT NULL AND read_at < $1 LIMIT $2))",
        )
        .bind(read_before)
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

/// Takes the job's run for `slot` (its scheduled moment) if no instance has
/// taken it or a later one: true for exactly one caller per slot.
pub async fn take_job_slot(
    pool: &PgPool,
    job: &str,
    slot: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE notification_jobs SET last_run_at = $2 WHERE job = $1 AND last_run_at < $2",
    )
    .bind(job)
    .bind(slot)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(taken == 1)
}

pub async fn record_job_result(pool: &PgPool, job: &str, result: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE notification_jobs SET last_result = $2 WHERE job = $1")
        .bind(job)
        .bind(result)
        .execute(pool)
        .await?;
    Ok(())
}

/// An e-mail delivery taken by this instance for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub delivery_id: i64,
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub kind: String,
    pub recipient_id: String,
    pub address: Option<String>,
    pub message_id: Option<String>,
    pub invite_method: Option<String>,
    pub invite_sequence: Option<i32>,
    pub message: Option<Vec<u8>>,
    /// This attempt's number; also the fence of its settle.
    pub attempts: i32,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Leases up to `limit` due e-mail deliveries for `lease` and counts an
/// attempt on each. Due: pending and past its back-off, or sending with its
/// lease run out (its instance died). An invite waits while an invite of a
/// lower SEQUENCE of its chain to the same recipient is still on its way.
/// Rows leased by another instance right now are skipped, not waited for.
pub async fn claim_due(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    sqlx::query_as(
        "WITH due AS (
             SELECT d.delivery_id FROM notification_deliveries d
             WHERE d.state IN ('pending', 'sending') AND d.next_attempt_at <= now()
               AND NOT EXISTS (
                   SELECT 1 FROM notification_deliveries e
                   WHERE e.chain_id = d.chain_id AND e.recipient_id = d.recipient_id
                     AND e.invite_sequence < d.invite_sequence
                     AND e.state IN ('pending', 'sending'))
             ORDER BY d.next_attempt_at, d.delivery_id
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         UPDATE notification_deliveries d
         SET state = 'sending', attempts = d.attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2::double precision / 1000),
             updated_at = now()
         FROM due WHERE d.delivery_id = due.delivery_id
         RETURNING d.delivery_id, d.call_id, d.chain_id, d.kind, d.recipient_id, d.address,
                   d.message_id, d.invite_method, d.invite_sequence, d.message, d.attempts,
                   d.traceparent, d.tracestate",
    )
    .bind(limit)
    .bind(lease_ms as f64)
    .fetch_all(pool)
    .await
}

/// When the next delivery falls due, if any is waiting.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM notification_deliveries WHERE state IN ('pending', 'sending')",
    )
    .fetch_one(pool)
    .await
}

/// Whether an invite of a higher SEQUENCE of the chain already went to the
/// recipient (this one is superseded).
pub async fn superseded(
    pool: &PgPool,
    chain_id: Uuid,
    recipient_id: &str,
    sequence: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notification_deliveries
             WHERE chain_id = $1 AND recipient_id = $2 AND channel = 'email'
               AND invite_sequence > $3 AND state = 'sent')",
    )
    .bind(chain_id)
    .bind(recipient_id)
    .bind(sequence)
    .fetch_one(pool)
    .await
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Retry at the given moment.
    Retry {
        error: String,
        at: DateTime<Utc>,
    },
    Dead {
        error: String,
    },
    Stale {
        reason: String,
    },
}

/// Records an attempt's outcome, unless the lease was lost meanwhile (another
/// instance took the row after it ran out: its attempt counts, not this one).
/// Returns whether it recorded.
pub async fn settle(
    pool: &PgPool,
    delivery_id: i64,
    attempt: i32,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let (state, error, at): (&str, Option<&str>, Option<DateTime<Utc>>) = match outcome {
        Outcome::Sent => ("sent", None, None),
        Outcome::Retry { error, at } => ("pending", Some(error), Some(*at)),
        Outcome::Dead { error } => ("dead", Some(error), None),
        Outcome::Stale { reason } => ("stale", Some(reason), None),
    };
    let done = sqlx::query(
        "UPDATE notification_deliveries SET
             state = $3,
             last_error = COALESCE($4, CASE WHEN $3 = 'sent' THEN NULL ELSE last_error END),
             next_attempt_at = $5,
             sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,
             -- Kept for a retry of a dead letter; not needed once it went out.
             message = CASE WHEN $3 IN ('sent', 'stale') THEN NULL ELSE message END,
             updated_at = now()
         WHERE delivery_id = $1 AND attempts = $2 AND state = 'sending'",
    )
    .bind(delivery_id)
    .bind(attempt)
    .bind(state)
    .bind(error)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery as `ListDeliveries` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub delivery_id: i64,
    pub call_id: Uuid,
    pub chain_id: Uuid,
    pub kind: String,
    pub recipient_id: String,
    pub channel: String,
    pub state: String,
    pub address: Option<String>,
    pub message_id: Option<String>,
    pub invite_method: Option<String>,
    pub invite_sequence: Option<i32>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl DeliveryRow {
    pub fn to_proto(&self) -> pb::Delivery {
        pb::Delivery {
            delivery_id: u64::try_from(self.delivery_id).unwrap_or(0),
            call_id: self.call_id.to_string(),
            chain_id: self.chain_id.to_string(),
            kind: NotificationKind::parse(&self.kind)
                .map(|k| k.to_proto() as i32)
                .unwrap_or_default(),
            recipient_id: self.recipient_id.clone(),
            channel: match Channel::parse(&self.channel) {
                Some(Channel::Email) => pb::Channel::Email as i32,
                Some(Channel::InApp) => pb::Channel::InApp as i32,
                None => 0,
            },
            state: DeliveryState::parse(&self.state)
                .map(|s| s.to_proto() as i32)
                .unwrap_or_default(),
            address: self.address.clone().unwrap_or_default(),
            message_id: self.message_id.clone().unwrap_or_default(),
            invite_method: self.invite_method.clone().unwrap_or_default(),
            invite_sequence: self
                .invite_sequence
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default(),
            attempts: u32::try_from(self.attempts).unwrap_or_default(),
            last_error: self.last_error.clone().unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            sent_at: self.sent_at.map(timestamp),
            next_attempt_at: self.next_attempt_at.map(timestamp),
        }
    }
}

/// What `ListDeliveries` filters on.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub states: Vec<DeliveryState>,
    pub call_id: Option<Uuid>,
    pub recipient_id: Option<String>,
    pub channel: Option<Channel>,
    /// Only ids below this one (the page token).
    pub before: Option<i64>,
    pub limit: i64,
}

pub async fn list_deliveries(
    pool: &PgPool,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let states: Option<Vec<&str>> =
        (!filter.states.is_empty()).then(|| filter.states.iter().map(|s| s.as_str()).collect());
    sqlx::query_as(
        "SELECT delivery_id, call_id, chain_id, kind, recipient_id, channel, state, address,
                message_id, invite_method, invite_sequence, attempts, last_error,
                created_at, updated_at, sent_at, next_attempt_at
         FROM notification_deliveries
         WHERE ($1::text[] IS NULL OR state = ANY($1))
           AND ($2::uuid IS NULL OR call_id = $2)
           AND ($3::text IS NULL OR recipient_id = $3)
           AND ($4::text IS NULL OR channel = $4)
           AND ($5::bigint IS NULL OR delivery_id < $5)
         ORDER BY delivery_id DESC LIMIT $6",
    )
    .bind(states)
    .bind(filter.call_id)
    .bind(filter.recipient_id.as_deref())
    .bind(filter.channel.map(Channel::as_str))
    .bind(filter.before)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// Puts dead letters (`ids`, or all with `None`) back in the queue with a
/// fresh budget of attempts; how many.
pub async fn retry_dead(pool: &PgPool, ids: Option<&[i64]>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notification_deliveries
         SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
         WHERE state = 'dead' AND message IS NOT NULL
           AND ($1::bigint[] IS NULL OR delivery_id = ANY($1))",
    )
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
