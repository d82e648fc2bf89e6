//! Validation of request fields into domain values. Every RPC checks its whole
//! input before acting and reports all bad fields at once, as
//! google.rpc.BadRequest field violations.

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use skileez_domain::{
    Availability, CallId, ContractId, DateOverride, DomainError, Fold, LocalInterval,
    RequestedStart, TimeOfDay, UserId, WeeklyInterval, time,
};
use skileez_proto::scheduling as pb;

use crate::error::{ApiError, Violation};

pub const MAX_REQUEST_ID_LEN: usize = 128;
pub const MAX_NOTE_CHARS: usize = 1000;
pub const MAX_REASON_CHARS: usize = 500;

/// The most violations one error lists. Past that they mostly repeat one
/// mistake, and a list that grew with the request (one violation per entry
/// of a repeated field) would outgrow what a client accepts in trailers
/// (16 KiB by default), so the client would see a protocol error instead.
pub const MAX_VIOLATIONS: usize = 10;

/// Collects field violations so a caller learns about every bad field at
/// once (up to [`MAX_VIOLATIONS`], then how many more there are).
#[derive(Debug, Default)]
pub struct Checks {
    violations: Vec<Violation>,
    /// The first violation not listed, and how many were not.
    unlisted: Option<(Violation, usize)>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the value, or records the violation and returns `None`.
    pub fn take<T>(&mut self, result: Result<T, Violation>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(violation) => {
                self.push(violation);
                None
            }
        }
    }

    pub fn push(&mut self, violation: Violation) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(violation);
        } else {
            self.unlisted.get_or_insert((violation, 0)).1 += 1;
        }
    }

    pub fn finish(mut self) -> Result<(), ApiError> {
        if let Some((first, count)) = self.unlisted {
            self.violations.push(Violation::new(
                first.field,
                format!(
                    "and {count} more problems from this field on, not listed: fix the ones \
                     above and send again"
                ),
            ));
        }
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidArgument(self.violations))
        }
    }
}

pub fn call_id(field: &str, value: &str) -> Result<CallId, Violation> {
    if value.is_empty() {
        return Err(Violation::new(field, "required: the call's id (a UUID)"));
    }
    uuid::Uuid::parse_str(value).map(CallId).map_err(|_| {
        Violation::new(
            field,
            format!("{:?} is not a call id: expected a UUID", truncated(value)),
        )
    })
}

pub fn user_id(field: &str, value: &str) -> Result<UserId, Violation> {
    if value.is_empty() {
        return Err(Violation::new(field, "required: a user id"));
    }
    UserId::parse(value).map_err(|_| {
        Violation::new(
            field,
            "a user id is 1 to 128 characters of letters, digits and _ . : @ -",
        )
    })
}

pub fn contract_id(field: &str, value: &str) -> Result<ContractId, Violation> {
    if value.is_empty() {
        return Err(Violation::new(field, "required: the contract's id"));
    }
    ContractId::parse(value).map_err(|_| {
        Violation::new(
            field,
            "a contract id is 1 to 128 characters of letters, digits and _ . : @ -",
        )
    })
}

