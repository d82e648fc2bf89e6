//! The booking and lifecycle rules of SPEC §1–3, one named function each.
//!
//! [`crate::decide()`] composes these; the service may call them too (e.g.
//! [`find_conflict`] to answer `CheckAvailability`, [`check_booking_time`]
//! to validate a slot before showing it). Each returns the [`DomainError`]
//! a caller sees when the rule says no.

use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, Utc};

use crate::call::{Call, CallKind};
use crate::command::{Actor, ActorRole, ContractSnapshot, RequestedStart};
use crate::error::DomainError;
use crate::ids::{CallId, UserId};
use crate::policy::Policy;
use crate::time;

/// Allowed length of a paid session (and of a configured free consultation).
pub const SESSION_MINUTES: RangeInclusive<u32> = 15..=240;

/// Longest cancel or reschedule reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A student and a coach are two different people.
pub fn check_distinct_people(student: &UserId, coach: &UserId) -> Result<(), DomainError> {
    if student == coach {
        return Err(DomainError::InvalidArgument {
            field: "coach_id",
            message: "must differ from student_id: nobody books a call with themselves".into(),
        });
    }
    Ok(())
}

/// Students book for themselves; admins and services for anyone; coaches
/// do not book (SPEC §1: "who can book: a student").
pub fn check_booker(by: &Actor, student: &UserId) -> Result<(), DomainError> {
    match by.role {
        ActorRole::Student if by.user_id == *student => Ok(()),
        ActorRole::Student => Err(DomainError::StudentMismatch),
        ActorRole::Admin | ActorRole::Service => Ok(()),
        ActorRole::Coach => Err(DomainError::RoleNotAllowed {
            role: ActorRole::Coach,
            action: "book a call",
        }),
    }
}

/// The zone and local text recorded with a start must be real and agree
/// with the instant, or the booking event would carry a false record.
pub fn check_requested_start(start: &RequestedStart) -> Result<(), DomainError> {
    let time_error = |source| DomainError::Time {
        field: "start",
        source,
    };
    match (&start.time_zone, &start.local_time) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(DomainError::InvalidArgument {
            field: "start",
            message: "a local time needs a time zone; resolve it in the caller's zone first".into(),
        }),
        (Some(zone), None) => time::parse_zone(zone).map(drop).map_err(time_error),
        (Some(zone), Some(local)) => {
            let tz = time::parse_zone(zone).map_err(time_error)?;
            time::parse_local(local).map_err(time_error)?;
            if time::to_local_string(start.utc, tz) != *local {
                return Err(DomainError::InvalidArgument {
                    field: "start",
                    message: format!(
                        "{local} in {zone} is not the instant {}; resolve the local time \
                         with time::resolve_local",
                        start.utc.to_rfc3339()
                    ),
                });
            }
            Ok(())
        }
    }
}

/// Starts fall on whole minutes (on multiples of `policy.start_granularity`,
/// which is a minute except in tests and demos that run in seconds).
pub fn check_whole_minute(policy: &Policy, start: DateTime<Utc>) -> Result<(), DomainError> {
    if time::is_on_step(start, policy.start_step_secs()) {
        Ok(())
    } else {
        Err(DomainError::StartNotWholeMinute)
    }
}

/// A call starts at least `min_notice` from now.
pub fn check_notice(
    policy: &Policy,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
) -> Result<(), DomainError> {
    let earliest = time::add(now, policy.min_notice);
    if start < earliest {
        // Starts are whole minutes, so the first acceptable one is the next
        // whole minute: that is what a client can send.
        return Err(DomainError::NotEnoughNotice {
            earliest: time::ceil_to(earliest, policy.start_step_secs()),
        });
    }
    Ok(())
}

/// A call starts at most `max_horizon` from now.
pub fn check_horizon(
    policy: &Policy,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
) -> Result<(), DomainError> {
    let latest = time::add(now, policy.max_horizon);
    if start > latest {
        return Err(DomainError::BeyondHorizon {
            latest: time::floor_to(latest, policy.start_step_secs()),
        });
    }
    Ok(())
}

