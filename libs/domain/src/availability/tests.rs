use chrono::{DateTime, Duration, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::json;

use super::*;
use crate::command::{Actor, ActorRole};
use crate::error::ErrorKind;
use crate::policy::Policy;
use crate::rules::find_conflict;
use crate::testing::{self, at, call_id, user};

fn tod(text: &str) -> TimeOfDay {
    TimeOfDay::parse(text).unwrap()
}

fn weekly(day: Weekday, start: &str, end: &str) -> WeeklyInterval {
    WeeklyInterval {
        weekday: day,
        start: tod(start),
        end: tod(end),
    }
}

fn interval(start: &str, end: &str) -> LocalInterval {
    LocalInterval {
        start: tod(start),
        end: tod(end),
    }
}

fn date(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

fn zone(name: &str) -> Tz {
    crate::time::parse_zone(name).unwrap()
}

const WORKDAYS: [Weekday; 5] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
];

/// Mon–Fri 09:00–17:00 in `time_zone`.
fn office(time_zone: &str) -> Availability {
    Availability::weekly(
        time_zone,
        WORKDAYS
            .iter()
            .map(|&d| weekly(d, "09:00", "17:00"))
            .collect(),
    )
}

/// `hours` every day of the week in `time_zone`.
fn every_day(time_zone: &str, start: &str, end: &str) -> Availability {
    Availability::weekly(
        time_zone,
        WEEKDAYS.iter().map(|&d| weekly(d, start, end)).collect(),
    )
}

fn busy(start: &str, end: &str) -> CoachBusy {
    CoachBusy {
        start: at(start),
        end: at(end),
    }
}

/// Long ago enough that notice never matters.
fn early() -> DateTime<Utc> {
    at("2026-01-01T00:00:00Z")
}

/// The default policy with a horizon long enough for every test date.
fn lenient() -> Policy {
    Policy {
        max_horizon: Duration::days(3650),
        ..Policy::default()
    }
}

fn query(from: &str, to: &str, duration: u32, step: i64, viewer: &str) -> SlotQuery {
    SlotQuery {
        from: at(from),
        to: at(to),
        duration_minutes: duration,
        step: Duration::minutes(step),
        viewer_zone: zone(viewer),
    }
}

/// `(UTC instant, viewer local, viewer offset)` of each slot.
fn slots(
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    now: DateTime<Utc>,
    query: &SlotQuery,
) -> Vec<(String, String, String)> {
    find_slots(&lenient(), avail, busy, now, query)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.start_utc.format("%Y-%m-%dT%H:%MZ").to_string(),
                s.viewer_local,
                s.viewer_offset,
            )
        })
        .collect()
}

fn starts(list: &[(String, String, String)]) -> Vec<&str> {
    list.iter().map(|s| s.0.as_str()).collect()
}

fn locals(list: &[(String, String, String)]) -> Vec<(&str, &str)> {
    list.iter().map(|s| (s.1.as_str(), s.2.as_str())).collect()
}

// ---------------------------------------------------------------- types

#[test]
fn time_of_day_is_exactly_hh_mm_up_to_24_00() {
    assert_eq!(tod("00:00"), TimeOfDay::MIDNIGHT);
    assert_eq!(tod("24:00"), TimeOfDay::END_OF_DAY);
    assert_eq!(tod("09:30").minutes(), 570);
    assert_eq!(tod("09:30").to_string(), "09:30");
    assert_eq!(TimeOfDay::END_OF_DAY.to_string(), "24:00");
    for bad in [
        "24:01", "25:00", "9:00", "09:60", "0900", "09:00:00", "", "ab:cd", "-1:00", "０9:00",
    ] {
        assert_eq!(TimeOfDay::parse(bad), None, "{bad:?}");
    }
    assert_eq!(TimeOfDay::from_hm(u16::MAX, u16::MAX), None);
    assert_eq!(TimeOfDay::from_minutes(1441), None);
    assert!(serde_json::from_value::<TimeOfDay>(json!("24:30")).is_err());
    assert!(serde_json::from_value::<TimeOfDay>(json!(540)).is_err());
}

#[test]
fn availability_json_shape_is_the_stored_contract() {
    let avail = Availability {
        time_zone: "Europe/Berlin".into(),
        weekly: vec![
            weekly(Weekday::Mon, "09:00", "12:00"),
            weekly(Weekday::Mon, "13:00", "24:00"),
        ],
        overrides: vec![
            DateOverride {
                date: date("2026-12-24"),
                intervals: vec![],
            },
            DateOverride {
                date: date("2026-12-27"),
                intervals: vec![interval("10:00", "12:00")],
            },
        ],
        buffer_before_minutes: 5,
        buffer_after_minutes: 10,
        min_notice_minutes: Some(120),
        daily_max: Some(4),
    };
    let value = json!({
        "time_zone": "Europe/Berlin",
        "weekly": [
            {"weekday": "Mon", "start": "09:00", "end": "12:00"},
            {"weekday": "Mon", "start": "13:00", "end": "24:00"},
        ],
        "overrides": [
            {"date": "2026-12-24", "intervals": []},
            {"date": "2026-12-27", "intervals": [{"start": "10:00", "end": "12:00"}]},
        ],
        "buffer_before_minutes": 5,
        "buffer_after_minutes": 10,
        "min_notice_minutes": 120,
        "daily_max": 4,
    });
    assert_eq!(serde_json::to_value(&avail).unwrap(), value);
    assert_eq!(
        serde_json::from_value::<Availability>(value).unwrap(),
        avail
    );
    assert_eq!(avail.validate(), Ok(()));
    // Optional parts may be left out.
    let minimal: Availability = serde_json::from_value(json!({"time_zone": "UTC", "weekly": [
            {"weekday": "Tuesday", "start": "09:00", "end": "10:00"}]}))
    .unwrap();
    assert_eq!(
        minimal,
        Availability::weekly("UTC", vec![weekly(Weekday::Tue, "09:00", "10:00")])
    );
}

