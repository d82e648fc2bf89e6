//! Given / when / then for every command and rule of SPEC §1–3.

use chrono::{DateTime, Duration, Utc};

use crate::call::{Attendance, CallKind, CallStatus, ParticipantRole, ReminderKind};
use crate::command::{Actor, ActorRole, Command, ContractStatus, RequestedStart, RescheduleCall};
use crate::decide::Decided;
use crate::error::DomainError;
use crate::event::{
    CallCancelled, CallEnded, CallEvent, CallMissed, CallReady, CallReminderDue, CallRescheduled,
    CallScheduled, CallStarted, ParticipantJoined,
};
use crate::ids::CallId;
use crate::policy::Policy;
use crate::testing::{
    BOOKED_AT, as_admin, as_coach, as_stranger, as_student, at, call_id, coach, contract_id,
    free_call_scheduled, given, paid_call_scheduled, paid_contract, schedule_free, schedule_paid,
    student, user,
};
use crate::time::{TZDB_VERSION, TimeError};

// ---------------------------------------------------------------- fixtures

fn start() -> DateTime<Utc> {
    at("2026-03-10T10:00:00Z")
}

fn mins(n: i64) -> Duration {
    Duration::minutes(n)
}

fn id() -> CallId {
    call_id(1)
}

fn new_id() -> CallId {
    call_id(2)
}

fn booked() -> CallEvent {
    free_call_scheduled(id(), start())
}

fn paid_booked() -> CallEvent {
    paid_call_scheduled(id(), start())
}

fn ready() -> CallEvent {
    CallReady {
        at: start() - mins(5),
    }
    .into()
}

fn joined(actor: &Actor, role: ParticipantRole, when: DateTime<Utc>) -> CallEvent {
    ParticipantJoined {
        user_id: actor.user_id.clone(),
        role,
        at: when,
    }
    .into()
}

fn started(actor: &Actor, when: DateTime<Utc>) -> CallEvent {
    CallStarted {
        at: when,
        first_participant: actor.user_id.clone(),
    }
    .into()
}

/// Booked, ready, and the student joined at the start.
fn active() -> Vec<CallEvent> {
    vec![
        booked(),
        ready(),
        joined(&as_student(), ParticipantRole::Student, start()),
        started(&as_student(), start()),
    ]
}

fn cancelled_by_student(when: DateTime<Utc>) -> CallEvent {
    CallCancelled {
        by: student(),
        by_role: ActorRole::Student,
        reason: None,
        late: false,
        session_returned: false,
        at: when,
    }
    .into()
}

fn completed() -> Vec<CallEvent> {
    let mut events = active();
    events.push(
        CallEnded {
            at: start() + mins(15),
            ended_by: Some(student()),
            auto: false,
            attendance: Attendance::StudentOnly,
        }
        .into(),
    );
    events
}

fn reschedule(by: Actor, new_start: DateTime<Utc>) -> Command {
    Command::Reschedule(RescheduleCall {
        by,
        new_call_id: new_id(),
        new_start: RequestedStart::utc(new_start),
        reason: None,
    })
}

fn cancel(by: Actor) -> Command {
    Command::Cancel { by, reason: None }
}

/// A day before the start: everything but joining is allowed.
fn day_before() -> DateTime<Utc> {
    start() - Duration::days(1) - mins(1)
}

// ---------------------------------------------------------------- schedule

#[test]
fn student_books_a_free_consultation() {
    let now = at("2026-03-09T08:00:30Z");
    let call = given(&[])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(now)
        .then(&[CallScheduled {
            call_id: id(),
            chain_id: id(),
            kind: CallKind::FreeConsultation,
            student_id: student(),
            coach_id: coach(),
            contract_id: None,
            start: start(),
            duration_minutes: 15,
            requested_time_zone: None,
            requested_local_time: None,
            tzdb_version: TZDB_VERSION.to_owned(),
            rescheduled_from: None,
            reschedule_count: 0,
            booked_by: student(),
            booked_at: now,
            note: None,
        }
        .into()])
        .unwrap();
    assert_eq!(call.status, CallStatus::Scheduled);
    assert_eq!(call.version, 1);
}

#[test]
fn a_booking_records_the_zone_and_local_time_it_was_requested_in() {
    let mut cmd = schedule_free(id(), start());
    // 2026-03-10 is after the US spring-forward: New York is on EDT (−4).
    cmd.start = RequestedStart {
        utc: start(),
        time_zone: Some("America/New_York".into()),
        local_time: Some("2026-03-10T06:00".into()),
    };
    let call = given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .result()
        .unwrap();
    let CallEvent::Scheduled(e) = &call[0].event else {
        panic!("expected a booking");
    };
    assert_eq!(e.requested_time_zone.as_deref(), Some("America/New_York"));
    assert_eq!(e.requested_local_time.as_deref(), Some("2026-03-10T06:00"));
}

