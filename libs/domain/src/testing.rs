//! Given / when / then for the call aggregate, plus a few fixtures.
//!
//! Given these past events, when this command at this time (under this
//! policy), then these events, or this error. Public so that service crates
//! can state their expectations of the core the same way in their own tests.
//!
//! This module is test support: its functions panic (with a message) when an
//! expectation fails or a fixture literal is malformed. Nothing outside
//! tests should call it.
//!
//! ```
//! use skileez_domain::testing::{self, at, given};
//! use skileez_domain::{CallEvent, CallReady, Command};
//!
//! let call = testing::call_id(1);
//! given(&[testing::free_call_scheduled(call, at("2026-03-10T10:00:00Z"))])
//!     .when(Command::MarkReady)
//!     .at(at("2026-03-10T09:55:00Z"))
//!     .then(&[CallReady { at: at("2026-03-10T09:55:00Z") }.into()]);
//! ```

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::call::{Call, CallKind, replay};
use crate::command::{
    Actor, ActorRole, Command, ContractSnapshot, ContractStatus, RequestedStart, ScheduleCall,
};
use crate::decide::{Decided, decide};
use crate::error::DomainError;
use crate::event::{CallEvent, CallScheduled};
use crate::ids::{CallId, ContractId, UserId};
use crate::policy::Policy;
use crate::time::TZDB_VERSION;

/// Starts a scenario from a call's past events (empty: no call yet).
#[must_use]
pub fn given(events: &[CallEvent]) -> Given {
    Given {
        state: replay(events),
    }
}

/// Starts a scenario from a call state built some other way.
#[must_use]
pub fn given_state(state: Option<Call>) -> Given {
    Given { state }
}

pub struct Given {
    state: Option<Call>,
}

impl Given {
    #[must_use]
    pub fn state(&self) -> Option<&Call> {
        self.state.as_ref()
    }

    #[must_use]
    pub fn when(self, command: Command) -> When {
        When {
            state: self.state,
            command,
            now: None,
            policy: Policy::default(),
        }
    }
}

pub struct When {
    state: Option<Call>,
    command: Command,
    now: Option<DateTime<Utc>>,
    policy: Policy,
}

impl When {
    /// The decision time. Required: the core has no clock to fall back on.
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    /// The policy (default: [`Policy::default`]).
    #[must_use]
    pub fn with(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The raw decision, for expectations the `then_*` forms do not cover.
    #[track_caller]
    pub fn result(&self) -> Result<Vec<Decided>, DomainError> {
        let Some(now) = self.now else {
            panic!("given/when: call .at(now) before then");
        };
        decide(self.state.as_ref(), &self.command, now, &self.policy)
    }

    /// Expects exactly `expected`, each on the stream it belongs to (a
    /// booking on its own `call_id`, anything else on the given call).
    /// Returns the given call's state after them (the new call's, for a
    /// booking).
    #[track_caller]
    pub fn then(self, expected: &[CallEvent]) -> Option<Call> {
        let decided = self.expect_ok();
        let events: Vec<&CallEvent> = decided.iter().map(|d| &d.event).collect();
        let expected_refs: Vec<&CallEvent> = expected.iter().collect();
        assert_eq!(events, expected_refs, "given/when/then: events differ");
        for d in &decided {
            let stream = match &d.event {
                CallEvent::Scheduled(e) => Some(e.call_id),
                _ => self.state.as_ref().map(|c| c.id),
            };
            if let Some(stream) = stream {
                assert_eq!(
                    d.call_id,
                    stream,
                    "{} on the wrong stream",
                    d.event.event_type()
                );
            }
        }
        self.apply(&decided)
    }

    /// Expects exactly `expected`, stream ids included.
    #[track_caller]
    pub fn then_decided(self, expected: &[Decided]) -> Option<Call> {
        let decided = self.expect_ok();
        assert_eq!(decided, expected, "given/when/then: decisions differ");
        self.apply(&decided)
    }

    /// Expects an idempotent no-op (no events).
    #[track_caller]
    pub fn then_nothing(self) {
        let decided = self.expect_ok();
        assert!(decided.is_empty(), "expected no events, got {decided:#?}");
    }

    /// Expects exactly this error.
    #[track_caller]
    pub fn then_err(self, expected: DomainError) {
        match self.result() {
            Err(err) => assert_eq!(err, expected, "given/when/then: errors differ"),
            Ok(decided) => panic!("expected error {expected:?}, got events {decided:#?}"),
        }
    }

    /// Expects an error for which `check` holds; returns it for more checks.
    #[track_caller]
    pub fn then_err_matching(self, check: impl FnOnce(&DomainError) -> bool) -> DomainError {
        match self.result() {
            Err(err) => {
                assert!(check(&err), "error did not match: {err:?}");
                err
            }
            Ok(decided) => panic!("expected an error, got events {decided:#?}"),
        }
    }

    #[track_caller]
    fn expect_ok(&self) -> Vec<Decided> {
        match self.result() {
            Ok(decided) => decided,
            Err(err) => panic!("expected events, got error: {err} ({err:?})"),
        }
    }

    fn apply(&self, decided: &[Decided]) -> Option<Call> {
        let own = self.state.as_ref().map(|c| c.id);
        decided
            .iter()
            .filter(|d| own.is_none_or(|id| d.call_id == id))
            .fold(self.state.clone(), |state, d| {
                crate::call::evolve(state, &d.event)
            })
    }
}

/// An RFC 3339 instant literal, e.g. `at("2026-03-10T10:00:00Z")`.
#[must_use]
#[track_caller]
pub fn at(rfc3339: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => t.with_timezone(&Utc),
        Err(e) => panic!("bad instant literal {rfc3339:?}: {e}"),
    }
}