#[test]
fn validate_names_the_field_at_fault() {
    let cases: Vec<(Availability, &str)> = vec![
        (
            Availability {
                time_zone: "Mars/Olympus".into(),
                ..office("UTC")
            },
            "time_zone",
        ),
        (
            Availability::weekly("UTC", vec![weekly(Weekday::Mon, "10:00", "10:00")]),
            "weekly",
        ),
        (
            Availability::weekly("UTC", vec![weekly(Weekday::Mon, "12:00", "09:00")]),
            "weekly",
        ),
        (
            Availability::weekly(
                "UTC",
                vec![
                    weekly(Weekday::Mon, "09:00", "12:00"),
                    weekly(Weekday::Mon, "11:59", "13:00"),
                ],
            ),
            "weekly",
        ),
        (
            Availability::weekly(
                "UTC",
                (0..=MAX_INTERVALS_PER_DAY as u16)
                    .map(|i| WeeklyInterval {
                        weekday: Weekday::Sun,
                        start: TimeOfDay::from_minutes(i * 10).unwrap(),
                        end: TimeOfDay::from_minutes(i * 10 + 5).unwrap(),
                    })
                    .collect(),
            ),
            "weekly",
        ),
        (
            Availability {
                overrides: vec![
                    DateOverride {
                        date: date("2026-05-01"),
                        intervals: vec![],
                    },
                    DateOverride {
                        date: date("2026-05-01"),
                        intervals: vec![interval("09:00", "10:00")],
                    },
                ],
                ..office("UTC")
            },
            "overrides",
        ),
        (
            Availability {
                overrides: vec![DateOverride {
                    date: date("2026-05-01"),
                    intervals: vec![interval("09:00", "10:00"), interval("09:30", "11:00")],
                }],
                ..office("UTC")
            },
            "overrides",
        ),
        (
            Availability {
                overrides: (0..=MAX_OVERRIDES as u64)
                    .map(|i| DateOverride {
                        date: date("2026-01-01") + chrono::Days::new(i),
                        intervals: vec![],
                    })
                    .collect(),
                ..office("UTC")
            },
            "overrides",
        ),
        (
            Availability {
                buffer_before_minutes: MAX_BUFFER_MINUTES + 1,
                ..office("UTC")
            },
            "buffer_before_minutes",
        ),
        (
            Availability {
                buffer_after_minutes: u32::MAX,
                ..office("UTC")
            },
            "buffer_after_minutes",
        ),
        (
            Availability {
                min_notice_minutes: Some(MAX_MIN_NOTICE_MINUTES + 1),
                ..office("UTC")
            },
            "min_notice_minutes",
        ),
        (
            Availability {
                daily_max: Some(0),
                ..office("UTC")
            },
            "daily_max",
        ),
        (
            Availability {
                daily_max: Some(MAX_DAILY_MAX + 1),
                ..office("UTC")
            },
            "daily_max",
        ),
    ];
    for (avail, field) in cases {
        let err = avail.validate().unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    let err = Availability::weekly("UTC", vec![weekly(Weekday::Mon, "12:00", "09:00")])
        .validate()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid weekly: Mon 12:00–09:00: the start must be before the end (use 24:00 for \
         midnight)"
    );
    assert_eq!(
        Availability {
            time_zone: "Nowhere".into(),
            ..office("UTC")
        }
        .validate()
        .unwrap_err()
        .reason(),
        "UNKNOWN_TIME_ZONE"
    );
}

#[test]
fn touching_intervals_and_empty_hours_are_valid() {
    let avail = Availability::weekly(
        "UTC",
        vec![
            weekly(Weekday::Mon, "09:00", "12:00"),
            weekly(Weekday::Mon, "12:00", "24:00"),
            weekly(Weekday::Tue, "00:00", "02:00"),
        ],
    );
    assert_eq!(avail.validate(), Ok(()));
    assert_eq!(Availability::weekly("UTC", vec![]).validate(), Ok(()));
    assert_eq!(
        Availability {
            daily_max: Some(1),
            buffer_after_minutes: MAX_BUFFER_MINUTES,
            ..office("Asia/Kathmandu")
        }
        .validate(),
        Ok(())
    );
}

#[test]
fn an_override_replaces_the_weekday_and_an_empty_one_is_a_day_off() {
    let avail = Availability {
        overrides: vec![
            DateOverride {
                date: date("2026-12-24"), // a Thursday
                intervals: vec![],
            },
            DateOverride {
                date: date("2026-12-26"), // a Saturday
                intervals: vec![interval("10:00", "12:00"), interval("08:00", "09:00")],
            },
        ],
        ..office("Europe/Berlin")
    };
    assert_eq!(
        avail.hours_on(date("2026-12-23")),
        vec![interval("09:00", "17:00")]
    );
    assert_eq!(avail.hours_on(date("2026-12-24")), vec![]);
    assert_eq!(
        avail.hours_on(date("2026-12-26")),
        vec![interval("08:00", "09:00"), interval("10:00", "12:00")]
    );
    assert_eq!(avail.hours_on(date("2026-12-27")), vec![]);
    let open = avail
        .open_intervals_utc(at("2026-12-23T00:00:00Z"), at("2026-12-27T00:00:00Z"))
        .unwrap();
    assert_eq!(
        open,
        vec![
            (at("2026-12-23T08:00:00Z"), at("2026-12-23T16:00:00Z")),
            (at("2026-12-25T08:00:00Z"), at("2026-12-25T16:00:00Z")),
            (at("2026-12-26T07:00:00Z"), at("2026-12-26T08:00:00Z")),
            (at("2026-12-26T09:00:00Z"), at("2026-12-26T11:00:00Z")),
        ]
    );
}

#[test]
fn normalized_sorts_everything() {
    let avail = Availability {
        weekly: vec![
            weekly(Weekday::Sun, "09:00", "10:00"),
            weekly(Weekday::Mon, "13:00", "14:00"),
            weekly(Weekday::Mon, "09:00", "10:00"),
        ],
        overrides: vec![
            DateOverride {
                date: date("2026-05-02"),
                intervals: vec![interval("13:00", "14:00"), interval("09:00", "10:00")],
            },
            DateOverride {
                date: date("2026-05-01"),
                intervals: vec![],
            },
        ],
        ..Availability::weekly("UTC", vec![])
    };
    let n = avail.normalized();
    assert_eq!(
        n.weekly,
        vec![
            weekly(Weekday::Mon, "09:00", "10:00"),
            weekly(Weekday::Mon, "13:00", "14:00"),
            weekly(Weekday::Sun, "09:00", "10:00"),
        ]
    );
    assert_eq!(n.overrides[0].date, date("2026-05-01"));
    assert_eq!(
        n.overrides[1].intervals,
        vec![interval("09:00", "10:00"), interval("13:00", "14:00")]
    );
    assert_eq!(n.normalized(), n);
}

// ---------------------------------------------------------- open hours