#[test]
fn a_recorded_local_time_must_match_the_instant() {
    let with_start = |time_zone: Option<&str>, local_time: Option<&str>| {
        let mut cmd = schedule_free(id(), start());
        cmd.start = RequestedStart {
            utc: start(),
            time_zone: time_zone.map(Into::into),
            local_time: local_time.map(Into::into),
        };
        given(&[]).when(Command::Schedule(cmd)).at(day_before())
    };
    with_start(Some("America/New_York"), Some("2026-03-10T05:00"))
        .then_err_matching(|e| matches!(e, DomainError::InvalidArgument { field: "start", .. }));
    with_start(None, Some("2026-03-10T10:00"))
        .then_err_matching(|e| matches!(e, DomainError::InvalidArgument { field: "start", .. }));
    with_start(Some("Mars/Base"), None).then_err(DomainError::Time {
        field: "start",
        source: TimeError::UnknownZone {
            zone: "Mars/Base".into(),
        },
    });
    with_start(Some("UTC"), Some("2026-03-10 10:00")).then_err(DomainError::Time {
        field: "start",
        source: TimeError::Malformed {
            value: "2026-03-10 10:00".into(),
        },
    });
    with_start(Some("Europe/Berlin"), None)
        .result()
        .expect("a UTC request may record the caller's zone");
}

#[test]
fn admins_and_services_may_book_for_a_student() {
    for role in [ActorRole::Admin, ActorRole::Service] {
        let mut cmd = schedule_free(id(), start());
        cmd.by = Actor {
            user_id: user("ops-1"),
            role,
        };
        let decided = given(&[])
            .when(Command::Schedule(cmd))
            .at(day_before())
            .result()
            .unwrap();
        let CallEvent::Scheduled(e) = &decided[0].event else {
            panic!("expected a booking");
        };
        assert_eq!(
            (e.student_id.clone(), e.booked_by.clone()),
            (student(), user("ops-1"))
        );
    }
}

#[test]
fn a_student_cannot_book_for_someone_else() {
    let mut cmd = schedule_free(id(), start());
    cmd.by = as_stranger();
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err(DomainError::StudentMismatch);
}

#[test]
fn a_coach_cannot_book() {
    let mut cmd = schedule_free(id(), start());
    cmd.by = as_coach();
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err(DomainError::RoleNotAllowed {
            role: ActorRole::Coach,
            action: "book a call",
        });
}

#[test]
fn nobody_books_a_call_with_themselves() {
    let mut cmd = schedule_free(id(), start());
    cmd.coach_id = student();
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err_matching(|e| {
            matches!(
                e,
                DomainError::InvalidArgument {
                    field: "coach_id",
                    ..
                }
            )
        });
}

#[test]
fn starts_fall_on_whole_minutes() {
    for odd in [
        start() + Duration::seconds(30),
        start() + Duration::nanoseconds(1),
    ] {
        given(&[])
            .when(Command::Schedule(schedule_free(id(), odd)))
            .at(day_before())
            .then_err(DomainError::StartNotWholeMinute);
    }
}

#[test]
fn a_call_needs_the_minimum_notice() {
    let now = start() - mins(15);
    given(&[])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(now)
        .result()
        .expect("exactly the minimum notice is enough");
    given(&[])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(now + Duration::seconds(1))
        .then_err(DomainError::NotEnoughNotice {
            // The first whole minute that would do.
            earliest: start() + mins(1),
        });
    given(&[])
        .when(Command::Schedule(schedule_free(id(), start() - mins(60))))
        .at(now)
        .then_err(DomainError::NotEnoughNotice { earliest: start() });
}

#[test]
fn a_call_starts_within_the_horizon() {
    let now = start() - Duration::days(180);
    given(&[])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(now)
        .result()
        .expect("exactly the horizon is allowed");
    given(&[])
        .when(Command::Schedule(schedule_free(id(), start() + mins(1))))
        .at(now + Duration::seconds(30))
        .then_err(DomainError::BeyondHorizon { latest: start() });
}

#[test]
fn a_second_free_consultation_is_rejected() {
    let mut cmd = schedule_free(id(), start());
    cmd.existing_free_consultation = Some(call_id(9));
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err(DomainError::FreeConsultationExists {
            call_id: call_id(9),
        });
}

#[test]
fn a_free_consultation_takes_no_contract() {
    let mut cmd = schedule_free(id(), start());
    cmd.contract = Some(paid_contract());
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err_matching(|e| e.field() == Some("contract_id"));
}

#[test]
fn free_consultation_length_comes_from_the_policy() {
    let decided = given(&[])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(day_before())
        .with(Policy {
            free_consultation_minutes: 20,
            ..Policy::default()
        })
        .result()
        .unwrap();
    assert!(matches!(
        &decided[0].event,
        CallEvent::Scheduled(CallScheduled {
            duration_minutes: 20,
            ..
        })
    ));
}

