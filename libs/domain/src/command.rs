//! What callers ask of a call: the input of [`crate::decide()`].
//!
//! Commands carry everything a decision needs that the call's own state does
//! not hold, already looked up by the service (the contract, an existing free
//! consultation, the start resolved to UTC). Person-issued commands carry the
//! authenticated [`Actor`]; timer commands carry nobody, since the clock is
//! not a person and they are checked against `now` instead.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{CallKind, ReminderKind};
use crate::error::DomainError;
use crate::ids::{CallId, ContractId, UserId};

/// The kind of caller, from the authenticated identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorRole {
    Student,
    Coach,
    Admin,
    /// Another platform service acting for the system (not for a person).
    Service,
}

impl ActorRole {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Student => "student",
            Self::Coach => "coach",
            Self::Admin => "admin",
            Self::Service => "service",
        }
    }

    /// Staff and systems: may book for anyone and cancel any call.
    #[must_use]
    pub fn is_privileged(self) -> bool {
        matches!(self, Self::Admin | Self::Service)
    }
}

impl fmt::Display for ActorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who issues a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user_id: UserId,
    pub role: ActorRole,
}

/// A requested start, already resolved to UTC by the caller
/// (with [`crate::time::resolve_local`] when given as a local time).
/// The zone and local text are kept on the booking event for the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedStart {
    pub utc: DateTime<Utc>,
    /// The IANA zone the request was made in, if any.
    pub time_zone: Option<String>,
    /// The `YYYY-MM-DDTHH:MM` the request named, if it named a local time.
    /// Requires `time_zone`.
    pub local_time: Option<String>,
}

impl RequestedStart {
    /// A start given as a UTC instant, with no zone.
    #[must_use]
    pub fn utc(at: DateTime<Utc>) -> Self {
        Self {
            utc: at,
            time_zone: None,
            local_time: None,
        }
    }
}

/// The state of a contract in the platform's contract system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContractStatus {
    Accepted,
    Paid,
    Cancelled,
    Completed,
}

impl ContractStatus {
    pub const ALL: [Self; 4] = [Self::Accepted, Self::Paid, Self::Cancelled, Self::Completed];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
        }
    }
}

impl fmt::Display for ContractStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContractStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| DomainError::InvalidArgument {
                field: "contract_status",
                message: "must be one of accepted, paid, cancelled, completed".to_owned(),
            })
    }
}

/// The service's projection of a contract at decision time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractSnapshot {
    pub id: ContractId,
    pub student_id: UserId,
    pub coach_id: UserId,
    pub status: ContractStatus,
    pub session_minutes: u32,
    /// `None` = unlimited.
    pub sessions_total: Option<u32>,
    /// Sessions booked and not given back, this booking excluded.
    pub sessions_used: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleCall {
    /// Minted by the caller so that a retry books the same call.
    pub call_id: CallId,
    pub kind: CallKind,
    pub student_id: UserId,
    pub coach_id: UserId,
    /// Required for a paid session, absent for a free consultation.
    pub contract: Option<ContractSnapshot>,
    pub start: RequestedStart,
    pub by: Actor,
    /// An active free consultation of this pair, looked up by the service.
    /// The database's partial unique index is the final guard against races.
    pub existing_free_consultation: Option<CallId>,
    /// The booker's note, already trimmed and bounded by the caller.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RescheduleCall {
    pub by: Actor,
    /// The id of the successor call, minted by the caller.
    pub new_call_id: CallId,
    pub new_start: RequestedStart,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Schedule(ScheduleCall),
    Reschedule(RescheduleCall),
    Cancel { by: Actor, reason: Option<String> },
    Join { by: Actor },
    End { by: Actor },
    // Timer commands: sent when their moment comes; stale ones are no-ops.
    MarkReady,
    MarkMissed,
    TriggerReminder { kind: ReminderKind },
    CompleteOverdue,
}

impl Command {
    /// A short name for logs, spans and error messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Schedule(_) => "schedule",
            Self::Reschedule(_) => "reschedule",
            Self::Cancel { .. } => "cancel",
            Self::Join { .. } => "join",
            Self::End { .. } => "end",
            Self::MarkReady => "mark_ready",
            Self::MarkMissed => "mark_missed",
            Self::TriggerReminder { .. } => "trigger_reminder",
            Self::CompleteOverdue => "complete_overdue",
        }
    }

    /// Who issued it; `None` for timer commands.
    #[must_use]
    pub fn actor(&self) -> Option<&Actor> {
        match self {
            Self::Schedule(c) => Some(&c.by),
            Self::Reschedule(c) => Some(&c.by),
            Self::Cancel { by, .. } | Self::Join { by } | Self::End { by } => Some(by),
            Self::MarkReady
            | Self::MarkMissed
            | Self::TriggerReminder { .. }
            | Self::CompleteOverdue => None,
        }
    }

    /// Whether the command comes from the timers service.
    #[must_use]
    pub fn is_timer(&self) -> bool {
        self.actor().is_none()
    }
}