/// AIP-155 request ids are optional; when given they must be short and
/// printable so that they can be logged and stored as they are.
pub fn request_id(value: &str) -> Result<Option<String>, Violation> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_REQUEST_ID_LEN || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Violation::new(
            "request_id",
            format!("at most {MAX_REQUEST_ID_LEN} printable ASCII characters (a UUID is best)"),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// Optional free text, trimmed; empty means none.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<Option<String>, Violation> {
    let value = value.trim();
    if value.chars().count() > max_chars {
        return Err(Violation::new(
            field,
            format!(
                "at most {max_chars} characters, got {}",
                value.chars().count()
            ),
        ));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// The range of a `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z. Chrono reaches much further, but an
/// instant outside this range cannot be sent back in an answer, and the
/// arithmetic after validation (a call's end, a search window) overflows
/// chrono's own range near its edges.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// Whether `at` lies in the `Timestamp` range.
pub fn in_timestamp_range(at: DateTime<Utc>) -> bool {
    (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&at.timestamp())
}

pub fn timestamp(field: &str, value: &prost_types::Timestamp) -> Result<DateTime<Utc>, Violation> {
    // Nanos from 0 to 999,999,999 only: chrono would read more as a leap
    // second, which the `Timestamp` format does not have.
    u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .filter(|at| in_timestamp_range(*at))
        .ok_or_else(|| {
            Violation::new(
                field,
                "not a valid timestamp: seconds from 0001-01-01T00:00:00Z to \
                 9999-12-31T23:59:59Z, nanos from 0 to 999999999",
            )
        })
}

/// Field paths of a start time inside a request (`start` or `new_start`).
#[derive(Debug, Clone, Copy)]
pub struct StartField {
    pub root: &'static str,
    pub utc: &'static str,
    pub date_time: &'static str,
    pub time_zone: &'static str,
    pub fold: &'static str,
}

pub const START: StartField = StartField {
    root: "start",
    utc: "start.utc",
    date_time: "start.local.date_time",
    time_zone: "start.local.time_zone",
    fold: "start.local.fold",
};

pub const NEW_START: StartField = StartField {
    root: "new_start",
    utc: "new_start.utc",
    date_time: "new_start.local.date_time",
    time_zone: "new_start.local.time_zone",
    fold: "new_start.local.fold",
};

/// Resolves a requested start to UTC. A local time without a zone is read in
/// `caller_zone` (the caller's profile zone), when there is one.
/// Whether resolving `value` needs the caller's own zone: a local time that
/// names none. Lets the handler skip reading the caller's profile otherwise.
pub fn needs_caller_zone(value: Option<&pb::StartTime>) -> bool {
    matches!(
        value.and_then(|s| s.time.as_ref()),
        Some(pb::start_time::Time::Local(local)) if local.time_zone.is_empty()
    )
}

pub fn start(
    field: StartField,
    value: Option<&pb::StartTime>,
    caller_zone: Option<&str>,
) -> Result<RequestedStart, ApiError> {
    let time = value.and_then(|s| s.time.as_ref()).ok_or_else(|| {
        ApiError::invalid(
            field.root,
            "required: give either `utc` (a timestamp) or `local` (date_time and time_zone)",
        )
    })?;
    match time {
        pb::start_time::Time::Utc(ts) => Ok(RequestedStart {
            utc: timestamp(field.utc, ts).map_err(|v| ApiError::InvalidArgument(vec![v]))?,
            time_zone: None,
            local_time: None,
        }),
        pb::start_time::Time::Local(local) => {
            let zone = if local.time_zone.is_empty() {
                caller_zone.map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid(
                        field.time_zone,
                        "required: your profile has no time zone, so name one (an IANA zone such as Europe/Berlin)",
                    )
                })?
            } else {
                local.time_zone.clone()
            };
            let fold = match local.fold {
                None => None,
                Some(raw) => match pb::Fold::try_from(raw) {
                    Ok(pb::Fold::Earlier) => Some(Fold::Earlier),
                    Ok(pb::Fold::Later) => Some(Fold::Later),
                    Ok(pb::Fold::Unspecified) => None,
                    Err(_) => {
                        return Err(ApiError::invalid(
                            field.fold,
                            "must be FOLD_EARLIER or FOLD_LATER",
                        ));
                    }
                },
            };
            let utc = time::resolve_local(&local.date_time, &zone, fold).map_err(|source| {
                let field = match source {
                    time::TimeError::UnknownZone { .. } => field.time_zone,
                    _ => field.date_time,
                };
                ApiError::Domain(DomainError::Time { field, source })
            })?;
            // Years 0000 and 9999 may cross the range in another zone.
            if !in_timestamp_range(utc) {
                return Err(ApiError::invalid(
                    field.date_time,
                    format!(
                        "resolves to {utc}, outside 0001-01-01 to 9999-12-31 (UTC): send a time \
                         within that range"
                    ),
                ));
            }
            Ok(RequestedStart {
                utc,
                time_zone: Some(zone),
                local_time: Some(local.date_time.clone()),
            })
        }
    }
}