#[test]
fn a_paid_session_takes_the_contracts_length_and_id() {
    let call = given(&[])
        .when(Command::Schedule(schedule_paid(id(), start())))
        .at(day_before())
        .then(&[CallScheduled {
            call_id: id(),
            chain_id: id(),
            kind: CallKind::PaidSession,
            student_id: student(),
            coach_id: coach(),
            contract_id: Some(contract_id()),
            start: start(),
            duration_minutes: 60,
            requested_time_zone: None,
            requested_local_time: None,
            tzdb_version: TZDB_VERSION.to_owned(),
            rescheduled_from: None,
            reschedule_count: 0,
            booked_by: student(),
            booked_at: day_before(),
            note: None,
        }
        .into()])
        .unwrap();
    assert_eq!(call.end(), start() + mins(60));
}

#[test]
fn a_paid_session_needs_a_contract() {
    let mut cmd = schedule_paid(id(), start());
    cmd.contract = None;
    given(&[])
        .when(Command::Schedule(cmd))
        .at(day_before())
        .then_err_matching(|e| {
            matches!(
                e,
                DomainError::InvalidArgument {
                    field: "contract_id",
                    ..
                }
            )
        });
}

#[test]
fn the_contract_must_be_between_exactly_these_two_people() {
    for tweak in [
        |c: &mut crate::ContractSnapshot| c.student_id = user("student-2"),
        |c: &mut crate::ContractSnapshot| c.coach_id = user("coach-2"),
    ] {
        let mut cmd = schedule_paid(id(), start());
        if let Some(contract) = cmd.contract.as_mut() {
            tweak(contract);
        }
        given(&[])
            .when(Command::Schedule(cmd))
            .at(day_before())
            .then_err(DomainError::ContractMismatch);
    }
}

#[test]
fn the_contract_must_be_paid() {
    for status in [
        ContractStatus::Accepted,
        ContractStatus::Cancelled,
        ContractStatus::Completed,
    ] {
        let mut cmd = schedule_paid(id(), start());
        if let Some(contract) = cmd.contract.as_mut() {
            contract.status = status;
        }
        given(&[])
            .when(Command::Schedule(cmd))
            .at(day_before())
            .then_err(DomainError::ContractNotPaid { status });
    }
}

#[test]
fn the_contract_must_have_sessions_left() {
    let book = |total: Option<u32>, used: u32| {
        let mut cmd = schedule_paid(id(), start());
        if let Some(contract) = cmd.contract.as_mut() {
            contract.sessions_total = total;
            contract.sessions_used = used;
        }
        given(&[]).when(Command::Schedule(cmd)).at(day_before())
    };
    book(Some(10), 10).then_err(DomainError::NoSessionsLeft);
    book(Some(0), 0).then_err(DomainError::NoSessionsLeft);
    book(Some(10), 9).result().expect("the last session");
    book(None, 1000).result().expect("unlimited contract");
}

#[test]
fn session_lengths_are_15_to_240_minutes() {
    let book = |minutes: u32| {
        let mut cmd = schedule_paid(id(), start());
        if let Some(contract) = cmd.contract.as_mut() {
            contract.session_minutes = minutes;
        }
        given(&[]).when(Command::Schedule(cmd)).at(day_before())
    };
    for bad in [0, 14, 241] {
        book(bad).then_err(DomainError::InvalidSessionLength { minutes: bad });
    }
    for ok in [15, 240] {
        book(ok).result().expect("boundary length");
    }
}

#[test]
fn a_call_is_booked_once() {
    given(&[booked()])
        .when(Command::Schedule(schedule_free(id(), start())))
        .at(day_before())
        .then_err(DomainError::InvalidTransition {
            from: CallStatus::Scheduled,
            action: "schedule",
        });
}

#[test]
fn commands_on_a_call_that_does_not_exist_are_not_found() {
    for command in [
        Command::MarkReady,
        Command::MarkMissed,
        Command::CompleteOverdue,
        Command::TriggerReminder {
            kind: ReminderKind::Day,
        },
        cancel(as_student()),
        Command::Join { by: as_student() },
        Command::End { by: as_student() },
        reschedule(as_student(), start() + mins(60)),
    ] {
        given(&[])
            .when(command)
            .at(day_before())
            .then_err(DomainError::CallNotFound);
    }
}

// ---------------------------------------------------------------- ready

#[test]
fn a_call_becomes_ready_at_the_ready_lead() {
    let call = given(&[booked()])
        .when(Command::MarkReady)
        .at(start() - mins(5))
        .then(&[CallReady {
            at: start() - mins(5),
        }
        .into()])
        .unwrap();
    assert_eq!(call.status, CallStatus::Ready);
}

