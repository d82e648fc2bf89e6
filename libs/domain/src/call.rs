//! The call aggregate: its state, and how each event changes it.
//!
//! A call's state is never stored as such; it is the left fold of its events
//! through [`evolve`] ([`replay`]). `evolve` records facts: the decisions were
//! taken by [`crate::decide()`] when the events were produced, so it does not
//! re-check the rules. It only refuses what cannot be applied at all (an event
//! for a call that does not exist yet, or a second booking of the same
//! stream), and then leaves the state as it was. It never panics, whatever
//! the stored events hold.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::ActorRole;
use crate::error::DomainError;
use crate::event::CallEvent;
use crate::ids::{CallId, ContractId, UserId};
use crate::policy::Policy;
use crate::time;

/// Which product a call is (SPEC §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    FreeConsultation,
    PaidSession,
}

impl CallKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FreeConsultation => "free_consultation",
            Self::PaidSession => "paid_session",
        }
    }
}

/// Where a call is in its lifecycle (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Scheduled,
    Ready,
    Active,
    Completed,
    Cancelled,
    Rescheduled,
    Missed,
}

impl CallStatus {
    pub const ALL: [Self; 7] = [
        Self::Scheduled,
        Self::Ready,
        Self::Active,
        Self::Completed,
        Self::Cancelled,
        Self::Rescheduled,
        Self::Missed,
    ];

    /// No command changes a call in a terminal state.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }

    /// The states in which a call holds its slot (the double-booking
    /// constraints cover exactly these).
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, Self::Scheduled | Self::Ready | Self::Active)
    }

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Ready => "ready",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Rescheduled => "rescheduled",
            Self::Missed => "missed",
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallStatus {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| DomainError::InvalidArgument {
                field: "status",
                message: "must be one of scheduled, ready, active, completed, cancelled, \
                          rescheduled, missed"
                    .to_owned(),
            })
    }
}

/// Who came to a call. Recorded when it ends so that a coach no-show and a
/// student no-show can be told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attendance {
    Both,
    StudentOnly,
    CoachOnly,
    Nobody,
}

impl Attendance {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Both => "both",
            Self::StudentOnly => "student_only",
            Self::CoachOnly => "coach_only",
            Self::Nobody => "nobody",
        }
    }

    #[must_use]
    pub fn from_presence(student: bool, coach: bool) -> Self {
        match (student, coach) {
            (true, true) => Self::Both,
            (true, false) => Self::StudentOnly,
            (false, true) => Self::CoachOnly,
            (false, false) => Self::Nobody,
        }
    }
}

/// The part a person plays in one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    Student,
    Coach,
}

impl ParticipantRole {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Student => "student",
            Self::Coach => "coach",
        }
    }
}

impl From<ParticipantRole> for ActorRole {
    fn from(role: ParticipantRole) -> Self {
        match role {
            ParticipantRole::Student => Self::Student,
            ParticipantRole::Coach => Self::Coach,
        }
    }
}

/// The reminders sent before a call (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderKind {
    /// `reminder_day_lead` before the start (24 h by default).
    Day,
    /// `reminder_hour_lead` before the start (1 h by default).
    Hour,
}

impl ReminderKind {
    pub const ALL: [Self; 2] = [Self::Day, Self::Hour];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Hour => "hour",
        }
    }
}

/// One join of a participant (a person may join several times).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub user_id: UserId,
    pub role: ParticipantRole,
    #[serde(deserialize_with = "time::stored::instant")]
    pub at: DateTime<Utc>,
}

/// How a call was cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    pub by: UserId,
    pub by_role: ActorRole,
    pub reason: Option<String>,
    /// Inside `late_cancel_window` before the start.
    pub late: bool,
    pub session_returned: bool,
    #[serde(deserialize_with = "time::stored::instant")]
    pub at: DateTime<Utc>,
}

