//! The business counters, moved only by committed events (a decision that
//! rolled back counts nothing), so that they agree with the event store:
//!
//! - `skileez_calls_booked_total{kind}`: new bookings (a reschedule's
//!   successor is not one);
//! - `skileez_calls_rescheduled_total{kind}`;
//! - `skileez_calls_cancelled_total{kind,late}`;
//! - `skileez_calls_completed_total{kind,attendance}`;
//! - `skileez_calls_missed_total{kind}`;
//! - `skileez_call_joins_total{role}`: every join, by who joined.

use skileez_domain::{CallEvent, CallKind};

/// One counter step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Count {
    Booked(CallKind),
    Rescheduled(CallKind),
    Cancelled {
        kind: CallKind,
        late: bool,
    },
    Completed {
        kind: CallKind,
        attendance: &'static str,
    },
    Missed(CallKind),
    Joined(&'static str),
}

impl Count {
    /// What `event`, of a call of `kind`, counts for.
    pub(crate) fn of(kind: CallKind, event: &CallEvent) -> Option<Count> {
        match event {
            CallEvent::Scheduled(e) if e.rescheduled_from.is_none() => Some(Count::Booked(kind)),
            CallEvent::Rescheduled(_) => Some(Count::Rescheduled(kind)),
            CallEvent::Cancelled(e) => Some(Count::Cancelled { kind, late: e.late }),
            CallEvent::Ended(e) => Some(Count::Completed {
                kind,
                attendance: e.attendance.as_str(),
            }),
            CallEvent::Missed(_) => Some(Count::Missed(kind)),
            CallEvent::ParticipantJoined(e) => Some(Count::Joined(e.role.as_str())),
            _ => None,
        }
    }

    pub(crate) fn record(&self) {
        match *self {
            Count::Booked(kind) => {
                metrics::counter!("skileez_calls_booked_total", "kind" => kind.as_str())
                    .increment(1)
            }
            Count::Rescheduled(kind) => {
                metrics::counter!("skileez_calls_rescheduled_total", "kind" => kind.as_str())
                    .increment(1)
            }
            Count::Cancelled { kind, late } => metrics::counter!(
                "skileez_calls_cancelled_total",
                "kind" => kind.as_str(),
                "late" => if late { "true" } else { "false" },
            )
            .increment(1),
            Count::Completed { kind, attendance } => metrics::counter!(
                "skileez_calls_completed_total",
                "kind" => kind.as_str(),
                "attendance" => attendance,
            )
            .increment(1),
            Count::Missed(kind) => {
                metrics::counter!("skileez_calls_missed_total", "kind" => kind.as_str())
                    .increment(1)
            }
            Count::Joined(role) => {
                metrics::counter!("skileez_call_joins_total", "role" => role).increment(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skileez_domain::testing;

    #[test]
    fn a_reschedule_counts_once_and_its_successor_is_no_new_booking() {
        let kind = CallKind::PaidSession;
        let booked =
            testing::paid_call_scheduled(testing::call_id(1), testing::at("2027-01-12T10:00:00Z"));
        assert_eq!(Count::of(kind, &booked), Some(Count::Booked(kind)));
        let CallEvent::Scheduled(mut successor) = booked else {
            unreachable!()
        };
        successor.rescheduled_from = Some(successor.call_id);
        assert_eq!(Count::of(kind, &CallEvent::Scheduled(successor)), None);
    }
}