#[test]
fn an_early_ready_timer_is_not_due() {
    given(&[booked()])
        .when(Command::MarkReady)
        .at(start() - mins(6))
        .then_err(DomainError::TimerNotDue {
            due_at: start() - mins(5),
        });
}

#[test]
fn a_stale_ready_timer_is_a_no_op() {
    for events in [
        vec![booked(), ready()],
        active(),
        completed(),
        vec![booked(), cancelled_by_student(day_before())],
    ] {
        given(&events)
            .when(Command::MarkReady)
            .at(start())
            .then_nothing();
    }
}

// ---------------------------------------------------------------- join

#[test]
fn the_first_join_starts_a_ready_call() {
    let call = given(&[booked(), ready()])
        .when(Command::Join { by: as_student() })
        .at(start() - mins(2))
        .then(&[
            joined(&as_student(), ParticipantRole::Student, start() - mins(2)),
            started(&as_student(), start() - mins(2)),
        ])
        .unwrap();
    assert_eq!(call.status, CallStatus::Active);
    assert_eq!(call.started_at, Some(start() - mins(2)));
}

#[test]
fn every_join_of_an_active_call_is_recorded() {
    let call = given(&active())
        .when(Command::Join { by: as_coach() })
        .at(start() + mins(1))
        .then(&[joined(
            &as_coach(),
            ParticipantRole::Coach,
            start() + mins(1),
        )])
        .unwrap();
    assert_eq!(call.attendance_so_far(), Attendance::Both);
    // Rejoining after a dropped connection is recorded too.
    given(&active())
        .when(Command::Join { by: as_student() })
        .at(start() + mins(3))
        .then(&[joined(
            &as_student(),
            ParticipantRole::Student,
            start() + mins(3),
        )]);
}

#[test]
fn joining_in_the_ready_window_before_the_timer_fired_readies_and_starts() {
    let now = start() - mins(4);
    given(&[booked()])
        .when(Command::Join { by: as_coach() })
        .at(now)
        .then(&[
            CallReady { at: now }.into(),
            joined(&as_coach(), ParticipantRole::Coach, now),
            started(&as_coach(), now),
        ]);
}

#[test]
fn joining_before_the_ready_window_is_refused() {
    given(&[booked()])
        .when(Command::Join { by: as_student() })
        .at(start() - mins(6))
        .then_err(DomainError::CallNotJoinable {
            opens_at: start() - mins(5),
            status: CallStatus::Scheduled,
        });
}

#[test]
fn ended_or_cancelled_calls_cannot_be_joined() {
    given(&completed())
        .when(Command::Join { by: as_coach() })
        .at(start() + mins(20))
        .then_err(DomainError::CallNotJoinable {
            opens_at: start() - mins(5),
            status: CallStatus::Completed,
        });
    given(&[booked(), cancelled_by_student(day_before())])
        .when(Command::Join { by: as_coach() })
        .at(start())
        .then_err(DomainError::CallNotJoinable {
            opens_at: start() - mins(5),
            status: CallStatus::Cancelled,
        });
}

#[test]
fn only_the_student_and_the_coach_may_join() {
    for outsider in [as_stranger(), as_admin()] {
        given(&[booked(), ready()])
            .when(Command::Join { by: outsider })
            .at(start())
            .then_err(DomainError::NotAParticipant);
    }
}

#[test]
fn joining_closes_when_the_call_is_missed_even_if_the_timer_is_late() {
    given(&[booked(), ready()])
        .when(Command::Join { by: as_student() })
        .at(start() + mins(15))
        .then_err(DomainError::JoinWindowClosed {
            closed_at: start() + mins(15),
        });
    given(&[booked(), ready()])
        .when(Command::Join { by: as_student() })
        .at(start() + mins(15) - Duration::seconds(1))
        .result()
        .expect("one second before the miss");
}

#[test]
fn joining_a_running_call_closes_at_its_overrun_grace() {
    // 15-minute call + 15-minute grace.
    given(&active())
        .when(Command::Join { by: as_coach() })
        .at(start() + mins(30))
        .then_err(DomainError::JoinWindowClosed {
            closed_at: start() + mins(30),
        });
}

// ---------------------------------------------------------------- end

#[test]
fn a_participant_ends_an_active_call_recording_who_came() {
    let now = start() + mins(14);
    let call = given(&active())
        .when(Command::End { by: as_coach() })
        .at(now)
        .then(&[CallEnded {
            at: now,
            ended_by: Some(coach()),
            auto: false,
            attendance: Attendance::StudentOnly,
        }
        .into()])
        .unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.attendance, Some(Attendance::StudentOnly));

    let mut both = active();
    both.push(joined(
        &as_coach(),
        ParticipantRole::Coach,
        start() + mins(1),
    ));
    given(&both)
        .when(Command::End { by: as_student() })
        .at(now)
        .then(&[CallEnded {
            at: now,
            ended_by: Some(student()),
            auto: false,
            attendance: Attendance::Both,
        }
        .into()]);
}

