//! Coaches' published hours through the API: who may change them, bookings
//! held to them (hours, buffers, the coach's own notice, the daily maximum),
//! CheckAvailability explaining each reason, FindSlots across time zones in
//! the weeks when only one zone has changed its clocks, calls booked before a
//! change staying valid, and bookings racing changes of the hours.

mod support;

use std::time::Duration as StdDuration;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use futures::future::join_all;
use skileez_domain::{
    ActorRole, CallEvent, Policy,
    availability::{AvailabilityEvent, check_within_hours, evolve_availability},
};
use skileez_eventstore::{EventStore, FeedPosition, RecordedEvent};
use skileez_proto::scheduling as pb;
use support::*;
use tonic::{Code, Status};

// ------------------------------------------------------------ helpers

const DAYS: [pb::Weekday; 7] = [
    pb::Weekday::Monday,
    pb::Weekday::Tuesday,
    pb::Weekday::Wednesday,
    pb::Weekday::Thursday,
    pb::Weekday::Friday,
    pb::Weekday::Saturday,
    pb::Weekday::Sunday,
];

fn weekly(day: pb::Weekday, start: &str, end: &str) -> pb::WeeklyInterval {
    pb::WeeklyInterval {
        weekday: day as i32,
        start: start.to_owned(),
        end: end.to_owned(),
    }
}

/// `start`–`end` on the given days, in `zone`, and nothing else.
fn hours_on(zone: &str, days: &[pb::Weekday], start: &str, end: &str) -> pb::Availability {
    pb::Availability {
        time_zone: zone.to_owned(),
        weekly: days.iter().map(|d| weekly(*d, start, end)).collect(),
        ..Default::default()
    }
}

fn every_day(zone: &str, start: &str, end: &str) -> pb::Availability {
    hours_on(zone, &DAYS, start, end)
}

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn instant(ts: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    let ts = ts.expect("timestamp");
    DateTime::from_timestamp(ts.seconds, 0).expect("instant")
}

fn utc_at(date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    date.and_hms_opt(hour, minute, 0).expect("time").and_utc()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn metadata(status: &Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

#[track_caller]
fn assert_reason<T: std::fmt::Debug>(result: &Result<T, Status>, code: Code, expected: &str) {
    match result {
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert_eq!(reason(status), expected, "{status:?}");
        }
        Ok(value) => panic!("expected {expected}, got OK {value:?}"),
    }
}

fn set_request(coach: &str, availability: pb::Availability) -> pb::SetCoachAvailabilityRequest {
    pb::SetCoachAvailabilityRequest {
        request_id: String::new(),
        coach_id: coach.to_owned(),
        availability: Some(availability),
    }
}

fn call_id(call: &pb::Call) -> String {
    card(call).call_id.clone()
}

fn starts(response: &pb::FindSlotsResponse) -> Vec<DateTime<Utc>> {
    response
        .slots
        .iter()
        .map(|s| instant(s.start.as_ref()))
        .collect()
}

fn locals(response: &pb::FindSlotsResponse) -> Vec<(&str, &str)> {
    response
        .slots
        .iter()
        .map(|s| (s.viewer_local.as_str(), s.viewer_offset.as_str()))
        .collect()
}

/// The `n`th (1-based) `weekday` of a month.
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u8) -> NaiveDate {
    NaiveDate::from_weekday_of_month_opt(year, month, weekday, n).expect("date")
}

fn last_sunday(year: i32, month: u32) -> NaiveDate {
    (1..=5)
        .rev()
        .find_map(|n| NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, n))
        .expect("a last Sunday")
}

/// The first year from now whose `month` is still ahead (2027 for March
/// when this was written in November 2026): the tests stay in the future.
fn next_year_with(month: u32) -> i32 {
    let today = Utc::now().date_naive() + Duration::days(2);
    let this = NaiveDate::from_ymd_opt(today.year(), month, 1).expect("date");
    if this > today {
        today.year()
    } else {
        today.year() + 1
    }
}

/// The next `weekday` at least `days` ahead.
fn next_weekday(weekday: Weekday, days: i64) -> NaiveDate {
    let mut date = Utc::now().date_naive() + Duration::days(days);
    while date.weekday() != weekday {
        date = date.succ_opt().expect("date");
    }
    date
}

/// A policy whose horizon reaches the clock changes of next year.
fn long_horizon() -> Policy {
    Policy {
        max_horizon: Duration::days(800),
        ..Policy::default()
    }
}

async fn find_slots(
    app: &TestApp,
    coach: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    duration: u32,
    step: u32,
    viewer: &str,
) -> pb::FindSlotsResponse {
    app.hours("viewer-1", ActorRole::Student)
        .find_slots(pb::FindSlotsRequest {
            coach_id: coach.to_owned(),
            from: Some(ts(from)),
            to: Some(ts(to)),
            duration_minutes: duration,
            viewer_time_zone: viewer.to_owned(),
            step_minutes: step,
        })
        .await
        .expect("slots")
        .into_inner()
}

// ------------------------------------------------- authorisation, CRUD

