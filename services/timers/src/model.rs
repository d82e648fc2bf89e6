//! What a timer is: its kind, its state, and a row as `timers list` shows it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The five timers of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// `reminder_day_lead` (24 h) before the start: `TriggerReminder(24H)`.
    // snake_case alone would say "reminder24h"; the column says "reminder_24h".
    #[serde(rename = "reminder_24h")]
    Reminder24h,
    /// `reminder_hour_lead` (1 h) before the start: `TriggerReminder(1H)`.
    #[serde(rename = "reminder_1h")]
    Reminder1h,
    /// `ready_lead` before the start: `MarkCallReady`.
    Ready,
    /// `missed_after` after the start: `MarkCallMissed`.
    Missed,
    /// `overrun_grace` after the end: `CompleteOverdueCall`.
    AutoComplete,
}

impl TimerKind {
    pub const ALL: [TimerKind; 5] = [
        TimerKind::Reminder24h,
        TimerKind::Reminder1h,
        TimerKind::Ready,
        TimerKind::Missed,
        TimerKind::AutoComplete,
    ];

    /// The `timers.kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Reminder24h => "reminder_24h",
            TimerKind::Reminder1h => "reminder_1h",
            TimerKind::Ready => "ready",
            TimerKind::Missed => "missed",
            TimerKind::AutoComplete => "auto_complete",
        }
    }

    pub fn parse(value: &str) -> Option<TimerKind> {
        TimerKind::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// Reminders are never sent late: one that comes due after the call's
    /// start is dropped (SPEC §4: a stale reminder is never delivered).
    pub fn is_reminder(self) -> bool {
        matches!(self, TimerKind::Reminder24h | TimerKind::Reminder1h)
    }
}

impl std::fmt::Display for TimerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a timer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerState {
    /// Waiting for its moment (possibly claimed by an instance: see the lease).
    Pending,
    /// Its command was sent and answered OK (applied or not: see `outcome`).
    Fired,
    /// A later call event made it moot (cancelled, moved, started, ended…).
    Retired,
    /// A reminder whose moment came after the call's start: not sent.
    Dropped,
    /// Refused for good, or out of attempts; `last_error` says why.
    Failed,
}

impl TimerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerState::Pending => "pending",
            TimerState::Fired => "fired",
            TimerState::Retired => "retired",
            TimerState::Dropped => "dropped",
            TimerState::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<TimerState> {
        [
            TimerState::Pending,
            TimerState::Fired,
            TimerState::Retired,
            TimerState::Dropped,
            TimerState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for TimerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One timer, as stored (for `skileez timers list --call ID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimerRow {
    pub id: i64,
    pub call_id: Uuid,
    pub kind: TimerKind,
    pub due_at: DateTime<Utc>,
    pub call_start: DateTime<Utc>,
    pub state: TimerState,
    /// The stream version of the call event that last set the row.
    pub call_version: i64,
    /// When it may be claimed next (the lease's end while leased).
    pub run_at: DateTime<Utc>,
    /// While pending: the instance holding the lease. Once settled: the
    /// instance that settled it.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// `applied` or `not_applied` for fired timers.
    pub outcome: Option<String>,
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RawRow {
    id: i64,
    call_id: Uuid,
    kind: String,
    due_at: DateTime<Utc>,
    call_start: DateTime<Utc>,
    state: String,
    call_version: i64,
    run_at: DateTime<Utc>,
    lease_owner: Option<String>,
    lease_until: Option<DateTime<Utc>>,
    attempts: i32,
    last_error: Option<String>,
    outcome: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    fired_at: Option<DateTime<Utc>>,
}

impl TryFrom<RawRow> for TimerRow {
    type Error = sqlx::Error;

    fn try_from(raw: RawRow) -> Result<Self, Self::Error> {
        let decode = |what: &str, value: &str| {
            sqlx::Error::Decode(format!("unknown timer {what} {value:?}").into())
        };
        Ok(TimerRow {
            id: raw.id,
            call_id: raw.call_id,
            kind: TimerKind::parse(&raw.kind).ok_or_else(|| decode("kind", &raw.kind))?,
            due_at: raw.due_at,
            call_start: raw.call_start,
            state: TimerState::parse(&raw.state).ok_or_else(|| decode("state", &raw.state))?,
            call_version: raw.call_version,
            run_at: raw.run_at,
            lease_owner: raw.lease_owner,
            lease_until: raw.lease_until,
            attempts: raw.attempts,
            last_error: raw.last_error,
            outcome: raw.outcome,
            traceparent: raw.traceparent,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
            fired_at: raw.fired_at,
        })
    }
}

/// The timers of one call, in due order (settled ones too, until purged).
pub async fn list_timers(pool: &PgPool, call_id: Uuid) -> Result<Vec<TimerRow>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(
        "SELECT id, call_id, kind, due_at, call_start, state, call_version, run_at,
                lease_owner, lease_until, attempts, last_error, outcome, traceparent,
                created_at, updated_at, fired_at
           FROM timers WHERE call_id = $1 ORDER BY due_at, id",
    )
    .bind(call_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(TimerRow::try_from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in TimerKind::ALL {
            assert_eq!(TimerKind::parse(kind.as_str()), Some(kind));
        }
        for state in ["pending", "fired", "retired", "dropped", "failed"] {
            assert_eq!(TimerState::parse(state).unwrap().as_str(), state);
        }
        assert_eq!(TimerKind::parse("soon"), None);
    }
}
