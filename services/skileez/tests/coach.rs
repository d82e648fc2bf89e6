//! `skileez coach …` end to end against `skileez dev`: a coach publishes
//! hours, a student finds slots and books one, new hours leave that call
//! outside (reported, still valid), and the hours are cleared again.

mod support;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::Value;
use skileez_testkit::TestDatabase;
use support::*;

/// Stops `skileez dev` however the test ends.
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next Monday at least five days ahead.
fn next_monday() -> NaiveDate {
    let mut day = Utc::now().date_naive() + Duration::days(5);
    while day.weekday() != Weekday::Mon {
        day = day.succ_opt().expect("date");
    }
    day
}

#[tokio::test]
async fn coaches_publish_hours_and_students_find_and_book_slots_through_the_cli() {
    let db = TestDatabase::new().await;
    let url = db.url();
    let (dev, server) = tokio::task::spawn_blocking(move || start_dev(&url, None, 0))
        .await
        .expect("dev");
    let dev = Dev(dev);
    let ada = token("ada", "student");
    let bob = token("bob", "student");
    let grace = token("grace", "coach");
    let cli = |token: &str| {
        let mut command = skileez();
        command
            .env("SKILEEZ_SERVER", &server)
            .env("SKILEEZ_TOKEN", token);
        command
    };
    let monday = next_monday();
    let tuesday = monday + Duration::days(1);

    let text = ok(run(cli(&grace).args([
        "coach",
        "availability",
        "set",
        "--coach",
        "grace",
        "--zone",
        "Europe/Berlin",
        "--weekly",
        "mon-fri 09:00-12:00,13:00-17:00",
        "--weekly",
        "sat 10:00-12:00",
        "--override",
        &format!("{tuesday} off"),
        "--buffer-before",
        "10",
        "--buffer-after",
        "5",
        "--daily-max",
        "6",
    ])));
    assert!(text.contains("hours in Europe/Berlin (version 1"), "{text}");
    assert!(
        text.contains("mon         09:00–12:00, 13:00–17:00"),
        "{text}"
    );
    assert!(text.contains("sat         10:00–12:00"), "{text}");
    assert!(text.contains(&format!("{tuesday}  off")), "{text}");
    assert!(text.contains("10 min before, 5 min after"), "{text}");
    assert!(text.contains("no upcoming call falls outside"), "{text}");

    // Ada looks for hour-long slots on Monday and Tuesday, in New York time.
    let slots: Value = serde_json::from_str(&ok(run(cli(&ada).args([
        "coach",
        "slots",
        "--coach",
        "grace",
        "--from",
        &monday.to_string(),
        "--to",
        &(monday + Duration::days(2)).to_string(),
        "--duration",
        "30",
        "--step",
        "60",
        "--viewer-tz",
        "Europe/Berlin",
        "--output",
        "json",
    ]))))
    .expect("json");
    let list = slots["slots"].as_array().expect("slots");
    // 09, 10, 11, 13, 14, 15, 16 on Monday; Tuesday is off.
    assert_eq!(list.len(), 7, "{slots}");
    assert_eq!(list[0]["viewerLocal"], format!("{monday}T09:00"));
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let nine = berlin
        .from_local_datetime(&monday.and_hms_opt(9, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(
        list[0]["start"],
        nine.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let readable = ok(run(cli(&ada).args([
        "coach",
        "slots",
        "--coach",
        "grace",
        "--from",
        &monday.to_string(),
        "--to",
        &tuesday.to_string(),
        "--duration",
        "30",
        "--step",
        "60",
        "--viewer-tz",
        "America/New_York",
    ])));
    assert!(readable.starts_with("7 slots of 30 min every 60 min, shown in America/New_York (the coach's hours are in Europe/Berlin)"), "{readable}");

    // She books the first; Tuesday is the coach's day off.
    let booked: Value = serde_json::from_str(&ok(run(cli(&ada).args([
        "call",
        "schedule",
        "--student",
        "ada",
        "--coach",
        "grace",
        "--at",
        &nine.to_rfc3339(),
        "--output",
        "json",
    ]))))
    .expect("json");
    let call_id = booked["call"]["card"]["callId"]
        .as_str()
        .expect("id")
        .to_owned();
    let outside = run(cli(&bob).args([
        "call",
        "schedule",
        "--student",
        "bob",
        "--coach",
        "grace",
        "--at",
        &(nine + Duration::days(1)).to_rfc3339(),
    ]));
    assert!(!outside.status.success());
    let stderr = String::from_utf8_lossy(&outside.stderr);
    assert!(stderr.contains("OUTSIDE_COACH_HOURS"), "{stderr}");

    // Grace moves her hours to the afternoon: the call stays, reported.
    let text = ok(run(cli(&grace).args([
        "coach",
        "availability",
        "set",
        "--coach",
        "grace",
        "--zone",
        "Europe/Berlin",
        "--weekly",
        "mon-fri 13:00-17:00",
    ])));
    assert!(
        text.contains("1 upcoming call now outside these hours (still valid)"),
        "{text}"
    );
    assert!(text.contains(&call_id), "{text}");
    let shown: Value = serde_json::from_str(&ok(run(cli(&grace).args([
        "coach",
        "availability",
        "show",
        "--coach",
        "grace",
        "--output",
        "json",
    ]))))
    .expect("json");
    assert_eq!(
        shown["upcomingOutsideHours"][0]["card"]["callId"],
        call_id.as_str()
    );
    let call = ok(run(cli(&ada).args(["call", "get", &call_id])));
    assert!(call.contains("SCHEDULED"), "{call}");

    // Students may not change hours; bad hours name the field.
    let denied = run(cli(&ada).args([
        "coach",
        "availability",
        "set",
        "--coach",
        "grace",
        "--zone",
        "Europe/Berlin",
        "--weekly",
        "mon 09:00-17:00",
    ]));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("PermissionDenied") && stderr.contains("ROLE_NOT_ALLOWED"),
        "{stderr}"
    );
    let bad = run(cli(&grace).args([
        "coach",
        "availability",
        "set",
        "--coach",
        "grace",
        "--zone",
        "Europe/Berlin",
        "--weekly",
        "mon 09:00-12:00,11:00-13:00",
    ]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("availability.weekly"),
        "{stderr}"
    );
    let typo = run(cli(&grace).args([
        "coach",
        "availability",
        "set",
        "--coach",
        "grace",
        "--zone",
        "Europe/Berlin",
        "--weekly",
        "mnd 09:00-12:00",
    ]));
    let stderr = String::from_utf8_lossy(&typo.stderr);
    assert!(stderr.contains("not a weekday"), "{stderr}");

    let cleared = ok(run(cli(&grace).args([
        "coach",
        "availability",
        "clear",
        "--coach",
        "grace",
    ])));
    assert!(
        cleared.contains("has published no hours: bookable at any time (version 3)"),
        "{cleared}"
    );

    drop(dev);
    drop(db);
}
