//! The `skileez` command end to end: `dev` runs the service against a fresh
//! database, and the client commands book, move, cancel and read calls
//! through it, as the README's tour does.

mod support;

use std::{process::Command, time::Duration};

use chrono::{DurationRound, Utc};
use serde_json::Value;
use skileez_testkit::TestDatabase;
use support::*;

#[tokio::test]
async fn the_cli_books_moves_cancels_and_reads_calls_through_skileez_dev() {
    let db = TestDatabase::new().await;
    let url = db.url();
    let (mut dev, server) = tokio::task::spawn_blocking(move || start_dev(&url, None, 0))
        .await
        .expect("dev");
    let admin = token("admin-1", "admin");
    let ada = token("ada", "student");
    let grace = token("grace", "coach");
    let cli = |token: &str| {
        let mut command = skileez();
        command
            .env("SKILEEZ_SERVER", &server)
            .env("SKILEEZ_TOKEN", token);
        command
    };

    ok(run(cli(&admin).args([
        "directory",
        "participant",
        "ada",
        "--name",
        "Ada",
        "--email",
        "ada@example.com",
        "--zone",
        "Europe/Berlin",
    ])));
    ok(run(cli(&admin).args([
        "directory",
        "contract",
        "k-1",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--minutes",
        "60",
        "--sessions",
        "4",
    ])));

    // A local time without a zone is read in Ada's profile zone.
    let day = (Utc::now() + chrono::Duration::days(10))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let local = day.format("%Y-%m-%dT10:00").to_string();
    let booked: Value = serde_json::from_str(&ok(run(cli(&ada).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--local",
        &local,
        "--output",
        "json",
    ]))))
    .expect("json");
    let call = &booked["call"]["card"];
    let id = call["callId"].as_str().expect("call id").to_owned();
    assert_eq!(call["status"], "CALL_STATUS_SCHEDULED");
    assert_eq!(booked["call"]["requestedTimeZone"], "Europe/Berlin");

    let text = ok(run(cli(&grace).args([
        "call",
        "get",
        &id,
        "--tz",
        "Europe/Berlin",
    ])));
    assert!(
        text.contains("10:00"),
        "readable output shows the time in --tz: {text}"
    );
    assert!(text.contains("ada (Ada)"), "{text}");

    let paid = ok(run(cli(&ada).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--contract",
        "k-1",
        "--at",
        &(day + chrono::Duration::days(1) + chrono::Duration::hours(15)).to_rfc3339(),
    ])));
    assert!(paid.contains("paid session"), "{paid}");

    let moved: Value = serde_json::from_str(&ok(run(cli(&ada).args([
        "call",
        "reschedule",
        &id,
        "--at",
        &(day + chrono::Duration::days(2) + chrono::Duration::hours(9)).to_rfc3339(),
        "--reason",
        "travelling",
        "--output",
        "json",
    ]))))
    .expect("json");
    let new_id = moved["call"]["card"]["callId"]
        .as_str()
        .expect("new id")
        .to_owned();
    assert_eq!(
        moved["previous"]["card"]["status"],
        "CALL_STATUS_RESCHEDULED"
    );

    let cancelled = ok(run(
        cli(&grace).args(["call", "cancel", &new_id, "--reason", "ill"])
    ));
    assert!(
        cancelled.contains("CANCELLED") && cancelled.contains("ill"),
        "{cancelled}"
    );

    let history: Value = serde_json::from_str(&ok(run(
        cli(&ada).args(["call", "history", &new_id, "--output", "json"])
    )))
    .expect("json");
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 2);
    assert!(events[0]["scheduled"].is_object() && events[1]["cancelled"].is_object());

    let list = ok(run(cli(&ada).args(["call", "list", "--filter", "all"])));
    assert_eq!(list.matches("call ").count(), 3, "{list}");

    // Errors are readable and name the field.
    let bad = run(cli(&ada).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--local",
        &local,
        "--zone",
        "Mars/Base",
    ]));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("start.local.time_zone"),
        "{stderr}"
    );

    // SIGTERM stops `dev` cleanly.
    assert!(
        Command::new("kill")
            .args(["-TERM", &dev.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(status) = dev.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        dev.kill().ok();
        panic!("skileez dev did not stop within 10 s of SIGTERM");
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    drop(db);
}

#[test]
fn token_refuses_an_unknown_role_and_a_missing_secret() {
    let out = run(skileez().args(["token", "--sub", "x", "--role", "root"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--role"));
    let out = run(skileez()
        .env_remove("SKILEEZ_JWT_SECRET")
        .args(["token", "--sub", "x", "--role", "admin"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SKILEEZ_JWT_SECRET"));
}
