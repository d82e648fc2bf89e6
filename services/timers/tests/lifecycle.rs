//! End to end, with lead times of seconds: scheduling (with its relay), NATS,
//! PostgreSQL and a timers instance. Each test books through the public API
//! and reads the outcome from the call's event stream and its timers.

mod support;

use std::time::Duration as StdDuration;

use chrono::Duration;
use skileez_domain::Policy;
use skileez_timers::{TimerKind, TimerState};
use support::*;

#[tokio::test]
async fn a_call_nobody_joins_becomes_ready_then_missed_with_only_the_reminder_still_ahead() {
    let mut world = World::start(fast_policy()).await;
    world.add_timers("t1", &[]).await;
    // Booked ~12 s ahead: the 20 s reminder's moment has passed, the 10 s one's has not.
    let start = seconds_ahead(13);
    let call = world.book("stu-1", "coach-1", start).await;
    let timers = world
        .wait_for_timers(call, StdDuration::from_secs(10))
        .await;
    assert_eq!(state(&timers, TimerKind::Reminder24h), None);

    world
        .wait_for_event(call, "CallMissed", StdDuration::from_secs(30))
        .await;
    assert_eq!(
        world.events(call).await,
        [
            "CallScheduled",
            "CallReminderDue",
            "CallReady",
            "CallMissed"
        ]
    );
    // The consumer has seen CallMissed once auto_complete is retired.
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let timers = world.timers(call).await;
    for kind in [TimerKind::Reminder1h, TimerKind::Ready, TimerKind::Missed] {
        let row = timer(&timers, kind).expect("timer");
        assert_eq!(row.state, TimerState::Fired, "{row:#?}");
        assert_eq!(row.outcome.as_deref(), Some("applied"), "{row:#?}");
        let late = row.fired_at.expect("fired_at") - row.due_at;
        assert!(
            late >= Duration::zero() && late < Duration::seconds(1),
            "{kind} fired {late} after its moment"
        );
    }
    assert_eq!(
        state(&timers, TimerKind::AutoComplete),
        Some(TimerState::Retired)
    );
}

#[tokio::test]
async fn a_call_booked_30_minutes_ahead_gets_no_24h_or_1h_reminder() {
    let policy = Policy {
        reminder_day_lead: Duration::hours(24),
        reminder_hour_lead: Duration::hours(1),
        ..fast_policy()
    };
    let mut world = World::start(policy).await;
    world.add_timers("t1", &[]).await;
    let call = world.book("stu-1", "coach-1", seconds_ahead(30 * 60)).await;
    let timers = world
        .wait_for_timers(call, StdDuration::from_secs(10))
        .await;
    let kinds: Vec<TimerKind> = timers.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        [TimerKind::Ready, TimerKind::Missed, TimerKind::AutoComplete]
    );
    assert!(timers.iter().all(|t| t.state == TimerState::Pending));
}

#[tokio::test]
async fn a_joined_call_is_completed_automatically_and_never_missed() {
    let policy = Policy {
        // Below the product's 15 minutes, as scheduling's own tests do, so the
        // auto-completion comes a minute after the start.
        free_consultation_minutes: 1,
        ..fast_policy()
    };
    let mut world = World::start(policy).await;
    world.add_timers("t1", &[]).await;
    let start = seconds_ahead(5);
    let call = world.book("stu-1", "coach-1", start).await;
    world
        .wait_for_event(call, "CallReady", StdDuration::from_secs(15))
        .await;
    world.join("coach-1", call).await;
    world
        .wait_for_event(call, "CallEnded", StdDuration::from_secs(90))
        .await;
    assert_eq!(
        world.events(call).await,
        [
            "CallScheduled",
            "CallReady",
            "ParticipantJoined",
            "CallStarted",
            "CallEnded"
        ]
    );
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let timers = world.timers(call).await;
    assert_eq!(state(&timers, TimerKind::Missed), Some(TimerState::Retired));
    let auto = timer(&timers, TimerKind::AutoComplete).expect("auto_complete");
    assert_eq!(auto.state, TimerState::Fired);
    assert_eq!(auto.outcome.as_deref(), Some("applied"));
}

