//! Conversions from domain values to the protobuf contract: calls, call cards
//! and call events.

use std::{borrow::Borrow, collections::HashMap, hash::Hash};

use chrono::{DateTime, Utc};
use skileez_domain::{
    Action, ActorRole, Attendance, Availability, Call, CallEvent, CallKind, CallStatus,
    ParticipantRole, Policy, ReminderKind, allowed_actions, joinable_from,
};
use skileez_eventstore::RecordedEvent;
use skileez_proto::{call as ev, scheduling as pb};

/// Display names by user id, as cards show them. A page of ListCalls holds
/// its names shared with the service's name cache, the other answers a map
/// of their own.
pub trait Names {
    fn name(&self, user_id: &str) -> Option<&str>;
}

impl<K, V, S> Names for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: std::hash::BuildHasher,
{
    fn name(&self, user_id: &str) -> Option<&str> {
        self.get(user_id).map(AsRef::as_ref)
    }
}

pub fn weekday(day: chrono::Weekday) -> pb::Weekday {
    match day {
        chrono::Weekday::Mon => pb::Weekday::Monday,
        chrono::Weekday::Tue => pb::Weekday::Tuesday,
        chrono::Weekday::Wed => pb::Weekday::Wednesday,
        chrono::Weekday::Thu => pb::Weekday::Thursday,
        chrono::Weekday::Fri => pb::Weekday::Friday,
        chrono::Weekday::Sat => pb::Weekday::Saturday,
        chrono::Weekday::Sun => pb::Weekday::Sunday,
    }
}

/// A coach's hours as the API shows them.
pub fn availability(a: &Availability) -> pb::Availability {
    pb::Availability {
        time_zone: a.time_zone.clone(),
        weekly: a
            .weekly
            .iter()
            .map(|w| pb::WeeklyInterval {
                weekday: weekday(w.weekday).into(),
                start: w.start.to_string(),
                end: w.end.to_string(),
            })
            .collect(),
        overrides: a
            .overrides
            .iter()
            .map(|o| pb::DateOverride {
                date: o.date.format("%Y-%m-%d").to_string(),
                intervals: o
                    .intervals
                    .iter()
                    .map(|i| pb::TimeInterval {
                        start: i.start.to_string(),
                        end: i.end.to_string(),
                    })
                    .collect(),
                day_off: o.intervals.is_empty(),
            })
            .collect(),
        buffer_before_minutes: a.buffer_before_minutes,
        buffer_after_minutes: a.buffer_after_minutes,
        min_notice_minutes: a.min_notice_minutes,
        daily_max: a.daily_max,
    }
}