/// A time of day, exactly `HH:MM` from `00:00` to `24:00`.
pub fn time_of_day(field: &str, value: &str) -> Result<TimeOfDay, Violation> {
    TimeOfDay::parse(value).ok_or_else(|| {
        Violation::new(
            field,
            format!(
                "{:?} is not a time of day: send exactly HH:MM from 00:00 to 24:00",
                truncated(value)
            ),
        )
    })
}

/// A calendar date, exactly `YYYY-MM-DD`.
pub fn date(field: &str, value: &str) -> Result<NaiveDate, Violation> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .filter(|_| value.len() == 10)
        .ok_or_else(|| {
            Violation::new(
                field,
                format!(
                    "{:?} is not a date: send exactly YYYY-MM-DD",
                    truncated(value)
                ),
            )
        })
}

pub fn weekday(field: &str, value: i32) -> Result<Weekday, Violation> {
    match pb::Weekday::try_from(value) {
        Ok(pb::Weekday::Monday) => Ok(Weekday::Mon),
        Ok(pb::Weekday::Tuesday) => Ok(Weekday::Tue),
        Ok(pb::Weekday::Wednesday) => Ok(Weekday::Wed),
        Ok(pb::Weekday::Thursday) => Ok(Weekday::Thu),
        Ok(pb::Weekday::Friday) => Ok(Weekday::Fri),
        Ok(pb::Weekday::Saturday) => Ok(Weekday::Sat),
        Ok(pb::Weekday::Sunday) => Ok(Weekday::Sun),
        Ok(pb::Weekday::Unspecified) | Err(_) => Err(Violation::new(
            field,
            "required: WEEKDAY_MONDAY … WEEKDAY_SUNDAY",
        )),
    }
}

fn truncated(value: &str) -> String {
    value.chars().take(32).collect()
}

fn interval(
    checks: &mut Checks,
    field: &str,
    start: &str,
    end: &str,
) -> Option<(TimeOfDay, TimeOfDay)> {
    let start = checks.take(time_of_day(&format!("{field}.start"), start));
    let end = checks.take(time_of_day(&format!("{field}.end"), end));
    Some((start?, end?))
}

/// A coach's hours as sent under `field` (`availability`), checked whole:
/// every malformed value names its path (`availability.weekly[2].start`),
/// then the domain's rules (overlaps, limits, the zone) name the part at
/// fault (`availability.weekly`).
pub fn availability(
    field: &str,
    value: Option<&pb::Availability>,
) -> Result<Availability, ApiError> {
    let Some(value) = value else {
        return Err(ApiError::invalid(
            field,
            "required: the coach's time_zone and weekly hours (and optionally overrides, buffers, notice, daily_max)",
        ));
    };
    let mut checks = Checks::new();
    if value.time_zone.is_empty() {
        checks.push(Violation::new(
            format!("{field}.time_zone"),
            "required: the IANA zone the hours are in, such as Europe/Berlin",
        ));
    }
    let mut weekly = Vec::with_capacity(value.weekly.len());
    for (i, w) in value.weekly.iter().enumerate() {
        let path = format!("{field}.weekly[{i}]");
        let day = checks.take(weekday(&format!("{path}.weekday"), w.weekday));
        let hours = interval(&mut checks, &path, &w.start, &w.end);
        if let (Some(weekday), Some((start, end))) = (day, hours) {
            weekly.push(WeeklyInterval {
                weekday,
                start,
                end,
            });
        }
    }
    let mut overrides = Vec::with_capacity(value.overrides.len());
    for (i, o) in value.overrides.iter().enumerate() {
        let path = format!("{field}.overrides[{i}]");
        let date = checks.take(date(&format!("{path}.date"), &o.date));
        match (o.day_off, o.intervals.is_empty()) {
            (true, false) => checks.push(Violation::new(
                format!("{path}.day_off"),
                "a day off has no intervals: set day_off or give intervals, not both",
            )),
            (false, true) => checks.push(Violation::new(
                format!("{path}.intervals"),
                "required: the hours of that date, or day_off for a day off",
            )),
            _ => {}
        }
        let mut intervals = Vec::with_capacity(o.intervals.len());
        for (j, iv) in o.intervals.iter().enumerate() {
            if let Some((start, end)) = interval(
                &mut checks,
                &format!("{path}.intervals[{j}]"),
                &iv.start,
                &iv.end,
            ) {
                // start < end is the domain's check, with its message.
                intervals.push(LocalInterval { start, end });
            }
        }
        if let Some(date) = date {
            overrides.push(DateOverride { date, intervals });
        }
    }
    checks.finish()?;
    let availability = Availability {
        time_zone: value.time_zone.clone(),
        weekly,
        overrides,
        buffer_before_minutes: value.buffer_before_minutes,
        buffer_after_minutes: value.buffer_after_minutes,
        min_notice_minutes: value.min_notice_minutes,
        daily_max: value.daily_max,
    };
    availability.validate().map_err(|error| match error {
        DomainError::InvalidArgument { field: part, .. }
        | DomainError::Time { field: part, .. } => {
            ApiError::invalid(format!("{field}.{part}"), error.to_string())
        }
        other => ApiError::Domain(other),
    })?;
    Ok(availability)
}

