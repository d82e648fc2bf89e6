//! `find_slots` against a brute-force oracle that checks every minute of
//! the range with the individual rules, over random hours (in zones with
//! DST, half-hour shifts, midnight transitions and odd offsets), calls,
//! policies and ranges around clock changes; and `explain` against the
//! same rules.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;
use crate::policy::Policy;
use crate::rules;
use crate::testing::at;

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "UTC",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
    "America/St_Johns",
    "Africa/Casablanca",
    "Europe/Dublin",
    "Asia/Beirut",
];

/// Instants near clock changes of the zones above.
const AROUND: &[&str] = &[
    "2026-03-08T07:00:00Z", // US spring forward; Havana at midnight
    "2026-03-29T01:00:00Z", // EU spring forward; Beirut at midnight
    "2026-04-05T03:00:00Z", // Santiago midnight fold, Lord Howe, Chatham
    "2026-09-06T04:00:00Z", // Santiago midnight gap
    "2026-10-04T15:30:00Z", // Lord Howe half-hour spring forward
    "2026-10-25T01:00:00Z", // EU fall back
    "2026-11-01T06:00:00Z", // US fall back
    "2027-02-07T02:00:00Z", // Casablanca, around Ramadan
    "2027-03-14T07:00:00Z", // US spring forward 2027
    "2027-03-28T01:00:00Z", // EU spring forward 2027
    "2027-04-04T15:00:00Z", // Lord Howe half-hour fall back
    "2026-06-15T03:15:00Z", // no change anywhere near
];

fn zone(name: &str) -> Tz {
    crate::time::parse_zone(name).unwrap()
}

/// One day's intervals: cut points, every gap between two open or not, so
/// that intervals may touch.
fn day_hours() -> impl Strategy<Value = Vec<LocalInterval>> {
    let cut = prop_oneof![
        3 => (0u16..=96).prop_map(|q| q * 15),
        1 => 0u16..=1440,
    ];
    (
        proptest::collection::vec(cut, 0..7),
        proptest::collection::vec(any::<bool>(), 7),
    )
        .prop_map(|(mut cuts, open)| {
            cuts.sort_unstable();
            cuts.dedup();
            cuts.windows(2)
                .zip(open)
                .filter(|(_, open)| *open)
                .filter_map(|(pair, _)| {
                    LocalInterval::new(
                        TimeOfDay::from_minutes(pair[0])?,
                        TimeOfDay::from_minutes(pair[1])?,
                    )
                })
                .collect()
        })
}

fn availability(base: NaiveDate) -> impl Strategy<Value = Availability> {
    (
        select(ZONES),
        proptest::collection::vec(day_hours(), 7),
        proptest::collection::vec((-3i64..5, day_hours()), 0..3),
        prop_oneof![3 => Just(0u32), 1 => 0u32..30],
        prop_oneof![3 => Just(0u32), 1 => 0u32..30],
        proptest::option::of(0u32..300),
        proptest::option::of(1u32..4),
    )
        .prop_map(
            move |(zone, week, overrides, before, after, notice, daily_max)| {
                let weekly = week
                    .into_iter()
                    .zip([
                        Weekday::Mon,
                        Weekday::Tue,
                        Weekday::Wed,
                        Weekday::Thu,
                        Weekday::Fri,
                        Weekday::Sat,
                        Weekday::Sun,
                    ])
                    .flat_map(|(hours, weekday)| {
                        hours.into_iter().map(move |i| WeeklyInterval {
                            weekday,
                            start: i.start,
                            end: i.end,
                        })
                    })
                    .collect();
                let mut overrides: Vec<DateOverride> = overrides
                    .into_iter()
                    .map(|(days, intervals)| DateOverride {
                        date: base + Duration::days(days),
                        intervals,
                    })
                    .collect();
                overrides.sort_by_key(|o| o.date);
                overrides.dedup_by_key(|o| o.date);
                Availability {
                    time_zone: zone.to_owned(),
                    weekly,
                    overrides,
                    buffer_before_minutes: before,
                    buffer_after_minutes: after,
                    min_notice_minutes: notice,
                    daily_max,
                }
            },
        )
}

