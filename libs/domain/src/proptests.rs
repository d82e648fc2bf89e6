//! Properties over generated histories: terminal states are final, accepted
//! bookings never double-book anyone, the card agrees with `decide`, and no
//! input makes the core panic.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::sample::select;

use crate::call::{Attendance, Call, CallKind, CallStatus, ParticipantRole, ReminderKind, evolve};
use crate::card::{Action, CallCard, allowed_actions};
use crate::command::{Actor, ActorRole, Command, RequestedStart, RescheduleCall};
use crate::decide::decide;
use crate::event::{
    CallCancelled, CallEnded, CallEvent, CallMissed, CallReady, CallReminderDue, CallRescheduled,
    CallScheduled, CallStarted, ParticipantJoined,
};
use crate::ids::{CallId, UserId};
use crate::policy::Policy;
use crate::rules::{BusySlot, find_conflict, ranges_overlap};
use crate::testing::{
    as_admin, as_coach, as_stranger, as_student, at, call_id, free_call_scheduled,
    paid_call_scheduled, schedule_free, user,
};
use crate::time;

fn start() -> DateTime<Utc> {
    at("2026-03-10T10:00:00Z")
}

fn actor() -> impl Strategy<Value = Actor> {
    select(vec![
        as_student(),
        as_coach(),
        as_admin(),
        as_stranger(),
        Actor {
            user_id: user("svc"),
            role: ActorRole::Service,
        },
    ])
}

fn reminder_kind() -> impl Strategy<Value = ReminderKind> {
    select(ReminderKind::ALL.to_vec())
}

/// Commands a call may receive, with arguments that are sometimes valid.
fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        actor().prop_map(|by| Command::Join { by }),
        actor().prop_map(|by| Command::End { by }),
        (actor(), proptest::option::of("[a-z ]{0,8}"))
            .prop_map(|(by, reason)| Command::Cancel { by, reason }),
        (actor(), 2u128..6, -3000i64..3000).prop_map(|(by, n, offset)| {
            Command::Reschedule(RescheduleCall {
                by,
                new_call_id: call_id(n),
                new_start: RequestedStart::utc(start() + Duration::minutes(offset)),
                reason: None,
            })
        }),
        Just(Command::MarkReady),
        Just(Command::MarkMissed),
        Just(Command::CompleteOverdue),
        reminder_kind().prop_map(|kind| Command::TriggerReminder { kind }),
        (0i64..3000).prop_map(|offset| Command::Schedule(schedule_free(
            call_id(1),
            start() + Duration::minutes(offset)
        ))),
    ]
}

/// Policies with small, valid, varied settings.
fn policy() -> impl Strategy<Value = Policy> {
    (
        (0i64..60, 0i64..30, 0i64..60, 0i64..60),
        (0i64..300, 0i64..3000, 0u32..4),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (notice, ready, missed, grace),
                (cutoff, late, max),
                (refund_late, refund_missed),
            )| {
                Policy {
                    min_notice: Duration::minutes(notice),
                    ready_lead: Duration::minutes(ready),
                    missed_after: Duration::minutes(missed),
                    overrun_grace: Duration::minutes(grace),
                    reschedule_cutoff: Duration::minutes(cutoff),
                    late_cancel_window: Duration::minutes(late),
                    max_reschedules: max,
                    refund_session_on_late_cancel: refund_late,
                    refund_session_on_missed: refund_missed,
                    ..Policy::default()
                }
            },
        )
}

/// A booked call (free or paid) and a run of commands at offsets (seconds)
/// from its start, in time order or not.
fn history() -> impl Strategy<Value = (Call, Vec<(Command, DateTime<Utc>)>, Policy)> {
    (
        any::<bool>(),
        proptest::collection::vec((command(), -3 * 86_400i64..3 * 3_600), 1..25),
        any::<bool>(),
        policy(),
    )
        .prop_map(|(paid, mut steps, in_order, policy)| {
            let booking = if paid {
                paid_call_scheduled(call_id(1), start())
            } else {
                free_call_scheduled(call_id(1), start())
            };
            if in_order {
                steps.sort_by_key(|(_, offset)| *offset);
            }
            let steps = steps
                .into_iter()
                .map(|(c, offset)| (c, start() + Duration::seconds(offset)))
                .collect();
            let call = evolve(None, &booking).expect("a booking creates the call");
            (call, steps, policy)
        })
}

