//! A coach's published working hours, and the booking rules they add
//! (SPEC §2 "Availability").
//!
//! A coach publishes [`Availability`]: weekly intervals in their own IANA
//! zone (several per weekday), date overrides (other hours on a date, or a
//! day off), a buffer before and after calls, their own minimum notice and a
//! daily maximum of calls. It is kept as events in the coach's own stream
//! ([`AvailabilityEvent`], folded by [`evolve_availability`]). A coach who has
//! published nothing (or cleared it) is bookable at any time: every function
//! here takes `Option<&Availability>` and `None` means exactly that.
//!
//! # Local-time semantics across DST
//!
//! Hours are wall-clock hours. An interval `[start, end)` on a local date
//! `D` (a weekly interval on `D`'s weekday, or `D`'s override, which replaces
//! the weekly hours of that date) is open at exactly the UTC instants whose
//! local reading in the coach's zone lies in `[D start, D end)`. So on
//! transition days an interval changes its real length: in a spring-forward
//! gap the skipped wall times never occur and the interval shrinks; in a
//! fall-back fold both occurrences of a repeated wall time count and the
//! interval grows. `end` may be `24:00`, the end of the local date. The open
//! set is the union over all dates, merged where intervals touch (so hours
//! that run to `24:00` and resume at `00:00` form one interval across
//! midnight). [`Availability::open_intervals_utc`] computes it.
//!
//! # The rules a booking meets when the coach has published hours
//!
//! - [`check_within_hours`]: the whole call `[start, end)` lies in one open
//!   interval. Buffers need not fit inside the hours (as in Cal.com): a call
//!   may end exactly when the hours end even with an after-buffer.
//! - [`check_coach_free`]: a call's coach-side busy range is
//!   `[start − buffer_before, end + buffer_after + policy.coach_buffer)`;
//!   two active calls of a coach clash iff their busy ranges overlap
//!   (half-open), so consecutive calls are at least `buffer_after +
//!   coach_buffer + buffer_before` apart. Without published hours this is
//!   exactly [`crate::rules::find_conflict`]'s coach rule.
//! - [`check_coach_notice`]: the effective notice is the larger of the
//!   policy's and the coach's own.
//! - [`check_daily_limit`]: at most `daily_max` active calls start on one
//!   coach-local date.
//!
//! [`explain`] lists every reason a given start is not bookable (for
//! `CheckAvailability`); [`find_slots`] lists the bookable starts of a range
//! (for `FindSlots`), in time linear in hours, calls and results.
//!
//! # Step alignment of [`find_slots`]
//!
//! Slots sit on the coach's wall-clock grid: the candidate starts of an
//! interval `[s, e)` on local date `D` are the instants whose local reading
//! is `D s + k·step` (k ≥ 0) and lies in `[D s, D e)`. Each published
//! interval starts its own grid (as Cal.com does), so hours from 09:10 with a
//! 30-minute step offer 09:10, 09:40, …. On transition days a grid time in
//! the gap has no slot and one in the fold has two. Without published hours
//! the grid is that of UTC midnight. The property tests' brute-force oracle
//! uses the same definition, checking every minute of the range.

use std::fmt;

