//! The coach-side booking rules, `CheckAvailability`'s explanation and
//! `FindSlots`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::Availability;
use super::hours::{self, Calendar};
use crate::error::DomainError;
use crate::policy::Policy;
use crate::rules::{self, BusySlot, ranges_overlap};
use crate::time;

/// Widest `FindSlots` range, in days.
pub const MAX_SLOT_RANGE_DAYS: i64 = 62;

/// Most slots one `FindSlots` answer lists; a range with more is refused
/// (narrow it or widen the step).
pub const MAX_SLOTS: usize = 2000;

/// Longest call and longest step these functions take, in minutes.
const MAX_MINUTES: u32 = 1440;

/// One active call of the coach, as the availability rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoachBusy {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl From<&BusySlot> for CoachBusy {
    fn from(slot: &BusySlot) -> Self {
        Self {
            start: slot.start,
            end: slot.end,
        }
    }
}

/// The notice a booking with this coach needs: the larger of the policy's
/// and the coach's own.
#[must_use]
pub fn effective_min_notice(policy: &Policy, avail: Option<&Availability>) -> Duration {
    match avail.and_then(Availability::min_notice) {
        Some(own) => own.max(policy.min_notice),
        None => policy.min_notice,
    }
}

/// [`rules::check_notice`] with the [effective notice](effective_min_notice).
pub fn check_coach_notice(
    policy: &Policy,
    avail: Option<&Availability>,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
) -> Result<(), DomainError> {
    let policy = Policy {
        min_notice: effective_min_notice(policy, avail),
        ..policy.clone()
    };
    rules::check_notice(&policy, now, start)
}

/// Time kept free before and after each call of the coach: the coach's
/// buffers, plus the policy's `coach_buffer` after (a negative one counts
/// as none, as in [`rules::find_conflict`]).
fn buffers(policy: &Policy, avail: Option<&Availability>) -> (Duration, Duration) {
    let before = avail.map_or(Duration::zero(), Availability::buffer_before);
    let after = avail
        .map_or(Duration::zero(), Availability::buffer_after)
        .checked_add(&policy.coach_buffer.max(Duration::zero()))
        .unwrap_or(Duration::MAX);
    (before, after)
}

/// The coach-side busy range of a call `[start, end)`:
/// `[start − buffer_before, end + buffer_after + coach_buffer)`.
#[must_use]
pub fn coach_busy_range(
    policy: &Policy,
    avail: Option<&Availability>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let (before, after) = buffers(policy, avail);
    (time::sub(start, before), time::add(end, after))
}

/// The first of the coach's active calls whose busy range overlaps that of
/// a new call `[start, end)` (half-open, so back-to-back ranges do not).
/// Without published hours this is [`rules::find_conflict`]'s coach rule.
#[must_use]
pub fn find_coach_clash<'a>(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &'a [CoachBusy],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Option<&'a CoachBusy> {
    let (s, e) = coach_busy_range(policy, avail, start, end);
    busy.iter().find(|b| {
        let (bs, be) = coach_busy_range(policy, avail, b.start, b.end);
        ranges_overlap(bs, be, s, e)
    })
}

/// [`find_coach_clash`] as a rule: `SlotTaken` naming the clashing call.
pub fn check_coach_free(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), DomainError> {
    match find_coach_clash(policy, avail, busy, start, end) {
        Some(b) => Err(DomainError::SlotTaken {
            clashing_start: b.start,
            clashing_end: b.end,
        }),
        None => Ok(()),
    }
}

/// One reason a start is not bookable with a coach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailability {
    /// The start is not on the policy's start granularity (a whole minute).
    NotOnGranularity,
    /// Less than the effective notice ahead; `earliest` is the first start
    /// that has it.
    NotEnoughNotice { earliest: DateTime<Utc> },
    /// Beyond the horizon; `latest` is the last start within it.
    BeyondHorizon { latest: DateTime<Utc> },
    /// Not (all) inside the coach's published hours.
    OutsideHours,
    /// The coach already has `max` calls on their local `date`.
    DailyLimit { date: NaiveDate, max: u32 },
    /// The call overlaps the coach's call `[start, end)`.
    Clash {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// The call does not overlap the coach's call `[clashing_start,
    /// clashing_end)`, but the buffers kept around the two do.
    Buffer {
        clashing_start: DateTime<Utc>,
        clashing_end: DateTime<Utc>,
    },
}