/// A user id literal.
#[must_use]
#[track_caller]
pub fn user(id: &str) -> UserId {
    match UserId::parse(id) {
        Ok(u) => u,
        Err(e) => panic!("bad user id literal {id:?}: {e}"),
    }
}

/// A deterministic call id.
#[must_use]
pub fn call_id(n: u128) -> CallId {
    CallId(Uuid::from_u128(n))
}

/// The student of the fixture calls.
#[must_use]
pub fn student() -> UserId {
    user("student-1")
}

/// The coach of the fixture calls.
#[must_use]
pub fn coach() -> UserId {
    user("coach-1")
}

#[must_use]
pub fn as_student() -> Actor {
    Actor {
        user_id: student(),
        role: ActorRole::Student,
    }
}

#[must_use]
pub fn as_coach() -> Actor {
    Actor {
        user_id: coach(),
        role: ActorRole::Coach,
    }
}

#[must_use]
pub fn as_admin() -> Actor {
    Actor {
        user_id: user("admin-1"),
        role: ActorRole::Admin,
    }
}

/// A student who is not in the fixture calls.
#[must_use]
pub fn as_stranger() -> Actor {
    Actor {
        user_id: user("student-2"),
        role: ActorRole::Student,
    }
}

/// When the fixture calls were booked.
pub const BOOKED_AT: &str = "2026-03-01T09:00:00Z";

/// The fixture contract: paid, 60-minute sessions, 10 sessions, none used.
#[must_use]
pub fn paid_contract() -> ContractSnapshot {
    ContractSnapshot {
        id: contract_id(),
        student_id: student(),
        coach_id: coach(),
        status: ContractStatus::Paid,
        session_minutes: 60,
        sessions_total: Some(10),
        sessions_used: 0,
    }
}

#[must_use]
pub fn contract_id() -> ContractId {
    match ContractId::parse("contract-1") {
        Ok(id) => id,
        Err(e) => panic!("{e}"),
    }
}

/// A free consultation of the fixture student and coach, booked by the
/// student at [`BOOKED_AT`].
#[must_use]
pub fn free_call_scheduled(id: CallId, start: DateTime<Utc>) -> CallEvent {
    CallScheduled {
        call_id: id,
        chain_id: id,
        kind: CallKind::FreeConsultation,
        student_id: student(),
        coach_id: coach(),
        contract_id: None,
        start,
        duration_minutes: 15,
        requested_time_zone: None,
        requested_local_time: None,
        tzdb_version: TZDB_VERSION.to_owned(),
        rescheduled_from: None,
        reschedule_count: 0,
        booked_by: student(),
        booked_at: at(BOOKED_AT),
        note: None,
    }
    .into()
}

/// A 60-minute paid session under [`paid_contract`], booked at [`BOOKED_AT`].
#[must_use]
pub fn paid_call_scheduled(id: CallId, start: DateTime<Utc>) -> CallEvent {
    CallScheduled {
        call_id: id,
        chain_id: id,
        kind: CallKind::PaidSession,
        student_id: student(),
        coach_id: coach(),
        contract_id: Some(contract_id()),
        start,
        duration_minutes: 60,
        requested_time_zone: None,
        requested_local_time: None,
        tzdb_version: TZDB_VERSION.to_owned(),
        rescheduled_from: None,
        reschedule_count: 0,
        booked_by: student(),
        booked_at: at(BOOKED_AT),
        note: None,
    }
    .into()
}

/// The student books a free consultation with the coach at `start` (UTC).
#[must_use]
pub fn schedule_free(id: CallId, start: DateTime<Utc>) -> ScheduleCall {
    ScheduleCall {
        call_id: id,
        kind: CallKind::FreeConsultation,
        student_id: student(),
        coach_id: coach(),
        contract: None,
        start: RequestedStart::utc(start),
        by: as_student(),
        existing_free_consultation: None,
        note: None,
    }
}

/// The student books a paid session under [`paid_contract`] at `start`.
#[must_use]
pub fn schedule_paid(id: CallId, start: DateTime<Utc>) -> ScheduleCall {
    ScheduleCall {
        kind: CallKind::PaidSession,
        contract: Some(paid_contract()),
        ..schedule_free(id, start)
    }
}