/// Whole minute, notice and horizon: the rules every start meets, at
/// booking and at rescheduling alike.
pub fn check_booking_time(
    policy: &Policy,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
) -> Result<(), DomainError> {
    check_whole_minute(policy, start)?;
    check_notice(policy, now, start)?;
    check_horizon(policy, now, start)
}

/// At most one active free consultation per student–coach pair.
pub fn check_free_consultation(existing: Option<CallId>) -> Result<(), DomainError> {
    match existing {
        Some(call_id) => Err(DomainError::FreeConsultationExists { call_id }),
        None => Ok(()),
    }
}

/// A paid session needs a paid contract of exactly these two people with a
/// session left and a sane session length. Returns the session length.
pub fn check_contract(
    contract: &ContractSnapshot,
    student: &UserId,
    coach: &UserId,
) -> Result<u32, DomainError> {
    if contract.student_id != *student || contract.coach_id != *coach {
        return Err(DomainError::ContractMismatch);
    }
    if contract.status != crate::command::ContractStatus::Paid {
        return Err(DomainError::ContractNotPaid {
            status: contract.status,
        });
    }
    if contract
        .sessions_total
        .is_some_and(|total| contract.sessions_used >= total)
    {
        return Err(DomainError::NoSessionsLeft);
    }
    check_session_length(contract.session_minutes)?;
    Ok(contract.session_minutes)
}

/// Sessions last 15 to 240 minutes.
pub fn check_session_length(minutes: u32) -> Result<(), DomainError> {
    if SESSION_MINUTES.contains(&minutes) {
        Ok(())
    } else {
        Err(DomainError::InvalidSessionLength { minutes })
    }
}

/// The length of a call of `kind`, checking what that kind requires.
pub fn check_kind(
    kind: CallKind,
    contract: Option<&ContractSnapshot>,
    student: &UserId,
    coach: &UserId,
    existing_free_consultation: Option<CallId>,
    policy: &Policy,
) -> Result<u32, DomainError> {
    match (kind, contract) {
        (CallKind::FreeConsultation, Some(_)) => Err(DomainError::InvalidArgument {
            field: "contract_id",
            message: "a free consultation is not booked under a contract; leave it empty".into(),
        }),
        (CallKind::FreeConsultation, None) => {
            check_free_consultation(existing_free_consultation)?;
            Ok(policy.free_consultation_minutes)
        }
        (CallKind::PaidSession, None) => Err(DomainError::InvalidArgument {
            field: "contract_id",
            message: "a paid session is booked under a contract; send its id".into(),
        }),
        (CallKind::PaidSession, Some(contract)) => check_contract(contract, student, coach),
    }
}

/// No rescheduling later than `reschedule_cutoff` before the start.
pub fn check_reschedule_cutoff(
    policy: &Policy,
    now: DateTime<Utc>,
    call: &Call,
) -> Result<(), DomainError> {
    let cutoff = call.reschedule_deadline(policy);
    if now > cutoff {
        return Err(DomainError::RescheduleCutoff { cutoff });
    }
    Ok(())
}

/// At most `max_reschedules` per booking chain.
pub fn check_reschedule_limit(policy: &Policy, call: &Call) -> Result<(), DomainError> {
    if call.reschedule_count >= policy.max_reschedules {
        return Err(DomainError::TooManyReschedules {
            max: policy.max_reschedules,
        });
    }
    Ok(())
}

/// Reasons are trimmed; blank means none; at most 500 characters.
pub fn normalize_reason(reason: Option<&str>) -> Result<Option<String>, DomainError> {
    let Some(trimmed) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let chars = trimmed.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(DomainError::reason_too_long(chars));
    }
    Ok(Some(trimmed.to_owned()))
}