#[test]
fn hours_that_touch_at_midnight_merge_into_one_interval() {
    let avail = Availability::weekly(
        "Europe/Berlin",
        vec![
            weekly(Weekday::Mon, "22:00", "24:00"),
            weekly(Weekday::Tue, "00:00", "02:00"),
        ],
    );
    let open = avail
        .open_intervals_utc(at("2026-06-01T00:00:00Z"), at("2026-06-03T00:00:00Z"))
        .unwrap();
    assert_eq!(
        open,
        vec![(at("2026-06-01T20:00:00Z"), at("2026-06-02T00:00:00Z"))]
    );
    // So a call across midnight fits.
    assert_eq!(
        check_within_hours(
            Some(&avail),
            at("2026-06-01T21:30:00Z"),
            at("2026-06-01T22:30:00Z")
        ),
        Ok(())
    );
    // Clipped to the range asked for.
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-06-01T21:00:00Z"), at("2026-06-01T21:30:00Z"))
            .unwrap(),
        vec![(at("2026-06-01T21:00:00Z"), at("2026-06-01T21:30:00Z"))]
    );
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-06-02T00:00:00Z"), at("2026-06-01T00:00:00Z"))
            .unwrap(),
        vec![]
    );
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-01-01T00:00:00Z"), at("2028-01-01T00:00:00Z"))
            .unwrap_err()
            .field(),
        Some("to")
    );
}

#[test]
fn berlin_spring_forward_skips_the_gap_and_fall_back_counts_the_fold_twice() {
    let avail = every_day("Europe/Berlin", "01:00", "04:00");
    // 2027-03-28: 02:00 CET → 03:00 CEST. 01:00–04:00 lasts two hours.
    assert_eq!(
        avail
            .open_intervals_utc(at("2027-03-27T12:00:00Z"), at("2027-03-28T12:00:00Z"))
            .unwrap(),
        vec![(at("2027-03-28T00:00:00Z"), at("2027-03-28T02:00:00Z"))]
    );
    // 2026-10-25: 03:00 CEST → 02:00 CET. 01:00–04:00 lasts four hours.
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z"))
            .unwrap(),
        vec![(at("2026-10-24T23:00:00Z"), at("2026-10-25T03:00:00Z"))]
    );
    // Hours that end inside the fold: 00:00–02:30 is open in both passes
    // through 02:00–02:30, and closed in between.
    let avail = every_day("Europe/Berlin", "00:00", "02:30");
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-10-24T12:00:00Z"), at("2026-10-25T12:00:00Z"))
            .unwrap(),
        vec![
            (at("2026-10-24T22:00:00Z"), at("2026-10-25T00:30:00Z")),
            (at("2026-10-25T01:00:00Z"), at("2026-10-25T01:30:00Z")),
        ]
    );
}

#[test]
fn santiago_midnight_fold_repeats_the_end_of_saturday() {
    // 2026-04-05 00:00 -03 → 2026-04-04 23:00 -04: Saturday's last hour
    // happens twice, and Saturday 22:00–24:00 lasts three hours.
    let avail = Availability::weekly(
        "America/Santiago",
        vec![weekly(Weekday::Sat, "22:00", "24:00")],
    );
    assert_eq!(
        avail
            .open_intervals_utc(at("2026-04-04T00:00:00Z"), at("2026-04-06T00:00:00Z"))
            .unwrap(),
        vec![(at("2026-04-05T01:00:00Z"), at("2026-04-05T04:00:00Z"))]
    );
}

#[test]
fn within_hours_needs_the_whole_call_inside() {
    let avail = office("Europe/Berlin"); // Monday 2026-06-01: 07:00Z–15:00Z
    let inside = |from: &str, to: &str| check_within_hours(Some(&avail), at(from), at(to));
    assert_eq!(
        inside("2026-06-01T07:00:00Z", "2026-06-01T08:00:00Z"),
        Ok(())
    );
    assert_eq!(
        inside("2026-06-01T14:00:00Z", "2026-06-01T15:00:00Z"),
        Ok(())
    );
    assert_eq!(
        inside("2026-06-01T14:30:00Z", "2026-06-01T15:30:00Z"),
        Err(DomainError::OutsideCoachHours {
            start: at("2026-06-01T14:30:00Z"),
            end: at("2026-06-01T15:30:00Z"),
        })
    );
    assert!(inside("2026-06-01T06:59:00Z", "2026-06-01T07:59:00Z").is_err());
    assert!(inside("2026-06-06T10:00:00Z", "2026-06-06T11:00:00Z").is_err()); // Saturday
    // Two intervals with a gap between them are not one.
    let split = Availability::weekly(
        "UTC",
        vec![
            weekly(Weekday::Mon, "09:00", "12:00"),
            weekly(Weekday::Mon, "12:01", "17:00"),
        ],
    );
    assert!(
        check_within_hours(
            Some(&split),
            at("2026-06-01T11:30:00Z"),
            at("2026-06-01T12:30:00Z")
        )
        .is_err()
    );
    // No published hours: anything goes.
    assert_eq!(
        check_within_hours(None, at("2026-06-06T03:00:00Z"), at("2026-06-06T04:00:00Z")),
        Ok(())
    );
    let err = inside("2026-06-01T14:30:00Z", "2026-06-01T15:30:00Z").unwrap_err();
    assert_eq!(
        (err.kind(), err.reason()),
        (ErrorKind::FailedPrecondition, "OUTSIDE_COACH_HOURS")
    );
}

#[test]
fn daily_limit_counts_calls_by_the_coachs_local_date() {
    let avail = Availability {
        daily_max: Some(2),
        ..every_day("Asia/Kathmandu", "00:00", "24:00")
    };
    // 2026-06-15 in Kathmandu (+05:45) runs from 2026-06-14T18:15Z.
    let existing = [at("2026-06-14T18:15:00Z"), at("2026-06-15T18:00:00Z")];
    assert_eq!(
        check_daily_limit(Some(&avail), &existing, at("2026-06-15T10:00:00Z")),
        Err(DomainError::DailyLimitReached {
            date: date("2026-06-15"),
            max: 2
        })
    );
    // 18:15Z on the 15th is already the 16th in Kathmandu.
    assert_eq!(
        check_daily_limit(Some(&avail), &existing, at("2026-06-15T18:15:00Z")),
        Ok(())
    );
    assert_eq!(
        check_daily_limit(Some(&avail), &existing[..1], at("2026-06-15T10:00:00Z")),
        Ok(())
    );
    assert_eq!(
        check_daily_limit(None, &existing, at("2026-06-15T10:00:00Z")),
        Ok(())
    );
    let no_limit = every_day("Asia/Kathmandu", "00:00", "24:00");
    assert_eq!(
        check_daily_limit(Some(&no_limit), &existing, at("2026-06-15T10:00:00Z")),
        Ok(())
    );
}

// ------------------------------------------------- buffers and explain