#[test]
fn only_an_active_call_can_be_ended() {
    given(&[booked(), ready()])
        .when(Command::End { by: as_student() })
        .at(start())
        .then_err(DomainError::InvalidTransition {
            from: CallStatus::Ready,
            action: "end",
        });
    given(&completed())
        .when(Command::End { by: as_student() })
        .at(start() + mins(20))
        .then_err(DomainError::InvalidTransition {
            from: CallStatus::Completed,
            action: "end",
        });
}

#[test]
fn only_a_participant_may_end_a_call() {
    given(&active())
        .when(Command::End { by: as_admin() })
        .at(start() + mins(5))
        .then_err(DomainError::NotAParticipant);
}

// ---------------------------------------------------------------- auto-complete

#[test]
fn an_overrunning_call_is_completed_automatically() {
    let now = start() + mins(30);
    let call = given(&active())
        .when(Command::CompleteOverdue)
        .at(now)
        .then(&[CallEnded {
            at: now,
            ended_by: None,
            auto: true,
            attendance: Attendance::StudentOnly,
        }
        .into()])
        .unwrap();
    assert_eq!(call.status, CallStatus::Completed);
}

#[test]
fn an_early_completion_timer_is_not_due() {
    given(&active())
        .when(Command::CompleteOverdue)
        .at(start() + mins(29))
        .then_err(DomainError::TimerNotDue {
            due_at: start() + mins(30),
        });
}

#[test]
fn a_stale_completion_timer_is_a_no_op() {
    for events in [completed(), vec![booked()], vec![booked(), ready()]] {
        given(&events)
            .when(Command::CompleteOverdue)
            .at(start() + mins(60))
            .then_nothing();
    }
}

// ---------------------------------------------------------------- missed

#[test]
fn a_call_nobody_joined_is_missed() {
    let now = start() + mins(15);
    let missed = CallMissed {
        attendance: Attendance::Nobody,
        session_returned: false,
        at: now,
    };
    // Ready, or still scheduled if the ready timer never fired.
    for events in [vec![booked(), ready()], vec![booked()]] {
        let call = given(&events)
            .when(Command::MarkMissed)
            .at(now)
            .then(&[missed.clone().into()])
            .unwrap();
        assert_eq!(call.status, CallStatus::Missed);
    }
}

#[test]
fn a_missed_paid_session_is_returned_only_by_policy() {
    let now = start() + mins(15);
    let refunding = Policy {
        refund_session_on_missed: true,
        ..Policy::default()
    };
    let missed = |returned| {
        CallMissed {
            attendance: Attendance::Nobody,
            session_returned: returned,
            at: now,
        }
        .into()
    };
    given(&[paid_booked()])
        .when(Command::MarkMissed)
        .at(now)
        .then(&[missed(false)]);
    given(&[paid_booked()])
        .when(Command::MarkMissed)
        .at(now)
        .with(refunding.clone())
        .then(&[missed(true)]);
    // A free consultation has no session to return.
    given(&[booked()])
        .when(Command::MarkMissed)
        .at(now)
        .with(refunding)
        .then(&[missed(false)]);
}

#[test]
fn an_early_missed_timer_is_not_due() {
    given(&[booked(), ready()])
        .when(Command::MarkMissed)
        .at(start() + mins(14))
        .then_err(DomainError::TimerNotDue {
            due_at: start() + mins(15),
        });
}

#[test]
fn a_stale_missed_timer_is_a_no_op() {
    for events in [
        active(),
        completed(),
        vec![booked(), cancelled_by_student(day_before())],
    ] {
        given(&events)
            .when(Command::MarkMissed)
            .at(start() + mins(15))
            .then_nothing();
    }
}

// ---------------------------------------------------------------- reminders

fn remind(kind: ReminderKind) -> Command {
    Command::TriggerReminder { kind }
}

#[test]
fn reminders_are_due_a_day_and_an_hour_ahead() {
    let day = start() - Duration::hours(24);
    let call = given(&[booked()])
        .when(remind(ReminderKind::Day))
        .at(day)
        .then(&[CallReminderDue {
            kind: ReminderKind::Day,
            at: day,
        }
        .into()])
        .unwrap();
    assert_eq!(call.reminders_sent, [ReminderKind::Day]);
    let hour = start() - Duration::hours(1) + mins(2);
    given(&[booked()])
        .when(remind(ReminderKind::Hour))
        .at(hour)
        .then(&[CallReminderDue {
            kind: ReminderKind::Hour,
            at: hour,
        }
        .into()]);
}

#[test]
fn an_early_reminder_is_not_due() {
    given(&[booked()])
        .when(remind(ReminderKind::Hour))
        .at(start() - mins(61))
        .then_err(DomainError::TimerNotDue {
            due_at: start() - mins(60),
        });
}

