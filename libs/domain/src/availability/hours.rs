//! From wall-clock hours to UTC: local dates, zone offsets and DST.
//!
//! The zone's offset is piecewise constant in UTC. Over a window we find its
//! constant-offset segments; within a segment with offset `o` the instants
//! whose local reading lies in `[a, b)` are exactly `[a − o, b − o)`. The
//! preimage of a local interval is the union of that over the segments,
//! which is the module-level semantics (gap skipped, fold counted twice)
//! without special cases for either.
//!
//! Internally instants are whole Unix seconds (`i64`): zone offsets and
//! hours are whole seconds, so every boundary is one.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Availability, TimeOfDay};
use crate::error::DomainError;

pub(super) const DAY_SECS: i64 = 86_400;

/// Longest range [`Availability::open_intervals_utc`] computes (and longest
/// call [`check_within_hours`] accepts), in days.
pub const MAX_OPEN_RANGE_DAYS: i64 = 400;

/// A half-open range of instants `[start, end)`.
pub type UtcRange = (DateTime<Utc>, DateTime<Utc>);

/// How often the offset is probed for a change. Every tz database zone keeps
/// its offset for far longer than this between transitions.
const PROBE_SECS: i64 = 3600;

/// A coach's hours, ready for computing: per weekday and per override
/// date, sorted disjoint `[start, end)` in seconds since local midnight.
pub(super) struct Calendar {
    pub(super) tz: Tz,
    weekly: [Vec<(i64, i64)>; 7],
    overrides: BTreeMap<NaiveDate, Vec<(i64, i64)>>,
}

impl Calendar {
    /// `None` (no published hours): open all day every day, on UTC's grid.
    pub(super) fn for_coach(avail: Option<&Availability>) -> Result<Self, DomainError> {
        match avail {
            None => Ok(Self {
                tz: Tz::UTC,
                weekly: std::array::from_fn(|_| vec![(0, DAY_SECS)]),
                overrides: BTreeMap::new(),
            }),
            Some(avail) => Self::of(avail),
        }
    }

    fn of(avail: &Availability) -> Result<Self, DomainError> {
        let tz = avail.zone()?;
        let mut weekly: [Vec<(i64, i64)>; 7] = Default::default();
        for w in &avail.weekly {
            let index = usize::try_from(w.weekday.num_days_from_monday()).unwrap_or(0);
            if let Some(day) = weekly.get_mut(index) {
                day.push(seconds(w.start, w.end));
            }
        }
        for day in &mut weekly {
            *day = tidy(std::mem::take(day));
        }
        let mut overrides = BTreeMap::new();
        for o in &avail.overrides {
            // The first override of a date wins (validation allows one).
            overrides.entry(o.date).or_insert_with(|| {
                tidy(
                    o.intervals
                        .iter()
                        .map(|i| seconds(i.start, i.end))
                        .collect(),
                )
            });
        }
        Ok(Self {
            tz,
            weekly,
            overrides,
        })
    }

    /// The hours of a local date.
    pub(super) fn day(&self, date: NaiveDate) -> &[(i64, i64)] {
        if let Some(hours) = self.overrides.get(&date) {
            return hours;
        }
        let index = usize::try_from(date.weekday().num_days_from_monday()).unwrap_or(0);
        self.weekly.get(index).map_or(&[], Vec::as_slice)
    }
}

fn seconds(start: TimeOfDay, end: TimeOfDay) -> (i64, i64) {
    (
        i64::from(start.minutes()) * 60,
        i64::from(end.minutes()) * 60,
    )
}

/// Drops empty intervals, sorts, merges overlapping ones. Touching ones stay
/// apart: each published interval starts its own slot grid.
fn tidy(mut hours: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    hours.retain(|(s, e)| s < e);
    hours.sort_unstable();
    merge(hours, false)
}

/// Merges sorted intervals: overlapping ones always, touching ones if
/// `touching`.
pub(super) fn merge(sorted: Vec<(i64, i64)>, touching: bool) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s < last.1 || (touching && s == last.1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `at`'s Unix seconds, rounded up.
pub(super) fn ceil_secs(at: DateTime<Utc>) -> i64 {
    at.timestamp()
        .saturating_add(i64::from(at.timestamp_subsec_nanos() != 0))
}

/// The zone's offset (local − UTC, in seconds) at the instant `at`.
pub(super) fn offset_at(tz: Tz, at: i64) -> i64 {
    DateTime::from_timestamp(at, 0).map_or(0, |t| {
        i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    })
}

/// The local date of the instant `at`.
pub(super) fn local_date(tz: Tz, at: i64) -> NaiveDate {
    let local = at.saturating_add(offset_at(tz, at));
    DateTime::from_timestamp(local, 0)
        .or_else(|| DateTime::from_timestamp(at, 0))
        .map_or(NaiveDate::MIN, |t| t.date_naive())
}

/// `[start, end)` in UTC seconds during which the offset is `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Segment {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) offset: i64,
}

