//! The in-app side: listing, marking read and watching one's own
//! notifications under the scheduling service's JWT rules; the live subject
//! on core NATS; retention.

mod support;

use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use skileez_domain::ActorRole;
use skileez_notifications::{config::RetentionConfig, retention};
use skileez_proto::notifications as pbn;
use support::*;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

async fn people(env: &TestEnv) {
    for id in ["stu-1", "stu-2", "coach-1", "coach-2"] {
        env.add_participant(id, &format!("Name {id}"), "UTC", "en-GB")
            .await;
    }
}

async fn wait_for_in_app(env: &TestEnv, user: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.stored_notifications(user).await.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} has fewer than {count} notifications"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn people_list_and_mark_read_only_their_own_notifications() {
    let env = TestEnv::start().await;
    people(&env).await;
    env.book_free("stu-1", "coach-1", day_at(2, 9, 0)).await;
    let other = env.book_free("stu-2", "coach-1", day_at(2, 10, 0)).await;
    env.cancel("stu-2", ActorRole::Student, &call_id(&other), "")
        .await;
    wait_for_in_app(&env, "coach-1", 3).await;
    wait_for_in_app(&env, "stu-2", 2).await;

    // stu-1 sees one; pages of one for the coach, newest first.
    let mine = env
        .notifications("stu-1")
        .list_notifications(pbn::ListNotificationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.notifications.len(), 1);
    assert_eq!(mine.unread_count, 1);
    let n = &mine.notifications[0];
    assert_eq!(n.user_id, "stu-1");
    assert_eq!(n.kind, pbn::NotificationKind::Booked as i32);
    assert_eq!(n.title, "Call booked");
    assert!(n.body.contains("Name coach-1"), "{}", n.body);
    assert!(n.card.is_some() && n.read_at.is_none());

    let coach = env.notifications_on(0, Some(env.token("coach-1", ActorRole::Coach)));
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = coach
            .clone()
            .list_notifications(pbn::ListNotificationsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.notifications.iter().map(|n| n.sequence));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [3, 2, 1]);

    // Marking someone else's notification changes nothing.
    let theirs = env
        .notifications("stu-2")
        .list_notifications(pbn::ListNotificationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .notifications;
    let marked = env
        .notifications("stu-1")
        .mark_read(pbn::MarkReadRequest {
            notification_ids: vec![theirs[0].notification_id.clone()],
            all: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(marked.marked, 0);
    // Marking one's own does; the unread filter then hides it.
    let marked = env
        .notifications("stu-2")
        .mark_read(pbn::MarkReadRequest {
            notification_ids: vec![theirs[0].notification_id.clone()],
            all: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((marked.marked, marked.unread_count), (1, 1));
    let unread = env
        .notifications("stu-2")
        .list_notifications(pbn::ListNotificationsRequest {
            unread_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unread.notifications.len(), 1);
    assert_ne!(
        unread.notifications[0].notification_id,
        theirs[0].notification_id
    );
    let all = coach
        .clone()
        .mark_read(pbn::MarkReadRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.marked, all.unread_count), (3, 0));

    // Bad input and no token.
    let bad = env
        .notifications("stu-1")
        .list_notifications(pbn::ListNotificationsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = env
        .notifications("stu-1")
        .mark_read(pbn::MarkReadRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let anonymous = env
        .notifications_on(0, None)
        .list_notifications(pbn::ListNotificationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_watch_catches_up_then_follows_live_on_any_instance_and_nats_carries_each_one() {
    let env = TestEnv::start_with(Options::default(), 2).await;
    people(&env).await;
    let nats = async_nats::connect(env.nats.url()).await.unwrap();
    let mut live = nats
        .subscribe("skileez.notify.v1.user.stu-1")
        .await
        .unwrap();

    env.book_free("stu-1", "coach-1", day_at(2, 9, 0)).await;
    wait_for_in_app(&env, "stu-1", 1).await;

    // From the beginning, on the second instance: the first from the store…
    let token = Some(env.token("stu-1", ActorRole::Student));
    let mut from_start = env
        .notifications_on(1, token.clone())
        .watch_notifications(pbn::WatchNotificationsRequest {
            after_sequence: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    // …and from now, on the first.
    let mut from_now = env
        .notifications_on(0, token)
        .watch_notifications(pbn::WatchNotificationsRequest {
            after_sequence: None,
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, from_start.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.sequence, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Two more, live to both, in order, without gaps.
    let call = env.book_free("stu-1", "coach-2", day_at(2, 11, 0)).await;
    env.cancel("coach-2", ActorRole::Coach, &call_id(&call), "")
        .await;
    for stream in [&mut from_start, &mut from_now] {
        let mut sequences = Vec::new();
        while sequences.len() < 2 {
            let n = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("live notification in time")
                .unwrap()
                .unwrap();
            assert_eq!(n.user_id, "stu-1");
            sequences.push(n.sequence);
        }
        assert_eq!(sequences, [2, 3]);
    }

    // The same three went out on the user's subject.
    let mut published = Vec::new();
    while published.len() < 3 {
        let message = tokio::time::timeout(WAIT, live.next())
            .await
            .unwrap()
            .unwrap();
        published.push(
            pbn::Notification::decode(message.payload.as_ref())
                .unwrap()
                .sequence,
        );
    }
    assert_eq!(published, [1, 2, 3]);

    // Another user's watch sees none of them.
    let mut theirs = env
        .notifications_on(0, Some(env.token("stu-2", ActorRole::Student)))
        .watch_notifications(pbn::WatchNotificationsRequest {
            after_sequence: Some(0),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), theirs.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn read_notifications_past_retention_are_purged_once_across_instances() {
    let env = TestEnv::start().await;
    people(&env).await;
    let first = env.book_free("stu-1", "coach-1", day_at(2, 9, 0)).await;
    env.book_free("stu-2", "coach-1", day_at(2, 10, 0)).await;
    wait_for_in_app(&env, "coach-1", 2).await;
    // stu-1 read theirs; stu-2 did not.
    env.notifications("stu-1")
        .mark_read(pbn::MarkReadRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    sqlx::query(
        "UPDATE notifications SET read_at = now() - interval '2 days' WHERE read_at IS NOT NULL",
    )
    .execute(env.db.pool())
    .await
    .unwrap();

    // stu-1's feed items are old too; the others' are not.
    sqlx::query(
        "UPDATE live_feed SET created_at = now() - interval '2 days' WHERE user_id = 'stu-1'",
    )
    .execute(env.db.pool())
    .await
    .unwrap();

    // Two instances reach the same slot at once: one purges.
    let config = RetentionConfig {
        read_age: Duration::from_secs(86_400),
        feed_age: Duration::from_secs(86_400),
        purge_at: chrono::NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
    };
    let slot = chrono::Utc::now() + chrono::Duration::days(1);
    let (a, b) = tokio::join!(
        retention::run_slot(env.db.pool(), &config, slot),
        retention::run_slot(env.db.pool(), &config, slot),
    );
    let runs: Vec<u64> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(runs, [1], "one instance purged the one read notification");
    assert!(env.stored_notifications("stu-1").await.is_empty());
    assert_eq!(
        env.stored_notifications("stu-2").await.len(),
        1,
        "unread stays"
    );
    assert_eq!(env.stored_notifications("coach-1").await.len(), 2);
    let result: String =
        sqlx::query_scalar("SELECT last_result FROM notification_jobs WHERE job = $1")
            .bind(retention::JOB)
            .fetch_one(env.db.pool())
            .await
            .unwrap();
    assert!(
        result.starts_with("purged 1 read notifications and 2 live feed items"),
        "{result}"
    );
    let feed = |user: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM live_feed WHERE user_id = $1")
            .bind(user)
            .fetch_one(env.db.pool())
    };
    assert_eq!(feed("stu-1").await.unwrap(), 0);
    assert_eq!(feed("coach-1").await.unwrap(), 4);
    // The slot is spent.
    assert_eq!(
        retention::run_slot(env.db.pool(), &config, slot)
            .await
            .unwrap(),
        None
    );
    // A purged notification keeps its number taken: the next one is 2.
    env.cancel("stu-1", ActorRole::Student, &call_id(&first), "")
        .await;
    wait_for_in_app(&env, "stu-1", 1).await;
    let sequences: Vec<i64> = env
        .stored_notifications("stu-1")
        .await
        .into_iter()
        .map(|(_, _, s)| s)
        .collect();
    assert_eq!(sequences, [2]);
}
