//! SMTP failures: an outage delays mail but loses and doubles none; an
//! address the server refuses for good ends as a dead letter that operators
//! see and can replay.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skileez_domain::ActorRole;
use skileez_proto::notifications as pbn;
use support::*;

#[tokio::test]
async fn an_smtp_outage_delays_mail_but_each_arrives_once_and_a_refused_address_ends_dead() {
    let options = Options {
        vars: vec![
            ("SKILEEZ_DELIVERY_BACKOFF", "500ms,4s".to_owned()),
            ("SKILEEZ_DELIVERY_MAX_ATTEMPTS", "20".to_owned()),
        ],
        ..Options::default()
    };
    let env = TestEnv::start_with(options, 1).await;
    env.add_participant("coach-1", "Bo Lee", "UTC", "en-GB")
        .await;
    for i in 0..5 {
        env.add_participant(&format!("stu-{i}"), &format!("Student {i}"), "UTC", "en-GB")
            .await;
    }
    env.upsert_participant("stu-x", "Gone", "gone@example.com", "UTC", "en-GB", true)
        .await;
    env.smtp.reject("gone@example.com");

    // Before the outage: mail flows.
    for i in 0..2 {
        env.book_free(&format!("stu-{i}"), "coach-1", day_at(2, 8 + i, 0))
            .await;
    }
    env.smtp.wait_for(4, Duration::from_secs(30)).await;

    // 20 s of 451s, with bookings going on meanwhile.
    env.smtp.refuse(true);
    let outage = tokio::time::Instant::now();
    for i in 2..5 {
        env.book_free(&format!("stu-{i}"), "coach-1", day_at(2, 8 + i, 0))
            .await;
    }
    env.book_free("stu-x", "coach-1", day_at(2, 14, 0)).await;
    let retried = env
        .wait_for_deliveries(
            Duration::from_secs(15),
            "retries during the outage",
            |rows| {
                rows.iter()
                    .filter(|r| r.channel == "email" && r.state == "pending" && r.attempts >= 2)
                    .count()
                    >= 6
            },
        )
        .await;
    assert!(
        retried.iter().filter(|r| r.attempts >= 2).all(|r| r
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("451")),
        "{retried:#?}"
    );
    assert_eq!(env.smtp.mails().len(), 4, "nothing gets through the outage");
    tokio::time::sleep_until(outage + Duration::from_secs(20)).await;
    env.smtp.refuse(false);

    // Afterwards: every e-mail once (2 per booking, less the refused address).
    let mails = env.smtp.wait_for(4 + 7, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails_now = env.smtp.mails();
    assert_eq!(mails_now.len(), mails.len(), "no late extras");
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for mail in &mails_now {
        *per_id.entry(mail.message_id()).or_default() += 1;
    }
    assert!(per_id.values().all(|n| *n == 1), "{per_id:#?}");
    let to: HashSet<&str> = mails_now.iter().map(|m| m.to()).collect();
    assert!(!to.contains("gone@example.com"));
    assert_eq!(
        mails_now
            .iter()
            .filter(|m| m.to() == "coach-1@example.com")
            .count(),
        6
    );

    // The refused address is a dead letter, visible to operators.
    let rows = env.delivery_rows().await;
    let dead: Vec<_> = rows.iter().filter(|r| r.state == "dead").collect();
    assert_eq!(dead.len(), 1, "{rows:#?}");
    assert_eq!(dead[0].recipient_id, "stu-x");
    let listed = env
        .admin_deliveries()
        .list_deliveries(pbn::ListDeliveriesRequest {
            states: vec![pbn::DeliveryState::Dead as i32],
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1);
    let letter = &listed[0];
    assert_eq!(letter.recipient_id, "stu-x");
    assert_eq!(letter.address, "gone@example.com");
    assert_eq!(letter.channel, pbn::Channel::Email as i32);
    assert_eq!(letter.kind, pbn::NotificationKind::Booked as i32);
    assert!(letter.last_error.contains("550"), "{letter:?}");
    assert!(letter.attempts >= 1);
    assert!(rows.iter().all(|r| r.state == "sent" || r.state == "dead"));

    // A replay sends it again; still refused, it is dead again, once more tried.
    let retried = env
        .admin_deliveries()
        .retry_dead_letters(pbn::RetryDeadLettersRequest::default())
        .await
        .expect("retried")
        .into_inner()
        .retried;
    assert_eq!(retried, 1);
    env.wait_for_deliveries(Duration::from_secs(10), "the replay to end dead", |rows| {
        rows.iter()
            .any(|r| r.state == "dead" && r.attempts == 1 && r.recipient_id == "stu-x")
    })
    .await;

    // Only operators see the deliveries.
    let denied = env
        .deliveries_as("stu-1", ActorRole::Student)
        .list_deliveries(pbn::ListDeliveriesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}