#[tokio::test]
async fn only_the_coach_and_staff_change_hours_and_anyone_reads_them() {
    let app = TestApp::spawn().await;
    let office = hours_on(
        "Europe/Berlin",
        &[pb::Weekday::Friday, pb::Weekday::Monday],
        "09:00",
        "17:00",
    );
    let set = |sub: &str, role: ActorRole, hours: pb::Availability| {
        let mut client = app.hours(sub, role);
        async move {
            client
                .set_coach_availability(set_request("coach-1", hours))
                .await
                .map(|r| r.into_inner())
        }
    };
    let get = |sub: &str, role: ActorRole| {
        let mut client = app.hours(sub, role);
        async move {
            client
                .get_coach_availability(pb::GetCoachAvailabilityRequest {
                    coach_id: "coach-1".into(),
                })
                .await
                .expect("get")
                .into_inner()
        }
    };

    // A student and another coach may not; nothing is written.
    let denied = set("stu-1", ActorRole::Student, office.clone()).await;
    assert_reason(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let denied = set("coach-2", ActorRole::Coach, office.clone()).await;
    assert_reason(&denied, Code::PermissionDenied, "ROLE_NOT_ALLOWED");
    let none = get("stu-1", ActorRole::Student).await;
    assert_eq!((none.availability, none.version), (None, 0));

    // The coach may; the answer is the stored (normalised) form.
    let mine = set("coach-1", ActorRole::Coach, office.clone())
        .await
        .expect("the coach sets their own hours");
    assert!(mine.applied);
    let stored = mine.coach_availability.expect("stored");
    assert_eq!(stored.version, 1);
    let weekdays: Vec<i32> = stored
        .availability
        .as_ref()
        .expect("hours")
        .weekly
        .iter()
        .map(|w| w.weekday)
        .collect();
    assert_eq!(
        weekdays,
        [pb::Weekday::Monday as i32, pb::Weekday::Friday as i32],
        "Monday first"
    );
    // The same again changes nothing.
    let again = set("coach-1", ActorRole::Coach, office.clone())
        .await
        .expect("same hours");
    assert!(!again.applied);
    assert_eq!(again.coach_availability.expect("stored").version, 1);

    // Admins and services may change anyone's.
    let admin = set(
        "admin-1",
        ActorRole::Admin,
        every_day("UTC", "08:00", "12:00"),
    )
    .await
    .expect("admin");
    assert_eq!(admin.coach_availability.expect("stored").version, 2);
    let service = set("svc", ActorRole::Service, office.clone())
        .await
        .expect("service");
    assert_eq!(service.coach_availability.expect("stored").version, 3);

    // Anyone authenticated reads them.
    let read = get("stu-1", ActorRole::Student).await;
    assert_eq!(read.version, 3);
    assert_eq!(read.availability.expect("hours").time_zone, "Europe/Berlin");
    assert!(read.updated_at.is_some());
    let anonymous = app
        .hours_with(None)
        .get_coach_availability(pb::GetCoachAvailabilityRequest {
            coach_id: "coach-1".into(),
        })
        .await;
    assert_code(&anonymous, Code::Unauthenticated);

    // Clearing: the same rule; afterwards bookable at any time again.
    let clear = |sub: &str, role: ActorRole| {
        let mut client = app.hours(sub, role);
        async move {
            client
                .clear_coach_availability(pb::ClearCoachAvailabilityRequest {
                    request_id: String::new(),
                    coach_id: "coach-1".into(),
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    assert_reason(
        &clear("coach-2", ActorRole::Coach).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    assert_reason(
        &clear("stu-1", ActorRole::Student).await,
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
    );
    let cleared = clear("coach-1", ActorRole::Coach).await.expect("cleared");
    assert!(cleared.applied);
    let state = cleared.coach_availability.expect("state");
    assert_eq!((state.availability, state.version), (None, 4));
    assert!(
        !clear("admin-1", ActorRole::Admin)
            .await
            .expect("again")
            .applied
    );
    let read = get("stu-1", ActorRole::Student).await;
    assert_eq!((read.availability, read.version), (None, 4));

    // The changes are events in the coach's own stream.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE stream_id = 'coach-coach-1' AND stream_type = 'coach'
          ORDER BY version",
    )
    .fetch_all(app.db.pool())
    .await
    .expect("events");
    assert_eq!(
        types,
        [
            "AvailabilityPublished",
            "AvailabilityPublished",
            "AvailabilityPublished",
            "AvailabilityCleared"
        ]
    );
}

#[tokio::test]
async fn a_retried_request_id_returns_the_first_answer() {
    let app = TestApp::spawn().await;
    let mut coach = app.hours("coach-1", ActorRole::Coach);
    let request = pb::SetCoachAvailabilityRequest {
        request_id: "hours-1".into(),
        ..set_request("coach-1", every_day("UTC", "09:00", "17:00"))
    };
    let first = coach
        .set_coach_availability(request.clone())
        .await
        .expect("first")
        .into_inner();
    let retry = coach
        .set_coach_availability(request.clone())
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(first, retry, "the stored answer, applied and all");
    assert!(retry.applied);
    let reused = coach
        .set_coach_availability(pb::SetCoachAvailabilityRequest {
            availability: Some(every_day("UTC", "10:00", "17:00")),
            ..request
        })
        .await;
    assert_code(&reused, Code::InvalidArgument);
    assert_eq!(fields(&reused.unwrap_err()), ["request_id"]);
}

#[tokio::test]
async fn bad_hours_and_slot_queries_name_their_fields() {
    let app = TestApp::spawn().await;
    let mut coach = app.hours("coach-1", ActorRole::Coach);
    let mut set = async |availability: Option<pb::Availability>| {
        coach
            .set_coach_availability(pb::SetCoachAvailabilityRequest {
                request_id: String::new(),
                coach_id: "coach-1".into(),
                availability,
            })
            .await
            .map(|_| ())
            .expect_err("refused")
    };
    let base = every_day("Europe/Berlin", "09:00", "17:00");
    let cases: Vec<(pb::Availability, Vec<&str>)> = vec![
        (
            pb::Availability {
                time_zone: "Mars/Olympus".into(),
                ..base.clone()
            },
            vec!["availability.time_zone"],
        ),
        (
            pb::Availability {
                weekly: vec![
                    weekly(pb::Weekday::Unspecified, "09:00", "12:00"),
                    weekly(pb::Weekday::Monday, "9:00", "25:00"),
                ],
                ..base.clone()
            },
            vec![
                "availability.weekly[0].weekday",
                "availability.weekly[1].start",
                "availability.weekly[1].end",
            ],
        ),
        (
            pb::Availability {
                weekly: vec![
                    weekly(pb::Weekday::Monday, "09:00", "12:00"),
                    weekly(pb::Weekday::Monday, "11:00", "13:00"),
                ],
                ..base.clone()
            },
            vec!["availability.weekly"],
        ),
        (
            pb::Availability {
                weekly: vec![weekly(pb::Weekday::Monday, "12:00", "09:00")],
                ..base.clone()
            },
            vec!["availability.weekly"],
        ),
        (
            pb::Availability {
                overrides: vec![
                    pb::DateOverride {
                        date: "2027-02-30".into(),
                        intervals: vec![],
                        day_off: true,
                    },
                    pb::DateOverride {
                        date: "2027-03-01".into(),
                        intervals: vec![pb::TimeInterval {
                            start: "10:00".into(),
                            end: "11:00".into(),
                        }],
                        day_off: true,
                    },
                    pb::DateOverride {
                        date: "2027-03-02".into(),
                        intervals: vec![],
                        day_off: false,
                    },
                ],
                ..base.clone()
            },
            vec![
                "availability.overrides[0].date",
                "availability.overrides[1].day_off",
                "availability.overrides[2].intervals",
            ],
        ),
        (
            pb::Availability {
                daily_max: Some(0),
                ..base.clone()
            },
            vec!["availability.daily_max"],
        ),
        (
            pb::Availability {
                buffer_after_minutes: 1441,
                ..base.clone()
            },
            vec!["availability.buffer_after_minutes"],
        ),
    ];
    for (hours, expected) in cases {
        let status = set(Some(hours.clone())).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{hours:?}: {status:?}"
        );
        assert_eq!(fields(&status), expected, "{hours:?}: {status:?}");
    }
    assert_eq!(fields(&set(None).await), ["availability"]);

    let mut slots = app.hours("stu-1", ActorRole::Student);
    let now = Utc::now();
    let status = slots
        .find_slots(pb::FindSlotsRequest {
            coach_id: String::new(),
            from: Some(ts(now + Duration::days(2))),
            to: Some(ts(now + Duration::days(1))),
            duration_minutes: 500,
            viewer_time_zone: "Nowhere/Town".into(),
            step_minutes: 1441,
        })
        .await
        .expect_err("refused");
    assert_eq!(
        fields(&status),
        [
            "coach_id",
            "duration_minutes",
            "step_minutes",
            "to",
            "viewer_time_zone"
        ]
    );
    let status = slots
        .find_slots(pb::FindSlotsRequest {
            coach_id: "coach-1".into(),
            from: Some(ts(now)),
            to: Some(ts(now + Duration::days(63))),
            ..Default::default()
        })
        .await
        .expect_err("too long");
    assert_eq!(fields(&status), ["to"]);
    let status = slots
        .find_slots(pb::FindSlotsRequest {
            coach_id: "coach-1".into(),
            ..Default::default()
        })
        .await
        .expect_err("no range");
    assert_eq!(fields(&status), ["from", "to"]);
}

// ------------------------------------------------------- booking rules

#[tokio::test]
async fn a_booking_must_fit_the_coachs_hours_and_so_must_a_reschedule() {
    let app = TestApp::spawn().await;
    app.publish_hours("coach-1", every_day("UTC", "09:00", "17:00"))
        .await;
    let early = app.book_free("stu-1", "coach-1", day_at(3, 8, 45)).await;
    assert_reason(&early, Code::FailedPrecondition, "OUTSIDE_COACH_HOURS");
    let status = early.unwrap_err();
    assert_eq!(
        metadata(&status, "start").as_deref(),
        Some(rfc3339(day_at(3, 8, 45)).as_str())
    );
    assert!(status.message().contains("FindSlots"), "{status:?}");
    // Running past the end of the hours is outside; ending with them is in.
    let late = app.book_free("stu-1", "coach-1", day_at(3, 16, 50)).await;
    assert_reason(&late, Code::FailedPrecondition, "OUTSIDE_COACH_HOURS");
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 16, 45))
        .await
        .expect("ends when the hours end");

    let mut student = app.student("stu-1");
    let moved = student
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: call_id(&call),
            new_start: Some(utc(day_at(4, 20, 0))),
            ..Default::default()
        })
        .await;
    assert_reason(&moved, Code::FailedPrecondition, "OUTSIDE_COACH_HOURS");
    let moved = student
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: call_id(&call),
            new_start: Some(utc(day_at(4, 9, 0))),
            ..Default::default()
        })
        .await
        .expect("inside the hours")
        .into_inner();
    // The successor may overlap its own predecessor's buffers and day.
    student
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: call_id(moved.call.as_ref().expect("call")),
            new_start: Some(utc(day_at(4, 9, 5))),
            ..Default::default()
        })
        .await
        .expect("moved by five minutes");
}

