//! `skileez events tail` and `replay` against the stream the relay fills.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use chrono::{DurationRound, Utc};
use serde_json::Value;
use skileez_testkit::{TestDatabase, nats::TestNats};
use support::*;

#[tokio::test]
async fn events_replay_and_tail_print_decoded_call_events() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let (db_url, nats_url) = (db.url(), nats.url());
    let db_for_list = db.url();
    let (mut dev, server) = {
        let nats_url = nats_url.clone();
        tokio::task::spawn_blocking(move || start_dev(&db_url, Some(&nats_url), 0))
            .await
            .expect("dev")
    };
    let ada = token("ada", "student");
    let day = (Utc::now() + chrono::Duration::days(5))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let book = |coach: &str, hour: i64| {
        let at = (day + chrono::Duration::hours(hour)).to_rfc3339();
        let out = ok(run(skileez()
            .env("SKILEEZ_SERVER", &server)
            .env("SKILEEZ_TOKEN", &ada)
            .args([
                "call",
                "schedule",
                "--student",
                "ada",
                "--coach",
                coach,
                "--at",
                &at,
                "--output",
                "json",
            ])));
        let value: Value = serde_json::from_str(&out).expect("json");
        value["call"]["card"]["callId"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let first = book("grace", 9);
    book("hedy", 11);

    // Replay from the start prints both, then exits at the end of the stream.
    let replay = |extra: &[&str]| {
        let mut command = skileez();
        command
            .env("NATS_URL", &nats_url)
            .args(["events", "replay", "--from", "1", "--output", "json"])
            .args(extra);
        command
    };
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = ok(run(&mut replay(&[])))
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first_line: Value = serde_json::from_str(&lines[0]).expect("json line");
    assert_eq!(
        first_line["subject"],
        format!("skileez.call.v1.CallScheduled.{first}")
    );
    assert_eq!(first_line["event"]["card"]["callId"], first.as_str());
    let only = ok(run(&mut replay(&["--call", &first])));
    assert_eq!(only.lines().count(), 1, "{only}");

    // The timer service in `dev` consumed the booking: five timers.
    let mut timers = Value::Null;
    for _ in 0..100 {
        timers = serde_json::from_str(&ok(run(skileez()
            .env("DATABASE_URL", &db_for_list)
            .args(["timers", "list", "--call", &first, "--output", "json"]))))
        .expect("json");
        if timers.as_array().is_some_and(|t| t.len() == 5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut kinds: Vec<&str> = timers
        .as_array()
        .expect("timers")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "auto_complete",
            "missed",
            "ready",
            "reminder_1h",
            "reminder_24h"
        ]
    );

    // Tail prints what is published from now on.
    let mut tail = skileez()
        .env("NATS_URL", &nats_url)
        .args(["events", "tail", "--type", "CallScheduled"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail");
    let stdout = tail.stdout.take().expect("stdout");
    // Give the tail a moment to subscribe before publishing.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let third = book("ida", 13);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("a line");
        line
    })
    .await
    .unwrap();
    assert!(
        line.contains("CallScheduled") && line.contains(&third),
        "{line}"
    );
    signal(&mut tail, "-TERM");
    let _ = tail.wait();
    signal(&mut dev, "-TERM");
    let _ = dev.wait();
}
