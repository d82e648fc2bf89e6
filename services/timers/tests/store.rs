//! The timers table's statements against the real PostgreSQL: claims and
//! leases, fenced settles, the next wake-up, retention.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use skileez_testkit::TestDatabase;
use skileez_timers::{
    TimerKind, TimerState, list_timers,
    plan::NewTimer,
    store::{self, Settle},
};
use uuid::Uuid;

async fn call_with_timers(db: &TestDatabase, due_in: Duration) -> Uuid {
    let call = Uuid::now_v7();
    let due_at = Utc::now() + due_in;
    let mut tx = db.pool().begin().await.unwrap();
    store::insert(
        &mut tx,
        call,
        1,
        due_at + Duration::minutes(5),
        &[
            NewTimer {
                kind: TimerKind::Ready,
                due_at,
            },
            NewTimer {
                kind: TimerKind::Missed,
                due_at: due_at + Duration::minutes(20),
            },
        ],
        None,
        None,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    call
}

const LEASE: StdDuration = StdDuration::from_secs(1);
const AHEAD: StdDuration = StdDuration::from_millis(200);

#[tokio::test]
async fn a_claimed_timer_is_nobody_elses_until_its_lease_ends() {
    let db = TestDatabase::new().await;
    let call = call_with_timers(&db, Duration::milliseconds(100)).await;
    let a = store::claim(db.pool(), "a", LEASE, AHEAD, 10)
        .await
        .unwrap();
    assert_eq!(a.len(), 1, "only the timer within the window");
    assert_eq!(a[0].kind, TimerKind::Ready);
    assert_eq!(a[0].attempts, 1);
    assert!(
        store::claim(db.pool(), "b", LEASE, AHEAD, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The next wake-up is the lease's end (the holder may die).
    let next = store::next_run_at(db.pool()).await.unwrap().unwrap();
    assert!(next > Utc::now() + Duration::milliseconds(500));

    tokio::time::sleep(LEASE + StdDuration::from_millis(100)).await;
    let b = store::claim(db.pool(), "b", LEASE, AHEAD, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].attempts, 2);
    // a's late settle is fenced off; b's counts.
    let changed = store::settle(
        db.pool(),
        "a",
        &[(a[0].clone(), Settle::Fired { applied: true })],
    )
    .await
    .unwrap();
    assert_eq!(changed, 0);
    let changed = store::settle(
        db.pool(),
        "b",
        &[(b[0].clone(), Settle::Fired { applied: false })],
    )
    .await
    .unwrap();
    assert_eq!(changed, 1);
    let ready = list_timers(db.pool(), call)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.kind == TimerKind::Ready)
        .unwrap();
    assert_eq!(ready.state, TimerState::Fired);
    assert_eq!(ready.outcome.as_deref(), Some("not_applied"));
    assert_eq!(ready.lease_owner.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_retry_puts_the_timer_back_for_its_moment_and_keeps_the_error() {
    let db = TestDatabase::new().await;
    let call = call_with_timers(&db, Duration::zero()).await;
    let claimed = store::claim(db.pool(), "a", LEASE, AHEAD, 10)
        .await
        .unwrap();
    let retry_at = Utc::now() + Duration::seconds(30);
    store::settle(
        db.pool(),
        "a",
        &[(
            claimed[0].clone(),
            Settle::Retry {
                at: retry_at,
                error: "Unavailable: down".into(),
            },
        )],
    )
    .await
    .unwrap();
    let ready = list_timers(db.pool(), call).await.unwrap().remove(0);
    assert_eq!(ready.state, TimerState::Pending);
    assert_eq!(ready.lease_owner, None);
    assert_eq!(ready.last_error.as_deref(), Some("Unavailable: down"));
    assert!((ready.run_at - retry_at).num_milliseconds().abs() < 2);
    assert!(
        store::claim(db.pool(), "b", LEASE, AHEAD, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn settled_timers_are_purged_after_retention_and_pending_ones_never() {
    let db = TestDatabase::new().await;
    let call = call_with_timers(&db, Duration::zero()).await;
    let claimed = store::claim(db.pool(), "a", LEASE, AHEAD, 10)
        .await
        .unwrap();
    store::settle(
        db.pool(),
        "a",
        &[(claimed[0].clone(), Settle::Fired { applied: true })],
    )
    .await
    .unwrap();
    assert_eq!(
        store::purge(db.pool(), Utc::now() - Duration::days(7))
            .await
            .unwrap(),
        0
    );
    sqlx::query("UPDATE timers SET updated_at = now() - interval '8 days'")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        store::purge(db.pool(), Utc::now() - Duration::days(7))
            .await
            .unwrap(),
        1
    );
    let left = list_timers(db.pool(), call).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, TimerState::Pending);
    let (pending, _) = store::pending_stats(db.pool()).await.unwrap();
    assert_eq!(pending, 1);
}
