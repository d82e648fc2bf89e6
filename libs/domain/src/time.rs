//! Local wall-clock time ↔ UTC instants, at the edges only.
//!
//! Inside the system every instant is UTC. A request may instead name a local
//! date-time and an IANA zone; [`resolve_local`] turns that into one instant or
//! a precise error: a time inside a spring-forward gap does not exist, and one
//! inside a fall-back fold exists twice, so the caller must say which (with
//! [`Fold`]). Guessing either would book a call an hour away from what a
//! person meant. [`format_local`] goes the other way for messages.
//!
//! The zone rules come from the tz database compiled into `chrono-tz`;
//! [`TZDB_VERSION`] is recorded on every booking so that a later rule change
//! can be traced back.
//!
//! This module also holds the saturating instant arithmetic the rules use:
//! `DateTime + Duration` panics on overflow, and stored events and policies
//! are input, so nothing here may overflow.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the IANA tz database compiled in (e.g. `2025b`).
pub const TZDB_VERSION: &str = chrono_tz::IANA_TZDB_VERSION;

/// Which of the two instants an ambiguous local time (a fall-back fold) means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fold {
    /// The first occurrence (still on summer time, the larger UTC offset).
    Earlier,
    /// The second occurrence (after the clocks went back).
    Later,
}

/// Why a local time could not be turned into an instant. Every message says
/// what to send instead.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error(
        "`{value}` is not a local date-time of the form YYYY-MM-DDTHH:MM \
         (e.g. 2026-03-08T10:00: 24-hour clock, no seconds, no offset)"
    )]
    Malformed { value: String },

    #[error(
        "`{zone}` is not a known IANA time zone (tzdb {TZDB_VERSION}); \
         send a name such as Europe/Berlin or America/New_York"
    )]
    UnknownZone { zone: String },

    #[error(
        "{local} does not exist in {zone}: the clocks skip it when daylight-saving \
         time starts; send a time before or after the gap, or a UTC instant"
    )]
    Nonexistent { local: String, zone: String },

    #[error(
        "{local} happens twice in {zone} (at {earlier} and at {later}) because the \
         clocks go back; say which one with fold EARLIER or LATER, or send a UTC instant"
    )]
    Ambiguous {
        local: String,
        zone: String,
        earlier: DateTime<Utc>,
        later: DateTime<Utc>,
    },
}

impl TimeError {
    /// The machine-readable reason (`google.rpc.ErrorInfo.reason`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "MALFORMED_LOCAL_TIME",
            Self::UnknownZone { .. } => "UNKNOWN_TIME_ZONE",
            Self::Nonexistent { .. } => "NONEXISTENT_LOCAL_TIME",
            Self::Ambiguous { .. } => "AMBIGUOUS_LOCAL_TIME",
        }
    }
}

/// Looks up an IANA zone name, exactly as spelled in the tz database
/// (case matters: `Europe/Berlin`, not `europe/berlin`).
pub fn parse_zone(zone: &str) -> Result<Tz, TimeError> {
    zone.parse::<Tz>().map_err(|_| TimeError::UnknownZone {
        zone: truncate(zone),
    })
}

/// Parses exactly `YYYY-MM-DDTHH:MM`: the form a date and a time picker
/// produce. Anything looser (seconds, offsets, a space, one-digit hours)
/// is rejected rather than guessed at.
pub fn parse_local(date_time: &str) -> Result<NaiveDateTime, TimeError> {
    let malformed = || TimeError::Malformed {
        value: truncate(date_time),
    };
    let b = date_time.as_bytes();
    if b.len() != 16 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(malformed());
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let digits = b.get(from..to)?;
        digits.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) =
        (num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16))
    else {
        return Err(malformed());
    };
    let year = i32::try_from(year).map_err(|_| malformed())?;
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(malformed)?;
    let time = NaiveTime::from_hms_opt(hour, minute, 0).ok_or_else(malformed)?;
    Ok(NaiveDateTime::new(date, time))
}