#[derive(Clone, Debug)]
struct Case {
    policy: Policy,
    avail: Option<Availability>,
    busy: Vec<CoachBusy>,
    now: DateTime<Utc>,
    query: SlotQuery,
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        0i64..7200,
        1i64..6 * 24 * 60,
        prop_oneof![2 => Just(0i64), 1 => 0i64..20],
        select(vec![1i64, 30, 60]),
    )
        .prop_map(
            |(notice_secs, horizon_minutes, buffer, granularity)| Policy {
                min_notice: Duration::seconds(notice_secs),
                max_horizon: Duration::minutes(horizon_minutes),
                coach_buffer: Duration::minutes(buffer),
                start_granularity: Duration::seconds(granularity),
                ..Policy::default()
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    select(AROUND).prop_flat_map(|around| {
        let base = at(around);
        (
            policy(),
            prop_oneof![1 => Just(None), 5 => availability(base.date_naive()).prop_map(Some)],
            proptest::collection::vec(
                (
                    prop_oneof![(-864i64..864).prop_map(|m| m * 5), -4320i64..4320],
                    prop_oneof![4 => Just(0i64), 1 => 0i64..60],
                    prop_oneof![(3i64..24).prop_map(|m| m * 5), 15i64..120],
                ),
                0..12,
            ),
            (
                -36 * 60i64..12 * 60,
                prop_oneof![3 => Just(0i64), 1 => 0i64..60],
            ),
            1i64..60 * 60,
            (-3 * 1440i64..360, 0i64..60),
            select(vec![15u32, 30, 45, 60, 90, 120, 1, 7]),
            select(vec![5i64, 10, 15, 20, 30, 45, 60, 90, 7, 1]),
            select(ZONES),
        )
            .prop_map(
                move |(
                    policy,
                    avail,
                    busy,
                    (from, from_secs),
                    length,
                    (now, now_secs),
                    duration,
                    step,
                    viewer,
                )| {
                    let from = base + Duration::minutes(from) + Duration::seconds(from_secs);
                    Case {
                        policy,
                        avail,
                        busy: busy
                            .into_iter()
                            .map(|(start, secs, minutes)| {
                                let start =
                                    base + Duration::minutes(start) + Duration::seconds(secs);
                                CoachBusy {
                                    start,
                                    end: start + Duration::minutes(minutes),
                                }
                            })
                            .collect(),
                        now: from + Duration::minutes(now) + Duration::seconds(now_secs),
                        query: SlotQuery {
                            from,
                            to: from + Duration::minutes(length),
                            duration_minutes: duration,
                            step: Duration::minutes(step),
                            viewer_zone: zone(viewer),
                        },
                    }
                },
            )
    })
}

/// The coach's local reading of `t` (whole-minute offsets only here).
fn local(avail: Option<&Availability>, t: DateTime<Utc>) -> chrono::NaiveDateTime {
    let tz = avail.map_or(Tz::UTC, |a| zone(&a.time_zone));
    t.with_timezone(&tz).naive_local()
}

/// Independent of the implementation: open iff the local reading lies in
/// one of the local date's intervals.
fn open_at(avail: Option<&Availability>, t: DateTime<Utc>) -> bool {
    let Some(a) = avail else { return true };
    let l = local(avail, t);
    let secs = l.time().num_seconds_from_midnight();
    a.hours_on(l.date()).iter().any(|i| {
        u32::from(i.start.minutes()) * 60 <= secs && secs < u32::from(i.end.minutes()) * 60
    })
}

/// On the slot grid: the local reading is `s + k·step` within an interval
/// `[s, e)` of its date (UTC all day when no hours are published).
fn on_grid(avail: Option<&Availability>, t: DateTime<Utc>, step: u32) -> bool {
    let l = local(avail, t);
    if l.second() != 0 {
        return false;
    }
    let minute = l.hour() * 60 + l.minute();
    let hours = match avail {
        Some(a) => a.hours_on(l.date()),
        None => vec![LocalInterval {
            start: TimeOfDay::MIDNIGHT,
            end: TimeOfDay::END_OF_DAY,
        }],
    };
    hours.iter().any(|i| {
        let (s, e) = (u32::from(i.start.minutes()), u32::from(i.end.minutes()));
        s <= minute && minute < e && (minute - s).is_multiple_of(step)
    })
}

/// Every minute of the range, checked with the individual rules.
fn oracle(c: &Case) -> Vec<DateTime<Utc>> {
    let avail = c.avail.as_ref();
    let q = &c.query;
    let step = u32::try_from(q.step.num_minutes()).unwrap();
    let d = i64::from(q.duration_minutes);
    let effective = Policy {
        min_notice: effective_min_notice(&c.policy, avail),
        ..c.policy.clone()
    };
    let starts: Vec<DateTime<Utc>> = c.busy.iter().map(|b| b.start).collect();
    // Open minutes from the first candidate to the last call's end.
    let first = crate::time::ceil_minute(q.from);
    let minutes = (q.to - first).num_minutes() + d + 1;
    let open: Vec<bool> = (0..minutes)
        .map(|m| open_at(avail, first + Duration::minutes(m)))
        .collect();
    let mut out = Vec::new();
    let mut m = 0;
    while first + Duration::minutes(m) < q.to {
        let t = first + Duration::minutes(m);
        let end = t + Duration::minutes(d);
        let ok = on_grid(avail, t, step)
            && rules::check_booking_time(&effective, c.now, t).is_ok()
            && (m..m + d).all(|k| open[usize::try_from(k).unwrap()])
            && find_coach_clash(&c.policy, avail, &c.busy, t, end).is_none()
            && check_daily_limit(avail, &starts, t).is_ok();
        if ok {
            out.push(t);
        }
        m += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn find_slots_is_the_brute_force_answer(c in case()) {
        let avail = c.avail.as_ref();
        if let Some(a) = avail {
            prop_assert_eq!(a.validate(), Ok(()));
        }
        let expected = oracle(&c);
        let got = find_slots(&c.policy, avail, &c.busy, c.now, &c.query);
        if expected.len() > MAX_SLOTS {
            prop_assert_eq!(got.unwrap_err().field(), Some("to"));
            return Ok(());
        }
        let got = got.unwrap();
        let got_starts: Vec<DateTime<Utc>> = got.iter().map(|s| s.start_utc).collect();
        prop_assert_eq!(&got_starts, &expected);
        for slot in &got {
            let viewer = slot.start_utc.with_timezone(&c.query.viewer_zone);
            prop_assert_eq!(
                &slot.viewer_local,
                &viewer.naive_local().format("%Y-%m-%dT%H:%M").to_string()
            );
            prop_assert_eq!(&slot.viewer_offset, &viewer.offset().fix().to_string());
        }
    }

    #[test]
    fn explain_agrees_with_the_rules(c in case(), at_minute in 0i64..3000, secs in prop_oneof![3 => Just(0i64), 1 => 0i64..60]) {
        let avail = c.avail.as_ref();
        let start = c.query.from + Duration::minutes(at_minute) + Duration::seconds(secs);
        let d = c.query.duration_minutes;
        let end = start + Duration::minutes(i64::from(d));
        let reasons = explain(&c.policy, avail, &c.busy, c.now, start, d).unwrap();
        let starts: Vec<DateTime<Utc>> = c.busy.iter().map(|b| b.start).collect();
        let rules_pass = rules::check_whole_minute(&c.policy, start).is_ok()
            && check_coach_notice(&c.policy, avail, c.now, start).is_ok()
            && rules::check_horizon(&c.policy, c.now, start).is_ok()
            && check_within_hours(avail, start, end).is_ok()
            && check_daily_limit(avail, &starts, start).is_ok()
            && check_coach_free(&c.policy, avail, &c.busy, start, end).is_ok();
        prop_assert_eq!(reasons.is_empty(), rules_pass, "{:?}", reasons);
        prop_assert_eq!(
            check_coach_rules(&c.policy, avail, &c.busy, c.now, start, d).is_ok(),
            rules_pass
        );
        // The hours rule is the minute-by-minute definition.
        if start.second() == 0 {
            let by_minute = (0..i64::from(d)).all(|k| open_at(avail, start + Duration::minutes(k)));
            prop_assert_eq!(check_within_hours(avail, start, end).is_ok(), by_minute);
        }
        // Every clash is one the rules see, named by its call.
        for reason in &reasons {
            if let Unavailability::Clash { start: s, end: e }
            | Unavailability::Buffer { clashing_start: s, clashing_end: e } = reason
            {
                let named = CoachBusy { start: *s, end: *e };
                prop_assert!(c.busy.contains(&named));
            }
        }
    }

    #[test]
    fn open_intervals_are_sorted_disjoint_and_exact(c in case(), hours in 1i64..96) {
        let Some(avail) = c.avail.as_ref() else { return Ok(()) };
        let from = c.query.from;
        let to = from + Duration::hours(hours);
        let open = avail.open_intervals_utc(from, to).unwrap();
        for pair in open.windows(2) {
            prop_assert!(pair[0].1 < pair[1].0, "{:?}", pair);
        }
        for &(s, e) in &open {
            prop_assert!(from <= s && s < e && e <= to);
        }
        // Every whole minute agrees with the local-reading definition.
        let mut t = crate::time::ceil_minute(from);
        while t < to {
            let inside = open.iter().any(|&(s, e)| s <= t && t < e);
            prop_assert_eq!(inside, open_at(Some(avail), t), "{}", t);
            t += Duration::minutes(1);
        }
    }

    #[test]
    fn availability_round_trips_through_json_and_normalizes(c in case()) {
        let Some(avail) = c.avail else { return Ok(()) };
        let json = serde_json::to_string(&avail).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Availability>(&json).unwrap(), &avail);
        let n = avail.normalized();
        prop_assert_eq!(n.validate(), Ok(()));
        prop_assert_eq!(&n.normalized(), &n);
        // Order does not change what is open.
        let from = c.query.from;
        prop_assert_eq!(
            n.open_intervals_utc(from, from + Duration::days(3)).unwrap(),
            avail.open_intervals_utc(from, from + Duration::days(3)).unwrap()
        );
    }

    /// Unvalidated hours (overlapping, reversed, duplicate dates, any zone
    /// text), wild policies and instants: never a panic.
    #[test]
    fn nothing_panics(
        zone in prop_oneof![select(ZONES).prop_map(str::to_owned), "\\PC{0,12}"],
        weekly in proptest::collection::vec((0u8..7, 0u16..=1440, 0u16..=1440), 0..30),
        overrides in proptest::collection::vec((-5i64..5, 0u16..=1440, 0u16..=1440), 0..6),
        buffers in (any::<u32>(), any::<u32>(), proptest::option::of(any::<u32>()), proptest::option::of(any::<u32>())),
        secs in (any::<i32>(), any::<i32>(), any::<i32>()),
        length in prop_oneof![0i64..100_000_000, 0i64..200_000],
        duration in any::<u32>(),
        step in any::<i64>(),
        policy_secs in (any::<i64>(), any::<i64>(), any::<i64>()),
    ) {
        let base = at("2026-06-01T00:00:00Z");
        let tod = |m: u16| TimeOfDay::from_minutes(m).unwrap();
        let avail = Availability {
            time_zone: zone,
            weekly: weekly
                .into_iter()
                .map(|(d, s, e)| WeeklyInterval {
                    weekday: Weekday::try_from(d).unwrap(),
                    start: tod(s),
                    end: tod(e),
                })
                .collect(),
            overrides: overrides
                .into_iter()
                .map(|(d, s, e)| DateOverride {
                    date: base.date_naive() + Duration::days(d),
                    intervals: vec![LocalInterval { start: tod(s), end: tod(e) }],
                })
                .collect(),
            buffer_before_minutes: buffers.0,
            buffer_after_minutes: buffers.1,
            min_notice_minutes: buffers.2,
            daily_max: buffers.3,
        };
        let _ = avail.validate();
        let secs_or_zero = |s: i64| Duration::try_seconds(s).unwrap_or(Duration::zero());
        let policy = Policy {
            min_notice: secs_or_zero(policy_secs.0 / 1000),
            max_horizon: secs_or_zero(policy_secs.1 / 1000),
            coach_buffer: secs_or_zero(policy_secs.2 / 1000),
            ..Policy::default()
        };
        let from = base + Duration::seconds(i64::from(secs.0) * 1000);
        let now = base + Duration::seconds(i64::from(secs.1) * 1000);
        let other = base + Duration::seconds(i64::from(secs.2) * 1000);
        let busy = [CoachBusy { start: other, end: from }, CoachBusy { start: from, end: other }];
        let q = SlotQuery {
            from,
            to: from + Duration::seconds(length),
            duration_minutes: duration,
            step: secs_or_zero(step / 1000),
            viewer_zone: zone_or_utc(&avail.time_zone),
        };
        for a in [None, Some(&avail)] {
            let _ = find_slots(&policy, a, &busy, now, &q);
            let _ = find_slots(&policy, a, &busy, now, &SlotQuery { step: Duration::minutes(15), duration_minutes: 30, ..q.clone() });
            let _ = explain(&policy, a, &busy, now, other, duration);
            let _ = check_within_hours(a, from, other);
            let _ = check_daily_limit(a, &[from, other], now);
        }
        let _ = avail.open_intervals_utc(from, other);
        let _ = avail.hours_on(other.date_naive());
    }
}

fn zone_or_utc(name: &str) -> Tz {
    crate::time::parse_zone(name).unwrap_or(Tz::UTC)
}

#[test]
fn oracle_sanity_on_a_known_case() {
    // The oracle itself, on the Lord Howe fold: 13 half-hour slots.
    let avail = Availability::weekly(
        "Australia/Lord_Howe",
        vec![WeeklyInterval {
            weekday: Weekday::Sun,
            start: TimeOfDay::MIDNIGHT,
            end: TimeOfDay::from_hm(6, 0).unwrap(),
        }],
    );
    let c = Case {
        policy: Policy {
            max_horizon: Duration::days(3650),
            ..Policy::default()
        },
        avail: Some(avail),
        busy: vec![],
        now: at("2026-01-01T00:00:00Z"),
        query: SlotQuery {
            from: at("2027-04-03T12:00:00Z"),
            to: at("2027-04-04T00:00:00Z"),
            duration_minutes: 30,
            step: Duration::minutes(30),
            viewer_zone: Tz::UTC,
        },
    };
    let expected = oracle(&c);
    assert_eq!(expected.len(), 13);
    assert_eq!(expected[4], at("2027-04-03T15:00:00Z"));
    assert_eq!(expected[0].date_naive().weekday(), Weekday::Sat);
}