use chrono::{Duration, NaiveDate, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;
use crate::time;

mod event;
mod hours;
mod slots;

pub use event::{
    AvailabilityCleared, AvailabilityCommand, AvailabilityEvent, AvailabilityPublished,
    check_may_edit_availability, decide_availability, evolve_availability, replay_availability,
};
pub use hours::{MAX_OPEN_RANGE_DAYS, UtcRange, check_daily_limit, check_within_hours};
pub use slots::{
    CoachBusy, MAX_SLOT_RANGE_DAYS, MAX_SLOTS, Slot, SlotQuery, Unavailability, check_coach_free,
    check_coach_notice, check_coach_rules, coach_busy_range, effective_min_notice, explain,
    find_coach_clash, find_slots,
};

/// Most intervals on one weekday or one override date.
pub const MAX_INTERVALS_PER_DAY: usize = 20;

/// Most date overrides (a year's worth of days off is 366).
pub const MAX_OVERRIDES: usize = 366;

/// Longest buffer before or after a call, in minutes (a day).
pub const MAX_BUFFER_MINUTES: u32 = 1440;

/// Longest minimum notice a coach may ask for, in minutes (366 days).
pub const MAX_MIN_NOTICE_MINUTES: u32 = 366 * 1440;

/// Highest `daily_max` (at 15 minutes a call, 96 fill a day).
pub const MAX_DAILY_MAX: u32 = 100;

/// A wall-clock time of day in whole minutes, `00:00` to `24:00` inclusive:
/// `24:00` is the end of the day, for intervals that run to midnight.
///
/// Stored and sent as exactly `HH:MM` (24-hour clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub const MIDNIGHT: Self = Self(0);
    pub const END_OF_DAY: Self = Self(1440);

    /// `hour:minute`; `24:00` is the only time with hour 24.
    #[must_use]
    pub fn from_hm(hour: u16, minute: u16) -> Option<Self> {
        let valid = (hour < 24 && minute < 60) || (hour == 24 && minute == 0);
        valid.then(|| Self(hour * 60 + minute))
    }

    /// Minutes since local midnight, 0 to 1440 inclusive.
    #[must_use]
    pub fn from_minutes(minutes: u16) -> Option<Self> {
        (minutes <= 1440).then_some(Self(minutes))
    }

    /// Minutes since local midnight, 0 to 1440 inclusive.
    #[must_use]
    pub fn minutes(self) -> u16 {
        self.0
    }

    /// Parses exactly `HH:MM` (`09:00`, `24:00`); anything looser is `None`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let b = text.as_bytes();
        if b.len() != 5 || b[2] != b':' {
            return None;
        }
        let digit = |i: usize| -> Option<u16> {
            let d = *b.get(i)?;
            d.is_ascii_digit().then(|| u16::from(d - b'0'))
        };
        let hour = digit(0)? * 10 + digit(1)?;
        let minute = digit(3)? * 10 + digit(4)?;
        Self::from_hm(hour, minute)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{}` is not a time of day HH:MM from 00:00 to 24:00",
                text.chars().take(16).collect::<String>()
            ))
        })
    }
}

/// Open hours `[start, end)` within one local date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LocalInterval {
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

impl LocalInterval {
    /// `None` unless `start < end`.
    #[must_use]
    pub fn new(start: TimeOfDay, end: TimeOfDay) -> Option<Self> {
        (start < end).then_some(Self { start, end })
    }
}

/// Open hours `[start, end)` on every `weekday` (coach-local).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WeeklyInterval {
    /// Stored as `Mon` … `Sun`.
    pub weekday: Weekday,
    pub start: TimeOfDay,
    pub end: TimeOfDay,
}

/// Other hours on one coach-local date: they replace that date's weekly
/// hours. No intervals at all is a day off.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DateOverride {
    pub date: NaiveDate,
    #[serde(default)]
    pub intervals: Vec<LocalInterval>,
}

/// A coach's published availability. See the [module docs](self) for what
/// each field means to a booking. Durations are whole minutes, so the stored
/// JSON is plain numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// The IANA zone the hours are in (e.g. `Europe/Berlin`).
    pub time_zone: String,
    /// Weekly hours; several intervals per weekday are fine, overlapping
    /// ones are not. A weekday without intervals is closed.
    #[serde(default)]
    pub weekly: Vec<WeeklyInterval>,
    /// At most one per date; replaces that date's weekly hours.
    #[serde(default)]
    pub overrides: Vec<DateOverride>,
    /// Time kept free before each call, in minutes.
    #[serde(default)]
    pub buffer_before_minutes: u32,
    /// Time kept free after each call, in minutes.
    #[serde(default)]
    pub buffer_after_minutes: u32,
    /// The coach's own minimum notice; the larger of it and the policy's
    /// applies.
    #[serde(default)]
    pub min_notice_minutes: Option<u32>,
    /// At most this many active calls start on one coach-local date. `None`:
    /// no limit. Zero is invalid: close days with an empty override instead.
    #[serde(default)]
    pub daily_max: Option<u32>,
}

impl Availability {
    /// Hours in `time_zone` and nothing else: no overrides, buffers, notice
    /// or limit.
    #[must_use]
    pub fn weekly(time_zone: &str, weekly: Vec<WeeklyInterval>) -> Self {
        Self {
            time_zone: time_zone.to_owned(),
            weekly,
            overrides: Vec::new(),
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            min_notice_minutes: None,
            daily_max: None,
        }
    }

    /// The coach's zone; an unknown name is a `time_zone` error.
    pub fn zone(&self) -> Result<Tz, DomainError> {
        time::parse_zone(&self.time_zone).map_err(|source| DomainError::Time {
            field: "time_zone",
            source,
        })
    }

    #[must_use]
    pub fn buffer_before(&self) -> Duration {
        time::minutes(self.buffer_before_minutes)
    }

    #[must_use]
    pub fn buffer_after(&self) -> Duration {
        time::minutes(self.buffer_after_minutes)
    }

    #[must_use]
    pub fn min_notice(&self) -> Option<Duration> {
        self.min_notice_minutes.map(time::minutes)
    }

    /// The hours of a coach-local date: its override if it has one (the
    /// first, should there be several), else its weekday's weekly hours.
    /// Sorted by start; intervals with `start >= end` are left out.
    #[must_use]
    pub fn hours_on(&self, date: NaiveDate) -> Vec<LocalInterval> {
        use chrono::Datelike;
        let mut hours: Vec<LocalInterval> = match self.overrides.iter().find(|o| o.date == date) {
            Some(o) => o.intervals.clone(),
            None => self
                .weekly
                .iter()
                .filter(|w| w.weekday == date.weekday())
                .map(|w| LocalInterval {
                    start: w.start,
                    end: w.end,
                })
                .collect(),
        };
        hours.retain(|i| i.start < i.end);
        hours.sort();
        hours
    }

    /// The same availability in canonical order: weekly intervals by
    /// weekday (Monday first) and start, overrides by date, each override's
    /// intervals by start. Publishing stores this form, so that publishing
    /// the same hours twice is recognised as no change.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let mut out = self.clone();
        out.weekly
            .sort_by_key(|w| (w.weekday.num_days_from_monday(), w.start, w.end));
        out.overrides.sort_by_key(|o| o.date);
        for o in &mut out.overrides {
            o.intervals.sort();
        }
        out
    }

    /// Rejects what cannot be published, naming the field: an unknown zone,
    /// an interval whose start is not before its end, overlapping intervals
    /// on one day (touching ones are fine), more than
    /// [`MAX_INTERVALS_PER_DAY`] intervals on a day or [`MAX_OVERRIDES`]
    /// overrides, two overrides of one date, buffers over
    /// [`MAX_BUFFER_MINUTES`], a notice over [`MAX_MIN_NOTICE_MINUTES`], a
    /// `daily_max` of 0 or over [`MAX_DAILY_MAX`].
    ///
    /// Empty hours are valid: a coach who publishes no interval at all is
    /// not bookable (unlike one who publishes nothing).
    pub fn validate(&self) -> Result<(), DomainError> {
        self.zone()?;
        for weekday in WEEKDAYS {
            let day: Vec<LocalInterval> = self
                .weekly
                .iter()
                .filter(|w| w.weekday == weekday)
                .map(|w| LocalInterval {
                    start: w.start,
                    end: w.end,
                })
                .collect();
            check_day("weekly", &format!("{weekday}"), &day)?;
        }
        if self.overrides.len() > MAX_OVERRIDES {
            return Err(invalid(
                "overrides",
                format!(
                    "has {} entries; at most {MAX_OVERRIDES} are allowed",
                    self.overrides.len()
                ),
            ));
        }
        let mut dates: Vec<NaiveDate> = self.overrides.iter().map(|o| o.date).collect();
        dates.sort_unstable();
        if let Some(pair) = dates.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(invalid(
                "overrides",
                format!("{} appears twice; send one override per date", pair[0]),
            ));
        }
        for o in &self.overrides {
            check_day("overrides", &o.date.to_string(), &o.intervals)?;
        }
        for (field, minutes) in [
            ("buffer_before_minutes", self.buffer_before_minutes),
            ("buffer_after_minutes", self.buffer_after_minutes),
        ] {
            if minutes > MAX_BUFFER_MINUTES {
                return Err(invalid(
                    field,
                    format!("is {minutes}; at most {MAX_BUFFER_MINUTES} minutes are allowed"),
                ));
            }
        }
        if let Some(minutes) = self.min_notice_minutes
            && minutes > MAX_MIN_NOTICE_MINUTES
        {
            return Err(invalid(
                "min_notice_minutes",
                format!("is {minutes}; at most {MAX_MIN_NOTICE_MINUTES} minutes are allowed"),
            ));
        }
        match self.daily_max {
            Some(0) => Err(invalid(
                "daily_max",
                "must be at least 1; leave it empty for no limit, or close days with an \
                 override without intervals"
                    .to_owned(),
            )),
            Some(max) if max > MAX_DAILY_MAX => Err(invalid(
                "daily_max",
                format!("is {max}; at most {MAX_DAILY_MAX} calls a day are allowed"),
            )),
            _ => Ok(()),
        }
    }
}

const WEEKDAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn invalid(field: &'static str, message: String) -> DomainError {
    DomainError::InvalidArgument { field, message }
}

/// The intervals of one day: each with start before end, at most
/// [`MAX_INTERVALS_PER_DAY`], none overlapping another.
fn check_day(
    field: &'static str,
    day: &str,
    intervals: &[LocalInterval],
) -> Result<(), DomainError> {
    if intervals.len() > MAX_INTERVALS_PER_DAY {
        return Err(invalid(
            field,
            format!(
                "{day} has {} intervals; at most {MAX_INTERVALS_PER_DAY} are allowed",
                intervals.len()
            ),
        ));
    }
    if let Some(bad) = intervals.iter().find(|i| i.start >= i.end) {
        return Err(invalid(
            field,
            format!(
                "{day} {}–{}: the start must be before the end (use 24:00 for midnight)",
                bad.start, bad.end
            ),
        ));
    }
    let mut sorted = intervals.to_vec();
    sorted.sort();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[1].start < pair[0].end) {
        return Err(invalid(
            field,
            format!(
                "{day} {}–{} overlaps {}–{}; merge them into one interval",
                pair[0].start, pair[0].end, pair[1].start, pair[1].end
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