/// A cancellation inside `late_cancel_window` before the start is late.
#[must_use]
pub fn is_late_cancel(policy: &Policy, now: DateTime<Utc>, call: &Call) -> bool {
    now > call.late_cancel_from(policy)
}

/// An early cancellation gives the session back; a late one only by policy.
#[must_use]
pub fn session_returned_on_cancel(policy: &Policy, call: &Call, late: bool) -> bool {
    call.is_paid() && (!late || policy.refund_session_on_late_cancel)
}

/// A missed call gives the session back only by policy.
#[must_use]
pub fn session_returned_on_missed(policy: &Policy, call: &Call) -> bool {
    call.is_paid() && policy.refund_session_on_missed
}

/// One active call as the double-booking check sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusySlot {
    pub call_id: CallId,
    pub student_id: UserId,
    pub coach_id: UserId,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl BusySlot {
    /// The error a booking gets when it clashes with this slot.
    #[must_use]
    pub fn to_error(&self) -> DomainError {
        DomainError::SlotTaken {
            clashing_start: self.start,
            clashing_end: self.end,
        }
    }
}

impl Call {
    /// The slot this call holds, if it is active.
    #[must_use]
    pub fn busy_slot(&self) -> Option<BusySlot> {
        self.status.is_active().then(|| BusySlot {
            call_id: self.id,
            student_id: self.student_id.clone(),
            coach_id: self.coach_id.clone(),
            start: self.start,
            end: self.end(),
        })
    }
}

/// Whether two half-open ranges `[a_start, a_end)` and `[b_start, b_end)`
/// share an instant. Empty ranges share none, as in Postgres.
#[must_use]
pub fn ranges_overlap(
    a_start: DateTime<Utc>,
    a_end: DateTime<Utc>,
    b_start: DateTime<Utc>,
    b_end: DateTime<Utc>,
) -> bool {
    a_start < a_end && b_start < b_end && a_start < b_end && b_start < a_end
}

/// The first existing slot a new call `[start, end)` of `student` with
/// `coach` would clash with, mirroring the database's exclusion constraints:
/// a student's ranges `[start, end)` never overlap; a coach's ranges
/// `[start, end + coach_buffer)` never overlap. Back-to-back calls do not
/// clash. A negative buffer counts as none.
///
/// Like the constraints, this compares students with students and coaches
/// with coaches only.
#[must_use]
pub fn find_conflict<'a>(
    existing: &'a [BusySlot],
    student: &UserId,
    coach: &UserId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    coach_buffer: Duration,
) -> Option<&'a BusySlot> {
    find_conflict_except(existing, None, student, coach, start, end, coach_buffer)
}

/// [`find_conflict`] ignoring the slot of `except`: a call being
/// rescheduled gives its slot up in the same transaction, so it never
/// blocks its own successor.
#[must_use]
pub fn find_conflict_except<'a>(
    existing: &'a [BusySlot],
    except: Option<CallId>,
    student: &UserId,
    coach: &UserId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    coach_buffer: Duration,
) -> Option<&'a BusySlot> {
    let buffer = coach_buffer.max(Duration::zero());
    existing
        .iter()
        .filter(|slot| Some(slot.call_id) != except)
        .find(|slot| {
            let student_clash =
                slot.student_id == *student && ranges_overlap(slot.start, slot.end, start, end);
            let coach_clash = slot.coach_id == *coach
                && ranges_overlap(
                    slot.start,
                    time::add(slot.end, buffer),
                    start,
                    time::add(end, buffer),
                );
            student_clash || coach_clash
        })
}

/// [`find_conflict`] as a rule: `SlotTaken` naming the clashing call's time.
pub fn check_no_conflict(
    existing: &[BusySlot],
    student: &UserId,
    coach: &UserId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    coach_buffer: Duration,
) -> Result<(), DomainError> {
    match find_conflict(existing, student, coach, start, end, coach_buffer) {
        Some(slot) => Err(slot.to_error()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
