//! The `local_time` target: `skileez_domain::time`, local date-time plus IANA
//! zone to an instant and back, over every zone of the database, gaps,
//! folds, unknown zones, malformed text and the whole range of dates.

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use skileez_domain::{
    Fold,
    time::{self, TimeError},
};

/// Error messages echo input; they must stay readable whatever was sent.
const MAX_MESSAGE_BYTES: usize = 512;

#[derive(Arbitrary, Debug)]
pub struct TimeInput {
    date_time: DateText,
    zone: ZoneText,
    fold: Option<bool>,
    /// Any date chrono can hold, for `resolve_naive`.
    year: i32,
    ordinal: u16,
    minute_of_day: u16,
    /// An instant for the way back, in whole minutes plus an optional rest.
    instant_minutes: i64,
    instant_rest: Option<(u8, u32)>,
}

/// Mostly well-formed local times (so the fuzzer reaches the zone rules),
/// sometimes any text at all.
#[derive(Arbitrary, Debug)]
enum DateText {
    Parts {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
    },
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum ZoneText {
    Known(u16),
    Text(String),
}

impl DateText {
    fn render(&self) -> String {
        match self {
            Self::Parts {
                year,
                month,
                day,
                hour,
                minute,
            } => format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}",
                year % 10_000,
                month % 14,
                day % 33,
                hour % 26,
                minute % 61
            ),
            Self::Text(text) => text.clone(),
        }
    }
}

impl ZoneText {
    fn render(&self) -> String {
        match self {
            Self::Known(i) => crate::any_zone(*i).name().to_owned(),
            Self::Text(text) => text.clone(),
        }
    }
}

fn fold(choice: Option<bool>) -> Option<Fold> {
    choice.map(|later| if later { Fold::Later } else { Fold::Earlier })
}

pub fn run(data: &[u8]) {
    let Ok(input) = TimeInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    resolve_text(&input);
    resolve_any_date(&input);
    show_any_instant(&input);
}

#[track_caller]
fn assert_message(error: &TimeError, input: &TimeInput) {
    let message = error.to_string();
    assert!(
        !message.is_empty() && message.len() <= MAX_MESSAGE_BYTES,
        "message of {} bytes for {input:?}: {message:.600}",
        message.len()
    );
}

/// `resolve_local` on text: each answer must agree with the zone's rules.
fn resolve_text(input: &TimeInput) {
    let text = input.date_time.render();
    let zone = input.zone.render();
    let fold = fold(input.fold);
    let result = time::resolve_local(&text, &zone, fold);
    match &result {
        Ok(at) => {
            let tz = time::parse_zone(&zone).expect("resolved in a known zone");
            assert_eq!(
                time::to_local_string(*at, tz),
                text,
                "{at} does not read back as {text} in {zone}"
            );
            let _ = time::format_local(*at, tz);
            if fold.is_none() {
                // Unambiguous: a fold changes nothing.
                for f in [Fold::Earlier, Fold::Later] {
                    assert_eq!(time::resolve_local(&text, &zone, Some(f)), result);
                }
            }
        }
        Err(error) => {
            assert_message(error, input);
            match error {
                TimeError::UnknownZone { .. } => assert!(time::parse_zone(&zone).is_err()),
                TimeError::Malformed { .. } => {
                    assert!(time::parse_zone(&zone).is_ok());
                    assert!(time::parse_local(&text).is_err());
                }
                TimeError::Nonexistent { .. } => {
                    for f in [None, Some(Fold::Earlier), Some(Fold::Later)] {
                        assert!(matches!(
                            time::resolve_local(&text, &zone, f),
                            Err(TimeError::Nonexistent { .. })
                        ));
                    }
                }
                TimeError::Ambiguous { earlier, later, .. } => {
                    assert!(fold.is_none(), "a fold was given: {input:?}");
                    assert!(earlier < later, "{earlier} !< {later}");
                    let tz = time::parse_zone(&zone).expect("known zone");
                    for (f, at) in [(Fold::Earlier, earlier), (Fold::Later, later)] {
                        assert_eq!(time::to_local_string(*at, tz), text);
                        assert_eq!(time::resolve_local(&text, &zone, Some(f)), Ok(*at));
                    }
                }
            }
        }
    }
}

/// `resolve_naive` on any date chrono can hold, in any zone.
fn resolve_any_date(input: &TimeInput) {
    let Some(date) = NaiveDate::from_yo_opt(input.year % 262_000, u32::from(input.ordinal % 367))
    else {
        return;
    };
    let minute = u32::from(input.minute_of_day % 1440);
    let Some(local) = date.and_hms_opt(minute / 60, minute % 60, 0) else {
        return;
    };
    let tz = match &input.zone {
        ZoneText::Known(i) => crate::any_zone(*i),
        ZoneText::Text(_) => chrono_tz::Tz::UTC,
    };
    match time::resolve_naive(local, tz, fold(input.fold)) {
        Ok(at) => assert_eq!(
            at.with_timezone(&tz).naive_local(),
            local,
            "{at} is not {local} in {tz}"
        ),
        Err(error) => assert_message(&error, input),
    }
}

/// The way back: any instant shown in any zone, and a whole-minute instant
/// within four-digit years read back from its local text.
fn show_any_instant(input: &TimeInput) {
    let seconds = input.instant_minutes.checked_mul(60);
    let (extra_seconds, nanos) = input
        .instant_rest
        .map_or((0, 0), |(s, n)| (i64::from(s % 60), n % 1_000_000_000));
    let Some(at) = seconds
        .and_then(|s| s.checked_add(extra_seconds))
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, nanos))
    else {
        return;
    };
    let tz = match &input.zone {
        ZoneText::Known(i) => crate::any_zone(*i),
        ZoneText::Text(_) => chrono_tz::Tz::UTC,
    };
    let text = time::to_local_string(at, tz);
    let _ = time::format_local(at, tz);

    let offset = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    let local: NaiveDateTime = at.with_timezone(&tz).naive_local();
    let whole_minute = at.second() == 0 && at.nanosecond() == 0;
    let four_digit_year = (0..=9999).contains(&local.year());
    if whole_minute && offset.local_minus_utc() % 60 == 0 && four_digit_year {
        let parsed = time::parse_local(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, local, "{at} in {tz}");
        let back: Vec<_> = [Fold::Earlier, Fold::Later]
            .into_iter()
            .map(|f| time::resolve_naive(parsed, tz, Some(f)))
            .collect();
        assert!(
            back.contains(&Ok(at)),
            "{at} shows as {text} in {tz}, which resolves to {back:?}"
        );
    }
}