/// Why a start is too close to a coach's call `[start, end)` although the
/// two calls do not overlap: the buffers the coach keeps around calls.
pub fn buffer_message(
    policy: &Policy,
    hours: Option<&Availability>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> String {
    let before = hours.map_or(0, |h| h.buffer_before_minutes);
    let after = hours.map_or(0, |h| h.buffer_after_minutes);
    let extra = policy.coach_buffer.num_minutes().max(0);
    let after = if extra > 0 {
        format!("{after} minutes after (plus {extra} between any two calls)")
    } else {
        format!("{after} minutes after")
    };
    format!(
        "too close to the coach's call from {} to {}: the coach keeps {before} minutes \
         free before each call and {after}; choose a start that FindSlots lists",
        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn kind(kind: CallKind) -> ev::CallKind {
    match kind {
        CallKind::FreeConsultation => ev::CallKind::FreeConsultation,
        CallKind::PaidSession => ev::CallKind::PaidSession,
    }
}

pub fn status(status: CallStatus) -> ev::CallStatus {
    match status {
        CallStatus::Scheduled => ev::CallStatus::Scheduled,
        CallStatus::Ready => ev::CallStatus::Ready,
        CallStatus::Active => ev::CallStatus::Active,
        CallStatus::Completed => ev::CallStatus::Completed,
        CallStatus::Cancelled => ev::CallStatus::Cancelled,
        CallStatus::Rescheduled => ev::CallStatus::Rescheduled,
        CallStatus::Missed => ev::CallStatus::Missed,
    }
}

pub fn attendance(attendance: Attendance) -> ev::Attendance {
    match attendance {
        Attendance::Both => ev::Attendance::Both,
        Attendance::StudentOnly => ev::Attendance::StudentOnly,
        Attendance::CoachOnly => ev::Attendance::CoachOnly,
        Attendance::Nobody => ev::Attendance::Nobody,
    }
}

pub fn participant_role(role: ParticipantRole) -> ev::ParticipantRole {
    match role {
        ParticipantRole::Student => ev::ParticipantRole::Student,
        ParticipantRole::Coach => ev::ParticipantRole::Coach,
    }
}

pub fn actor_role(role: ActorRole) -> ev::ActorRole {
    match role {
        ActorRole::Student => ev::ActorRole::Student,
        ActorRole::Coach => ev::ActorRole::Coach,
        ActorRole::Admin => ev::ActorRole::Admin,
        ActorRole::Service => ev::ActorRole::Service,
    }
}

pub fn reminder_kind(kind: ReminderKind) -> ev::ReminderKind {
    match kind {
        ReminderKind::Day => ev::ReminderKind::ReminderKind24h,
        ReminderKind::Hour => ev::ReminderKind::ReminderKind1h,
    }
}

fn action(action: Action) -> ev::CallAction {
    match action {
        Action::Join => ev::CallAction::Join,
        Action::End => ev::CallAction::End,
        Action::Cancel => ev::CallAction::Cancel,
        Action::Reschedule => ev::CallAction::Reschedule,
    }
}

fn id_or_empty(id: Option<impl ToString>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// The card of a call as of `now`.
pub fn card(call: &Call, names: &impl Names, now: DateTime<Utc>, policy: &Policy) -> ev::CallCard {
    let person = |id: &str| ev::Person {
        user_id: id.to_owned(),
        display_name: names.name(id).map(str::to_owned).unwrap_or_default(),
    };
    ev::CallCard {
        call_id: call.id.to_string(),
        kind: kind(call.kind).into(),
        student: Some(person(call.student_id.as_str())),
        coach: Some(person(call.coach_id.as_str())),
        start: Some(timestamp(call.start)),
        duration_minutes: call.duration_minutes,
        end: Some(timestamp(call.end())),
        status: status(call.status).into(),
        joinable_from: Some(timestamp(joinable_from(call, policy))),
        allowed_actions: allowed_actions(call, now, policy)
            .into_iter()
            .map(|a| action(a).into())
            .collect(),
        contract_id: id_or_empty(call.contract_id.as_ref()),
        chain_id: call.chain_id.to_string(),
        rescheduled_from: id_or_empty(call.rescheduled_from),
        rescheduled_to: id_or_empty(call.rescheduled_to),
        version: call.version,
        attendance: call
            .attendance
            .map(attendance)
            .unwrap_or(ev::Attendance::Unspecified)
            .into(),
        drawn_at: Some(timestamp(now)),
    }
}

/// A call with its full state as of `now`.
pub fn call(call: &Call, names: &impl Names, now: DateTime<Utc>, policy: &Policy) -> pb::Call {
    pb::Call {
        card: Some(card(call, names, now, policy)),
        booked_at: Some(timestamp(call.booked_at)),
        booked_by: call.booked_by.to_string(),
        requested_time_zone: call.requested_time_zone.clone().unwrap_or_default(),
        tzdb_version: call.tzdb_version.clone(),
        reschedule_count: call.reschedule_count,
        joins: call
            .joins
            .iter()
            .map(|j| pb::Join {
                user_id: j.user_id.to_string(),
                role: participant_role(j.role).into(),
                joined_at: Some(timestamp(j.at)),
            })
            .collect(),
        started_at: call.started_at.map(timestamp),
        ended_at: call.ended_at.map(timestamp),
        cancellation: call.cancellation.as_ref().map(|c| pb::Cancellation {
            by: Some(ev::Actor {
                user_id: c.by.to_string(),
                role: actor_role(c.by_role).into(),
            }),
            reason: c.reason.clone().unwrap_or_default(),
            late: c.late,
            cancelled_at: Some(timestamp(c.at)),
        }),
        note: call.note.clone().unwrap_or_default(),
    }
}

/// The protobuf envelope of a stored event; `after` is the call's state right
/// after it, which the card shows as of the event's time.
pub fn event(
    record: &RecordedEvent,
    event: &CallEvent,
    after: &Call,
    names: &impl Names,
    policy: &Policy,
) -> ev::CallEvent {
    let contract = id_or_empty(after.contract_id.as_ref());
    let body = match event {
        CallEvent::Scheduled(e) => ev::call_event::Event::Scheduled(ev::CallScheduled {
            kind: kind(e.kind).into(),
            student_id: e.student_id.to_string(),
            coach_id: e.coach_id.to_string(),
            contract_id: id_or_empty(e.contract_id.as_ref()),
            start: Some(timestamp(e.start)),
            duration_minutes: e.duration_minutes,
            requested_time_zone: e.requested_time_zone.clone().unwrap_or_default(),
            requested_local_time: e.requested_local_time.clone().unwrap_or_default(),
            tzdb_version: e.tzdb_version.clone(),
            chain_id: e.chain_id.to_string(),
            rescheduled_from: id_or_empty(e.rescheduled_from),
            reschedule_count: e.reschedule_count,
            note: e.note.clone().unwrap_or_default(),
        }),
        CallEvent::Rescheduled(e) => ev::call_event::Event::Rescheduled(ev::CallRescheduled {
            new_call_id: e.new_call_id.to_string(),
            new_start: Some(timestamp(e.new_start)),
            reason: e.reason.clone().unwrap_or_default(),
            contract_id: contract,
        }),
        CallEvent::ReminderDue(e) => ev::call_event::Event::ReminderDue(ev::CallReminderDue {
            kind: reminder_kind(e.kind).into(),
        }),
        CallEvent::Ready(_) => ev::call_event::Event::Ready(ev::CallReady {
            joinable_from: Some(timestamp(joinable_from(after, policy))),
        }),
        CallEvent::ParticipantJoined(e) => {
            ev::call_event::Event::ParticipantJoined(ev::ParticipantJoined {
                user_id: e.user_id.to_string(),
                role: participant_role(e.role).into(),
                joined_at: Some(timestamp(e.at)),
            })
        }
        CallEvent::Started(e) => ev::call_event::Event::Started(ev::CallStarted {
            started_at: Some(timestamp(e.at)),
            first_participant_id: e.first_participant.to_string(),
        }),
        CallEvent::Ended(e) => ev::call_event::Event::Ended(ev::CallEnded {
            ended_at: Some(timestamp(e.at)),
            ended_by: id_or_empty(e.ended_by.as_ref()),
            auto_completed: e.auto,
            attendance: attendance(e.attendance).into(),
        }),
        CallEvent::Cancelled(e) => ev::call_event::Event::Cancelled(ev::CallCancelled {
            reason: e.reason.clone().unwrap_or_default(),
            late: e.late,
            session_returned: e.session_returned,
            contract_id: contract,
        }),
        CallEvent::Missed(e) => ev::call_event::Event::Missed(ev::CallMissed {
            attendance: attendance(e.attendance).into(),
            session_returned: e.session_returned,
            contract_id: contract,
        }),
    };
    let actor = record.metadata.get("actor").and_then(|a| {
        let role = match a.get("role")?.as_str()? {
            "student" => ev::ActorRole::Student,
            "coach" => ev::ActorRole::Coach,
            "admin" => ev::ActorRole::Admin,
            "service" => ev::ActorRole::Service,
            _ => ev::ActorRole::Unspecified,
        };
        Some(ev::Actor {
            user_id: a.get("user_id")?.as_str()?.to_owned(),
            role: role.into(),
        })
    });
    let text = |key: &str| {
        record
            .metadata
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    ev::CallEvent {
        event_id: record.event_id.to_string(),
        call_id: after.id.to_string(),
        stream_version: record.version,
        occurred_at: Some(timestamp(record.recorded_at)),
        actor,
        traceparent: text("traceparent"),
        tracestate: text("tracestate"),
        card: Some(card(after, names, record.recorded_at, policy)),
        event: Some(body),
    }
}
