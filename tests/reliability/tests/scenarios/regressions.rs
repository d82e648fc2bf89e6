//! Regression tests for what the scenarios found.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DurationRound, Utc};
use skileez_reliability::proxy::Mode;
use skileez_reliability::system::{Options, System};

/// Found by the fault-proxy scenario: when the database connection broke
/// between SMTP's `250` and the record of it, the worker gave up on the
/// record, the lease ran out and the e-mail went out a second time. Now
/// the worker keeps trying to record the outcome while its lease lasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_reset_between_the_smtp_answer_and_its_record_sends_no_mail_twice() {
    let system = System::start(Options {
        instances: 1,
        proxy_postgres: true,
        ..Options::default()
    })
    .await;
    let client = system.client();
    for id in ["stu-reg-0", "coach-reg-0"] {
        client.participant(id).await;
    }
    // SMTP answers 2 s after storing each message.
    system.smtp.delay(Some(Duration::from_secs(2)));
    let start = (Utc::now() + chrono::Duration::hours(2))
        .duration_trunc(chrono::Duration::minutes(1))
        .expect("trunc");
    let answer = client
        .book(
            "stu-reg-0",
            "coach-reg-0",
            start,
            &uuid::Uuid::new_v4().to_string(),
            Duration::from_secs(30),
            0,
        )
        .await;
    assert!(answer.ok().is_some(), "booked: {answer:?}");
    // The first confirmation is stored: its 250 comes in 2 s. Break every
    // database connection until well after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while system.smtp.mails().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no e-mail came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let proxy = system.pg_proxy.as_ref().expect("proxy");
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set(Mode::Pass);
    system.smtp.delay(None);

    // Both confirmations recorded sent, and past the 10 s delivery lease no
    // second copy arrives.
    let pool = system.pool().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification_deliveries WHERE channel = 'email' AND state = 'sent'",
        )
        .fetch_one(&pool)
        .await
        .expect("deliveries");
        if sent == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} of 2 recorded sent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let mails = system.smtp.mails();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for mail in &mails {
        *per_id.entry(mail.message_id()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 2, "{per_id:?}");
    assert!(per_id.values().all(|n| *n == 1), "sent twice: {per_id:?}");
    let (_, resets) = proxy.counts();
    assert!(resets > 0, "the reset reached connections");
}
