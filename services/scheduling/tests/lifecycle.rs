//! A call's whole lifecycle with lead times of seconds, driven through
//! `CallTimerService` as the timer service will drive it.

mod support;

use chrono::{DateTime, Duration, Utc};
use skileez_domain::Policy;
use skileez_proto::{call as ev, scheduling as pb};
use support::*;
use tonic::Code;

fn id(call: &pb::Call) -> String {
    card(call).call_id.clone()
}

fn start_of(call: &pb::Call) -> DateTime<Utc> {
    let ts = card(call).start.expect("start");
    DateTime::from_timestamp(ts.seconds, 0).expect("start")
}

fn req(call: &pb::Call) -> pb::TimerCommandRequest {
    pb::TimerCommandRequest { call_id: id(call) }
}

#[tokio::test]
async fn a_call_goes_scheduled_ready_active_completed_and_records_who_came() {
    let app = TestApp::spawn_with(fast_policy()).await;
    let call = app
        .book_free("stu-1", "coach-1", seconds_ahead(4))
        .await
        .expect("booked");
    assert_eq!(status_of(&call), ev::CallStatus::Scheduled);
    let mut timers = app.timers();

    // Too early: the ready timer must not be honoured before its moment.
    let early = timers.mark_call_ready(req(&call)).await;
    assert_code(&early, Code::FailedPrecondition);
    assert_eq!(reason(&early.unwrap_err()), "TIMER_NOT_DUE");

    sleep_until(start_of(&call) - app.policy.ready_lead).await;
    let ready = timers
        .mark_call_ready(req(&call))
        .await
        .expect("ready")
        .into_inner();
    assert!(ready.applied);
    assert_eq!(
        status_of(ready.call.as_ref().unwrap()),
        ev::CallStatus::Ready
    );
    let again = timers
        .mark_call_ready(req(&call))
        .await
        .expect("repeat is OK")
        .into_inner();
    assert!(!again.applied, "a repeated timer appends nothing");

    let joined = app
        .student("stu-1")
        .join_call(pb::JoinCallRequest {
            call_id: id(&call),
            ..Default::default()
        })
        .await
        .expect("student joins")
        .into_inner()
        .call
        .unwrap();
    assert_eq!(status_of(&joined), ev::CallStatus::Active);
    app.coach("coach-1")
        .join_call(pb::JoinCallRequest {
            call_id: id(&call),
            ..Default::default()
        })
        .await
        .expect("coach joins");
    // The missed timer firing now is stale: someone joined.
    sleep_until(start_of(&call) + app.policy.missed_after).await;
    let missed = timers
        .mark_call_missed(req(&call))
        .await
        .expect("stale is OK")
        .into_inner();
    assert!(!missed.applied);

    let ended = app
        .coach("coach-1")
        .end_call(pb::EndCallRequest {
            call_id: id(&call),
            ..Default::default()
        })
        .await
        .expect("coach ends")
        .into_inner()
        .call
        .unwrap();
    assert_eq!(status_of(&ended), ev::CallStatus::Completed);
    assert_eq!(card(&ended).attendance, ev::Attendance::Both as i32);
    assert_eq!(ended.joins.len(), 2);

    let history = app
        .student("stu-1")
        .get_call_history(pb::GetCallHistoryRequest { call_id: id(&call) })
        .await
        .expect("history")
        .into_inner()
        .events;
    let kinds: Vec<&str> = history
        .iter()
        .map(|e| match e.event.as_ref().expect("event") {
            ev::call_event::Event::Scheduled(_) => "scheduled",
            ev::call_event::Event::Ready(_) => "ready",
            ev::call_event::Event::ParticipantJoined(_) => "joined",
            ev::call_event::Event::Started(_) => "started",
            ev::call_event::Event::Ended(_) => "ended",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["scheduled", "ready", "joined", "started", "joined", "ended"]
    );
    let versions: Vec<u64> = history.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let actors: Vec<(String, i32)> = history
        .iter()
        .map(|e| {
            e.actor
                .as_ref()
                .map(|a| (a.user_id.clone(), a.role))
                .expect("actor")
        })
        .collect();
    assert_eq!(actors[0], ("stu-1".into(), ev::ActorRole::Student as i32));
    assert_eq!(actors[1], ("timers".into(), ev::ActorRole::Service as i32));
    assert_eq!(actors[4], ("coach-1".into(), ev::ActorRole::Coach as i32));
    assert!(
        history
            .iter()
            .all(|e| e.occurred_at.is_some() && !e.event_id.is_empty())
    );
    assert!(
        history
            .windows(2)
            .all(|w| w[0].occurred_at.as_ref().unwrap().seconds
                <= w[1].occurred_at.as_ref().unwrap().seconds)
    );
}

#[tokio::test]
async fn an_active_call_left_open_is_completed_after_its_grace_with_attendance() {
    let policy = Policy {
        free_consultation_minutes: 1,
        ..fast_policy()
    };
    let app = TestApp::spawn_with(policy).await;
    let call = app
        .book_free("stu-1", "coach-1", seconds_ahead(3))
        .await
        .expect("booked");
    sleep_until(start_of(&call) - app.policy.ready_lead).await;
    app.coach("coach-1")
        .join_call(pb::JoinCallRequest {
            call_id: id(&call),
            ..Default::default()
        })
        .await
        .expect("the coach joins in the window, before the ready timer");
    let mut timers = app.timers();
    let early = timers.complete_overdue_call(req(&call)).await;
    assert_eq!(reason(&early.unwrap_err()), "TIMER_NOT_DUE");
    sleep_until(start_of(&call) + Duration::minutes(1) + app.policy.overrun_grace).await;
    let done = timers
        .complete_overdue_call(req(&call))
        .await
        .expect("completes")
        .into_inner();
    assert!(done.applied);
    let call = done.call.unwrap();
    assert_eq!(status_of(&call), ev::CallStatus::Completed);
    assert_eq!(
        card(&call).attendance,
        ev::Attendance::CoachOnly as i32,
        "a student no-show"
    );
}

#[tokio::test]
async fn nobody_joining_makes_the_call_missed() {
    let app = TestApp::spawn_with(fast_policy()).await;
    let call = app
        .book_free("stu-1", "coach-1", seconds_ahead(3))
        .await
        .expect("booked");
    let mut timers = app.timers();
    let early = timers.mark_call_missed(req(&call)).await;
    assert_eq!(reason(&early.unwrap_err()), "TIMER_NOT_DUE");
    sleep_until(start_of(&call) + app.policy.missed_after).await;
    let missed = timers
        .mark_call_missed(req(&call))
        .await
        .expect("missed")
        .into_inner();
    assert!(missed.applied);
    let missed = missed.call.unwrap();
    assert_eq!(status_of(&missed), ev::CallStatus::Missed);
    assert_eq!(card(&missed).attendance, ev::Attendance::Nobody as i32);
    let join = app
        .student("stu-1")
        .join_call(pb::JoinCallRequest {
            call_id: id(&missed),
            ..Default::default()
        })
        .await;
    assert_eq!(reason(&join.unwrap_err()), "CALL_NOT_JOINABLE");
    // Timers for a finished call are stale, not errors.
    assert!(
        !timers
            .mark_call_ready(req(&missed))
            .await
            .expect("ok")
            .into_inner()
            .applied
    );
}

#[tokio::test]
async fn cancelling_is_flagged_late_inside_the_window_and_gives_back_only_early_sessions() {
    let app = TestApp::spawn_with(fast_policy()).await;
    app.add_contract(
        "k-1",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Paid,
        30,
        Some(2),
    )
    .await;
    let sessions_used = || async {
        app.directory()
            .get_contract(pb::GetContractRequest {
                contract_id: "k-1".into(),
            })
            .await
            .expect("contract")
            .into_inner()
            .sessions_used
    };

    // Early: more than the late window (30 s) ahead.
    let early = app
        .book_paid("stu-1", "coach-1", "k-1", seconds_ahead(120))
        .await
        .expect("booked");
    assert_eq!(card(&early).contract_id, "k-1");
    assert_eq!(sessions_used().await, 1);
    let cancelled = app
        .coach("coach-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id(&early),
            reason: "  ill  ".into(),
            ..Default::default()
        })
        .await
        .expect("cancelled")
        .into_inner()
        .call
        .unwrap();
    assert_eq!(status_of(&cancelled), ev::CallStatus::Cancelled);
    let cancellation = cancelled.cancellation.expect("cancellation");
    assert!(!cancellation.late);
    assert_eq!(cancellation.reason, "ill");
    assert_eq!(
        sessions_used().await,
        0,
        "an early cancellation gives the session back"
    );

    // Late: inside the window.
    let late = app
        .book_paid("stu-1", "coach-1", "k-1", seconds_ahead(10))
        .await
        .expect("booked");
    let cancelled = app
        .student("stu-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id(&late),
            ..Default::default()
        })
        .await
        .expect("cancelled")
        .into_inner()
        .call
        .unwrap();
    assert!(cancelled.cancellation.expect("cancellation").late);
    assert_eq!(
        sessions_used().await,
        1,
        "a late cancellation keeps the session used"
    );

    // Cancelling twice is a wrong transition, not a second cancellation.
    let twice = app
        .student("stu-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id(&late),
            ..Default::default()
        })
        .await;
    assert_eq!(reason(&twice.unwrap_err()), "INVALID_TRANSITION");
    // A cancelled free consultation does not count against the pair.
    let free = app
        .book_free("stu-1", "coach-1", seconds_ahead(200))
        .await
        .expect("booked");
    app.student("stu-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: id(&free),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    app.book_free("stu-1", "coach-1", seconds_ahead(300))
        .await
        .expect("a new free consultation");
}