#[test]
fn a_reminder_is_sent_once() {
    let sent = CallReminderDue {
        kind: ReminderKind::Hour,
        at: start() - mins(60),
    };
    given(&[booked(), sent.into()])
        .when(remind(ReminderKind::Hour))
        .at(start() - mins(59))
        .then_nothing();
}

#[test]
fn a_reminder_whose_moment_passed_at_booking_is_never_sent() {
    // Booked 30 minutes ahead: neither the 24 h nor the 1 h reminder.
    let late_booking = free_call_scheduled(id(), at(BOOKED_AT) + mins(30));
    for kind in ReminderKind::ALL {
        given(std::slice::from_ref(&late_booking))
            .when(remind(kind))
            .at(at(BOOKED_AT) + mins(1))
            .then_nothing();
    }
    // Booked exactly at the reminder's moment: it is sent.
    let on_the_dot = free_call_scheduled(id(), at(BOOKED_AT) + Duration::hours(1));
    given(&[on_the_dot])
        .when(remind(ReminderKind::Hour))
        .at(at(BOOKED_AT))
        .result()
        .map(|d| assert_eq!(d.len(), 1))
        .unwrap();
}

#[test]
fn a_late_reminder_timer_still_reminds_a_ready_call_before_its_start() {
    given(&[booked(), ready()])
        .when(remind(ReminderKind::Hour))
        .at(start() - mins(3))
        .then(&[CallReminderDue {
            kind: ReminderKind::Hour,
            at: start() - mins(3),
        }
        .into()]);
}

#[test]
fn stale_reminders_are_no_ops() {
    // Cancelled, moved, started, or the start has passed.
    let moved = CallRescheduled {
        new_call_id: new_id(),
        new_start: start() + Duration::days(1),
        by: student(),
        reason: None,
        at: day_before() - Duration::days(1),
    };
    for events in [
        vec![
            booked(),
            cancelled_by_student(day_before() - Duration::days(1)),
        ],
        vec![booked(), moved.into()],
        active(),
    ] {
        given(&events)
            .when(remind(ReminderKind::Day))
            .at(day_before())
            .then_nothing();
    }
    given(&[booked()])
        .when(remind(ReminderKind::Hour))
        .at(start())
        .then_nothing();
}

// ---------------------------------------------------------------- cancel

#[test]
fn an_early_cancellation_returns_a_paid_session() {
    let now = start() - Duration::hours(24);
    let call = given(&[paid_booked()])
        .when(Command::Cancel {
            by: as_student(),
            reason: Some("  exam moved  ".into()),
        })
        .at(now)
        .then(&[CallCancelled {
            by: student(),
            by_role: ActorRole::Student,
            reason: Some("exam moved".into()),
            late: false,
            session_returned: true,
            at: now,
        }
        .into()])
        .unwrap();
    assert_eq!(call.status, CallStatus::Cancelled);
    assert!(call.session_returned);
}

#[test]
fn a_cancellation_inside_the_window_is_late_and_keeps_the_session() {
    let now = start() - Duration::hours(24) + Duration::seconds(1);
    let late = |returned| {
        CallCancelled {
            by: coach(),
            by_role: ActorRole::Coach,
            reason: None,
            late: true,
            session_returned: returned,
            at: now,
        }
        .into()
    };
    given(&[paid_booked()])
        .when(cancel(as_coach()))
        .at(now)
        .then(&[late(false)]);
    given(&[paid_booked()])
        .when(cancel(as_coach()))
        .at(now)
        .with(Policy {
            refund_session_on_late_cancel: true,
            ..Policy::default()
        })
        .then(&[late(true)]);
}

#[test]
fn a_free_consultation_has_no_session_to_return() {
    let decided = given(&[booked()])
        .when(cancel(as_student()))
        .at(day_before() - Duration::days(3))
        .result()
        .unwrap();
    assert!(matches!(
        &decided[0].event,
        CallEvent::Cancelled(CallCancelled {
            late: false,
            session_returned: false,
            ..
        })
    ));
}

#[test]
fn a_ready_call_can_still_be_cancelled() {
    given(&[booked(), ready()])
        .when(cancel(as_coach()))
        .at(start() - mins(1))
        .result()
        .expect("ready calls can be cancelled");
}

#[test]
fn staff_may_cancel_any_call_and_are_recorded_as_such() {
    for (actor, role) in [
        (as_admin(), ActorRole::Admin),
        (
            Actor {
                user_id: user("contracts-service"),
                role: ActorRole::Service,
            },
            ActorRole::Service,
        ),
    ] {
        given(&[booked()])
            .when(cancel(actor.clone()))
            .at(day_before())
            .then(&[CallCancelled {
                by: actor.user_id,
                by_role: role,
                reason: None,
                late: false,
                session_returned: false,
                at: day_before(),
            }
            .into()]);
    }
}