#[test]
fn buffers_keep_calls_apart_on_both_sides() {
    let policy = Policy::default();
    let avail = Availability {
        buffer_before_minutes: 10,
        buffer_after_minutes: 15,
        ..every_day("UTC", "00:00", "24:00")
    };
    let existing = [busy("2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z")];
    let clash = |from: &str, to: &str| {
        find_coach_clash(&policy, Some(&avail), &existing, at(from), at(to)).is_some()
    };
    // After: the existing call's 15 minutes plus the new call's 10 before.
    assert!(clash("2026-06-01T11:24:00Z", "2026-06-01T12:00:00Z"));
    assert!(!clash("2026-06-01T11:25:00Z", "2026-06-01T12:00:00Z"));
    // Before: the new call's 15 after plus the existing call's 10 before.
    assert!(clash("2026-06-01T09:00:00Z", "2026-06-01T09:36:00Z"));
    assert!(!clash("2026-06-01T09:00:00Z", "2026-06-01T09:35:00Z"));
    // The policy's coach buffer adds to the after-buffer.
    let policy = Policy {
        coach_buffer: Duration::minutes(5),
        ..Policy::default()
    };
    assert!(
        find_coach_clash(
            &policy,
            Some(&avail),
            &existing,
            at("2026-06-01T11:25:00Z"),
            at("2026-06-01T12:00:00Z")
        )
        .is_some()
    );
    assert_eq!(
        coach_busy_range(
            &policy,
            Some(&avail),
            at("2026-06-01T10:00:00Z"),
            at("2026-06-01T11:00:00Z")
        ),
        (at("2026-06-01T09:50:00Z"), at("2026-06-01T11:20:00Z"))
    );
}

#[test]
fn without_hours_the_coach_clash_is_find_conflicts_coach_rule() {
    let policy = Policy {
        coach_buffer: Duration::minutes(10),
        ..Policy::default()
    };
    let slot = crate::rules::BusySlot {
        call_id: call_id(1),
        student_id: user("s-9"),
        coach_id: testing::coach(),
        start: at("2026-06-01T10:00:00Z"),
        end: at("2026-06-01T11:00:00Z"),
    };
    let existing = [CoachBusy::from(&slot)];
    for minute in 0..180 {
        let start = at("2026-06-01T09:00:00Z") + Duration::minutes(minute);
        let end = start + Duration::minutes(15);
        let ours = find_coach_clash(&policy, None, &existing, start, end).is_some();
        let theirs = find_conflict(
            std::slice::from_ref(&slot),
            &testing::student(),
            &testing::coach(),
            start,
            end,
            policy.coach_buffer,
        )
        .is_some();
        assert_eq!(ours, theirs, "{start}");
    }
}

#[test]
fn buffers_may_fall_outside_the_hours() {
    let avail = Availability {
        buffer_before_minutes: 30,
        buffer_after_minutes: 30,
        ..office("UTC")
    };
    // Monday 2026-06-01: the first and the last hour are bookable.
    let policy = Policy::default();
    for start in ["2026-06-01T09:00:00Z", "2026-06-01T16:00:00Z"] {
        assert_eq!(
            check_coach_rules(&policy, Some(&avail), &[], early(), at(start), 60),
            Ok(())
        );
    }
}

#[test]
fn explain_lists_every_reason() {
    let policy = Policy::default();
    let avail = Availability {
        buffer_after_minutes: 15,
        daily_max: Some(2),
        min_notice_minutes: Some(24 * 60),
        ..office("Europe/Berlin")
    };
    let existing = [
        busy("2026-06-01T07:00:00Z", "2026-06-01T08:00:00Z"),
        busy("2026-06-01T08:30:00Z", "2026-06-01T09:00:00Z"),
    ];
    let now = at("2026-06-01T06:00:00Z");
    // 08:05Z: clashes with the second call, is in the first's buffer, the
    // day is full, and it is less than the coach's 24 h notice ahead.
    let reasons = explain(
        &policy,
        Some(&avail),
        &existing,
        now,
        at("2026-06-01T08:05:00Z"),
        30,
    )
    .unwrap();
    assert_eq!(
        reasons,
        vec![
            Unavailability::NotEnoughNotice {
                earliest: at("2026-06-02T06:00:00Z")
            },
            Unavailability::DailyLimit {
                date: date("2026-06-01"),
                max: 2
            },
            Unavailability::Buffer {
                clashing_start: at("2026-06-01T07:00:00Z"),
                clashing_end: at("2026-06-01T08:00:00Z"),
            },
            Unavailability::Clash {
                start: at("2026-06-01T08:30:00Z"),
                end: at("2026-06-01T09:00:00Z"),
            },
        ]
    );
    assert_eq!(
        reasons
            .iter()
            .map(Unavailability::reason)
            .collect::<Vec<_>>(),
        [
            "NOT_ENOUGH_NOTICE",
            "DAILY_LIMIT_REACHED",
            "COACH_BUFFER",
            "SLOT_TAKEN"
        ]
    );
    // Off the minute, beyond the horizon, on a Sunday.
    let reasons = explain(
        &policy,
        Some(&avail),
        &[],
        now,
        at("2027-06-06T10:00:30Z"),
        30,
    )
    .unwrap();
    assert_eq!(
        reasons,
        vec![
            Unavailability::NotOnGranularity,
            Unavailability::BeyondHorizon {
                latest: at("2026-11-28T06:00:00Z")
            },
            Unavailability::OutsideHours,
        ]
    );
    // Nothing in the way.
    assert_eq!(
        explain(
            &policy,
            Some(&avail),
            &existing,
            now,
            at("2026-06-03T09:00:00Z"),
            30
        ),
        Ok(vec![])
    );
    assert_eq!(
        explain(&policy, None, &[], now, at("2026-06-03T09:00:00Z"), 0)
            .unwrap_err()
            .field(),
        Some("duration_minutes")
    );
}

#[test]
fn check_coach_rules_reports_the_first_reason_as_the_booking_error() {
    let policy = Policy::default();
    let avail = office("Europe/Berlin");
    let now = at("2026-06-01T06:00:00Z");
    assert_eq!(
        check_coach_rules(
            &policy,
            Some(&avail),
            &[],
            now,
            at("2026-06-01T16:00:00Z"),
            60
        ),
        Err(DomainError::OutsideCoachHours {
            start: at("2026-06-01T16:00:00Z"),
            end: at("2026-06-01T17:00:00Z"),
        })
    );
    let existing = [busy("2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z")];
    assert_eq!(
        check_coach_rules(
            &policy,
            Some(&avail),
            &existing,
            now,
            at("2026-06-01T10:30:00Z"),
            60
        ),
        Err(DomainError::SlotTaken {
            clashing_start: at("2026-06-01T10:00:00Z"),
            clashing_end: at("2026-06-01T11:00:00Z"),
        })
    );
    let bad_zone = Availability {
        time_zone: "Nowhere".into(),
        ..avail
    };
    assert_eq!(
        check_coach_rules(
            &policy,
            Some(&bad_zone),
            &[],
            now,
            at("2026-06-01T10:30:00Z"),
            60
        )
        .unwrap_err()
        .field(),
        Some("time_zone")
    );
}

