//! Once in effect: however often an event arrives, on however many
//! instances, across restarts, each person gets one e-mail and one in-app
//! notification per (call, kind).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn people(env: &TestEnv, students: usize) {
    env.add_participant("coach-1", "Bo Lee", "Europe/Berlin", "de-DE")
        .await;
    for i in 0..students {
        env.add_participant(&format!("stu-{i}"), &format!("Student {i}"), "UTC", "en-GB")
            .await;
    }
}

/// Mails per (recipient, Message-ID).
fn tally(mails: &[support::smtp::Mail]) -> HashMap<(String, String), usize> {
    let mut counts = HashMap::new();
    for mail in mails {
        *counts
            .entry((mail.to().to_owned(), mail.message_id().to_owned()))
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn the_same_event_delivered_three_times_yields_one_mail_and_one_in_app_notification_each() {
    let env = TestEnv::start_with(Options::default(), 2).await;
    people(&env, 1).await;
    let call = env.book_free("stu-0", "coach-1", day_at(2, 9, 0)).await;
    env.smtp.wait_for(2, WAIT).await;

    // The relay's copy was the first delivery; two more, as a relay that
    // crashed past JetStream's duplicate window would send, to two
    // instances at once.
    let events = stream_events(&env, 1).await;
    let (_, booked) = &events[0];
    assert_eq!(booked.call_id, call_id(&call));
    tokio::join!(
        publish_event(&env, booked, "again-1"),
        publish_event(&env, booked, "again-2"),
    );
    // Both repeats are consumed (the consumer has nothing pending) ...
    let rows = env
        .wait_for_deliveries(WAIT, "the four deliveries", |rows| rows.len() == 4)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.delivery_rows().await.len(), 4, "{rows:#?}");
    // ... and made nothing new.
    let mails = env.smtp.mails();
    assert_eq!(mails.len(), 2, "one e-mail per recipient: {mails:#?}");
    assert!(tally(&mails).values().all(|n| *n == 1));
    for user in ["stu-0", "coach-1"] {
        assert_eq!(env.stored_notifications(user).await.len(), 1, "{user}");
        // The live feed too: the new call and its notification, once.
        let feed: Vec<(i64, String)> = sqlx::query_as(
            "SELECT position, kind FROM live_feed WHERE user_id = $1 ORDER BY position",
        )
        .bind(user)
        .fetch_all(env.db.pool())
        .await
        .unwrap();
        assert_eq!(
            feed,
            [(1, "call.new".to_owned()), (2, "notification".to_owned())],
            "{user}"
        );
    }
    let consumed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM consumer_inbox WHERE consumer = 'notifications'")
            .fetch_one(env.db.pool())
            .await
            .unwrap();
    assert_eq!(consumed, 1, "the inbox knows the event once");
}

#[tokio::test]
async fn killed_and_restarted_instances_and_repeated_events_send_nothing_twice() {
    // Two instances as processes of their own, so that one can die for real.
    let env = TestEnv::start_with(Options::default(), 0).await;
    const CALLS: usize = 9;
    people(&env, CALLS).await;
    let mut first = env.spawn_process();
    let _second = env.spawn_process();
    // Both are up once the first booking has been handled.
    env.book_free("stu-0", "coach-1", day_at(3, 0, 0)).await;
    env.wait_for_deliveries(WAIT, "the first booking", |rows| rows.len() == 4)
        .await;
    // A burst, and SIGKILL for one instance in the middle of it: what it
    // held comes back to the others (its messages after the ack wait, its
    // e-mails after their lease).
    let burst = futures::future::join_all((1..CALLS).map(|i| {
        let env = &env;
        async move {
            env.book_free(&format!("stu-{i}"), "coach-1", day_at(3, i as u32, 0))
                .await
        }
    }));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        first.start_kill().expect("kill");
        first.wait().await.expect("reaped");
    };
    tokio::join!(burst, kill);
    let _third = env.spawn_process();
    // Every message, distinct by Message-ID (a kill between SMTP's answer and
    // its record may resend one with the same Message-ID, which mail clients
    // fold into one).
    let expected = CALLS * 2;
    env.smtp
        .wait_until(Duration::from_secs(90), "every e-mail", |mails| {
            tally(mails).len() >= expected
        })
        .await;
    // Every event once more, past the duplicate window.
    for (n, (_, event)) in stream_events(&env, CALLS).await.iter().enumerate() {
        publish_event(&env, event, &format!("repeat-{n}")).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = env.smtp.mails();
    let counts = tally(&mails);
    assert_eq!(counts.len(), expected, "{counts:#?}");
    let resent: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{} mails for {} distinct; resent with the same Message-ID: {resent:?}",
        mails.len(),
        counts.len()
    );
    let coach = env.stored_notifications("coach-1").await;
    let sequences: Vec<i64> = coach.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(
        sequences,
        (1..=CALLS as i64).collect::<Vec<_>>(),
        "one each, gap-free"
    );
    let rows = env.delivery_rows().await;
    assert_eq!(rows.len(), CALLS * 4);
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:#?}");
}
