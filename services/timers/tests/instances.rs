//! Several timers instances on one database and one NATS: the work is
//! shared, every timer fires once in effect, and a killed instance's timers
//! fire after its lease, once.

mod support;

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use skileez_domain::Policy;
use skileez_timers::{TimerKind, TimerState};
use support::*;
use uuid::Uuid;

#[tokio::test]
async fn with_two_instances_every_timer_fires_exactly_once_in_effect() {
    let mut world = World::start(fast_policy()).await;
    // One timer per claim, so that the instances race for every timer.
    let small = [("SKILEEZ_TIMERS_CLAIM_BATCH", "1")];
    world.add_timers("a", &small).await;
    world.add_timers("b", &small).await;
    let start = seconds_ahead(14);
    let mut calls = Vec::new();
    for i in 0..16 {
        calls.push(
            world
                .book(&format!("stu-{i}"), &format!("coach-{i}"), start)
                .await,
        );
    }
    for call in &calls {
        world
            .wait_for_event(*call, "CallMissed", StdDuration::from_secs(40))
            .await;
    }
    // Room for a duplicate to show up.
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    let mut settled_by: HashMap<String, usize> = HashMap::new();
    for call in &calls {
        let events = world.events(*call).await;
        for event_type in [
            "CallScheduled",
            "CallReminderDue",
            "CallReady",
            "CallMissed",
        ] {
            assert_eq!(
                events.iter().filter(|t| *t == event_type).count(),
                1,
                "call {call}: {events:?}"
            );
        }
        assert_eq!(events.len(), 4, "call {call}: {events:?}");
        for row in world.timers(*call).await {
            if row.state == TimerState::Fired {
                *settled_by
                    .entry(row.lease_owner.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }
    eprintln!("timers fired per instance: {settled_by:?}");
    assert_eq!(settled_by.values().sum::<usize>(), 16 * 3);
    assert!(
        settled_by.get("a").is_some_and(|n| *n > 0) && settled_by.get("b").is_some_and(|n| *n > 0),
        "both instances took a share: {settled_by:?}"
    );
}

#[tokio::test]
async fn a_killed_instances_timers_fire_after_its_lease_and_none_twice() {
    let policy = Policy {
        // Missed well after the victim's lease has run out, so ready applies.
        missed_after: Duration::seconds(10),
        ..fast_policy()
    };
    let mut world = World::start(policy).await;
    // The victim claims 4 s ahead with a 9 s lease: it will hold the ready
    // timers while they come due.
    let mut victim = world.spawn_timers_process(
        "victim",
        &[
            ("SKILEEZ_TIMERS_CLAIM_AHEAD", "4s"),
            ("SKILEEZ_TIMERS_LEASE", "9s"),
        ],
    );
    // Under 10 s ahead: no reminder (its moment has passed at booking).
    let start = seconds_ahead(9);
    let mut calls = Vec::new();
    for i in 0..8 {
        calls.push(
            world
                .book(&format!("stu-{i}"), &format!("coach-{i}"), start)
                .await,
        );
    }
    // Wait until the victim holds every ready timer, then kill it.
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(15);
    let mut leases: HashMap<Uuid, chrono::DateTime<Utc>> = HashMap::new();
    while leases.len() < calls.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim never claimed every ready timer: {leases:?}"
        );
        for call in &calls {
            if let Some(ready) = timer(&world.timers(*call).await, TimerKind::Ready)
                && ready.lease_owner.as_deref() == Some("victim")
                && ready.state == TimerState::Pending
            {
                leases.insert(*call, ready.lease_until.expect("lease"));
            }
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    let killed_at = Utc::now();
    victim.kill().expect("SIGKILL");
    victim.wait().expect("reaped");
    let ready_due = start - world.policy.ready_lead;
    assert!(killed_at < ready_due, "killed before the timers came due");

    world.add_timers("survivor", &[]).await;
    for call in &calls {
        world
            .wait_for_event(*call, "CallMissed", StdDuration::from_secs(40))
            .await;
    }
    tokio::time::sleep(StdDuration::from_secs(1)).await;
    for call in &calls {
        let events = world.events(*call).await;
        assert_eq!(
            events,
            ["CallScheduled", "CallReady", "CallMissed"],
            "call {call}"
        );
        let timers = world.timers(*call).await;
        let ready = timer(&timers, TimerKind::Ready).expect("ready");
        assert_eq!(ready.state, TimerState::Fired, "{ready:#?}");
        assert_eq!(ready.lease_owner.as_deref(), Some("survivor"));
        assert_eq!(
            ready.attempts, 2,
            "claimed by the victim, then the survivor"
        );
        let fired_at = ready.fired_at.expect("fired_at");
        assert!(
            fired_at >= leases[call],
            "fired at {fired_at}, before the victim's lease ended at {}",
            leases[call]
        );
        assert!(
            fired_at - leases[call] < Duration::seconds(2),
            "taken over promptly after the lease: {fired_at} vs {}",
            leases[call]
        );
    }
}