/// Resolves `date_time` (exactly `YYYY-MM-DDTHH:MM`) in the IANA `zone`.
///
/// A time in a spring-forward gap is [`TimeError::Nonexistent`]; one in a
/// fall-back fold is [`TimeError::Ambiguous`] (carrying both candidates)
/// unless `fold` picks one. `fold` is ignored when the time is unambiguous,
/// so clients may always send it.
pub fn resolve_local(
    date_time: &str,
    zone: &str,
    fold: Option<Fold>,
) -> Result<DateTime<Utc>, TimeError> {
    let tz = parse_zone(zone)?;
    let local = parse_local(date_time)?;
    resolve_naive(local, tz, fold)
}

/// [`resolve_local`] for an already parsed local time and zone.
pub fn resolve_naive(
    local: NaiveDateTime,
    tz: Tz,
    fold: Option<Fold>,
) -> Result<DateTime<Utc>, TimeError> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
            // Order by instant rather than trusting the library's order.
            let (earlier, later) = if a <= b { (a, b) } else { (b, a) };
            match fold {
                Some(Fold::Earlier) => Ok(earlier),
                Some(Fold::Later) => Ok(later),
                None => Err(TimeError::Ambiguous {
                    local: format_naive(local),
                    zone: tz.name().to_owned(),
                    earlier,
                    later,
                }),
            }
        }
        LocalResult::None => Err(TimeError::Nonexistent {
            local: format_naive(local),
            zone: tz.name().to_owned(),
        }),
    }
}

/// The local wall-clock reading of `at` in `zone`, in the `YYYY-MM-DDTHH:MM`
/// form [`parse_local`] accepts (seconds dropped).
#[must_use]
pub fn to_local_string(at: DateTime<Utc>, zone: Tz) -> String {
    format_naive(at.with_timezone(&zone).naive_local())
}

/// `2026-03-08 10:00 EDT`: an instant as a person in `zone` reads it.
/// Zones without a customary abbreviation show their offset (`+0545`).
#[must_use]
pub fn format_local(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M %Z")
        .to_string()
}

fn format_naive(local: NaiveDateTime) -> String {
    local.format("%Y-%m-%dT%H:%M").to_string()
}

