//! The call card: what a chat client needs to draw a call and its buttons.
//!
//! Every call event published on the bus carries the call's resulting card
//! (SPEC §5). [`allowed_actions`] answers "which buttons may a participant
//! press now", agreeing with [`crate::decide()`]: an action listed here is one
//! that `decide` accepts from the call's student or coach at `now` (for
//! Reschedule, given an acceptable new start). A card is a snapshot: its
//! actions can lapse with time alone (the reschedule cutoff passes without
//! an event), which is why it also carries the moments they lapse at.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{Attendance, Call, CallKind, CallStatus};
use crate::ids::{CallId, ContractId, UserId};
use crate::policy::Policy;

/// A button on a call card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Join,
    End,
    Cancel,
    Reschedule,
}

impl Action {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::End => "end",
            Self::Cancel => "cancel",
            Self::Reschedule => "reschedule",
        }
    }
}

/// From when the call can be joined.
#[must_use]
pub fn joinable_from(call: &Call, policy: &Policy) -> DateTime<Utc> {
    call.ready_at(policy)
}

/// What the call's student or coach may do at `now`, in a stable order.
#[must_use]
pub fn allowed_actions(call: &Call, now: DateTime<Utc>, policy: &Policy) -> Vec<Action> {
    let mut actions = Vec::new();
    let join_open = now < call.join_closes_at(policy)
        && match call.status {
            CallStatus::Ready | CallStatus::Active => true,
            CallStatus::Scheduled => now >= call.ready_at(policy),
            _ => false,
        };
    if join_open {
        actions.push(Action::Join);
    }
    if call.status == CallStatus::Active {
        actions.push(Action::End);
    }
    if matches!(call.status, CallStatus::Scheduled | CallStatus::Ready) {
        actions.push(Action::Cancel);
    }
    if call.status == CallStatus::Scheduled
        && now <= call.reschedule_deadline(policy)
        && call.reschedule_count < policy.max_reschedules
    {
        actions.push(Action::Reschedule);
    }
    actions
}

/// A call as a chat client draws it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCard {
    pub call_id: CallId,
    pub chain_id: CallId,
    pub kind: CallKind,
    pub student_id: UserId,
    pub coach_id: UserId,
    pub contract_id: Option<ContractId>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub duration_minutes: u32,
    pub status: CallStatus,
    pub joinable_from: DateTime<Utc>,
    /// Until when Reschedule may be offered (while the call is scheduled).
    pub reschedulable_until: DateTime<Utc>,
    pub actions: Vec<Action>,
    pub attendance: Option<Attendance>,
    pub rescheduled_from: Option<CallId>,
    pub rescheduled_to: Option<CallId>,
    /// The call's stream version this card reflects; newer wins.
    pub version: u64,
}

impl CallCard {
    #[must_use]
    pub fn new(call: &Call, now: DateTime<Utc>, policy: &Policy) -> Self {
        Self {
            call_id: call.id,
            chain_id: call.chain_id,
            kind: call.kind,
            student_id: call.student_id.clone(),
            coach_id: call.coach_id.clone(),
            contract_id: call.contract_id.clone(),
            start: call.start,
            end: call.end(),
            duration_minutes: call.duration_minutes,
            status: call.status,
            joinable_from: joinable_from(call, policy),
            reschedulable_until: call.reschedule_deadline(policy),
            actions: allowed_actions(call, now, policy),
            attendance: call.attendance,
            rescheduled_from: call.rescheduled_from,
            rescheduled_to: call.rescheduled_to,
            version: call.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::replay;
    use crate::event::{CallCancelled, CallReady, CallStarted};
    use crate::testing::{self, at};

    fn scheduled() -> Call {
        replay([&testing::free_call_scheduled(
            testing::call_id(1),
            at("2026-03-10T10:00:00Z"),
        )])
        .unwrap()
    }

    #[test]
    fn a_scheduled_call_far_ahead_can_be_cancelled_and_rescheduled() {
        let p = Policy::default();
        let call = scheduled();
        assert_eq!(
            allowed_actions(&call, at("2026-03-09T10:00:00Z"), &p),
            [Action::Cancel, Action::Reschedule]
        );
        // Past the 2 h cutoff only cancel remains.
        assert_eq!(
            allowed_actions(&call, at("2026-03-10T08:01:00Z"), &p),
            [Action::Cancel]
        );
        // Inside the ready window join appears before the timer fired.
        assert_eq!(
            allowed_actions(&call, at("2026-03-10T09:55:00Z"), &p),
            [Action::Join, Action::Cancel]
        );
        assert_eq!(joinable_from(&call, &p), at("2026-03-10T09:55:00Z"));
    }

    #[test]
    fn an_active_call_can_be_joined_and_ended() {
        let p = Policy::default();
        let mut call = scheduled();
        for e in [
            CallReady {
                at: at("2026-03-10T09:55:00Z"),
            }
            .into(),
            CallStarted {
                at: at("2026-03-10T09:56:00Z"),
                first_participant: testing::coach(),
            }
            .into(),
        ] {
            call = crate::call::evolve(Some(call), &e).unwrap();
        }
        assert_eq!(
            allowed_actions(&call, at("2026-03-10T10:05:00Z"), &p),
            [Action::Join, Action::End]
        );
        // Past start + length + grace joining has closed; ending has not.
        assert_eq!(
            allowed_actions(&call, at("2026-03-10T10:30:00Z"), &p),
            [Action::End]
        );
    }

    #[test]
    fn terminal_calls_offer_nothing() {
        let p = Policy::default();
        let call = crate::call::evolve(
            Some(scheduled()),
            &CallCancelled {
                by: testing::student(),
                by_role: crate::ActorRole::Student,
                reason: None,
                late: false,
                session_returned: false,
                at: at("2026-03-09T10:00:00Z"),
            }
            .into(),
        )
        .unwrap();
        assert!(allowed_actions(&call, at("2026-03-10T09:58:00Z"), &p).is_empty());
        let card = CallCard::new(&call, at("2026-03-10T09:58:00Z"), &p);
        assert_eq!(card.status, CallStatus::Cancelled);
        assert_eq!(card.version, 2);
        assert_eq!(card.end, at("2026-03-10T10:15:00Z"));
    }
}
