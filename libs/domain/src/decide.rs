//! Deciding a command against a call's state: the write side of the core.
//!
//! [`decide()`] either refuses a command with a [`DomainError`] or returns the
//! events to append. It reads no clock (`now` is an argument) and does no
//! I/O, so every rule of SPEC §1–3 is decided here and tested here.
//!
//! Timer commands are idempotent: the timers service may fire one late,
//! twice, or after the call has moved on. A stale or repeated one decides
//! nothing (an empty `Vec`); one that arrives before its moment is refused
//! with [`DomainError::TimerNotDue`] so the timer can be re-armed. That
//! settles every race between a person and a timer in one place.

use chrono::{DateTime, Utc};

use crate::call::{Call, CallStatus, ReminderKind};
use crate::command::{Actor, Command, RescheduleCall, ScheduleCall};
use crate::error::DomainError;
use crate::event::{
    CallCancelled, CallEnded, CallEvent, CallMissed, CallReady, CallReminderDue, CallRescheduled,
    CallScheduled, CallStarted, ParticipantJoined,
};
use crate::ids::CallId;
use crate::policy::Policy;
use crate::rules;
use crate::time::TZDB_VERSION;

/// One event to append, and the stream (call) it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub call_id: CallId,
    pub event: CallEvent,
}