/// Applies the decided events that belong to `call`'s own stream.
fn apply_own(call: Call, decided: &[crate::Decided]) -> Call {
    let id = call.id;
    decided
        .iter()
        .filter(|d| d.call_id == id)
        .fold(call, |c, d| evolve(Some(c.clone()), &d.event).unwrap_or(c))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (1) Once terminal, a call stays as it is: every command is refused or
    /// decides nothing.
    #[test]
    fn terminal_states_are_final((mut call, steps, policy) in history()) {
        for (command, now) in steps {
            let before = call.clone();
            let result = decide(Some(&call), &command, now, &policy);
            if let Ok(decided) = &result {
                call = apply_own(call, decided);
            }
            if before.status.is_terminal() {
                prop_assert!(
                    result.as_ref().map_or(true, Vec::is_empty),
                    "{} on a {} call decided {:?}", command.name(), before.status, result
                );
                prop_assert_eq!(&call, &before);
            }
        }
    }

    /// The card offers exactly what `decide` accepts from a participant.
    #[test]
    fn the_card_agrees_with_decide((mut call, steps, policy) in history()) {
        for (command, now) in steps {
            let actions = allowed_actions(&call, now, &policy);
            for by in [as_student(), as_coach()] {
                for (action, probe) in [
                    (Action::Join, Command::Join { by: by.clone() }),
                    (Action::End, Command::End { by: by.clone() }),
                    (Action::Cancel, Command::Cancel { by: by.clone(), reason: None }),
                ] {
                    let accepted = decide(Some(&call), &probe, now, &policy)
                        .is_ok_and(|d| !d.is_empty());
                    prop_assert_eq!(
                        actions.contains(&action), accepted,
                        "{:?} at {} for a {} call", action, now, call.status
                    );
                }
                // Reschedule is offered iff some new start would be accepted.
                let mut candidate = time::ceil_minute(now + policy.min_notice);
                if candidate == call.start {
                    candidate += Duration::minutes(1);
                }
                let probe = Command::Reschedule(RescheduleCall {
                    by: by.clone(),
                    new_call_id: call_id(99),
                    new_start: RequestedStart::utc(candidate),
                    reason: None,
                });
                let accepted = decide(Some(&call), &probe, now, &policy).is_ok();
                prop_assert_eq!(actions.contains(&Action::Reschedule), accepted);
            }
            if let Ok(decided) = decide(Some(&call), &command, now, &policy) {
                call = apply_own(call, &decided);
            }
        }
    }
}