/// Error values echo input; cap what hostile input can put in them.
fn truncate(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let mut out: String = value.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

/// `at + d`, clamped to the representable range instead of panicking.
pub(crate) fn add(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    at.checked_add_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// `at - d`, clamped to the representable range instead of panicking.
pub(crate) fn sub(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    at.checked_sub_signed(d).unwrap_or(if d < Duration::zero() {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    })
}

/// A length in whole minutes as a `Duration` (any `u32` fits).
pub(crate) fn minutes(n: u32) -> Duration {
    Duration::try_minutes(i64::from(n)).unwrap_or(Duration::MAX)
}

/// The first whole minute at or after `at`.
#[cfg(test)]
pub(crate) fn ceil_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    ceil_to(at, 60)
}

/// The last whole minute at or before `at`.
#[cfg(test)]
pub(crate) fn floor_minute(at: DateTime<Utc>) -> DateTime<Utc> {
    floor_to(at, 60)
}

/// Whether `at` falls on a whole multiple of `step_secs` seconds.
pub(crate) fn is_on_step(at: DateTime<Utc>, step_secs: i64) -> bool {
    at.nanosecond() == 0 && at.timestamp().rem_euclid(step_secs.max(1)) == 0
}

/// The last multiple of `step_secs` seconds at or before `at`.
pub(crate) fn floor_to(at: DateTime<Utc>, step_secs: i64) -> DateTime<Utc> {
    let secs = at.timestamp();
    let floored = secs - secs.rem_euclid(step_secs.max(1));
    DateTime::from_timestamp(floored, 0).unwrap_or(at)
}

/// The first multiple of `step_secs` seconds at or after `at`.
pub(crate) fn ceil_to(at: DateTime<Utc>, step_secs: i64) -> DateTime<Utc> {
    if is_on_step(at, step_secs) {
        return at;
    }
    let floor = floor_to(at, step_secs);
    floor
        .checked_add_signed(Duration::seconds(step_secs.max(1)))
        .unwrap_or(floor)
}

/// Serde for the instants of stored call state, which ListCalls reads back
/// twenty at a time: chrono writes them in one shape (RFC 3339 in UTC,
/// `2026-03-08T10:00:00Z`, with a fraction when there is one), and reading
/// exactly that shape is several times cheaper than chrono's general
/// RFC 3339 parser. Anything else still goes through chrono, so whatever
/// chrono read before reads the same.
pub(crate) mod stored {
    use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
    use serde::{Deserializer, de};

    pub(crate) fn instant<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(InstantVisitor)
    }

    pub(crate) fn optional_instant<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct InstantVisitor;

    impl de::Visitor<'_> for InstantVisitor {
        type Value = DateTime<Utc>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
            match parse_utc(text) {
                Some(at) => Ok(at),
                None => text
                    .parse::<DateTime<FixedOffset>>()
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(E::custom),
            }
        }
    }

    struct OptionVisitor;

    impl<'de> de::Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 date and time or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            instant(d).map(Some)
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS[.F{1,9}]Z`, the shape chrono writes an instant
    /// in UTC in; `None` for anything else (chrono then decides).
    pub(crate) fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
        let b = text.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[b.len() - 1] != b'Z'
        {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                let n = num(20, b.len() - 1)?;
                let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
                n * scale
            }
            _ => return None,
        };
        let year = i32::try_from(num(0, 4)?).ok()?;
        NaiveDate::from_ymd_opt(year, num(5, 7)?, num(8, 10)?)?
            .and_hms_nano_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?, nanos)
            .map(|at| at.and_utc())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn unknown_zones_are_rejected() {
        for zone in ["Mars/Olympus_Mons", "", "europe/berlin", "EDT"] {
            assert_eq!(
                resolve_local("2026-06-01T10:00", zone, None),
                Err(TimeError::UnknownZone {
                    zone: zone.to_owned()
                }),
            );
        }
    }

    #[test]
    fn spring_forward_gap_does_not_exist() {
        let err = resolve_local("2026-03-08T02:30", "America/New_York", None).unwrap_err();
        assert_eq!(
            err,
            TimeError::Nonexistent {
                local: "2026-03-08T02:30".into(),
                zone: "America/New_York".into()
            }
        );
        assert_eq!(err.reason(), "NONEXISTENT_LOCAL_TIME");
        // A fold choice does not make a nonexistent time exist.
        assert!(resolve_local("2026-03-08T02:30", "America/New_York", Some(Fold::Later)).is_err());
    }

    #[test]
    fn fall_back_fold_is_ambiguous_unless_a_fold_is_given() {
        let err = resolve_local("2026-11-01T01:30", "America/New_York", None).unwrap_err();
        assert_eq!(
            err,
            TimeError::Ambiguous {
                local: "2026-11-01T01:30".into(),
                zone: "America/New_York".into(),
                earlier: utc("2026-11-01T05:30:00Z"),
                later: utc("2026-11-01T06:30:00Z"),
            }
        );
        assert_eq!(
            resolve_local("2026-11-01T01:30", "America/New_York", Some(Fold::Earlier)),
            Ok(utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            resolve_local("2026-11-01T01:30", "America/New_York", Some(Fold::Later)),
            Ok(utc("2026-11-01T06:30:00Z"))
        );
    }

    #[test]
    fn fold_is_ignored_when_unambiguous() {
        for fold in [None, Some(Fold::Earlier), Some(Fold::Later)] {
            assert_eq!(
                resolve_local("2026-07-01T09:00", "America/New_York", fold),
                Ok(utc("2026-07-01T13:00:00Z"))
            );
        }
    }

    #[test]
    fn malformed_local_times_are_rejected() {
        for bad in [
            "2026-11-01 01:30",
            "2026-11-01T1:30",
            "2026-11-01T01:30:00",
            "",
            "2026-11-01T01:30Z",
            "2026-02-30T10:00",
            "2026-11-01T24:00",
            "2026-13-01T10:00",
            "+026-11-01T01:30",
            "2026-1a-01T01:30",
            "２０２６-11-01T01:30",
        ] {
            let err = resolve_local(bad, "UTC", None).unwrap_err();
            assert_eq!(
                err,
                TimeError::Malformed {
                    value: bad.to_owned()
                },
                "{bad:?}"
            );
            assert_eq!(err.reason(), "MALFORMED_LOCAL_TIME");
        }
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // +11:00 in southern summer, +10:30 in winter; the clocks go back
        // 30 minutes at 02:00 on 2026-04-05 and forward at 02:00 on 2026-10-04.
        let zone = "Australia/Lord_Howe";
        assert_eq!(
            resolve_local("2026-01-15T10:00", zone, None),
            Ok(utc("2026-01-14T23:00:00Z"))
        );
        assert_eq!(
            resolve_local("2026-07-15T10:00", zone, None),
            Ok(utc("2026-07-14T23:30:00Z"))
        );
        assert!(matches!(
            resolve_local("2026-10-04T02:15", zone, None),
            Err(TimeError::Nonexistent { .. })
        ));
        assert_eq!(
            resolve_local("2026-04-05T01:45", zone, None),
            Err(TimeError::Ambiguous {
                local: "2026-04-05T01:45".into(),
                zone: zone.into(),
                earlier: utc("2026-04-04T14:45:00Z"),
                later: utc("2026-04-04T15:15:00Z"),
            })
        );
        let tz = parse_zone(zone).unwrap();
        for local in ["2026-01-15T10:00", "2026-07-15T10:00", "2026-10-04T02:30"] {
            let at = resolve_local(local, zone, None).unwrap();
            assert_eq!(to_local_string(at, tz), local);
        }
    }

    #[test]
    fn kathmandu_quarter_hour_offset() {
        let zone = "Asia/Kathmandu";
        let at = resolve_local("2026-06-15T09:00", zone, None).unwrap();
        assert_eq!(at, utc("2026-06-15T03:15:00Z"));
        let tz = parse_zone(zone).unwrap();
        assert_eq!(to_local_string(at, tz), "2026-06-15T09:00");
        assert_eq!(format_local(at, tz), "2026-06-15 09:00 +0545");
    }

    #[test]
    fn format_local_uses_the_zone_abbreviation() {
        let ny = parse_zone("America/New_York").unwrap();
        assert_eq!(
            format_local(utc("2026-03-08T14:00:00Z"), ny),
            "2026-03-08 10:00 EDT"
        );
        assert_eq!(
            format_local(utc("2026-03-07T15:00:00Z"), ny),
            "2026-03-07 10:00 EST"
        );
    }

    #[test]
    fn messages_say_what_to_send_instead() {
        let msg = resolve_local("2026-11-01T01:30", "America/New_York", None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("EARLIER or LATER"), "{msg}");
        let msg = parse_zone("Nowhere").unwrap_err().to_string();
        assert!(msg.contains("Europe/Berlin"), "{msg}");
        let long = "x".repeat(1000);
        let msg = parse_zone(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "hostile input is truncated");
    }

    #[test]
    fn tzdb_version_is_recorded() {
        assert_eq!(TZDB_VERSION, chrono_tz::IANA_TZDB_VERSION);
        assert!(!TZDB_VERSION.is_empty());
    }

    #[test]
    fn saturating_arithmetic_clamps() {
        let max = DateTime::<Utc>::MAX_UTC;
        let min = DateTime::<Utc>::MIN_UTC;
        assert_eq!(add(max, Duration::minutes(1)), max);
        assert_eq!(add(min, Duration::minutes(-1)), min);
        assert_eq!(sub(min, Duration::minutes(1)), min);
        assert_eq!(sub(max, Duration::minutes(-1)), max);
        assert_eq!(add(max, Duration::MAX), max);
        assert_eq!(sub(min, Duration::MAX), min);
        assert_eq!(ceil_minute(max), floor_minute(max));
        assert_eq!(
            ceil_minute(utc("2026-01-01T10:00:00.5Z")),
            utc("2026-01-01T10:01:00Z")
        );
        assert_eq!(
            floor_minute(utc("1969-12-31T23:59:30Z")),
            utc("1969-12-31T23:59:00Z")
        );
    }

    const ZONES: [&str; 6] = [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "Pacific/Chatham",
        "UTC",
    ];

    proptest! {
        /// Every local time either resolves to an instant that reads back as
        /// the same local time, or is reported as nonexistent.
        #[test]
        fn local_times_round_trip(
            zone in proptest::sample::select(&ZONES[..]),
            day in 0i64..730,
            minute in 0i64..(24 * 60),
            fold in proptest::option::of(prop_oneof![Just(Fold::Earlier), Just(Fold::Later)]),
        ) {
            let local = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
                + Duration::days(day) + Duration::minutes(minute);
            let text = format_naive(local);
            let tz = parse_zone(zone).unwrap();
            match resolve_local(&text, zone, fold) {
                Ok(at) => prop_assert_eq!(to_local_string(at, tz), text),
                Err(TimeError::Nonexistent { .. }) => {}
                Err(TimeError::Ambiguous { earlier, later, .. }) => {
                    prop_assert!(fold.is_none());
                    prop_assert!(earlier < later);
                    prop_assert_eq!(to_local_string(earlier, tz), text.clone());
                    prop_assert_eq!(to_local_string(later, tz), text);
                }
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }

        #[test]
        fn parse_local_never_panics(s in "\\PC{0,20}") {
            let _ = parse_local(&s);
        }
    }

    fn chrono_reads(text: &str) -> Option<DateTime<Utc>> {
        serde_json::from_value::<DateTime<Utc>>(serde_json::Value::String(text.to_owned())).ok()
    }

    fn stored_reads(text: &str) -> Option<DateTime<Utc>> {
        stored::instant(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text))
            .ok()
    }

    #[test]
    fn stored_instants_read_what_chrono_reads() {
        for text in [
            "2026-03-08T10:00:00Z",
            "2026-03-08T10:00:00.5Z",
            "2026-03-08T10:00:00.123456789Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            // Not the stored shape: chrono decides.
            "2026-03-08T11:00:00+01:00",
            "2026-03-08t10:00:00z",
            "2026-03-08 10:00:00Z",
            "2016-12-31T23:59:60Z",
            // Not instants at all.
            "2026-02-30T10:00:00Z",
            "2026-03-08T24:00:00Z",
            "2026-03-08T10:00:00.Z",
            "2026-03-08T10:00:00.1234567890Z",
            "2026-03-08T10:00:0xZ",
            "+2026-03-08T10:00:00Z",
            "",
        ] {
            assert_eq!(stored_reads(text), chrono_reads(text), "{text:?}");
        }
        assert!(stored::parse_utc("2026-03-08T11:00:00+01:00").is_none());
    }

    proptest! {
        #[test]
        fn stored_instants_read_back_as_written(
            secs in -62_135_596_800_i64..253_402_300_799,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000)],
        ) {
            let at = DateTime::from_timestamp(secs, nanos).unwrap();
            let json = serde_json::to_string(&at).unwrap();
            let text: String = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(stored::parse_utc(&text), Some(at));
        }
    }
}
