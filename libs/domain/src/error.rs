//! Why a command was refused, from the caller's side.
//!
//! One enum for the whole domain. Each variant's message names the field or
//! rule and says what to do instead, because it reaches people through the
//! API. [`DomainError::kind`], [`DomainError::reason`] and
//! [`DomainError::field`] give the service what it needs to build a rich
//! gRPC status (code, `ErrorInfo.reason`, `BadRequest` field violation)
//! in one place, without matching on variants itself.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use thiserror::Error;

use crate::call::CallStatus;
use crate::command::{ActorRole, ContractStatus};
use crate::ids::CallId;
use crate::rules::{MAX_REASON_CHARS, SESSION_MINUTES};
use crate::time::TimeError;

/// The gRPC status class of an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad input, whatever the state of the system (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// A rule or the call's state refuses it (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// A duplicate of something that may exist once (`ALREADY_EXISTS`).
    AlreadyExists,
    /// This caller may not do this (`PERMISSION_DENIED`).
    PermissionDenied,
    /// `NOT_FOUND`.
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("invalid {field}: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },

    #[error("invalid {field}: {source}")]
    Time {
        field: &'static str,
        source: TimeError,
    },

    #[error(
        "the call must be booked at least the minimum notice ahead: \
         choose a start at or after {}",
        rfc3339(earliest)
    )]
    NotEnoughNotice { earliest: DateTime<Utc> },

    #[error(
        "the call is too far ahead: choose a start at or before {}",
        rfc3339(latest)
    )]
    BeyondHorizon { latest: DateTime<Utc> },

    #[error("start must fall on a whole minute: send it with zero seconds and fractions")]
    StartNotWholeMinute,

    #[error(
        "the call can no longer be rescheduled: the cutoff was {}; cancel it instead",
        rfc3339(cutoff)
    )]
    RescheduleCutoff { cutoff: DateTime<Utc> },

    #[error(
        "this booking was already rescheduled {max} times, the most allowed; \
         cancel it and book a new call instead"
    )]
    TooManyReschedules { max: u32 },

    #[error("the contract is {status}: paid sessions can be booked once it is paid")]
    ContractNotPaid { status: ContractStatus },

    #[error(
        "the contract is not between this student and this coach: \
         send a contract of exactly these two people"
    )]
    ContractMismatch,

    #[error("the contract has no sessions left: book under another contract or renew it")]
    NoSessionsLeft,

    #[error(
        "the contract's session length of {minutes} minutes is outside {}..={} minutes; \
         the contract needs fixing before sessions can be booked",
        SESSION_MINUTES.start(),
        SESSION_MINUTES.end()
    )]
    InvalidSessionLength { minutes: u32 },

    #[error("{}", not_joinable_message(*opens_at, *status))]
    CallNotJoinable {
        opens_at: DateTime<Utc>,
        status: CallStatus,
    },

    #[error(
        "the call can no longer be joined: joining closed at {}",
        rfc3339(closed_at)
    )]
    JoinWindowClosed { closed_at: DateTime<Utc> },

    #[error("cannot {action} a call that is {from}")]
    InvalidTransition {
        from: CallStatus,
        action: &'static str,
    },

    #[error(
        "the timer fired early: it is due at {}; send it again then",
        rfc3339(due_at)
    )]
    TimerNotDue { due_at: DateTime<Utc> },

    #[error("only the call's student or coach may do this")]
    NotAParticipant,

    #[error("a student can book calls only for themselves: set student_id to your own user id")]
    StudentMismatch,

    #[error("a caller with role {role} may not {action}")]
    RoleNotAllowed {
        role: ActorRole,
        action: &'static str,
    },

    #[error(
        "this student already has a free consultation with this coach (call {call_id}): \
         reschedule that one, or cancel it first"
    )]
    FreeConsultationExists { call_id: CallId },

    #[error(
        "the time is taken by another call from {} to {}: choose another start",
        rfc3339(clashing_start),
        rfc3339(clashing_end)
    )]
    SlotTaken {
        clashing_start: DateTime<Utc>,
        clashing_end: DateTime<Utc>,
    },

    #[error(
        "the call from {} to {} is outside the coach's published hours: \
         choose a start that FindSlots lists",
        rfc3339(start),
        rfc3339(end)
    )]
    OutsideCoachHours {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },

    #[error(
        "the coach already has {max} calls on {date} (their local date), the most \
         they take in a day: choose another day"
    )]
    DailyLimitReached { date: NaiveDate, max: u32 },

    #[error("no call with this id")]
    CallNotFound,
}

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn not_joinable_message(opens_at: DateTime<Utc>, status: CallStatus) -> String {
    if status == CallStatus::Scheduled {
        format!(
            "the call cannot be joined yet: joining opens at {}",
            rfc3339(&opens_at)
        )
    } else {
        format!("the call is {status} and can no longer be joined")
    }
}