/// The state of one call, as folded from its events.
///
/// Stored as JSON in the read model and read back on every query: what is
/// unset (no note, no joins yet, ...) is left out, which makes a newly
/// booked call's JSON about 40 % smaller, and reads as unset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub id: CallId,
    /// The first call of the reschedule chain; the calendar invite's UID.
    pub chain_id: CallId,
    pub kind: CallKind,
    pub student_id: UserId,
    pub coach_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<ContractId>,
    #[serde(deserialize_with = "time::stored::instant")]
    pub start: DateTime<Utc>,
    pub duration_minutes: u32,
    pub status: CallStatus,
    /// Number of events applied (the stream version after them).
    pub version: u64,
    #[serde(deserialize_with = "time::stored::instant")]
    pub booked_at: DateTime<Utc>,
    pub booked_by: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_local_time: Option<String>,
    pub tzdb_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_from: Option<CallId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescheduled_to: Option<CallId>,
    /// Reschedules before this call in its chain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reschedule_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminders_sent: Vec<ReminderKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<Join>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "time::stored::optional_instant"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "time::stored::optional_instant"
    )]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendance: Option<Attendance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    /// Whether the contract session this call used was given back
    /// (early cancellation, or by policy on a late cancel or a miss).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session_returned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Call {
    #[must_use]
    pub fn end(&self) -> DateTime<Utc> {
        time::add(self.start, time::minutes(self.duration_minutes))
    }

    /// From when the call can be joined.
    #[must_use]
    pub fn ready_at(&self, policy: &Policy) -> DateTime<Utc> {
        time::sub(self.start, policy.ready_lead)
    }

    /// When a call nobody joined becomes missed.
    #[must_use]
    pub fn missed_at(&self, policy: &Policy) -> DateTime<Utc> {
        time::add(self.start, policy.missed_after)
    }

    /// When a call still running is completed automatically.
    #[must_use]
    pub fn auto_complete_at(&self, policy: &Policy) -> DateTime<Utc> {
        time::add(self.end(), policy.overrun_grace)
    }

    /// The latest moment the call may still be rescheduled.
    #[must_use]
    pub fn reschedule_deadline(&self, policy: &Policy) -> DateTime<Utc> {
        time::sub(self.start, policy.reschedule_cutoff)
    }

    /// From when a cancellation counts as late.
    #[must_use]
    pub fn late_cancel_from(&self, policy: &Policy) -> DateTime<Utc> {
        time::sub(self.start, policy.late_cancel_window)
    }

    /// When the reminder of `kind` is due, or `None` if its moment had
    /// already passed when the call was booked (such a reminder is never
    /// sent) or it has been sent. Timers schedule from this.
    #[must_use]
    pub fn reminder_due_at(&self, kind: ReminderKind, policy: &Policy) -> Option<DateTime<Utc>> {
        let due = time::sub(self.start, policy.reminder_lead(kind));
        (self.booked_at <= due && !self.reminders_sent.contains(&kind)).then_some(due)
    }

    /// When joining stops being possible: for a call nobody has joined, the
    /// moment it is missed; for a running one, the moment it auto-completes.
    /// Fixed by the clock, not by when a timer happens to fire.
    #[must_use]
    pub fn join_closes_at(&self, policy: &Policy) -> DateTime<Utc> {
        if self.status == CallStatus::Active {
            self.auto_complete_at(policy)
        } else {
            self.missed_at(policy)
        }
    }

    #[must_use]
    pub fn is_participant(&self, user: &UserId) -> bool {
        self.role_of(user).is_some()
    }

    #[must_use]
    pub fn role_of(&self, user: &UserId) -> Option<ParticipantRole> {
        if *user == self.student_id {
            Some(ParticipantRole::Student)
        } else if *user == self.coach_id {
            Some(ParticipantRole::Coach)
        } else {
            None
        }
    }

    /// Who has joined so far.
    #[must_use]
    pub fn attendance_so_far(&self) -> Attendance {
        let came = |role| self.joins.iter().any(|j| j.role == role);
        Attendance::from_presence(came(ParticipantRole::Student), came(ParticipantRole::Coach))
    }

    #[must_use]
    pub fn is_paid(&self) -> bool {
        self.kind == CallKind::PaidSession
    }
}