/// One booking attempt: student, coach, start slot on a 5-minute grid, length.
fn attempts() -> impl Strategy<Value = (Vec<(usize, usize, i64, u32)>, i64)> {
    (
        proptest::collection::vec(
            (
                0usize..3,
                0usize..3,
                0i64..48,
                select(vec![15u32, 30, 45, 60, 90]),
            ),
            1..40,
        ),
        select(vec![0i64, 5, 10, 15, 30]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (2) Accepting only bookings `find_conflict` clears, nobody is ever in
    /// two calls at once and a coach's calls keep the buffer.
    #[test]
    fn accepted_bookings_never_double_book((attempts, buffer_minutes) in attempts()) {
        let students: Vec<UserId> = ["s0", "s1", "s2"].into_iter().map(user).collect();
        let coaches: Vec<UserId> = ["c0", "c1", "c2"].into_iter().map(user).collect();
        let buffer = Duration::minutes(buffer_minutes);
        let mut accepted: Vec<BusySlot> = Vec::new();
        for (n, (s, c, slot, minutes)) in attempts.into_iter().enumerate() {
            let begin = start() + Duration::minutes(slot * 5);
            let end = begin + Duration::minutes(i64::from(minutes));
            if find_conflict(&accepted, &students[s], &coaches[c], begin, end, buffer).is_none() {
                accepted.push(BusySlot {
                    call_id: call_id(n as u128),
                    student_id: students[s].clone(),
                    coach_id: coaches[c].clone(),
                    start: begin,
                    end,
                });
            }
        }
        for (i, a) in accepted.iter().enumerate() {
            for b in &accepted[i + 1..] {
                if a.student_id == b.student_id {
                    prop_assert!(!ranges_overlap(a.start, a.end, b.start, b.end), "{a:?} {b:?}");
                }
                if a.coach_id == b.coach_id {
                    prop_assert!(
                        a.end + buffer <= b.start || b.end + buffer <= a.start,
                        "coach calls closer than the buffer: {a:?} {b:?}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- (3) arbitrary input

fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let (min, max) = (
        DateTime::<Utc>::MIN_UTC.timestamp(),
        DateTime::<Utc>::MAX_UTC.timestamp(),
    );
    prop_oneof![
        // Anywhere chrono can represent, to find overflows.
        (min..=max, 0u32..2_000_000_000).prop_map(|(secs, nanos)| {
            DateTime::from_timestamp(secs, nanos).unwrap_or(DateTime::<Utc>::MAX_UTC)
        }),
        Just(DateTime::<Utc>::MIN_UTC),
        Just(DateTime::<Utc>::MAX_UTC),
        // Near the call, to exercise the rules.
        (-5_000i64..5_000).prop_map(|m| start() + Duration::minutes(m)),
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::MIN),
        Just(Duration::zero()),
        (-1_000_000i64..1_000_000).prop_map(Duration::minutes),
    ]
}

fn any_user() -> impl Strategy<Value = UserId> {
    select(vec![
        user("student-1"),
        user("coach-1"),
        user("x"),
        user("admin-1"),
    ])
}

fn any_call_id() -> impl Strategy<Value = CallId> {
    (0u128..4).prop_map(call_id)
}

fn any_event() -> impl Strategy<Value = CallEvent> {
    let attendance = select(vec![
        Attendance::Both,
        Attendance::StudentOnly,
        Attendance::CoachOnly,
        Attendance::Nobody,
    ]);
    let role = select(vec![ParticipantRole::Student, ParticipantRole::Coach]);
    let actor_role = select(vec![
        ActorRole::Student,
        ActorRole::Coach,
        ActorRole::Admin,
        ActorRole::Service,
    ]);
    prop_oneof![
        (
            (
                any_call_id(),
                any_call_id(),
                any::<bool>(),
                any_user(),
                any_user()
            ),
            (any_instant(), any::<u32>(), any::<u32>(), any_instant()),
            proptest::option::of(any_call_id()),
        )
            .prop_map(
                |((id, chain, paid, s, c), (begin, minutes, count, booked), from)| {
                    CallScheduled {
                        call_id: id,
                        chain_id: chain,
                        kind: if paid {
                            CallKind::PaidSession
                        } else {
                            CallKind::FreeConsultation
                        },
                        student_id: s,
                        coach_id: c.clone(),
                        contract_id: None,
                        start: begin,
                        duration_minutes: minutes,
                        requested_time_zone: None,
                        requested_local_time: None,
                        tzdb_version: String::new(),
                        rescheduled_from: from,
                        reschedule_count: count,
                        booked_by: c,
                        booked_at: booked,
                        note: None,
                    }
                    .into()
                }
            ),
        (any_call_id(), any_instant(), any_user(), any_instant()).prop_map(
            |(new_call_id, new_start, by, at)| CallRescheduled {
                new_call_id,
                new_start,
                by,
                reason: None,
                at,
            }
            .into()
        ),
        (reminder_kind(), any_instant()).prop_map(|(kind, at)| CallReminderDue { kind, at }.into()),
        any_instant().prop_map(|at| CallReady { at }.into()),
        (any_user(), role, any_instant()).prop_map(|(user_id, role, at)| ParticipantJoined {
            user_id,
            role,
            at
        }
        .into()),
        (any_instant(), any_user()).prop_map(|(at, first_participant)| CallStarted {
            at,
            first_participant
        }
        .into()),
        (
            any_instant(),
            proptest::option::of(any_user()),
            any::<bool>(),
            attendance.clone()
        )
            .prop_map(|(at, ended_by, auto, attendance)| CallEnded {
                at,
                ended_by,
                auto,
                attendance
            }
            .into()),
        (
            any_user(),
            actor_role,
            any::<bool>(),
            any::<bool>(),
            any_instant()
        )
            .prop_map(|(by, by_role, late, session_returned, at)| CallCancelled {
                by,
                by_role,
                reason: None,
                late,
                session_returned,
                at,
            }
            .into()),
        (attendance, any::<bool>(), any_instant()).prop_map(
            |(attendance, session_returned, at)| {
                CallMissed {
                    attendance,
                    session_returned,
                    at,
                }
                .into()
            }
        ),
    ]
}

fn any_policy() -> impl Strategy<Value = Policy> {
    (
        proptest::collection::vec(any_duration(), 10),
        (any::<u32>(), any::<u32>(), any::<bool>(), any::<bool>()),
    )
        .prop_map(|(d, (max, free, a, b))| Policy {
            min_notice: d[0],
            max_horizon: d[1],
            ready_lead: d[2],
            missed_after: d[3],
            overrun_grace: d[4],
            start_granularity: chrono::Duration::minutes(1),
            reschedule_cutoff: d[5],
            late_cancel_window: d[6],
            reminder_day_lead: d[7],
            reminder_hour_lead: d[8],
            coach_buffer: d[9],
            max_reschedules: max,
            free_consultation_minutes: free,
            refund_session_on_late_cancel: a,
            refund_session_on_missed: b,
        })
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        command(),
        (actor(), any_instant(), any_call_id()).prop_map(|(by, at, new_call_id)| {
            Command::Reschedule(RescheduleCall {
                by,
                new_call_id,
                new_start: RequestedStart::utc(at),
                reason: None,
            })
        }),
        any_instant().prop_map(|at| Command::Schedule(schedule_free(call_id(1), at))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (3) `evolve` never panics on arbitrary event sequences, and nothing
    /// downstream of the resulting state does either, whatever the policy,
    /// command or clock.
    #[test]
    fn nothing_panics_on_arbitrary_input(
        events in proptest::collection::vec(any_event(), 0..20),
        policy in any_policy(),
        command in any_command(),
        now in any_instant(),
        buffer in any_duration(),
    ) {
        let mut state = None;
        for event in &events {
            let before = state.clone();
            state = evolve(state, event);
            if let (Some(b), Some(a)) = (&before, &state) {
                prop_assert!(a.version == b.version.saturating_add(1) || a == b);
            }
        }
        prop_assert_eq!(&state, &crate::replay(&events));
        let _ = decide(state.as_ref(), &command, now, &policy);
        let _ = policy.validate();
        if let Some(call) = &state {
            let _ = CallCard::new(call, now, &policy);
            for kind in ReminderKind::ALL {
                let _ = call.reminder_due_at(kind, &policy);
            }
            if let Some(slot) = call.busy_slot() {
                let slots = [slot];
                let _ = find_conflict(&slots, &call.student_id, &call.coach_id, now, call.end(), buffer);
            }
        }
        // The read model stores the state as JSON, unset fields left out:
        // it reads back as it was.
        if let Some(call) = &state {
            let json = serde_json::to_string(call).expect("states serialise");
            let back: crate::Call = serde_json::from_str(&json).expect("states deserialise");
            prop_assert_eq!(&back, call);
        }
        // Stored events are JSON: they survive the round trip.
        for event in &events {
            let json = serde_json::to_string(event).expect("events serialise");
            let back: CallEvent = serde_json::from_str(&json).expect("events deserialise");
            prop_assert_eq!(&back, event);
        }
    }
}

#[test]
fn generated_histories_reach_every_terminal_state() {
    // Guards property (1) against vacuity: the generator does drive calls
    // into each terminal state.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2_000 {
        let (mut call, steps, policy) = history().new_tree(&mut runner).unwrap().current();
        for (command, now) in steps {
            if let Ok(decided) = decide(Some(&call), &command, now, &policy) {
                call = apply_own(call, &decided);
            }
        }
        seen.insert(call.status);
    }
    for status in CallStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        assert!(seen.contains(&status), "never reached {status}");
    }
}