/// AIP-158 page size: default 20, at most 100.
pub fn page_size(value: i32) -> Result<u32, Violation> {
    match value {
        0 => Ok(20),
        1..=100 => Ok(value as u32),
        101.. => Ok(100),
        _ => Err(Violation::new("page_size", "must not be negative")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_local_start_without_a_zone_needs_the_callers_profile() {
        let local = |zone: &str| pb::StartTime {
            time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
                date_time: "2026-03-29T02:30".to_owned(),
                time_zone: zone.to_owned(),
                fold: None,
            })),
        };
        let utc = pb::StartTime {
            time: Some(pb::start_time::Time::Utc(prost_types::Timestamp::default())),
        };
        assert!(needs_caller_zone(Some(&local(""))));
        assert!(!needs_caller_zone(Some(&local("Europe/Berlin"))));
        assert!(!needs_caller_zone(Some(&utc)));
        assert!(!needs_caller_zone(None));
    }

    #[test]
    fn ids_are_checked() {
        assert!(call_id("call_id", "").is_err());
        assert!(call_id("call_id", "nope").is_err());
        assert!(call_id("call_id", "0192f0c4-9b4e-7a2b-8d3e-1f2a3b4c5d6e").is_ok());
        assert!(user_id("coach_id", "").is_err());
        assert!(user_id("coach_id", &"x".repeat(129)).is_err());
        assert!(user_id("coach_id", "coach-7").is_ok());
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(text("reason", "  ", 5).unwrap(), None);
        assert_eq!(text("reason", " ab ", 5).unwrap().as_deref(), Some("ab"));
        assert!(text("reason", &"é".repeat(6), 5).is_err());
        assert!(text("reason", &"é".repeat(5), 5).is_ok());
    }

    #[test]
    fn request_ids_are_optional_and_bounded() {
        assert_eq!(request_id("").unwrap(), None);
        assert!(request_id(&"a".repeat(129)).is_err());
        assert!(request_id("has space").is_err());
        assert_eq!(request_id("r-1").unwrap().as_deref(), Some("r-1"));
    }

    #[test]
    fn timestamps_are_held_to_the_protobuf_range() {
        let ts = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert!(timestamp("t", &ts(MIN_TIMESTAMP_SECONDS, 0)).is_ok());
        assert!(timestamp("t", &ts(MAX_TIMESTAMP_SECONDS, 999_999_999)).is_ok());
        // Found by the scheduling_service fuzz target: chrono's last
        // second was accepted, and CheckAvailability's end overflowed.
        for (seconds, nanos) in [
            (8_210_266_876_799, 0),
            (MAX_TIMESTAMP_SECONDS + 1, 0),
            (MIN_TIMESTAMP_SECONDS - 1, 999_999_999),
            (i64::MAX, 0),
            (i64::MIN, 0),
            // A leap second to chrono, nothing to a Timestamp.
            (1_798_000_059, 1_500_000_000),
            (0, -1),
        ] {
            let violation = timestamp("start.utc", &ts(seconds, nanos)).unwrap_err();
            assert_eq!(violation.field, "start.utc");
        }
    }

    /// Found by the `scheduling_service` fuzz target (`crash-2fe2b3f3…`): a paid session
    /// at 0000-12-30T23:59 in Pacific/Kiritimati (UTC+14), before year 1 in
    /// UTC; it resolved, and was accepted.
    const LOCAL_START_BEFORE_YEAR_ONE: &[u8] = &[
        0x03, 0x01, 0x12, 0x05, 0x73, 0x74, 0x75, 0x2d, 0x31, 0x1a, 0x07, 0x63, 0x6f, 0x61, 0x63,
        0x68, 0x2d, 0x31, 0x22, 0x0a, 0x63, 0x6f, 0x6e, 0x74, 0x72, 0x61, 0x63, 0x74, 0x2d, 0x31,
        0x2a, 0x28, 0x12, 0x26, 0x0a, 0x10, 0x30, 0x30, 0x30, 0x30, 0x2d, 0x31, 0x32, 0x2d, 0x33,
        0x30, 0x54, 0x32, 0x33, 0x3a, 0x35, 0x39, 0x12, 0x12, 0x50, 0x61, 0x63, 0x69, 0x66, 0x69,
        0x63, 0x2f, 0x4b, 0x69, 0x72, 0x69, 0x74, 0x69, 0x6d, 0x61, 0x74, 0x69,
    ];

    #[test]
    fn local_starts_outside_the_timestamp_range_are_rejected() {
        use prost::Message;
        let message =
            pb::SchedulePaidSessionRequest::decode(&LOCAL_START_BEFORE_YEAR_ONE[2..]).unwrap();
        let late = pb::StartTime {
            time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
                date_time: "9999-12-31T23:00".into(),
                time_zone: "America/New_York".into(),
                fold: None,
            })),
        };
        for start_time in [message.start.as_ref().unwrap(), &late] {
            match start(START, Some(start_time), None) {
                Err(ApiError::InvalidArgument(violations)) => {
                    assert_eq!(violations[0].field, "start.local.date_time");
                }
                other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            }
        }
        let earliest = pb::StartTime {
            time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
                date_time: "0001-01-01T00:00".into(),
                time_zone: "UTC".into(),
                fold: None,
            })),
        };
        assert!(start(START, Some(&earliest), None).is_ok());
    }

    #[test]
    fn many_bad_fields_make_a_bounded_error() {
        // Found by the availability_service fuzz target: 200 weekly hours of
        // the wrong form made a 217 KB error, 600 violations long.
        let hours = pb::Availability {
            time_zone: "Europe/Berlin".into(),
            weekly: (0..200)
                .map(|_| pb::WeeklyInterval {
                    weekday: 0,
                    start: "9".into(),
                    end: "5".into(),
                })
                .collect(),
            ..Default::default()
        };
        let Err(ApiError::InvalidArgument(violations)) = availability("availability", Some(&hours))
        else {
            panic!("expected INVALID_ARGUMENT");
        };
        assert_eq!(violations.len(), MAX_VIOLATIONS + 1);
        assert_eq!(violations[0].field, "availability.weekly[0].weekday");
        let last = violations.last().unwrap();
        assert_eq!(last.field, "availability.weekly[3].start");
        assert!(
            last.description.starts_with("and 590 more problems"),
            "{last:?}"
        );
    }

    #[test]
    fn a_bad_call_id_is_not_echoed_whole() {
        // Found by random_requests: a CancelCall with a call id of thousands
        // of characters got an error too large for the client to receive
        // (h2 protocol error instead of INVALID_ARGUMENT).
        let violation = call_id("call_id", &" ".repeat(5_000)).unwrap_err();
        assert!(violation.description.len() < 100, "{violation:?}");
    }

    #[test]
    fn a_local_start_without_zone_uses_the_callers_zone() {
        let start_time = pb::StartTime {
            time: Some(pb::start_time::Time::Local(pb::LocalDateTime {
                date_time: "2026-07-01T10:00".into(),
                time_zone: String::new(),
                fold: None,
            })),
        };
        let resolved = start(START, Some(&start_time), Some("Europe/Berlin")).unwrap();
        assert_eq!(resolved.utc.to_rfc3339(), "2026-07-01T08:00:00+00:00");
        assert_eq!(resolved.time_zone.as_deref(), Some("Europe/Berlin"));
        assert!(start(START, Some(&start_time), None).is_err());
    }
}