/// Applies one event. `CallScheduled` creates the call; every other event
/// changes an existing one. An event that cannot apply (anything but
/// `CallScheduled` on `None`, `CallScheduled` on an existing call) leaves
/// the state unchanged, version included.
#[must_use]
pub fn evolve(state: Option<Call>, event: &CallEvent) -> Option<Call> {
    match (state, event) {
        (None, CallEvent::Scheduled(e)) => Some(Call {
            id: e.call_id,
            chain_id: e.chain_id,
            kind: e.kind,
            student_id: e.student_id.clone(),
            coach_id: e.coach_id.clone(),
            contract_id: e.contract_id.clone(),
            start: e.start,
            duration_minutes: e.duration_minutes,
            status: CallStatus::Scheduled,
            version: 1,
            booked_at: e.booked_at,
            booked_by: e.booked_by.clone(),
            requested_time_zone: e.requested_time_zone.clone(),
            requested_local_time: e.requested_local_time.clone(),
            tzdb_version: e.tzdb_version.clone(),
            rescheduled_from: e.rescheduled_from,
            rescheduled_to: None,
            reschedule_count: e.reschedule_count,
            reminders_sent: Vec::new(),
            joins: Vec::new(),
            started_at: None,
            ended_at: None,
            attendance: None,
            cancellation: None,
            session_returned: false,
            note: e.note.clone(),
        }),
        (None, _) => None,
        (Some(call), CallEvent::Scheduled(_)) => Some(call),
        (Some(mut call), event) => {
            apply(&mut call, event);
            call.version = call.version.saturating_add(1);
            Some(call)
        }
    }
}

fn apply(call: &mut Call, event: &CallEvent) {
    match event {
        // Handled by `evolve`: a stream is booked once.
        CallEvent::Scheduled(_) => {}
        CallEvent::Rescheduled(e) => {
            call.status = CallStatus::Rescheduled;
            call.rescheduled_to = Some(e.new_call_id);
        }
        CallEvent::ReminderDue(e) => {
            if !call.reminders_sent.contains(&e.kind) {
                call.reminders_sent.push(e.kind);
            }
        }
        CallEvent::Ready(_) => call.status = CallStatus::Ready,
        CallEvent::ParticipantJoined(e) => call.joins.push(Join {
            user_id: e.user_id.clone(),
            role: e.role,
            at: e.at,
        }),
        CallEvent::Started(e) => {
            call.status = CallStatus::Active;
            call.started_at = Some(e.at);
        }
        CallEvent::Ended(e) => {
            call.status = CallStatus::Completed;
            call.ended_at = Some(e.at);
            call.attendance = Some(e.attendance);
        }
        CallEvent::Cancelled(e) => {
            call.status = CallStatus::Cancelled;
            call.session_returned = e.session_returned;
            call.cancellation = Some(Cancellation {
                by: e.by.clone(),
                by_role: e.by_role,
                reason: e.reason.clone(),
                late: e.late,
                session_returned: e.session_returned,
                at: e.at,
            });
        }
        CallEvent::Missed(e) => {
            call.status = CallStatus::Missed;
            call.attendance = Some(e.attendance);
            call.session_returned = e.session_returned;
        }
    }
}

