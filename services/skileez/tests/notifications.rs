//! `skileez dev` runs the notification service beside scheduling;
//! `skileez notifications deadletters` lists the e-mails it gave up on, and
//! `retry` queues them again.

mod support;

use std::time::Duration;

use chrono::{DurationRound, Utc};
use serde_json::Value;
use skileez_testkit::{TestDatabase, nats::TestNats};
use support::*;

/// The dead letters `deadletters --output json` lists: (id, recipient, attempts).
fn dead_letters(notifications: &str, token: &str) -> Vec<(String, String, u64)> {
    let out = ok(run(skileez()
        .env("SKILEEZ_NOTIFICATIONS_SERVER", notifications)
        .env("SKILEEZ_TOKEN", token)
        .args(["notifications", "deadletters", "--output", "json"])));
    let value: Value = serde_json::from_str(&out).expect("json");
    value["deliveries"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|d| {
                    (
                        d["deliveryId"].as_str().expect("id").to_owned(),
                        d["recipientId"].as_str().expect("recipient").to_owned(),
                        d["attempts"].as_u64().expect("attempts"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_dead_letters(notifications: &str, token: &str, count: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let dead = dead_letters(notifications, token);
        if dead.len() == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} dead letters, have {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_and_queued_again_from_the_cli() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    // Nothing listens there: every send fails, and one attempt is all.
    let refused = format!("smtp://127.0.0.1:{}", free_port());
    let (db_url, nats_url) = (db.url(), nats.url());
    let (mut dev, scheduling, notifications, ws) = tokio::task::spawn_blocking(move || {
        start_dev_with_notifications(
            &db_url,
            &nats_url,
            &refused,
            &[
                ("SKILEEZ_DELIVERY_MAX_ATTEMPTS", "1"),
                ("SKILEEZ_DELIVERY_POLL", "200ms"),
                ("SKILEEZ_SMTP_TIMEOUT", "2s"),
                ("SKILEEZ_DELIVERY_LEASE", "5s"),
            ],
        )
    })
    .await
    .expect("dev");
    assert!(
        ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/v1/live"),
        "{ws}"
    );
    let admin = token("admin-1", "admin");
    let scheduling_cli = |token: &str| {
        let mut command = skileez();
        command
            .env("SKILEEZ_SERVER", &scheduling)
            .env("SKILEEZ_TOKEN", token);
        command
    };
    for (id, name) in [("ada", "Ada"), ("grace", "Grace")] {
        ok(run(scheduling_cli(&admin).args([
            "directory",
            "participant",
            id,
            "--name",
            name,
            "--email",
            &format!("{id}@example.com"),
            "--zone",
            "UTC",
        ])));
    }
    let at = (Utc::now() + chrono::Duration::days(3))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap()
        + chrono::Duration::hours(9);
    ok(run(scheduling_cli(&token("ada", "student")).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--at",
        &at.to_rfc3339(),
    ])));

    // Both confirmations end as dead letters.
    wait_for_dead_letters(&notifications, &admin, 2).await;
    let text = ok(run(skileez()
        .env("SKILEEZ_NOTIFICATIONS_SERVER", &notifications)
        .env("SKILEEZ_TOKEN", &admin)
        .args(["notifications", "deadletters"])));
    for expected in [
        "booked",
        "to ada <ada@example.com>",
        "to grace <grace@example.com>",
        "attempts 1",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }
    // Not for a student.
    let denied = run(skileez()
        .env("SKILEEZ_NOTIFICATIONS_SERVER", &notifications)
        .env("SKILEEZ_TOKEN", token("ada", "student"))
        .args(["notifications", "deadletters"]));
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"),
        "{denied:?}"
    );

    // One by id: queued, tried, dead again.
    let dead = dead_letters(&notifications, &admin);
    let retry = |args: &[&str]| {
        run(skileez()
            .env("SKILEEZ_NOTIFICATIONS_SERVER", &notifications)
            .env("SKILEEZ_TOKEN", &admin)
            .args(["notifications", "retry"])
            .args(args))
    };
    assert_eq!(
        ok(retry(&[&dead[0].0])).trim(),
        "1 dead letter queued again"
    );
    wait_for_dead_letters(&notifications, &admin, 2).await;
    // All of them.
    assert_eq!(ok(retry(&["--all"])).trim(), "2 dead letters queued again");
    // Neither ids nor --all: a usage error, nothing queued.
    let usage = retry(&[]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");

    signal(&mut dev, "-TERM");
    let status = tokio::task::spawn_blocking(move || dev.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "skileez dev ended with {status}");
}