#[tokio::test]
async fn rescheduling_moves_the_call_within_the_cutoff_and_the_maximum() {
    let policy = Policy {
        max_reschedules: 2,
        ..fast_policy()
    };
    let app = TestApp::spawn_with(policy).await;
    app.add_contract(
        "k-1",
        "stu-1",
        "coach-1",
        pb::ContractStatus::Paid,
        30,
        Some(1),
    )
    .await;
    let first = app
        .book_paid("stu-1", "coach-1", "k-1", seconds_ahead(60))
        .await
        .expect("booked");
    let mut stu = app.student("stu-1");
    let reschedule = |call: &pb::Call, to: DateTime<Utc>| pb::RescheduleCallRequest {
        call_id: id(call),
        new_start: Some(utc(to)),
        reason: "clash at work".into(),
        ..Default::default()
    };

    let moved = stu
        .reschedule_call(reschedule(&first, seconds_ahead(90)))
        .await
        .expect("moved")
        .into_inner();
    let previous = moved.previous.unwrap();
    let second = moved.call.unwrap();
    assert_eq!(status_of(&previous), ev::CallStatus::Rescheduled);
    assert_eq!(card(&previous).rescheduled_to, id(&second));
    assert_eq!(card(&second).rescheduled_from, id(&first));
    assert_eq!(
        card(&second).chain_id,
        card(&first).chain_id,
        "one booking chain"
    );
    assert_eq!(card(&second).contract_id, "k-1");
    assert_eq!(second.reschedule_count, 1);
    let contract = app
        .directory()
        .get_contract(pb::GetContractRequest {
            contract_id: "k-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        contract.sessions_used, 1,
        "moving a call does not use another session"
    );

    // The old call cannot be moved again; the new one can, up to the maximum.
    let stale = stu
        .reschedule_call(reschedule(&first, seconds_ahead(120)))
        .await;
    assert_eq!(reason(&stale.unwrap_err()), "INVALID_TRANSITION");
    let third = stu
        .reschedule_call(reschedule(&second, seconds_ahead(8)))
        .await
        .expect("moved")
        .into_inner()
        .call
        .unwrap();
    let too_many = stu
        .reschedule_call(reschedule(&third, seconds_ahead(150)))
        .await;
    assert_eq!(reason(&too_many.unwrap_err()), "TOO_MANY_RESCHEDULES");

    // Inside the cutoff (2 s before the start) nothing moves.
    let soon = app
        .book_free("stu-3", "coach-3", seconds_ahead(5))
        .await
        .expect("booked");
    sleep_until(start_of(&soon) - app.policy.reschedule_cutoff + Duration::milliseconds(200)).await;
    let late = app
        .student("stu-3")
        .reschedule_call(reschedule(&soon, seconds_ahead(180)))
        .await;
    assert_eq!(reason(&late.unwrap_err()), "RESCHEDULE_CUTOFF");
    assert!(third.card.is_some());
}

#[tokio::test]
async fn rescheduling_onto_a_taken_slot_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    app.book_free("stu-2", "coach-1", day_at(3, 11, 0))
        .await
        .expect("booked");
    let clash = app
        .student("stu-1")
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: id(&a),
            new_start: Some(utc(day_at(3, 11, 5))),
            ..Default::default()
        })
        .await;
    assert_eq!(reason(&clash.unwrap_err()), "SLOT_TAKEN");
    let still = app
        .student("stu-1")
        .get_call(pb::GetCallRequest { call_id: id(&a) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_of(&still),
        ev::CallStatus::Scheduled,
        "the failed move left the call as it was"
    );
    // Moving a call by a few minutes overlapping its own old slot is fine.
    app.student("stu-1")
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: id(&a),
            new_start: Some(utc(day_at(3, 10, 5))),
            ..Default::default()
        })
        .await
        .expect("moved onto its own old slot");
}