/// The constant-offset segments covering `[lo, hi)`, in order.
pub(super) fn segments(tz: Tz, lo: i64, hi: i64) -> Vec<Segment> {
    let mut out = Vec::new();
    if lo >= hi {
        return out;
    }
    let (mut start, mut offset, mut probe) = (lo, offset_at(tz, lo), lo);
    if tz != Tz::UTC {
        while probe < hi {
            let next = probe.saturating_add(PROBE_SECS).min(hi);
            if offset_at(tz, next) == offset {
                probe = next;
                continue;
            }
            // The first second of (probe, next] on another offset.
            let (mut same, mut other) = (probe, next);
            while other - same > 1 {
                let mid = same + (other - same) / 2;
                if offset_at(tz, mid) == offset {
                    same = mid;
                } else {
                    other = mid;
                }
            }
            if other >= hi {
                break;
            }
            out.push(Segment {
                start,
                end: other,
                offset,
            });
            start = other;
            offset = offset_at(tz, other);
            probe = other;
        }
    }
    out.push(Segment {
        start,
        end: hi,
        offset,
    });
    out
}

/// One published interval of one local date, seen through one
/// constant-offset segment and clipped to the window: the UTC instants
/// `[start, end)`. `anchor` is where the interval's local start falls under
/// this segment's offset (`start >= anchor`); its slot grid runs from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    pub(super) date: NaiveDate,
    pub(super) anchor: i64,
    pub(super) start: i64,
    pub(super) end: i64,
}

/// Every piece of open time within `[lo, hi)`, by local date.
pub(super) fn pieces(cal: &Calendar, lo: i64, hi: i64) -> Vec<Piece> {
    let mut out = Vec::new();
    if lo >= hi {
        return out;
    }
    let segs = segments(cal.tz, lo, hi);
    // A fold can bring back the previous date and the window's end can
    // read as the next: one date of margin on each side covers both.
    let first = local_date(cal.tz, lo);
    let first = first.pred_opt().unwrap_or(first);
    let last = local_date(cal.tz, hi);
    let last = last.succ_opt().unwrap_or(last);
    let mut date = first;
    loop {
        let midnight = date.and_time(NaiveTime::MIN).and_utc().timestamp();
        for &(s, e) in cal.day(date) {
            for seg in &segs {
                let anchor = midnight + s - seg.offset;
                let start = anchor.max(seg.start);
                let end = (midnight + e - seg.offset).min(seg.end);
                if start < end {
                    out.push(Piece {
                        date,
                        anchor,
                        start,
                        end,
                    });
                }
            }
        }
        match date.succ_opt() {
            Some(next) if date < last => date = next,
            _ => break,
        }
    }
    out
}

/// The open set within `[lo, hi)`: sorted, disjoint, touching intervals
/// merged.
pub(super) fn open_secs(pieces: &[Piece]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = pieces.iter().map(|p| (p.start, p.end)).collect();
    spans.sort_unstable();
    merge(spans, true)
}

impl Availability {
    /// The instants of `[from, to)` at which the coach's hours are open, as
    /// sorted, disjoint, half-open UTC intervals, merged where they touch
    /// (across midnight too). See the [module docs](super) for the DST
    /// semantics. At most [`MAX_OPEN_RANGE_DAYS`] days at a time; an unknown
    /// zone is a `time_zone` error.
    pub fn open_intervals_utc(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UtcRange>, DomainError> {
        let cal = Calendar::of(self)?;
        if from >= to {
            return Ok(Vec::new());
        }
        if to.signed_duration_since(from) > chrono::Duration::days(MAX_OPEN_RANGE_DAYS) {
            return Err(DomainError::InvalidArgument {
                field: "to",
                message: format!("the range is longer than {MAX_OPEN_RANGE_DAYS} days"),
            });
        }
        let open = open_secs(&pieces(&cal, from.timestamp(), ceil_secs(to)));
        Ok(open
            .into_iter()
            .filter_map(|(s, e)| {
                let s = DateTime::from_timestamp(s, 0).map_or(from, |s| s.max(from));
                let e = DateTime::from_timestamp(e, 0).map_or(to, |e| e.min(to));
                (s < e).then_some((s, e))
            })
            .collect())
    }
}

/// A call `[start, end)` fits the coach's hours: all of it lies inside one
/// open interval. Without published hours every time fits. Buffers need not
/// fit (see the [module docs](super)).
pub fn check_within_hours(
    avail: Option<&Availability>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), DomainError> {
    let Some(avail) = avail else {
        return Ok(());
    };
    avail.zone()?;
    if start >= end {
        return Ok(());
    }
    let outside = DomainError::OutsideCoachHours { start, end };
    if end.signed_duration_since(start) > chrono::Duration::days(MAX_OPEN_RANGE_DAYS) {
        return Err(outside);
    }
    match avail.open_intervals_utc(start, end)?.as_slice() {
        [(s, e)] if *s == start && *e == end => Ok(()),
        _ => Err(outside),
    }
}

/// At most `daily_max` active calls of the coach start on one coach-local
/// date: `start` is refused when `existing_starts` (the starts of the
/// coach's other active calls) already hold that many on `start`'s local
/// date. Without published hours or a limit there is none.
pub fn check_daily_limit(
    avail: Option<&Availability>,
    existing_starts: &[DateTime<Utc>],
    start: DateTime<Utc>,
) -> Result<(), DomainError> {
    let Some(avail) = avail else {
        return Ok(());
    };
    let tz = avail.zone()?;
    let Some(max) = avail.daily_max else {
        return Ok(());
    };
    let date = local_date(tz, start.timestamp());
    let taken = existing_starts
        .iter()
        .filter(|s| local_date(tz, s.timestamp()) == date)
        .count();
    if taken >= usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(DomainError::DailyLimitReached { date, max });
    }
    Ok(())
}