impl Unavailability {
    /// Stable, UPPER_SNAKE_CASE, for machines. Equal to the reason of
    /// [`Self::to_error`] except for `COACH_BUFFER`, which a booking reports
    /// as `SLOT_TAKEN` (as with the policy's `coach_buffer`).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotOnGranularity => "START_NOT_WHOLE_MINUTE",
            Self::NotEnoughNotice { .. } => "NOT_ENOUGH_NOTICE",
            Self::BeyondHorizon { .. } => "BEYOND_HORIZON",
            Self::OutsideHours => "OUTSIDE_COACH_HOURS",
            Self::DailyLimit { .. } => "DAILY_LIMIT_REACHED",
            Self::Clash { .. } => "SLOT_TAKEN",
            Self::Buffer { .. } => "COACH_BUFFER",
        }
    }

    /// The error a booking of `[start, end)` gets for this reason.
    #[must_use]
    pub fn to_error(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> DomainError {
        match *self {
            Self::NotOnGranularity => DomainError::StartNotWholeMinute,
            Self::NotEnoughNotice { earliest } => DomainError::NotEnoughNotice { earliest },
            Self::BeyondHorizon { latest } => DomainError::BeyondHorizon { latest },
            Self::OutsideHours => DomainError::OutsideCoachHours { start, end },
            Self::DailyLimit { date, max } => DomainError::DailyLimitReached { date, max },
            Self::Clash { start, end } => DomainError::SlotTaken {
                clashing_start: start,
                clashing_end: end,
            },
            Self::Buffer {
                clashing_start,
                clashing_end,
            } => DomainError::SlotTaken {
                clashing_start,
                clashing_end,
            },
        }
    }
}

fn check_minutes(field: &'static str, minutes: u32) -> Result<(), DomainError> {
    if (1..=MAX_MINUTES).contains(&minutes) {
        Ok(())
    } else {
        Err(DomainError::InvalidArgument {
            field,
            message: format!("is {minutes}; send 1 to {MAX_MINUTES} minutes"),
        })
    }
}

/// Every reason the coach cannot take a call of `duration_minutes` at
/// `start` (`CheckAvailability`), in this order: granularity, notice,
/// horizon, hours, daily limit, then each clashing call by start (overlaps
/// as [`Unavailability::Clash`], buffer-only clashes as
/// [`Unavailability::Buffer`]). Empty: the coach can take it.
///
/// `busy` holds the coach's active calls (without the one being
/// rescheduled, if any). Only coach-side rules are here; the student's own
/// calls are [`rules::find_conflict`]'s.
pub fn explain(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    duration_minutes: u32,
) -> Result<Vec<Unavailability>, DomainError> {
    check_minutes("duration_minutes", duration_minutes)?;
    let end = time::add(start, time::minutes(duration_minutes));
    let mut out = Vec::new();
    if rules::check_whole_minute(policy, start).is_err() {
        out.push(Unavailability::NotOnGranularity);
    }
    if let Err(DomainError::NotEnoughNotice { earliest }) =
        check_coach_notice(policy, avail, now, start)
    {
        out.push(Unavailability::NotEnoughNotice { earliest });
    }
    if let Err(DomainError::BeyondHorizon { latest }) = rules::check_horizon(policy, now, start) {
        out.push(Unavailability::BeyondHorizon { latest });
    }
    if !check_within_hours_or_zone(avail, start, end)? {
        out.push(Unavailability::OutsideHours);
    }
    let starts: Vec<DateTime<Utc>> = busy.iter().map(|b| b.start).collect();
    match super::check_daily_limit(avail, &starts, start) {
        Ok(()) => {}
        Err(DomainError::DailyLimitReached { date, max }) => {
            out.push(Unavailability::DailyLimit { date, max });
        }
        Err(other) => return Err(other),
    }
    let (s, e) = coach_busy_range(policy, avail, start, end);
    let mut clashes: Vec<&CoachBusy> = busy
        .iter()
        .filter(|b| {
            let (bs, be) = coach_busy_range(policy, avail, b.start, b.end);
            ranges_overlap(bs, be, s, e)
        })
        .collect();
    clashes.sort_by_key(|b| (b.start, b.end));
    for b in clashes {
        out.push(if ranges_overlap(b.start, b.end, start, end) {
            Unavailability::Clash {
                start: b.start,
                end: b.end,
            }
        } else {
            Unavailability::Buffer {
                clashing_start: b.start,
                clashing_end: b.end,
            }
        });
    }
    Ok(out)
}