#[test]
fn effective_notice_is_the_larger() {
    let policy = Policy::default(); // 15 minutes
    let mut avail = office("UTC");
    assert_eq!(
        effective_min_notice(&policy, Some(&avail)),
        Duration::minutes(15)
    );
    avail.min_notice_minutes = Some(5);
    assert_eq!(
        effective_min_notice(&policy, Some(&avail)),
        Duration::minutes(15)
    );
    avail.min_notice_minutes = Some(120);
    assert_eq!(
        effective_min_notice(&policy, Some(&avail)),
        Duration::minutes(120)
    );
    assert_eq!(effective_min_notice(&policy, None), Duration::minutes(15));
    assert_eq!(
        check_coach_notice(
            &policy,
            Some(&avail),
            at("2026-06-01T08:00:30Z"),
            at("2026-06-01T10:00:00Z")
        ),
        Err(DomainError::NotEnoughNotice {
            earliest: at("2026-06-01T10:01:00Z")
        })
    );
}

// ------------------------------------------------------------ find_slots

#[test]
fn without_hours_slots_follow_the_utc_grid() {
    let q = query(
        "2026-06-01T10:07:00Z",
        "2026-06-01T11:00:00Z",
        30,
        15,
        "Asia/Kathmandu",
    );
    let list = slots(None, &[], early(), &q);
    assert_eq!(
        starts(&list),
        [
            "2026-06-01T10:15Z",
            "2026-06-01T10:30Z",
            "2026-06-01T10:45Z"
        ]
    );
    assert_eq!(
        locals(&list)[0],
        ("2026-06-01T16:00", "+05:45"),
        "10:15Z is 16:00 in Kathmandu"
    );
}

#[test]
fn slots_start_each_intervals_own_grid() {
    let avail = Availability::weekly(
        "UTC",
        vec![
            weekly(Weekday::Mon, "09:10", "10:30"),
            weekly(Weekday::Mon, "10:30", "11:00"),
        ],
    );
    let q = query(
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
        30,
        30,
        "UTC",
    );
    assert_eq!(
        starts(&slots(Some(&avail), &[], early(), &q)),
        [
            "2026-06-01T09:10Z",
            "2026-06-01T09:40Z",
            // 10:10 would end at 10:40: the hours touch, so it fits.
            "2026-06-01T10:10Z",
            "2026-06-01T10:30Z",
        ]
    );
}

#[test]
fn slots_respect_notice_horizon_busy_buffers_and_the_daily_limit() {
    let avail = Availability {
        buffer_after_minutes: 10,
        daily_max: Some(2),
        ..every_day("UTC", "09:00", "13:00")
    };
    let existing = [
        busy("2026-06-01T10:00:00Z", "2026-06-01T10:45:00Z"),
        // Two calls on 2026-06-02: that day is full.
        busy("2026-06-02T20:00:00Z", "2026-06-02T21:00:00Z"),
        busy("2026-06-02T22:00:00Z", "2026-06-02T23:00:00Z"),
    ];
    let policy = Policy {
        max_horizon: Duration::days(2),
        ..Policy::default()
    };
    let now = at("2026-06-01T08:50:00Z"); // earliest 09:05
    let q = query(
        "2026-06-01T00:00:00Z",
        "2026-06-04T00:00:00Z",
        30,
        30,
        "UTC",
    );
    let got: Vec<String> = find_slots(&policy, Some(&avail), &existing, now, &q)
        .unwrap()
        .into_iter()
        .map(|s| s.start_utc.format("%m-%d %H:%M").to_string())
        .collect();
    assert_eq!(
        got,
        [
            // 09:00 lacks notice; 09:30 would end 10:00 but its 10-minute
            // buffer reaches into the 10:00 call; 10:00–10:45 is taken and
            // its buffer runs to 10:55.
            "06-01 11:00",
            "06-01 11:30",
            "06-01 12:00",
            "06-01 12:30",
            // 06-02 is full; 06-03 is cut off by the horizon at 08:50.
        ]
    );
}

#[test]
fn slots_may_be_back_to_back_with_buffers_exactly_kept() {
    let avail = Availability {
        buffer_before_minutes: 5,
        buffer_after_minutes: 10,
        ..every_day("UTC", "09:00", "13:00")
    };
    let existing = [busy("2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z")];
    let q = query("2026-06-01T09:00:00Z", "2026-06-01T13:00:00Z", 30, 5, "UTC");
    let list = slots(Some(&avail), &existing, early(), &q);
    let got = starts(&list);
    // Before: ends 09:45 + 10 after = 09:55 = 10:00 − 5 before.
    assert!(got.contains(&"2026-06-01T09:15Z"));
    assert!(!got.contains(&"2026-06-01T09:20Z"));
    // After: 11:00 + 10 after = 11:10 + 5 before = 11:15.
    assert!(!got.contains(&"2026-06-01T11:10Z"));
    assert!(got.contains(&"2026-06-01T11:15Z"));
    // Without buffers, back to back.
    let plain = every_day("UTC", "09:00", "13:00");
    let got = slots(Some(&plain), &existing, early(), &q);
    assert!(starts(&got).contains(&"2026-06-01T09:30Z"));
    assert!(starts(&got).contains(&"2026-06-01T11:00Z"));
    assert!(!starts(&got).contains(&"2026-06-01T09:35Z"));
}

#[test]
fn notice_and_horizon_edges_are_inclusive() {
    let policy = Policy {
        min_notice: Duration::minutes(15),
        max_horizon: Duration::minutes(75),
        ..Policy::default()
    };
    let now = at("2026-06-01T08:45:00Z");
    let q = query(
        "2026-06-01T08:00:00Z",
        "2026-06-01T12:00:00Z",
        30,
        30,
        "UTC",
    );
    let got: Vec<DateTime<Utc>> = find_slots(&policy, None, &[], now, &q)
        .unwrap()
        .into_iter()
        .map(|s| s.start_utc)
        .collect();
    // Earliest exactly 09:00, latest exactly 10:00.
    assert_eq!(
        got,
        [
            at("2026-06-01T09:00:00Z"),
            at("2026-06-01T09:30:00Z"),
            at("2026-06-01T10:00:00Z")
        ]
    );
    let starts_at = |now: DateTime<Utc>| -> Vec<DateTime<Utc>> {
        find_slots(&policy, None, &[], now, &q)
            .unwrap()
            .into_iter()
            .map(|s| s.start_utc)
            .collect()
    };
    // A second later the notice passes 09:00; a second earlier the
    // horizon stops short of 10:00.
    assert_eq!(
        starts_at(now + Duration::seconds(1)),
        [at("2026-06-01T09:30:00Z"), at("2026-06-01T10:00:00Z")]
    );
    assert_eq!(
        starts_at(now - Duration::seconds(1)),
        [at("2026-06-01T09:00:00Z"), at("2026-06-01T09:30:00Z")]
    );
}