#[tokio::test]
async fn the_daily_maximum_counts_calls_by_the_coachs_local_date() {
    let app = TestApp::spawn().await;
    app.publish_hours(
        "coach-ny",
        pb::Availability {
            daily_max: Some(2),
            ..every_day("America/New_York", "00:00", "24:00")
        },
    )
    .await;
    let day = Utc::now().date_naive() + Duration::days(4);
    let at =
        |date: NaiveDate, time: &str| local(&format!("{date}T{time}"), "America/New_York", None);
    let book = |student: &str, start: pb::StartTime| {
        let mut client = app.student(student);
        let request = pb::ScheduleFreeConsultationRequest {
            start: Some(start),
            ..free_request(student, "coach-ny", Utc::now())
        };
        async move {
            client
                .schedule_free_consultation(request)
                .await
                .map(|r| r.into_inner().call.expect("call"))
        }
    };
    let first = book("stu-1", at(day, "09:00")).await.expect("first");
    // 23:00 in New York is the next day in UTC, still the same local day.
    book("stu-2", at(day, "23:00")).await.expect("second");
    let third = book("stu-3", at(day, "12:00")).await;
    assert_reason(&third, Code::FailedPrecondition, "DAILY_LIMIT_REACHED");
    let status = third.unwrap_err();
    assert_eq!(metadata(&status, "date"), Some(day.to_string()));
    assert_eq!(metadata(&status, "max").as_deref(), Some("2"));
    // The next local day has room, though it is the same UTC date as 23:00.
    book("stu-3", at(day + Duration::days(1), "00:30"))
        .await
        .expect("next local day");
    // A cancellation makes room again.
    app.student("stu-1")
        .cancel_call(pb::CancelCallRequest {
            call_id: call_id(&first),
            ..Default::default()
        })
        .await
        .expect("cancelled");
    book("stu-4", at(day, "12:00")).await.expect("room again");
}