#[tokio::test]
async fn reminders_fire_once_and_not_when_their_moment_had_passed_at_booking() {
    let app = TestApp::spawn_with(fast_policy()).await;
    let mut timers = app.timers();
    let remind = |call: &pb::Call, kind: ev::ReminderKind| pb::TriggerReminderRequest {
        call_id: id(call),
        kind: kind as i32,
    };
    // Booked 30 s ahead: the "day" reminder (20 s lead) is still to come.
    let call = app
        .book_free("stu-1", "coach-1", seconds_ahead(30))
        .await
        .expect("booked");
    let early = timers
        .trigger_reminder(remind(&call, ev::ReminderKind::ReminderKind24h))
        .await;
    assert_eq!(reason(&early.unwrap_err()), "TIMER_NOT_DUE");
    sleep_until(start_of(&call) - app.policy.reminder_day_lead).await;
    assert!(
        timers
            .trigger_reminder(remind(&call, ev::ReminderKind::ReminderKind24h))
            .await
            .unwrap()
            .into_inner()
            .applied
    );
    assert!(
        !timers
            .trigger_reminder(remind(&call, ev::ReminderKind::ReminderKind24h))
            .await
            .unwrap()
            .into_inner()
            .applied
    );

    // Booked 5 s ahead: both reminders' moments had passed; none is sent.
    let soon = app
        .book_free("stu-2", "coach-2", seconds_ahead(5))
        .await
        .expect("booked");
    for kind in [
        ev::ReminderKind::ReminderKind24h,
        ev::ReminderKind::ReminderKind1h,
    ] {
        assert!(
            !timers
                .trigger_reminder(remind(&soon, kind))
                .await
                .unwrap()
                .into_inner()
                .applied
        );
    }
    let bad = timers
        .trigger_reminder(pb::TriggerReminderRequest {
            call_id: id(&soon),
            kind: 0,
        })
        .await;
    assert_code(&bad, Code::InvalidArgument);
}