#[test]
fn slot_query_limits_are_clear_errors() {
    let policy = lenient();
    let run = |q: SlotQuery| find_slots(&policy, None, &[], early(), &q);
    let base = query(
        "2026-06-01T00:00:00Z",
        "2026-06-02T00:00:00Z",
        30,
        30,
        "UTC",
    );
    for (q, field) in [
        (
            SlotQuery {
                step: Duration::zero(),
                ..base.clone()
            },
            "step",
        ),
        (
            SlotQuery {
                step: Duration::seconds(90),
                ..base.clone()
            },
            "step",
        ),
        (
            SlotQuery {
                step: Duration::days(2),
                ..base.clone()
            },
            "step",
        ),
        (
            SlotQuery {
                duration_minutes: 0,
                ..base.clone()
            },
            "duration_minutes",
        ),
        (
            SlotQuery {
                to: base.from,
                ..base.clone()
            },
            "to",
        ),
        (
            SlotQuery {
                to: base.from + Duration::days(MAX_SLOT_RANGE_DAYS) + Duration::seconds(1),
                ..base.clone()
            },
            "to",
        ),
        (
            // 3 days of every minute
            SlotQuery {
                to: base.from + Duration::days(3),
                step: Duration::minutes(1),
                ..base.clone()
            },
            "to",
        ),
    ] {
        assert_eq!(run(q).unwrap_err().field(), Some(field));
    }
    assert_eq!(
        run(SlotQuery {
            to: base.from + Duration::days(MAX_SLOT_RANGE_DAYS),
            step: Duration::hours(1),
            ..base.clone()
        })
        .unwrap()
        .len(),
        24 * 62
    );
    // Exactly MAX_SLOTS is fine.
    assert_eq!(
        run(SlotQuery {
            to: base.from + Duration::minutes(MAX_SLOTS as i64),
            step: Duration::minutes(1),
            ..base
        })
        .unwrap()
        .len(),
        MAX_SLOTS
    );
}

// ------------------------------------------------------- DST: two zones

/// The Berlin office seen from New York, one workday at a time: eight
/// hourly slots from `first_utc`, the first read in New York as
/// `first_local` with `offset`.
fn assert_berlin_day_from_new_york(day: &str, first_utc: &str, first_local: &str, offset: &str) {
    let avail = office("Europe/Berlin");
    let from = at(&format!("{day}T00:00:00Z")) - Duration::hours(3);
    let q = SlotQuery {
        from,
        to: from + Duration::hours(24),
        duration_minutes: 60,
        step: Duration::minutes(60),
        viewer_zone: zone("America/New_York"),
    };
    let list = find_slots(&lenient(), Some(&avail), &[], early(), &q).unwrap();
    let expected: Vec<DateTime<Utc>> = (0..8).map(|h| at(first_utc) + Duration::hours(h)).collect();
    assert_eq!(
        list.iter().map(|s| s.start_utc).collect::<Vec<_>>(),
        expected,
        "{day}"
    );
    assert_eq!(list[0].viewer_local, first_local, "{day}");
    assert!(list.iter().all(|s| s.viewer_offset == offset), "{day}");
}

#[test]
fn berlin_coach_new_york_student_in_march_2027() {
    // Before either change: CET (+1) and EST (−5), six hours apart.
    assert_berlin_day_from_new_york(
        "2027-03-12",
        "2027-03-12T08:00:00Z",
        "2027-03-12T03:00",
        "-05:00",
    );
    // Week of 2027-03-14: New York is on EDT (−4), Berlin still on CET:
    // the same Berlin hours are an hour later for the student.
    for day in ["2027-03-15", "2027-03-19", "2027-03-26"] {
        assert_berlin_day_from_new_york(
            day,
            &format!("{day}T08:00:00Z"),
            &format!("{day}T04:00"),
            "-04:00",
        );
    }
    // Week of 2027-03-28: Berlin on CEST (+2) too; six hours apart again.
    assert_berlin_day_from_new_york(
        "2027-03-29",
        "2027-03-29T07:00:00Z",
        "2027-03-29T03:00",
        "-04:00",
    );
}

#[test]
fn berlin_coach_new_york_student_in_autumn_2026() {
    // Friday before Berlin's change: CEST (+2) and EDT (−4).
    assert_berlin_day_from_new_york(
        "2026-10-23",
        "2026-10-23T07:00:00Z",
        "2026-10-23T03:00",
        "-04:00",
    );
    // Week of 2026-10-25: Berlin on CET (+1), New York still on EDT.
    for day in ["2026-10-26", "2026-10-30"] {
        assert_berlin_day_from_new_york(
            day,
            &format!("{day}T08:00:00Z"),
            &format!("{day}T04:00"),
            "-04:00",
        );
    }
    // Week of 2026-11-01: New York on EST (−5) too.
    assert_berlin_day_from_new_york(
        "2026-11-02",
        "2026-11-02T08:00:00Z",
        "2026-11-02T03:00",
        "-05:00",
    );
}

#[test]
fn berlin_change_days_seen_from_new_york() {
    let avail = every_day("Europe/Berlin", "00:00", "06:00");
    let q = |from: &str, to: &str| query(from, to, 60, 60, "America/New_York");
    // 2027-03-28: 02:00 does not exist in Berlin; five hourly slots.
    let list = slots(
        Some(&avail),
        &[],
        early(),
        &q("2027-03-27T12:00:00Z", "2027-03-28T12:00:00Z"),
    );
    assert_eq!(
        starts(&list),
        [
            "2027-03-27T23:00Z",
            "2027-03-28T00:00Z",
            "2027-03-28T01:00Z",
            "2027-03-28T02:00Z",
            "2027-03-28T03:00Z",
        ]
    );
    assert_eq!(locals(&list)[0], ("2027-03-27T19:00", "-04:00"));
    // 2026-10-25: 02:00 happens twice in Berlin; seven hourly slots.
    let list = slots(
        Some(&avail),
        &[],
        early(),
        &q("2026-10-24T12:00:00Z", "2026-10-25T12:00:00Z"),
    );
    assert_eq!(
        starts(&list),
        [
            "2026-10-24T22:00Z",
            "2026-10-24T23:00Z",
            "2026-10-25T00:00Z",
            "2026-10-25T01:00Z",
            "2026-10-25T02:00Z",
            "2026-10-25T03:00Z",
            "2026-10-25T04:00Z",
        ]
    );
    assert_eq!(locals(&list)[6], ("2026-10-25T00:00", "-04:00"));
}