/// Decides `command` against `state` (the call's current state, `None` if its
/// stream is empty) at `now`.
///
/// Returns the events to append in order, possibly on two streams: a
/// reschedule appends `CallRescheduled` to the old call and then the new
/// call's `CallScheduled` (same chain, people, kind, contract and length;
/// `reschedule_count + 1`). An empty `Vec` is an idempotent no-op.
pub fn decide(
    state: Option<&Call>,
    command: &Command,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<Decided>, DomainError> {
    let Some(call) = state else {
        return match command {
            Command::Schedule(cmd) => schedule(cmd, now, policy),
            _ => Err(DomainError::CallNotFound),
        };
    };
    let events = match command {
        Command::Schedule(_) => {
            return Err(DomainError::InvalidTransition {
                from: call.status,
                action: "schedule",
            });
        }
        // The only command that writes to two streams.
        Command::Reschedule(cmd) => return reschedule(call, cmd, now, policy),
        Command::Cancel { by, reason } => cancel(call, by, reason.as_deref(), now, policy)?,
        Command::Join { by } => join(call, by, now, policy)?,
        Command::End { by } => end(call, by, now)?,
        Command::MarkReady => mark_ready(call, now, policy)?,
        Command::MarkMissed => mark_missed(call, now, policy)?,
        Command::TriggerReminder { kind } => trigger_reminder(call, *kind, now, policy)?,
        Command::CompleteOverdue => complete_overdue(call, now, policy)?,
    };
    Ok(events
        .into_iter()
        .map(|event| Decided {
            call_id: call.id,
            event,
        })
        .collect())
}

fn schedule(
    cmd: &ScheduleCall,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<Decided>, DomainError> {
    rules::check_distinct_people(&cmd.student_id, &cmd.coach_id)?;
    rules::check_booker(&cmd.by, &cmd.student_id)?;
    rules::check_requested_start(&cmd.start)?;
    rules::check_booking_time(policy, now, cmd.start.utc)?;
    let duration_minutes = rules::check_kind(
        cmd.kind,
        cmd.contract.as_ref(),
        &cmd.student_id,
        &cmd.coach_id,
        cmd.existing_free_consultation,
        policy,
    )?;
    let event = CallScheduled {
        call_id: cmd.call_id,
        chain_id: cmd.call_id,
        kind: cmd.kind,
        student_id: cmd.student_id.clone(),
        coach_id: cmd.coach_id.clone(),
        contract_id: cmd.contract.as_ref().map(|c| c.id.clone()),
        start: cmd.start.utc,
        duration_minutes,
        requested_time_zone: cmd.start.time_zone.clone(),
        requested_local_time: cmd.start.local_time.clone(),
        tzdb_version: TZDB_VERSION.to_owned(),
        rescheduled_from: None,
        reschedule_count: 0,
        booked_by: cmd.by.user_id.clone(),
        booked_at: now,
        note: cmd.note.clone(),
    };
    Ok(vec![Decided {
        call_id: cmd.call_id,
        event: event.into(),
    }])
}

fn reschedule(
    call: &Call,
    cmd: &RescheduleCall,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<Decided>, DomainError> {
    check_participant(call, &cmd.by)?;
    if call.status != CallStatus::Scheduled {
        return Err(DomainError::InvalidTransition {
            from: call.status,
            action: "reschedule",
        });
    }
    rules::check_reschedule_cutoff(policy, now, call)?;
    rules::check_reschedule_limit(policy, call)?;
    // The event store's empty-stream check is the real guard; this catches
    // the ids at hand with a clearer message.
    let known = [Some(call.id), Some(call.chain_id), call.rescheduled_from];
    if known.contains(&Some(cmd.new_call_id)) {
        return Err(DomainError::InvalidArgument {
            field: "new_call_id",
            message: "must be a fresh id, not one of this booking chain".into(),
        });
    }
    let reason = rules::normalize_reason(cmd.reason.as_deref())?;
    rules::check_requested_start(&cmd.new_start)?;
    let new_start = cmd.new_start.utc;
    if new_start == call.start {
        return Err(DomainError::InvalidArgument {
            field: "start",
            message: "is the call's current start; send a different time".into(),
        });
    }
    rules::check_booking_time(policy, now, new_start)?;

    let moved = CallRescheduled {
        new_call_id: cmd.new_call_id,
        new_start,
        by: cmd.by.user_id.clone(),
        reason,
        at: now,
    };
    let successor = CallScheduled {
        call_id: cmd.new_call_id,
        chain_id: call.chain_id,
        kind: call.kind,
        student_id: call.student_id.clone(),
        coach_id: call.coach_id.clone(),
        contract_id: call.contract_id.clone(),
        start: new_start,
        duration_minutes: call.duration_minutes,
        requested_time_zone: cmd.new_start.time_zone.clone(),
        requested_local_time: cmd.new_start.local_time.clone(),
        tzdb_version: TZDB_VERSION.to_owned(),
        rescheduled_from: Some(call.id),
        reschedule_count: call.reschedule_count.saturating_add(1),
        booked_by: cmd.by.user_id.clone(),
        // The successor counts as booked now: a reminder whose moment has
        // already passed is not sent for it either.
        booked_at: now,
        note: call.note.clone(),
    };
    Ok(vec![
        Decided {
            call_id: call.id,
            event: moved.into(),
        },
        Decided {
            call_id: cmd.new_call_id,
            event: successor.into(),
        },
    ])
}

fn cancel(
    call: &Call,
    by: &Actor,
    reason: Option<&str>,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    // A participant is recorded in their part in this call; staff in theirs.
    let by_role = match call.role_of(&by.user_id) {
        Some(role) => role.into(),
        None if by.role.is_privileged() => by.role,
        None => return Err(DomainError::NotAParticipant),
    };
    if !matches!(call.status, CallStatus::Scheduled | CallStatus::Ready) {
        return Err(DomainError::InvalidTransition {
            from: call.status,
            action: "cancel",
        });
    }
    let reason = rules::normalize_reason(reason)?;
    let late = rules::is_late_cancel(policy, now, call);
    Ok(vec![
        CallCancelled {
            by: by.user_id.clone(),
            by_role,
            reason,
            late,
            session_returned: rules::session_returned_on_cancel(policy, call, late),
            at: now,
        }
        .into(),
    ])
}

fn join(
    call: &Call,
    by: &Actor,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    let role = call
        .role_of(&by.user_id)
        .ok_or(DomainError::NotAParticipant)?;
    let joined = ParticipantJoined {
        user_id: by.user_id.clone(),
        role,
        at: now,
    };
    let started = CallStarted {
        at: now,
        first_participant: by.user_id.clone(),
    };
    let opens_at = call.ready_at(policy);
    // The window closes by the clock, not when a timer gets round to it:
    // whether a late joiner gets in must not depend on timer latency.
    let closes_at = call.join_closes_at(policy);
    match call.status {
        CallStatus::Active | CallStatus::Ready | CallStatus::Scheduled if now >= closes_at => {
            Err(DomainError::JoinWindowClosed {
                closed_at: closes_at,
            })
        }
        CallStatus::Active => Ok(vec![joined.into()]),
        CallStatus::Ready => Ok(vec![joined.into(), started.into()]),
        // The ready timer is a moment late: become ready on the way in.
        CallStatus::Scheduled if now >= opens_at => Ok(vec![
            CallReady { at: now }.into(),
            joined.into(),
            started.into(),
        ]),
        status => Err(DomainError::CallNotJoinable { opens_at, status }),
    }
}

fn end(call: &Call, by: &Actor, now: DateTime<Utc>) -> Result<Vec<CallEvent>, DomainError> {
    check_participant(call, by)?;
    if call.status != CallStatus::Active {
        return Err(DomainError::InvalidTransition {
            from: call.status,
            action: "end",
        });
    }
    Ok(vec![
        CallEnded {
            at: now,
            ended_by: Some(by.user_id.clone()),
            auto: false,
            attendance: call.attendance_so_far(),
        }
        .into(),
    ])
}

fn mark_ready(
    call: &Call,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    if call.status != CallStatus::Scheduled {
        return Ok(Vec::new());
    }
    due(now, call.ready_at(policy))?;
    Ok(vec![CallReady { at: now }.into()])
}

fn mark_missed(
    call: &Call,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    if !matches!(call.status, CallStatus::Scheduled | CallStatus::Ready) {
        return Ok(Vec::new());
    }
    due(now, call.missed_at(policy))?;
    Ok(vec![
        CallMissed {
            attendance: call.attendance_so_far(),
            session_returned: rules::session_returned_on_missed(policy, call),
            at: now,
        }
        .into(),
    ])
}

fn trigger_reminder(
    call: &Call,
    kind: ReminderKind,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    if !matches!(call.status, CallStatus::Scheduled | CallStatus::Ready) || now >= call.start {
        return Ok(Vec::new());
    }
    // `None`: already sent, or its moment had passed at booking (never sent).
    let Some(due_at) = call.reminder_due_at(kind, policy) else {
        return Ok(Vec::new());
    };
    due(now, due_at)?;
    Ok(vec![CallReminderDue { kind, at: now }.into()])
}

fn complete_overdue(
    call: &Call,
    now: DateTime<Utc>,
    policy: &Policy,
) -> Result<Vec<CallEvent>, DomainError> {
    if call.status != CallStatus::Active {
        return Ok(Vec::new());
    }
    due(now, call.auto_complete_at(policy))?;
    Ok(vec![
        CallEnded {
            at: now,
            ended_by: None,
            auto: true,
            attendance: call.attendance_so_far(),
        }
        .into(),
    ])
}

/// Only the call's student or coach. Admins and services are not
/// participants: cancelling is the one thing they may do to a call.
fn check_participant(call: &Call, by: &Actor) -> Result<(), DomainError> {
    if call.is_participant(&by.user_id) {
        Ok(())
    } else {
        Err(DomainError::NotAParticipant)
    }
}

/// A timer command arriving before its moment.
fn due(now: DateTime<Utc>, due_at: DateTime<Utc>) -> Result<(), DomainError> {
    if now < due_at {
        Err(DomainError::TimerNotDue { due_at })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