#[tokio::test]
async fn a_call_cancelled_before_ready_fires_no_ready_no_missed_and_no_reminder() {
    let mut world = World::start(fast_policy()).await;
    world.add_timers("t1", &[]).await;
    // The 10 s reminder would be due ~3 s from now, ready ~11 s, missed ~15 s.
    let start = seconds_ahead(13);
    let call = world.book("stu-1", "coach-1", start).await;
    world.wait_for_timers(call, StdDuration::from_secs(5)).await;
    world.cancel("stu-1", call).await;
    sleep_until(start + world.policy.missed_after + Duration::seconds(2)).await;
    assert_eq!(world.events(call).await, ["CallScheduled", "CallCancelled"]);
    let timers = world.timers(call).await;
    assert_eq!(timers.len(), 4, "{timers:#?}");
    assert!(
        timers.iter().all(|t| t.state == TimerState::Retired),
        "{timers:#?}"
    );
}

#[tokio::test]
async fn a_rescheduled_calls_old_timers_never_fire_and_the_new_calls_do() {
    let mut world = World::start(fast_policy()).await;
    world.add_timers("t1", &[]).await;
    // Both reminders ahead (due in ~10 s and ~20 s), ready in ~28 s.
    let old = world.book("stu-1", "coach-1", seconds_ahead(30)).await;
    world.wait_for_timers(old, StdDuration::from_secs(5)).await;
    let new_start = seconds_ahead(8);
    let new = world.reschedule("stu-1", old, new_start).await;
    world
        .wait_for_event(new, "CallMissed", StdDuration::from_secs(25))
        .await;
    // Past the old call's first reminder moment too.
    sleep_until(new_start + Duration::seconds(4)).await;
    assert_eq!(
        world.events(old).await,
        ["CallScheduled", "CallRescheduled"]
    );
    let old_timers = world.timers(old).await;
    assert_eq!(old_timers.len(), 5);
    assert!(
        old_timers.iter().all(|t| t.state == TimerState::Retired),
        "{old_timers:#?}"
    );
    assert_eq!(
        world.events(new).await,
        ["CallScheduled", "CallReady", "CallMissed"]
    );
}

#[tokio::test]
async fn after_an_outage_reminders_past_the_start_are_dropped_and_the_rest_apply_late() {
    let mut world = World::start(fast_policy()).await;
    // The timers service is down: the booking's timers wait in the stream.
    let start = seconds_ahead(13);
    let call = world.book("stu-1", "coach-1", start).await;
    // Past the reminder (start − 10 s) and ready (start − 2 s), and the start.
    sleep_until(start + Duration::milliseconds(500)).await;
    world.add_timers("t1", &[]).await;
    world
        .wait_for_event(call, "CallMissed", StdDuration::from_secs(20))
        .await;
    assert_eq!(
        world.events(call).await,
        ["CallScheduled", "CallReady", "CallMissed"],
        "the reminder is never sent late; ready and missed still apply"
    );
    let timers = world.timers(call).await;
    let reminder = timer(&timers, TimerKind::Reminder1h).expect("reminder");
    assert_eq!(reminder.state, TimerState::Dropped);
    assert_eq!(state(&timers, TimerKind::Ready), Some(TimerState::Fired));
}

#[tokio::test]
async fn a_stopped_instance_releases_what_it_held_and_drains() {
    let mut world = World::start(fast_policy()).await;
    // Claims far ahead, so it holds the timers while sleeping to them.
    world
        .add_timers(
            "early",
            &[
                ("SKILEEZ_TIMERS_CLAIM_AHEAD", "20s"),
                ("SKILEEZ_TIMERS_LEASE", "60s"),
            ],
        )
        .await;
    let call = world.book("stu-1", "coach-1", seconds_ahead(14)).await;
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !world
        .timers(call)
        .await
        .iter()
        .any(|t| t.lease_owner.as_deref() == Some("early"))
    {
        assert!(tokio::time::Instant::now() < deadline, "never claimed");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    world.stop_timers().await;
    let timers = world.timers(call).await;
    assert!(
        timers
            .iter()
            .all(|t| t.state == TimerState::Pending && t.lease_owner.is_none()),
        "{timers:#?}"
    );
    // Another instance takes them at once, not after the lease.
    world.add_timers("next", &[]).await;
    world
        .wait_for_event(call, "CallReady", StdDuration::from_secs(20))
        .await;
}