#[tokio::test]
async fn buffers_and_the_coachs_own_notice_hold_and_check_availability_explains_each_reason() {
    let app = TestApp::spawn().await;
    app.publish_hours(
        "coach-1",
        pb::Availability {
            buffer_before_minutes: 10,
            buffer_after_minutes: 5,
            min_notice_minutes: Some(2 * 24 * 60),
            daily_max: Some(3),
            ..every_day("UTC", "09:00", "17:00")
        },
    )
    .await;
    let d = |hour, minute| day_at(4, hour, minute);
    let ten = app
        .book_free("stu-1", "coach-1", d(10, 0))
        .await
        .expect("10:00");
    // 10:25 keeps 10 minutes before itself but not 5 after 10:00–10:15.
    let close = app.book_free("stu-2", "coach-1", d(10, 25)).await;
    assert_reason(&close, Code::FailedPrecondition, "SLOT_TAKEN");
    assert_eq!(
        metadata(&close.unwrap_err(), "clashing_start"),
        Some(rfc3339(d(10, 0)))
    );
    // 10:30 keeps both: 10:15 + 5 + 10.
    app.book_free("stu-2", "coach-1", d(10, 30))
        .await
        .expect("buffers exactly kept");
    // Before a call: 09:35–09:50 ends 5 + 10 minutes too late for 10:00.
    let before = app.book_free("stu-3", "coach-1", d(9, 35)).await;
    assert_reason(&before, Code::FailedPrecondition, "SLOT_TAKEN");
    app.book_free("stu-3", "coach-1", d(9, 30))
        .await
        .expect("09:30–09:45 keeps the buffers");
    // The coach's own notice of two days, larger than the service's.
    let soon = app.book_free("stu-4", "coach-1", day_at(1, 10, 0)).await;
    assert_reason(&soon, Code::FailedPrecondition, "NOT_ENOUGH_NOTICE");
    // Three calls on the day: the maximum.
    let full = app.book_free("stu-4", "coach-1", d(15, 0)).await;
    assert_reason(&full, Code::FailedPrecondition, "DAILY_LIMIT_REACHED");

    let check = |sub: &str, role: ActorRole, start: DateTime<Utc>| {
        let mut client = app.scheduling_with(Some(app.token(sub, role)));
        async move {
            client
                .check_availability(pb::CheckAvailabilityRequest {
                    coach_id: "coach-1".into(),
                    start: Some(utc(start)),
                    duration_minutes: 15,
                    student_id: String::new(),
                })
                .await
                .expect("answer")
                .into_inner()
        }
    };
    let reasons = |answer: &pb::CheckAvailabilityResponse| -> Vec<String> {
        answer.violations.iter().map(|v| v.reason.clone()).collect()
    };
    // 10:20–10:35 overlaps 10:30 and sits in 10:00's buffer; the day is full.
    let answer = check("stu-9", ActorRole::Student, d(10, 20)).await;
    assert!(!answer.available);
    assert_eq!(reasons(&answer), ["DAILY_LIMIT_REACHED", "COACH_BUFFER"]);
    assert!(
        answer.violations[1].message.contains("10 minutes"),
        "{answer:?}"
    );
    let conflicts: Vec<(DateTime<Utc>, DateTime<Utc>, bool, bool)> = answer
        .conflicts
        .iter()
        .map(|c| {
            (
                instant(c.call_start.as_ref()),
                instant(c.start.as_ref()),
                c.buffer_only,
                c.call_id.is_empty(),
            )
        })
        .collect();
    assert_eq!(
        conflicts,
        [
            (d(10, 0), d(9, 50), true, true),
            (d(10, 30), d(10, 20), false, true)
        ],
        "each clash with the call's time and its busy range; no one else's ids"
    );
    // The coach sees which calls they are.
    let answer = check("coach-1", ActorRole::Coach, d(10, 20)).await;
    assert_eq!(answer.conflicts[0].call_id, call_id(&ten));
    // Outside the hours, and too soon for the coach's notice.
    let answer = check("stu-9", ActorRole::Student, day_at(5, 20, 0)).await;
    assert_eq!(reasons(&answer), ["OUTSIDE_COACH_HOURS"]);
    let answer = check("stu-9", ActorRole::Student, day_at(1, 10, 0)).await;
    assert_eq!(reasons(&answer), ["NOT_ENOUGH_NOTICE"]);
    let answer = check("stu-9", ActorRole::Student, day_at(5, 10, 0)).await;
    assert!(answer.available, "{answer:?}");
}