impl DomainError {
    /// The gRPC status class.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. }
            | Self::Time { .. }
            | Self::StartNotWholeMinute
            | Self::ContractMismatch => ErrorKind::InvalidArgument,
            // Notice and horizon depend on the clock, not on the input alone.
            Self::NotEnoughNotice { .. }
            | Self::BeyondHorizon { .. }
            | Self::RescheduleCutoff { .. }
            | Self::TooManyReschedules { .. }
            | Self::ContractNotPaid { .. }
            | Self::NoSessionsLeft
            | Self::InvalidSessionLength { .. }
            | Self::CallNotJoinable { .. }
            | Self::JoinWindowClosed { .. }
            | Self::InvalidTransition { .. }
            | Self::TimerNotDue { .. }
            | Self::SlotTaken { .. }
            | Self::OutsideCoachHours { .. }
            | Self::DailyLimitReached { .. } => ErrorKind::FailedPrecondition,
            Self::NotAParticipant | Self::StudentMismatch | Self::RoleNotAllowed { .. } => {
                ErrorKind::PermissionDenied
            }
            Self::FreeConsultationExists { .. } => ErrorKind::AlreadyExists,
            Self::CallNotFound => ErrorKind::NotFound,
        }
    }

    /// `google.rpc.ErrorInfo.reason`: stable, UPPER_SNAKE_CASE, for machines.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::Time { source, .. } => source.reason(),
            Self::NotEnoughNotice { .. } => "NOT_ENOUGH_NOTICE",
            Self::BeyondHorizon { .. } => "BEYOND_HORIZON",
            Self::StartNotWholeMinute => "START_NOT_WHOLE_MINUTE",
            Self::RescheduleCutoff { .. } => "RESCHEDULE_CUTOFF",
            Self::TooManyReschedules { .. } => "TOO_MANY_RESCHEDULES",
            Self::ContractNotPaid { .. } => "CONTRACT_NOT_PAID",
            Self::ContractMismatch => "CONTRACT_MISMATCH",
            Self::NoSessionsLeft => "NO_SESSIONS_LEFT",
            Self::InvalidSessionLength { .. } => "INVALID_SESSION_LENGTH",
            Self::CallNotJoinable { .. } => "CALL_NOT_JOINABLE",
            Self::JoinWindowClosed { .. } => "JOIN_WINDOW_CLOSED",
            Self::InvalidTransition { .. } => "INVALID_TRANSITION",
            Self::TimerNotDue { .. } => "TIMER_NOT_DUE",
            Self::NotAParticipant => "NOT_A_PARTICIPANT",
            Self::StudentMismatch => "STUDENT_MISMATCH",
            Self::RoleNotAllowed { .. } => "ROLE_NOT_ALLOWED",
            Self::FreeConsultationExists { .. } => "FREE_CONSULTATION_EXISTS",
            Self::SlotTaken { .. } => "SLOT_TAKEN",
            Self::OutsideCoachHours { .. } => "OUTSIDE_COACH_HOURS",
            Self::DailyLimitReached { .. } => "DAILY_LIMIT_REACHED",
            Self::CallNotFound => "CALL_NOT_FOUND",
        }
    }

    /// The request field at fault, for `google.rpc.BadRequest`; `Some` for
    /// every error of kind [`ErrorKind::InvalidArgument`].
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::InvalidArgument { field, .. } | Self::Time { field, .. } => Some(field),
            Self::StartNotWholeMinute => Some("start"),
            Self::ContractMismatch => Some("contract_id"),
            _ => None,
        }
    }

    /// Extra facts for `ErrorInfo.metadata` (instants as RFC 3339), so that
    /// clients can act without parsing the message.
    #[must_use]
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Time {
                source: TimeError::Ambiguous { earlier, later, .. },
                ..
            } => vec![("earlier", rfc3339(earlier)), ("later", rfc3339(later))],
            Self::NotEnoughNotice { earliest } => vec![("earliest", rfc3339(earliest))],
            Self::BeyondHorizon { latest } => vec![("latest", rfc3339(latest))],
            Self::RescheduleCutoff { cutoff } => vec![("cutoff", rfc3339(cutoff))],
            Self::TooManyReschedules { max } => vec![("max", max.to_string())],
            Self::ContractNotPaid { status } => vec![("status", status.to_string())],
            Self::InvalidSessionLength { minutes } => vec![("minutes", minutes.to_string())],
            Self::CallNotJoinable { opens_at, status } => vec![
                ("opens_at", rfc3339(opens_at)),
                ("status", status.to_string()),
            ],
            Self::JoinWindowClosed { closed_at } => vec![("closed_at", rfc3339(closed_at))],
            Self::InvalidTransition { from, action } => {
                vec![("from", from.to_string()), ("action", (*action).to_owned())]
            }
            Self::TimerNotDue { due_at } => vec![("due_at", rfc3339(due_at))],
            Self::FreeConsultationExists { call_id } => vec![("call_id", call_id.to_string())],
            Self::SlotTaken {
                clashing_start,
                clashing_end,
            } => vec![
                ("clashing_start", rfc3339(clashing_start)),
                ("clashing_end", rfc3339(clashing_end)),
            ],
            Self::OutsideCoachHours { start, end } => {
                vec![("start", rfc3339(start)), ("end", rfc3339(end))]
            }
            Self::DailyLimitReached { date, max } => {
                vec![("date", date.to_string()), ("max", max.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// The error for a reason text longer than allowed.
    pub(crate) fn reason_too_long(chars: usize) -> Self {
        Self::InvalidArgument {
            field: "reason",
            message: format!(
                "is {chars} characters long; shorten it to at most {MAX_REASON_CHARS}"
            ),
        }
    }
}

/// A local start that did not resolve is a fault of the `start` field.
impl From<TimeError> for DomainError {
    fn from(source: TimeError) -> Self {
        Self::Time {
            field: "start",
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::at;

    #[test]
    fn messages_name_the_rule_and_the_way_out() {
        let e = DomainError::NotEnoughNotice {
            earliest: at("2026-03-10T10:15:00Z"),
        };
        assert_eq!(
            e.to_string(),
            "the call must be booked at least the minimum notice ahead: \
             choose a start at or after 2026-03-10T10:15:00Z"
        );
        let e = DomainError::SlotTaken {
            clashing_start: at("2026-03-10T10:00:00Z"),
            clashing_end: at("2026-03-10T10:15:00Z"),
        };
        assert!(
            e.to_string()
                .contains("from 2026-03-10T10:00:00Z to 2026-03-10T10:15:00Z")
        );
        let e = DomainError::CallNotJoinable {
            opens_at: at("2026-03-10T09:55:00Z"),
            status: CallStatus::Scheduled,
        };
        assert!(e.to_string().contains("opens at 2026-03-10T09:55:00Z"));
        let e = DomainError::CallNotJoinable {
            opens_at: at("2026-03-10T09:55:00Z"),
            status: CallStatus::Cancelled,
        };
        assert_eq!(
            e.to_string(),
            "the call is cancelled and can no longer be joined"
        );
    }

    #[test]
    fn invalid_argument_kinds_always_name_a_field() {
        let errors = [
            DomainError::InvalidArgument {
                field: "reason",
                message: "x".into(),
            },
            DomainError::Time {
                field: "start",
                source: TimeError::UnknownZone { zone: "X".into() },
            },
            DomainError::StartNotWholeMinute,
            DomainError::ContractMismatch,
        ];
        for e in errors {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.field().is_some(), "{e:?}");
        }
    }

    #[test]
    fn kinds_and_reasons() {
        let t = at("2026-03-10T10:00:00Z");
        let cases = [
            (
                DomainError::SlotTaken {
                    clashing_start: t,
                    clashing_end: t,
                },
                ErrorKind::FailedPrecondition,
                "SLOT_TAKEN",
            ),
            (
                DomainError::FreeConsultationExists {
                    call_id: crate::testing::call_id(1),
                },
                ErrorKind::AlreadyExists,
                "FREE_CONSULTATION_EXISTS",
            ),
            (
                DomainError::NotAParticipant,
                ErrorKind::PermissionDenied,
                "NOT_A_PARTICIPANT",
            ),
            (
                DomainError::CallNotFound,
                ErrorKind::NotFound,
                "CALL_NOT_FOUND",
            ),
            (
                DomainError::Time {
                    field: "start",
                    source: TimeError::Nonexistent {
                        local: "2026-03-08T02:30".into(),
                        zone: "America/New_York".into(),
                    },
                },
                ErrorKind::InvalidArgument,
                "NONEXISTENT_LOCAL_TIME",
            ),
            (
                DomainError::TimerNotDue { due_at: t },
                ErrorKind::FailedPrecondition,
                "TIMER_NOT_DUE",
            ),
            (
                DomainError::OutsideCoachHours { start: t, end: t },
                ErrorKind::FailedPrecondition,
                "OUTSIDE_COACH_HOURS",
            ),
            (
                DomainError::DailyLimitReached {
                    date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
                    max: 4,
                },
                ErrorKind::FailedPrecondition,
                "DAILY_LIMIT_REACHED",
            ),
        ];
        for (e, kind, reason) in cases {
            assert_eq!((e.kind(), e.reason()), (kind, reason), "{e:?}");
        }
    }

    #[test]
    fn metadata_carries_the_instants() {
        let e = DomainError::BeyondHorizon {
            latest: at("2026-09-01T10:00:00Z"),
        };
        assert_eq!(
            e.metadata(),
            vec![("latest", "2026-09-01T10:00:00Z".to_owned())]
        );
        let e = DomainError::DailyLimitReached {
            date: NaiveDate::from_ymd_opt(2026, 3, 10).unwrap(),
            max: 4,
        };
        assert_eq!(
            e.metadata(),
            vec![("date", "2026-03-10".to_owned()), ("max", "4".to_owned())]
        );
        assert!(e.to_string().contains("4 calls on 2026-03-10"));
        let e = DomainError::OutsideCoachHours {
            start: at("2026-03-10T18:00:00Z"),
            end: at("2026-03-10T19:00:00Z"),
        };
        assert_eq!(
            e.metadata(),
            vec![
                ("start", "2026-03-10T18:00:00Z".to_owned()),
                ("end", "2026-03-10T19:00:00Z".to_owned())
            ]
        );
    }
}