// ---------------------------------------------- DST: odd offsets

#[test]
fn lord_howe_half_hour_fall_back() {
    // 2027-04-04 02:00 +11:00 → 01:30 +10:30: 01:30–02:00 happens twice.
    let avail = every_day("Australia/Lord_Howe", "00:00", "06:00");
    let q = query(
        "2027-04-03T12:00:00Z",
        "2027-04-04T00:00:00Z",
        30,
        30,
        "Australia/Lord_Howe",
    );
    let list = slots(Some(&avail), &[], early(), &q);
    assert_eq!(list.len(), 13);
    assert_eq!(list[0].0, "2027-04-03T13:00Z");
    assert_eq!(list[12].0, "2027-04-03T19:00Z");
    assert_eq!(
        locals(&list)[2..6],
        [
            ("2027-04-04T01:00", "+11:00"),
            ("2027-04-04T01:30", "+11:00"),
            ("2027-04-04T01:30", "+10:30"),
            ("2027-04-04T02:00", "+10:30"),
        ]
    );
    // An hourly grid keeps to the coach's wall clock: 00:00, 01:00, then
    // 02:00 an hour and a half later.
    let q = SlotQuery {
        step: Duration::minutes(60),
        viewer_zone: zone("Asia/Kathmandu"),
        ..q
    };
    let list = slots(Some(&avail), &[], early(), &q);
    assert_eq!(
        starts(&list),
        [
            "2027-04-03T13:00Z",
            "2027-04-03T14:00Z",
            "2027-04-03T15:30Z",
            "2027-04-03T16:30Z",
            "2027-04-03T17:30Z",
            "2027-04-03T18:30Z",
        ]
    );
    assert_eq!(locals(&list)[0], ("2027-04-03T18:45", "+05:45"));
    assert_eq!(
        avail
            .open_intervals_utc(at("2027-04-03T12:00:00Z"), at("2027-04-04T00:00:00Z"))
            .unwrap(),
        vec![(at("2027-04-03T13:00:00Z"), at("2027-04-03T19:30:00Z"))]
    );
}

#[test]
fn lord_howe_half_hour_spring_forward() {
    // 2026-10-04 02:00 +10:30 → 02:30 +11:00: 02:00–02:30 does not exist.
    let avail = every_day("Australia/Lord_Howe", "01:00", "04:00");
    let q = query(
        "2026-10-03T12:00:00Z",
        "2026-10-04T00:00:00Z",
        30,
        30,
        "Australia/Lord_Howe",
    );
    let list = slots(Some(&avail), &[], early(), &q);
    assert_eq!(
        starts(&list),
        [
            "2026-10-03T14:30Z",
            "2026-10-03T15:00Z",
            "2026-10-03T15:30Z",
            "2026-10-03T16:00Z",
            "2026-10-03T16:30Z",
        ]
    );
    assert_eq!(
        locals(&list),
        [
            ("2026-10-04T01:00", "+10:30"),
            ("2026-10-04T01:30", "+10:30"),
            ("2026-10-04T02:30", "+11:00"),
            ("2026-10-04T03:00", "+11:00"),
            ("2026-10-04T03:30", "+11:00"),
        ]
    );
    let q = SlotQuery {
        step: Duration::minutes(60),
        duration_minutes: 60,
        ..q
    };
    assert_eq!(
        starts(&slots(Some(&avail), &[], early(), &q)),
        ["2026-10-03T14:30Z", "2026-10-03T16:00Z"]
    );
}

#[test]
fn kathmandu_quarter_hour_offset() {
    let avail = Availability::weekly(
        "Asia/Kathmandu",
        vec![weekly(Weekday::Mon, "09:00", "12:00")],
    );
    let q = query(
        "2026-06-14T12:00:00Z",
        "2026-06-15T12:00:00Z",
        60,
        60,
        "Europe/Berlin",
    );
    let list = slots(Some(&avail), &[], early(), &q);
    assert_eq!(
        starts(&list),
        [
            "2026-06-15T03:15Z",
            "2026-06-15T04:15Z",
            "2026-06-15T05:15Z"
        ]
    );
    assert_eq!(
        locals(&list),
        [
            ("2026-06-15T05:15", "+02:00"),
            ("2026-06-15T06:15", "+02:00"),
            ("2026-06-15T07:15", "+02:00"),
        ]
    );
    let q = SlotQuery {
        viewer_zone: zone("America/New_York"),
        ..q
    };
    assert_eq!(
        locals(&slots(Some(&avail), &[], early(), &q))[0],
        ("2026-06-14T23:15", "-04:00")
    );
}

#[test]
fn a_coach_on_an_odd_offset_seen_from_another() {
    // Kathmandu hours seen from Lord Howe across its fall back.
    let avail = every_day("Asia/Kathmandu", "08:00", "10:00");
    let q = query(
        "2027-04-03T00:00:00Z",
        "2027-04-05T00:00:00Z",
        120,
        120,
        "Australia/Lord_Howe",
    );
    let list = slots(Some(&avail), &[], early(), &q);
    assert_eq!(
        list,
        [
            (
                "2027-04-03T02:15Z".to_owned(),
                "2027-04-03T13:15".to_owned(),
                "+11:00".to_owned()
            ),
            (
                "2027-04-04T02:15Z".to_owned(),
                "2027-04-04T12:45".to_owned(),
                "+10:30".to_owned()
            ),
        ]
    );
}

// ------------------------------------------------------------- events

fn coach_actor() -> Actor {
    testing::as_coach()
}