#[tokio::test]
async fn a_coach_without_hours_stays_bookable_at_any_time() {
    let app = TestApp::spawn().await;
    let night = day_at(5, 3, 17);
    app.book_free("stu-1", "coach-1", night)
        .await
        .expect("no hours: any time");
    // FindSlots then lists the UTC grid around the coach's calls.
    let slots = find_slots(
        &app,
        "coach-1",
        day_at(5, 3, 0),
        day_at(5, 4, 0),
        15,
        15,
        "UTC",
    )
    .await;
    assert_eq!(starts(&slots), [day_at(5, 3, 0), day_at(5, 3, 45)]);
    assert_eq!(slots.coach_time_zone, "");
    // Published, then cleared: any time again.
    app.publish_hours("coach-1", every_day("UTC", "09:00", "17:00"))
        .await;
    let refused = app.book_free("stu-2", "coach-1", day_at(6, 3, 0)).await;
    assert_reason(&refused, Code::FailedPrecondition, "OUTSIDE_COACH_HOURS");
    app.hours("coach-1", ActorRole::Coach)
        .clear_coach_availability(pb::ClearCoachAvailabilityRequest {
            request_id: String::new(),
            coach_id: "coach-1".into(),
        })
        .await
        .expect("cleared");
    app.book_free("stu-2", "coach-1", day_at(6, 3, 0))
        .await
        .expect("bookable at any time again");
}