#[test]
fn strangers_cannot_cancel() {
    given(&[booked()])
        .when(cancel(as_stranger()))
        .at(day_before())
        .then_err(DomainError::NotAParticipant);
}

#[test]
fn only_scheduled_or_ready_calls_can_be_cancelled() {
    given(&active())
        .when(cancel(as_student()))
        .at(start() + mins(1))
        .then_err(DomainError::InvalidTransition {
            from: CallStatus::Active,
            action: "cancel",
        });
    given(&[booked(), cancelled_by_student(day_before())])
        .when(cancel(as_coach()))
        .at(day_before())
        .then_err(DomainError::InvalidTransition {
            from: CallStatus::Cancelled,
            action: "cancel",
        });
}

#[test]
fn reasons_are_trimmed_blank_means_none_and_500_characters_at_most() {
    let with_reason = |reason: String| {
        given(&[booked()])
            .when(Command::Cancel {
                by: as_student(),
                reason: Some(reason),
            })
            .at(day_before())
    };
    let decided = with_reason("   \n ".into()).result().unwrap();
    assert!(matches!(
        &decided[0].event,
        CallEvent::Cancelled(CallCancelled { reason: None, .. })
    ));
    // Characters, not bytes: 500 two-byte letters are fine.
    with_reason("é".repeat(500))
        .result()
        .expect("500 characters");
    with_reason(format!("  {}  ", "x".repeat(500)))
        .result()
        .expect("surrounding blanks do not count");
    let err = with_reason("x".repeat(501)).then_err_matching(|e| {
        matches!(
            e,
            DomainError::InvalidArgument {
                field: "reason",
                ..
            }
        )
    });
    assert!(err.to_string().contains("at most 500"), "{err}");
}

// ---------------------------------------------------------------- reschedule

#[test]
fn rescheduling_moves_the_call_to_a_new_one_in_the_same_chain() {
    let now = day_before();
    let new_start = start() + Duration::days(2);
    let mut cmd = RescheduleCall {
        by: as_coach(),
        new_call_id: new_id(),
        new_start: RequestedStart {
            utc: new_start,
            time_zone: Some("Europe/Berlin".into()),
            local_time: Some("2026-03-12T11:00".into()),
        },
        reason: Some(" travelling ".into()),
    };
    let old = given(&[paid_booked()])
        .when(Command::Reschedule(cmd.clone()))
        .at(now)
        .then_decided(&[
            Decided {
                call_id: id(),
                event: CallRescheduled {
                    new_call_id: new_id(),
                    new_start,
                    by: coach(),
                    reason: Some("travelling".into()),
                    at: now,
                }
                .into(),
            },
            Decided {
                call_id: new_id(),
                event: CallScheduled {
                    call_id: new_id(),
                    chain_id: id(),
                    kind: CallKind::PaidSession,
                    student_id: student(),
                    coach_id: coach(),
                    contract_id: Some(contract_id()),
                    start: new_start,
                    duration_minutes: 60,
                    requested_time_zone: Some("Europe/Berlin".into()),
                    requested_local_time: Some("2026-03-12T11:00".into()),
                    tzdb_version: TZDB_VERSION.to_owned(),
                    rescheduled_from: Some(id()),
                    reschedule_count: 1,
                    booked_by: coach(),
                    booked_at: now,
                    note: None,
                }
                .into(),
            },
        ])
        .unwrap();
    assert_eq!(old.status, CallStatus::Rescheduled);
    assert_eq!(old.rescheduled_to, Some(new_id()));

    // The successor carries the chain on: its own successor keeps the chain id.
    let decided = given(&[paid_booked()])
        .when(Command::Reschedule(cmd.clone()))
        .at(now)
        .result()
        .unwrap();
    let successor = given(&[decided[1].event.clone()]);
    assert_eq!(successor.state().map(|c| c.chain_id), Some(id()));
    cmd.new_call_id = call_id(3);
    cmd.new_start = RequestedStart::utc(new_start + Duration::days(1));
    let decided = successor
        .when(Command::Reschedule(cmd))
        .at(now)
        .result()
        .unwrap();
    assert!(matches!(
        &decided[1].event,
        CallEvent::Scheduled(CallScheduled { chain_id, reschedule_count: 2, rescheduled_from: Some(from), .. })
            if *chain_id == id() && *from == new_id()
    ));
}

#[test]
fn rescheduling_stops_at_the_cutoff() {
    let cutoff = start() - Duration::hours(2);
    given(&[booked()])
        .when(reschedule(as_student(), start() + mins(60)))
        .at(cutoff)
        .result()
        .expect("exactly at the cutoff");
    given(&[booked()])
        .when(reschedule(as_student(), start() + mins(60)))
        .at(cutoff + Duration::seconds(1))
        .then_err(DomainError::RescheduleCutoff { cutoff });
}