/// `Ok(false)` when outside the hours; `Err` only for a bad zone.
fn check_within_hours_or_zone(
    avail: Option<&Availability>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<bool, DomainError> {
    match super::check_within_hours(avail, start, end) {
        Ok(()) => Ok(true),
        Err(DomainError::OutsideCoachHours { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// The coach-side rules as one booking check: the first reason of
/// [`explain`], as the error the booking gets.
pub fn check_coach_rules(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    duration_minutes: u32,
) -> Result<(), DomainError> {
    let end = time::add(start, time::minutes(duration_minutes));
    match explain(policy, avail, busy, now, start, duration_minutes)?.first() {
        Some(reason) => Err(reason.to_error(start, end)),
        None => Ok(()),
    }
}

/// What `FindSlots` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotQuery {
    /// Starts at or after this instant …
    pub from: DateTime<Utc>,
    /// … and before this one (the call itself may end later). At most
    /// [`MAX_SLOT_RANGE_DAYS`] after `from`.
    pub to: DateTime<Utc>,
    /// The call's length, 1 to 1440 minutes.
    pub duration_minutes: u32,
    /// The slot grid's step, whole minutes from 1 to 1440.
    pub step: Duration,
    /// The zone each slot is also shown in.
    pub viewer_zone: Tz,
}

/// One bookable start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    pub start_utc: DateTime<Utc>,
    /// The viewer's wall-clock reading, `YYYY-MM-DDTHH:MM`.
    pub viewer_local: String,
    /// The viewer's UTC offset at that instant, e.g. `-05:00`, `+05:45`.
    pub viewer_offset: String,
}

impl Slot {
    fn new(start_utc: DateTime<Utc>, viewer: Tz) -> Self {
        // Not `with_timezone(..).naive_local()`: that panics at the ends of
        // time, where the local reading is not representable.
        let utc = start_utc.naive_utc();
        let offset = viewer.offset_from_utc_datetime(&utc).fix();
        let local = utc.checked_add_offset(offset).unwrap_or(utc);
        Self {
            start_utc,
            viewer_local: local.format("%Y-%m-%dT%H:%M").to_string(),
            viewer_offset: offset.to_string(),
        }
    }
}

/// The starts of `[query.from, query.to)` on the coach's slot grid (see
/// the [module docs](super)) that a booking of `query.duration_minutes`
/// would pass: granularity, effective notice, horizon, hours, no clash with
/// `busy` including all buffers, daily limit. Sorted by instant.
///
/// `busy` holds the coach's active calls; for the daily limit and the
/// buffers to be right it must include every one starting from three days
/// before `from` to three days after `to` (buffers are at most a day each;
/// add the policy's `coach_buffer` if that is longer than a day). Work is linear in hours × days, calls and results, plus
/// one zone lookup per hour of the range.
///
/// Refused: a duration or step out of range, an empty range or one longer
/// than [`MAX_SLOT_RANGE_DAYS`], more than [`MAX_SLOTS`] results, a
/// published zone that is unknown.
pub fn find_slots(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    now: DateTime<Utc>,
    query: &SlotQuery,
) -> Result<Vec<Slot>, DomainError> {
    check_minutes("duration_minutes", query.duration_minutes)?;
    let step = step_secs(query.step)?;
    if query.from >= query.to {
        return Err(DomainError::InvalidArgument {
            field: "to",
            message: "must be after from".to_owned(),
        });
    }
    if query.to.signed_duration_since(query.from) > Duration::days(MAX_SLOT_RANGE_DAYS) {
        return Err(DomainError::InvalidArgument {
            field: "to",
            message: format!("must be at most {MAX_SLOT_RANGE_DAYS} days after from"),
        });
    }
    let cal = Calendar::for_coach(avail)?;
    let duration = time::minutes(query.duration_minutes);
    let length = i64::from(query.duration_minutes) * 60;

    // Candidate starts: [lo, hi) in whole seconds.
    let earliest = time::add(now, effective_min_notice(policy, avail));
    let latest = time::add(now, policy.max_horizon);
    let lo = hours::ceil_secs(query.from).max(hours::ceil_secs(earliest));
    let hi = hours::ceil_secs(query.to).min(latest.timestamp().saturating_add(1));
    if lo >= hi {
        return Ok(Vec::new());
    }
    let pieces = hours::pieces(&cal, lo, hi.saturating_add(length));
    let open = hours::open_secs(&pieces);
    let blocked = blocked_starts(policy, avail, busy, duration);
    let full = full_days(avail, cal.tz, busy);
    let granularity = policy.start_step_secs();

    let mut starts: Vec<i64> = Vec::new();
    for piece in &pieces {
        let end = piece.end.min(hi);
        if piece.start.max(lo) >= end || full.contains(&piece.date) {
            continue;
        }
        // The first grid time of this piece at or after `x` (>= anchor).
        let grid = |x: i64| {
            let n = x.saturating_sub(piece.anchor);
            let k = n.div_euclid(step) + i64::from(n.rem_euclid(step) != 0);
            piece.anchor.saturating_add(k.saturating_mul(step))
        };
        let mut t = grid(piece.start.max(lo));
        while t < end {
            if t.rem_euclid(granularity) != 0 {
                t = t.saturating_add(step);
                continue;
            }
            // Fits the open interval holding t, else no later start before
            // that interval's end does.
            match open.get(open.partition_point(|iv| iv.1 <= t)) {
                Some(&(a, _)) if t < a => {
                    t = grid(a);
                    continue;
                }
                Some(&(_, b)) if t.saturating_add(length) > b => {
                    t = grid(b);
                    continue;
                }
                Some(_) => {}
                None => break,
            }
            if let Some(&(a, b)) = blocked.get(blocked.partition_point(|iv| iv.1 <= t))
                && a <= t
            {
                t = grid(b);
                continue;
            }
            starts.push(t);
            if starts.len() > MAX_SLOTS {
                return Err(too_many_slots());
            }
            t = t.saturating_add(step);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    Ok(starts
        .into_iter()
        .filter_map(|t| DateTime::from_timestamp(t, 0))
        .map(|t| Slot::new(t, query.viewer_zone))
        .collect())
}

fn too_many_slots() -> DomainError {
    DomainError::InvalidArgument {
        field: "to",
        message: format!(
            "the range holds more than {MAX_SLOTS} slots; narrow it or widen the step"
        ),
    }
}

fn step_secs(step: Duration) -> Result<i64, DomainError> {
    let secs = step.num_seconds();
    if step.subsec_nanos() == 0
        && secs % 60 == 0
        && (60..=i64::from(MAX_MINUTES) * 60).contains(&secs)
    {
        Ok(secs)
    } else {
        Err(DomainError::InvalidArgument {
            field: "step",
            message: format!("must be whole minutes from 1 to {MAX_MINUTES}"),
        })
    }
}

/// The starts a call of `duration` may not take because of `busy`, as
/// sorted disjoint `[from, to)` in whole seconds. The busy ranges
/// `[t − before, t + duration + after)` and `[bs − before, be + after)`
/// overlap iff `bs − before − duration − after < t < be + after + before`.
fn blocked_starts(
    policy: &Policy,
    avail: Option<&Availability>,
    busy: &[CoachBusy],
    duration: Duration,
) -> Vec<(i64, i64)> {
    let (before, after) = buffers(policy, avail);
    let mut blocked: Vec<(i64, i64)> = busy
        .iter()
        .filter_map(|b| {
            let (bs, be) = (time::sub(b.start, before), time::add(b.end, after));
            if bs >= be {
                return None; // an empty range clashes with nothing
            }
            let low = time::sub(time::sub(bs, duration), after)
                .timestamp()
                .saturating_add(1);
            let high = hours::ceil_secs(time::add(be, before));
            (low < high).then_some((low, high))
        })
        .collect();
    blocked.sort_unstable();
    hours::merge(blocked, true)
}

/// The coach-local dates that already hold `daily_max` of `busy`'s starts.
fn full_days(avail: Option<&Availability>, tz: Tz, busy: &[CoachBusy]) -> BTreeSet<NaiveDate> {
    let Some(max) = avail.and_then(|a| a.daily_max) else {
        return BTreeSet::new();
    };
    let mut counts: BTreeMap<NaiveDate, u32> = BTreeMap::new();
    for b in busy {
        let count = counts
            .entry(hours::local_date(tz, b.start.timestamp()))
            .or_default();
        *count = count.saturating_add(1);
    }
    counts
        .into_iter()
        .filter(|&(_, count)| count >= max)
        .map(|(date, _)| date)
        .collect()
}