#[tokio::test]
async fn calls_booked_before_a_change_of_hours_stay_valid_and_are_reported_outside() {
    let app = TestApp::spawn().await;
    app.publish_hours("coach-1", every_day("UTC", "09:00", "17:00"))
        .await;
    let morning = app
        .book_free("stu-1", "coach-1", day_at(3, 9, 0))
        .await
        .expect("09:00");
    let noon = app
        .book_free("stu-2", "coach-1", day_at(3, 12, 0))
        .await
        .expect("12:00");
    let answer = app
        .publish_hours("coach-1", every_day("UTC", "12:00", "17:00"))
        .await;
    let outside: Vec<String> = answer
        .coach_availability
        .expect("state")
        .upcoming_outside_hours
        .iter()
        .map(call_id)
        .collect();
    assert_eq!(outside, [call_id(&morning)]);
    // Still valid.
    let call = app
        .student("stu-1")
        .get_call(pb::GetCallRequest {
            call_id: call_id(&morning),
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(status_of(&call), skileez_proto::call::CallStatus::Scheduled);
    // The coach (and staff) see the list when reading the hours; others not.
    let get = |sub: &str, role: ActorRole| {
        let mut client = app.hours(sub, role);
        async move {
            client
                .get_coach_availability(pb::GetCoachAvailabilityRequest {
                    coach_id: "coach-1".into(),
                })
                .await
                .expect("get")
                .into_inner()
                .upcoming_outside_hours
                .len()
        }
    };
    assert_eq!(get("coach-1", ActorRole::Coach).await, 1);
    assert_eq!(get("admin-1", ActorRole::Admin).await, 1);
    assert_eq!(get("stu-2", ActorRole::Student).await, 0);
    // Moving it inside the hours clears the report.
    app.student("stu-1")
        .reschedule_call(pb::RescheduleCallRequest {
            call_id: call_id(&morning),
            new_start: Some(utc(day_at(3, 13, 0))),
            ..Default::default()
        })
        .await
        .expect("moved inside");
    assert_eq!(get("coach-1", ActorRole::Coach).await, 0);
    drop(noon);
}

// --------------------------------------------------- FindSlots and DST

/// The Berlin office (weekdays 09:00–17:00) seen from New York on `day`:
/// eight hourly slots from `first_utc`, the first read in New York as
/// `first_local` with `offset`.
async fn assert_berlin_day_from_new_york(
    app: &TestApp,
    day: NaiveDate,
    first_utc_hour: u32,
    first_local_hour: u32,
    offset: &str,
) {
    let from = utc_at(day, 0, 0) - Duration::hours(3);
    let slots = find_slots(
        app,
        "coach-berlin",
        from,
        from + Duration::hours(24),
        60,
        60,
        "America/New_York",
    )
    .await;
    let expected: Vec<DateTime<Utc>> = (0..8)
        .map(|h| utc_at(day, first_utc_hour, 0) + Duration::hours(h))
        .collect();
    assert_eq!(starts(&slots), expected, "{day}");
    assert_eq!(
        locals(&slots)[0],
        (format!("{day}T{first_local_hour:02}:00").as_str(), offset),
        "{day}"
    );
    assert!(
        slots.slots.iter().all(|s| s.viewer_offset == offset),
        "{day}"
    );
    assert_eq!(slots.viewer_time_zone, "America/New_York");
    assert_eq!(slots.coach_time_zone, "Europe/Berlin");
}

#[tokio::test]
async fn find_slots_berlin_coach_new_york_student_in_march() {
    let app = TestApp::spawn_with(long_horizon()).await;
    let weekdays = &DAYS[..5];
    app.publish_hours(
        "coach-berlin",
        hours_on("Europe/Berlin", weekdays, "09:00", "17:00"),
    )
    .await;
    let year = next_year_with(3);
    let us = nth_weekday(year, 3, Weekday::Sun, 2); // 2027-03-14
    let eu = last_sunday(year, 3); // 2027-03-28
    // Before either change: CET (+1) and EST (−5).
    assert_berlin_day_from_new_york(&app, us - Duration::days(2), 8, 3, "-05:00").await;
    // The week of the US change: New York on EDT (−4), Berlin still on CET,
    // so the same Berlin hours are an hour later for the student.
    for day in [1, 5, 8] {
        assert_berlin_day_from_new_york(&app, us + Duration::days(day), 8, 4, "-04:00").await;
    }
    // The week of the EU change: Berlin on CEST (+2) too.
    assert_berlin_day_from_new_york(&app, eu + Duration::days(1), 7, 3, "-04:00").await;
}

#[tokio::test]
async fn find_slots_berlin_coach_new_york_student_in_autumn() {
    let app = TestApp::spawn_with(long_horizon()).await;
    app.publish_hours(
        "coach-berlin",
        hours_on("Europe/Berlin", &DAYS[..5], "09:00", "17:00"),
    )
    .await;
    let year = next_year_with(10);
    let eu = last_sunday(year, 10); // 2027-10-31
    let us = nth_weekday(year, 11, Weekday::Sun, 1); // 2027-11-07
    // Before: CEST (+2) and EDT (−4).
    assert_berlin_day_from_new_york(&app, eu - Duration::days(2), 7, 3, "-04:00").await;
    // Berlin back on CET, New York still on EDT.
    assert_berlin_day_from_new_york(&app, eu + Duration::days(1), 8, 4, "-04:00").await;
    // Both on standard time.
    assert_berlin_day_from_new_york(&app, us + Duration::days(1), 8, 3, "-05:00").await;
}

#[tokio::test]
async fn find_slots_across_lord_howe_half_hour_changes() {
    let app = TestApp::spawn_with(long_horizon()).await;
    app.publish_hours(
        "coach-lh",
        every_day("Australia/Lord_Howe", "00:00", "06:00"),
    )
    .await;
    // First Sunday of April: 02:00 +11:00 becomes 01:30 +10:30, so
    // 01:30–02:00 happens twice and the night's hours last 6.5 hours.
    let back = nth_weekday(next_year_with(4), 4, Weekday::Sun, 1);
    let eve = back - Duration::days(1);
    let slots = find_slots(
        &app,
        "coach-lh",
        utc_at(eve, 12, 0),
        utc_at(back, 0, 0),
        30,
        30,
        "Australia/Lord_Howe",
    )
    .await;
    assert_eq!(slots.slots.len(), 13);
    assert_eq!(starts(&slots)[0], utc_at(eve, 13, 0));
    assert_eq!(starts(&slots)[12], utc_at(eve, 19, 0));
    let day = back.to_string();
    assert_eq!(
        locals(&slots)[2..6],
        [
            (format!("{day}T01:00").as_str(), "+11:00"),
            (format!("{day}T01:30").as_str(), "+11:00"),
            (format!("{day}T01:30").as_str(), "+10:30"),
            (format!("{day}T02:00").as_str(), "+10:30"),
        ]
    );

    // First Sunday of October: 02:00 +10:30 becomes 02:30 +11:00.
    app.publish_hours(
        "coach-lh",
        every_day("Australia/Lord_Howe", "01:00", "04:00"),
    )
    .await;
    let forward = nth_weekday(next_year_with(10), 10, Weekday::Sun, 1);
    let eve = forward - Duration::days(1);
    let slots = find_slots(
        &app,
        "coach-lh",
        utc_at(eve, 12, 0),
        utc_at(forward, 0, 0),
        30,
        30,
        "Australia/Lord_Howe",
    )
    .await;
    let day = forward.to_string();
    assert_eq!(
        starts(&slots),
        [
            utc_at(eve, 14, 30),
            utc_at(eve, 15, 0),
            utc_at(eve, 15, 30),
            utc_at(eve, 16, 0),
            utc_at(eve, 16, 30)
        ]
    );
    assert_eq!(
        locals(&slots),
        [
            (format!("{day}T01:00").as_str(), "+10:30"),
            (format!("{day}T01:30").as_str(), "+10:30"),
            (format!("{day}T02:30").as_str(), "+11:00"),
            (format!("{day}T03:00").as_str(), "+11:00"),
            (format!("{day}T03:30").as_str(), "+11:00"),
        ]
    );
}

#[tokio::test]
async fn find_slots_for_a_kathmandu_coach_lists_only_bookable_starts() {
    let app = TestApp::spawn().await;
    app.publish_hours(
        "coach-ktm",
        hours_on("Asia/Kathmandu", &[pb::Weekday::Monday], "09:00", "12:00"),
    )
    .await;
    // The student's profile zone (+05:30, no DST) is the viewer's default.
    app.add_participant("viewer-1", "Asia/Kolkata").await;
    let monday = next_weekday(Weekday::Mon, 3);
    let sunday = monday - Duration::days(1);
    let from = utc_at(sunday, 12, 0);
    let to = utc_at(monday, 12, 0);
    let slots = find_slots(&app, "coach-ktm", from, to, 60, 60, "").await;
    // 09:00 +05:45 is 03:15 UTC and 08:45 in Kolkata.
    assert_eq!(
        starts(&slots),
        [
            utc_at(monday, 3, 15),
            utc_at(monday, 4, 15),
            utc_at(monday, 5, 15)
        ]
    );
    let day = monday.to_string();
    assert_eq!(
        locals(&slots),
        [
            (format!("{day}T08:45").as_str(), "+05:30"),
            (format!("{day}T09:45").as_str(), "+05:30"),
            (format!("{day}T10:45").as_str(), "+05:30"),
        ]
    );
    assert_eq!(slots.viewer_time_zone, "Asia/Kolkata");
    // A listed start books; an unlisted one is outside the hours; the
    // booked one is no longer listed.
    app.book_free("stu-1", "coach-ktm", utc_at(monday, 4, 15))
        .await
        .expect("a listed start books");
    let off_grid = app
        .book_free("stu-2", "coach-ktm", utc_at(monday, 3, 0))
        .await;
    assert_reason(&off_grid, Code::FailedPrecondition, "OUTSIDE_COACH_HOURS");
    let slots = find_slots(&app, "coach-ktm", from, to, 60, 60, "").await;
    assert_eq!(
        starts(&slots),
        [utc_at(monday, 3, 15), utc_at(monday, 5, 15)]
    );
    // Every start FindSlots lists with a 15-minute step is bookable.
    let slots = find_slots(&app, "coach-ktm", from, to, 15, 15, "UTC").await;
    assert!(!slots.slots.is_empty());
    for start in starts(&slots) {
        let answer = app
            .student("stu-3")
            .check_availability(pb::CheckAvailabilityRequest {
                coach_id: "coach-ktm".into(),
                start: Some(utc(start)),
                duration_minutes: 15,
                student_id: "stu-3".into(),
            })
            .await
            .expect("check")
            .into_inner();
        assert!(answer.available, "{start}: {answer:?}");
    }
}

// ------------------------------------------------------------- races

/// Every event of the test's database in feed order (the order their
/// transactions were serialised in, see the event store).
async fn whole_feed(app: &TestApp) -> Vec<RecordedEvent> {
    let store = EventStore::new(app.db.pool().clone());
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.db.pool())
        .await
        .expect("count");
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(20);
    let mut seen = Vec::new();
    let mut position = FeedPosition::START;
    while (seen.len() as i64) < total {
        let batch = store.read_feed(position, 1000).await.expect("feed");
        match batch.last() {
            Some(last) => position = last.feed_position(),
            None => {
                // Another test's transaction holds the watermark back.
                assert!(tokio::time::Instant::now() < deadline, "the feed stalled");
                tokio::time::sleep(StdDuration::from_millis(20)).await;
            }
        }
        seen.extend(batch);
    }
    seen
}

#[tokio::test]
async fn bookings_racing_changes_of_hours_always_fit_the_hours_in_force_when_they_commit() {
    let app = TestApp::spawn().await;
    let morning = every_day("UTC", "09:00", "13:00");
    let afternoon = every_day("UTC", "11:00", "15:00");
    app.publish_hours("coach-1", morning.clone()).await;
    let day = day_at(3, 0, 0);

    let toggles = async {
        for i in 0..40 {
            let hours = if i % 2 == 0 { &afternoon } else { &morning };
            app.publish_hours("coach-1", hours.clone()).await;
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    };
    // 08:00 to 15:45 in 15-minute steps, two students per start.
    let bookings = join_all((0..64i64).map(|i| {
        let start = day + Duration::hours(8) + Duration::minutes(15 * (i % 32));
        let student = format!("stu-{i}");
        let app = &app;
        async move {
            tokio::time::sleep(StdDuration::from_millis(4 * i.unsigned_abs())).await;
            app.book_free(&student, "coach-1", start).await
        }
    }));
    let ((), results) = tokio::join!(toggles, bookings);

    let mut booked = 0;
    let mut outside = 0;
    for result in &results {
        match result {
            Ok(_) => booked += 1,
            Err(status) => match (status.code(), reason(status).as_str()) {
                (Code::FailedPrecondition, "OUTSIDE_COACH_HOURS") => outside += 1,
                (Code::FailedPrecondition, "SLOT_TAKEN") | (Code::Aborted, _) => {}
                _ => panic!("unexpected answer {status:?}"),
            },
        }
    }
    assert!(
        booked > 0 && outside > 0,
        "{booked} booked, {outside} outside"
    );

    // Replay the store in commit order: each booking against the hours in
    // force at that point.
    let mut hours = None;
    let mut version = 0;
    let mut checked = 0;
    for record in whole_feed(&app).await {
        if record.stream_type == "coach" {
            let event: AvailabilityEvent =
                serde_json::from_value(record.payload.clone()).expect("coach event");
            hours = evolve_availability(hours, &event);
            version = record.version;
        } else if let CallEvent::Scheduled(s) =
            serde_json::from_value::<CallEvent>(record.payload.clone()).expect("call event")
        {
            let end = s.start + Duration::minutes(i64::from(s.duration_minutes));
            assert!(
                check_within_hours(hours.as_ref(), s.start, end).is_ok(),
                "the call at {} committed outside the hours of version {version}",
                s.start
            );
            checked += 1;
        }
    }
    assert_eq!(checked, booked, "every booking was checked");
}

#[tokio::test]
async fn concurrent_bookings_never_exceed_the_daily_maximum() {
    let app = TestApp::spawn().await;
    app.publish_hours(
        "coach-1",
        pb::Availability {
            daily_max: Some(3),
            ..every_day("UTC", "00:00", "24:00")
        },
    )
    .await;
    let results = join_all((0..20u32).map(|i| {
        let app = &app;
        async move {
            app.book_free(&format!("stu-{i}"), "coach-1", day_at(3, 1 + i, 0))
                .await
        }
    }))
    .await;
    let mut booked = 0;
    for result in &results {
        match result {
            Ok(_) => booked += 1,
            Err(status) => assert!(
                (status.code() == Code::FailedPrecondition
                    && reason(status) == "DAILY_LIMIT_REACHED")
                    || status.code() == Code::Aborted,
                "{status:?}"
            ),
        }
    }
    assert_eq!(booked, 3);
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM calls WHERE coach_id = 'coach-1'
           AND status IN ('scheduled', 'ready', 'active')",
    )
    .fetch_one(app.db.pool())
    .await
    .expect("count");
    assert_eq!(active, 3);
}

// ----------------------------------------------------- feed and relay

#[tokio::test]
async fn coach_events_stay_off_the_bus_and_the_relay_and_watchers_move_past_them() {
    let app = TestApp::spawn_with_nats(Policy::default()).await;
    let mut watch = app
        .student("stu-1")
        .watch_calls(pb::WatchCallsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    app.publish_hours("coach-1", every_day("UTC", "00:00", "24:00"))
        .await;
    // A batch of only coach events still moves the relay's checkpoint.
    let (tx_id, position): (i64, i64) = sqlx::query_as(
        "SELECT tx_id::text::bigint, position FROM events WHERE stream_id = 'coach-coach-1'",
    )
    .fetch_one(app.db.pool())
    .await
    .expect("the coach event");
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(15);
    loop {
        let checkpoint: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, position FROM relay_checkpoints")
                .fetch_optional(app.db.pool())
                .await
                .expect("checkpoint");
        if checkpoint.is_some_and(|c| c >= (tx_id, position)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not move past the coach's event: {checkpoint:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // A booking after it reaches the bus and the watcher, and it alone.
    let call = app
        .book_free("stu-1", "coach-1", day_at(3, 10, 0))
        .await
        .expect("booked");
    let change = tokio::time::timeout(StdDuration::from_secs(10), watch.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("a change");
    assert_eq!(change.event.expect("event").call_id, call_id(&call));

    let client = async_nats::connect(app.nats.as_ref().expect("nats").url())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(15);
    loop {
        if let Ok(mut stream) = js.get_stream("CALL_EVENTS").await
            && let Ok(info) = stream.info().await
            && info.state.messages >= 1
        {
            assert_eq!(info.state.messages, 1, "only the call's event");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing published");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}