/// Folds a whole stream, oldest event first.
#[must_use]
pub fn replay<'a>(events: impl IntoIterator<Item = &'a CallEvent>) -> Option<Call> {
    events.into_iter().fold(None, evolve)
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, at};

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in CallStatus::ALL {
            assert_eq!(status.as_str().parse::<CallStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{status}\"")
            );
        }
        assert_eq!(
            "Scheduled".parse::<CallStatus>().unwrap_err().field(),
            Some("status")
        );
        let active: Vec<_> = CallStatus::ALL
            .into_iter()
            .filter(|s| s.is_active())
            .collect();
        assert_eq!(
            active,
            [CallStatus::Scheduled, CallStatus::Ready, CallStatus::Active]
        );
    }

    #[test]
    fn scheduled_creates_and_later_events_bump_the_version() {
        let booked = testing::free_call_scheduled(testing::call_id(1), at("2026-03-10T10:00:00Z"));
        let call = replay([&booked]).unwrap();
        assert_eq!(call.status, CallStatus::Scheduled);
        assert_eq!(call.version, 1);
        assert_eq!(call.chain_id, call.id);
        assert_eq!(call.end(), at("2026-03-10T10:15:00Z"));

        // A second booking of the same stream changes nothing.
        assert_eq!(evolve(Some(call.clone()), &booked), Some(call.clone()));
        let ready = CallEvent::Ready(crate::event::CallReady {
            at: at("2026-03-10T09:55:00Z"),
        });
        let after = evolve(Some(call), &ready).unwrap();
        assert_eq!((after.status, after.version), (CallStatus::Ready, 2));
    }

    #[test]
    fn a_stored_state_leaves_out_what_is_unset_and_reads_either_form() {
        let booked = testing::free_call_scheduled(testing::call_id(1), at("2026-03-10T10:00:00Z"));
        let call = replay([&booked]).unwrap();
        let json = serde_json::to_value(&call).unwrap();
        for unset in [
            "note",
            "joins",
            "cancellation",
            "reschedule_count",
            "session_returned",
        ] {
            assert!(json.get(unset).is_none(), "{unset} is left out: {json}");
        }
        assert_eq!(serde_json::from_value::<Call>(json.clone()).unwrap(), call);
        // Rows written before unset fields were left out spell them as null,
        // empty or zero.
        let mut old = json;
        for (field, value) in [
            ("note", serde_json::Value::Null),
            ("joins", serde_json::json!([])),
            ("reminders_sent", serde_json::json!([])),
            ("cancellation", serde_json::Value::Null),
            ("reschedule_count", serde_json::json!(0)),
            ("session_returned", serde_json::json!(false)),
        ] {
            old[field] = value;
        }
        assert_eq!(serde_json::from_value::<Call>(old).unwrap(), call);
    }

    #[test]
    fn events_for_a_call_that_does_not_exist_are_ignored() {
        let ready = CallEvent::Ready(crate::event::CallReady {
            at: at("2026-03-10T09:55:00Z"),
        });
        assert_eq!(evolve(None, &ready), None);
    }

    #[test]
    fn timestamps_near_the_end_of_time_do_not_panic() {
        let mut call = replay([&testing::free_call_scheduled(
            testing::call_id(1),
            DateTime::<Utc>::MAX_UTC,
        )])
        .unwrap();
        call.duration_minutes = u32::MAX;
        let policy = Policy {
            ready_lead: chrono::Duration::MAX,
            overrun_grace: chrono::Duration::MAX,
            missed_after: chrono::Duration::MIN,
            ..Policy::default()
        };
        assert_eq!(call.end(), DateTime::<Utc>::MAX_UTC);
        assert_eq!(call.auto_complete_at(&policy), DateTime::<Utc>::MAX_UTC);
        assert_eq!(call.ready_at(&policy), DateTime::<Utc>::MIN_UTC);
        let _ = call.missed_at(&policy);
    }

    #[test]
    fn attendance_follows_who_joined() {
        let mut call = replay([&testing::free_call_scheduled(
            testing::call_id(1),
            at("2026-03-10T10:00:00Z"),
        )])
        .unwrap();
        assert_eq!(call.attendance_so_far(), Attendance::Nobody);
        call.joins.push(Join {
            user_id: testing::coach(),
            role: ParticipantRole::Coach,
            at: call.start,
        });
        assert_eq!(call.attendance_so_far(), Attendance::CoachOnly);
        call.joins.push(Join {
            user_id: testing::student(),
            role: ParticipantRole::Student,
            at: call.start,
        });
        assert_eq!(call.attendance_so_far(), Attendance::Both);
    }
}