#[test]
fn availability_events_json_shapes() {
    let published: AvailabilityEvent = AvailabilityPublished {
        availability: Availability::weekly("UTC", vec![weekly(Weekday::Fri, "09:00", "10:00")]),
        by: testing::coach(),
        published_at: at("2026-06-01T10:00:00Z"),
    }
    .into();
    let value = json!({
        "type": "AvailabilityPublished",
        "availability": {
            "time_zone": "UTC",
            "weekly": [{"weekday": "Fri", "start": "09:00", "end": "10:00"}],
            "overrides": [],
            "buffer_before_minutes": 0,
            "buffer_after_minutes": 0,
            "min_notice_minutes": null,
            "daily_max": null,
        },
        "by": "coach-1",
        "published_at": "2026-06-01T10:00:00Z",
    });
    assert_eq!(serde_json::to_value(&published).unwrap(), value);
    assert_eq!(
        serde_json::from_value::<AvailabilityEvent>(value).unwrap(),
        published
    );
    let cleared: AvailabilityEvent = AvailabilityCleared {
        by: user("admin-1"),
        cleared_at: at("2026-06-02T10:00:00Z"),
    }
    .into();
    let value = json!({"type": "AvailabilityCleared", "by": "admin-1",
                       "cleared_at": "2026-06-02T10:00:00Z"});
    assert_eq!(serde_json::to_value(&cleared).unwrap(), value);
    assert_eq!(
        serde_json::from_value::<AvailabilityEvent>(value).unwrap(),
        cleared
    );
    for event in [&published, &cleared] {
        assert_eq!(
            serde_json::to_value(event).unwrap()["type"],
            event.event_type()
        );
        assert!(AvailabilityEvent::ALL_TYPES.contains(&event.event_type()));
    }
    assert_eq!(published.at(), at("2026-06-01T10:00:00Z"));
    assert_eq!(cleared.at(), at("2026-06-02T10:00:00Z"));
    assert_eq!(
        replay_availability([&published]),
        Some(Availability::weekly(
            "UTC",
            vec![weekly(Weekday::Fri, "09:00", "10:00")]
        ))
    );
    assert_eq!(replay_availability([&published, &cleared]), None);
}

#[test]
fn publishing_validates_normalizes_and_is_idempotent() {
    let now = at("2026-06-01T10:00:00Z");
    let hours = Availability::weekly(
        "Europe/Berlin",
        vec![
            weekly(Weekday::Tue, "09:00", "10:00"),
            weekly(Weekday::Mon, "09:00", "10:00"),
        ],
    );
    let publish = AvailabilityCommand::Publish {
        coach_id: testing::coach(),
        availability: hours.clone(),
        by: coach_actor(),
    };
    let events = decide_availability(None, &publish, now).unwrap();
    assert_eq!(
        events,
        vec![
            AvailabilityPublished {
                availability: hours.normalized(),
                by: testing::coach(),
                published_at: now,
            }
            .into()
        ]
    );
    let state = replay_availability(&events);
    assert_eq!(
        decide_availability(state.as_ref(), &publish, now),
        Ok(vec![])
    );
    let invalid = AvailabilityCommand::Publish {
        coach_id: testing::coach(),
        availability: Availability {
            daily_max: Some(0),
            ..hours
        },
        by: coach_actor(),
    };
    assert_eq!(
        decide_availability(state.as_ref(), &invalid, now)
            .unwrap_err()
            .field(),
        Some("daily_max")
    );
    let clear = AvailabilityCommand::Clear {
        coach_id: testing::coach(),
        by: testing::as_admin(),
    };
    let events = decide_availability(state.as_ref(), &clear, now).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(decide_availability(None, &clear, now), Ok(vec![]));
}

#[test]
fn only_the_coach_or_staff_edit_availability() {
    let coach = testing::coach();
    assert_eq!(check_may_edit_availability(&coach_actor(), &coach), Ok(()));
    assert_eq!(
        check_may_edit_availability(&testing::as_admin(), &coach),
        Ok(())
    );
    let service = Actor {
        user_id: user("svc"),
        role: ActorRole::Service,
    };
    assert_eq!(check_may_edit_availability(&service, &coach), Ok(()));
    let other_coach = Actor {
        user_id: user("coach-2"),
        role: ActorRole::Coach,
    };
    for actor in [other_coach, testing::as_student()] {
        let err = check_may_edit_availability(&actor, &coach).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    }
}

// ------------------------------------------------------------ bounds

#[test]
fn no_panic_at_the_ends_of_time() {
    let avail = Availability {
        buffer_before_minutes: u32::MAX,
        buffer_after_minutes: u32::MAX,
        min_notice_minutes: Some(u32::MAX),
        daily_max: Some(1),
        ..every_day("Pacific/Chatham", "00:00", "24:00")
    };
    let policy = Policy {
        coach_buffer: Duration::MAX,
        min_notice: Duration::MIN,
        max_horizon: Duration::MAX,
        ..Policy::default()
    };
    for (from, to) in [
        (
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MIN_UTC + Duration::days(3),
        ),
        (
            DateTime::<Utc>::MAX_UTC - Duration::days(3),
            DateTime::<Utc>::MAX_UTC,
        ),
    ] {
        let existing = [CoachBusy {
            start: from,
            end: to,
        }];
        for now in [from, to] {
            let q = SlotQuery {
                from,
                to,
                duration_minutes: 1440,
                step: Duration::minutes(1440),
                viewer_zone: zone("Pacific/Kiritimati"),
            };
            for a in [None, Some(&avail)] {
                let _ = find_slots(&policy, a, &existing, now, &q);
                let _ = explain(&policy, a, &existing, now, from, 1440);
                let _ = explain(&policy, a, &existing, now, to, 1440);
                let _ = check_within_hours(a, from, to);
                let _ = check_daily_limit(a, &[from, to], to);
            }
            let _ = avail.open_intervals_utc(from, to);
        }
    }
}

#[test]
fn thirty_days_with_500_calls_is_quick() {
    // The benchmark's shape (FindSlots over 30 days for a coach with 500
    // booked calls); the timing itself is measured by the benchmark.
    let avail = Availability {
        buffer_before_minutes: 5,
        buffer_after_minutes: 5,
        daily_max: Some(30),
        ..every_day("Europe/Berlin", "07:00", "22:00")
    };
    let from = at("2026-10-10T00:00:00Z");
    // A 30-minute call every 86 minutes, round the clock.
    let existing: Vec<CoachBusy> = (0..500)
        .map(|i| {
            let start = from + Duration::minutes(i * 86);
            CoachBusy {
                start,
                end: start + Duration::minutes(30),
            }
        })
        .collect();
    let q = SlotQuery {
        from,
        to: from + Duration::days(30),
        duration_minutes: 30,
        step: Duration::minutes(15),
        viewer_zone: zone("America/New_York"),
    };
    let list = find_slots(&lenient(), Some(&avail), &existing, early(), &q).unwrap();
    assert!(!list.is_empty());
    assert!(list.len() <= MAX_SLOTS);
    for slot in list.iter().step_by(17) {
        assert_eq!(
            explain(
                &lenient(),
                Some(&avail),
                &existing,
                early(),
                slot.start_utc,
                30
            ),
            Ok(vec![])
        );
    }
}