#[test]
fn a_chain_is_rescheduled_at_most_three_times() {
    let CallEvent::Scheduled(first) = free_call_scheduled(id(), start()) else {
        panic!("fixture is a booking");
    };
    let third = CallScheduled {
        reschedule_count: 3,
        rescheduled_from: Some(call_id(7)),
        chain_id: call_id(6),
        ..first
    };
    given(&[third.into()])
        .when(reschedule(as_student(), start() + mins(60)))
        .at(day_before())
        .then_err(DomainError::TooManyReschedules { max: 3 });
}

#[test]
fn the_new_start_meets_the_booking_rules() {
    let now = day_before();
    given(&[booked()])
        .when(reschedule(as_student(), now + mins(10)))
        .at(now)
        .then_err(DomainError::NotEnoughNotice {
            earliest: now + mins(15),
        });
    given(&[booked()])
        .when(reschedule(as_student(), now + Duration::days(181)))
        .at(now)
        .then_err(DomainError::BeyondHorizon {
            latest: now + Duration::days(180),
        });
    given(&[booked()])
        .when(reschedule(as_student(), start() + Duration::seconds(90)))
        .at(now)
        .then_err(DomainError::StartNotWholeMinute);
    given(&[booked()])
        .when(reschedule(as_student(), start()))
        .at(now)
        .then_err_matching(|e| matches!(e, DomainError::InvalidArgument { field: "start", .. }));
}

#[test]
fn the_successor_needs_a_fresh_id() {
    let mut cmd = RescheduleCall {
        by: as_student(),
        new_call_id: id(),
        new_start: RequestedStart::utc(start() + mins(60)),
        reason: None,
    };
    given(&[booked()])
        .when(Command::Reschedule(cmd.clone()))
        .at(day_before())
        .then_err_matching(|e| e.field() == Some("new_call_id"));
    cmd.new_call_id = new_id();
    cmd.reason = Some("y".repeat(501));
    given(&[booked()])
        .when(Command::Reschedule(cmd))
        .at(day_before())
        .then_err_matching(|e| e.field() == Some("reason"));
}

#[test]
fn only_the_student_or_coach_may_reschedule() {
    for outsider in [as_stranger(), as_admin()] {
        given(&[booked()])
            .when(reschedule(outsider, start() + mins(60)))
            .at(day_before())
            .then_err(DomainError::NotAParticipant);
    }
}

#[test]
fn only_a_scheduled_call_can_be_rescheduled() {
    for (events, from) in [
        (vec![booked(), ready()], CallStatus::Ready),
        (active(), CallStatus::Active),
        (
            vec![booked(), cancelled_by_student(day_before())],
            CallStatus::Cancelled,
        ),
    ] {
        given(&events)
            .when(reschedule(as_student(), start() + Duration::days(3)))
            .at(day_before())
            .then_err(DomainError::InvalidTransition {
                from,
                action: "reschedule",
            });
    }
}

// ---------------------------------------------------------------- whole lifecycle

#[test]
fn a_paid_session_from_booking_to_completion() {
    let policy = Policy::default();
    let mut events: Vec<CallEvent> = Vec::new();
    let mut step = |command: Command, now: DateTime<Utc>| {
        let decided = given(&events)
            .when(command)
            .at(now)
            .with(policy.clone())
            .result()
            .unwrap_or_else(|e| panic!("{e}"));
        events.extend(decided.into_iter().map(|d| d.event));
    };
    let booked_at = start() - Duration::days(3);
    step(Command::Schedule(schedule_paid(id(), start())), booked_at);
    step(remind(ReminderKind::Day), start() - Duration::hours(24));
    step(remind(ReminderKind::Hour), start() - Duration::hours(1));
    step(Command::MarkReady, start() - mins(5));
    step(Command::Join { by: as_coach() }, start() - mins(1));
    step(Command::Join { by: as_student() }, start() + mins(2));
    step(Command::End { by: as_student() }, start() + mins(58));
    // The timers that were armed all fire afterwards and change nothing.
    step(Command::MarkMissed, start() + mins(15));
    step(Command::CompleteOverdue, start() + mins(75));

    let types: Vec<&str> = events.iter().map(CallEvent::event_type).collect();
    assert_eq!(
        types,
        [
            "CallScheduled",
            "CallReminderDue",
            "CallReminderDue",
            "CallReady",
            "ParticipantJoined",
            "CallStarted",
            "ParticipantJoined",
            "CallEnded",
        ]
    );
    let call = crate::replay(&events).unwrap();
    assert_eq!(call.status, CallStatus::Completed);
    assert_eq!(call.version, 8);
    assert_eq!(call.attendance, Some(Attendance::Both));
    assert_eq!(call.joins.len(), 2);
    assert_eq!(call.reminders_sent, ReminderKind::ALL);
}
