//! What a call event means for the call's timers: pure, no I/O, no clock.
//!
//! | event | timers |
//! |---|---|
//! | `CallScheduled` | create the five, skipping a reminder whose moment had passed at booking |
//! | `CallRescheduled`, `CallCancelled`, `CallMissed`, `CallEnded` | retire every pending one |
//! | `CallReady` | retire `ready` |
//! | `CallStarted` | retire `ready` and `missed` (`auto_complete` stays) |
//! | `CallReminderDue(kind)` | retire that reminder |
//! | `ParticipantJoined` | nothing |
//!
//! The moments follow the call aggregate's own (`libs/domain`, `Call::ready_at`
//! and friends): `ready` is taken from the card's `joinable_from`, which
//! scheduling computed with its own policy; the others from the start, the
//! length and this service's policy, which must match scheduling's.

use chrono::{DateTime, Duration, Utc};
use skileez_domain::Policy;
use skileez_proto::call::{self as ev, call_event::Event};

use crate::model::TimerKind;

/// A timer to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTimer {
    pub kind: TimerKind,
    pub due_at: DateTime<Utc>,
}

/// What to do with a call's timers for one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Create these (the call was booked, or carries on a moved one).
    Create {
        call_start: DateTime<Utc>,
        timers: Vec<NewTimer>,
    },
    /// Retire the pending timers of these kinds.
    Retire(Vec<TimerKind>),
    Nothing,
}

/// An event the timers cannot make sense of: poison.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(String);

/// The plan for `event` under `policy`.
pub fn plan(event: &ev::CallEvent, policy: &Policy) -> Result<Plan, PlanError> {
    let Some(body) = &event.event else {
        // An event type newer than this service: nothing to do with it.
        return Ok(Plan::Nothing);
    };
    Ok(match body {
        Event::Scheduled(scheduled) => {
            let start = timestamp(scheduled.start.as_ref(), "CallScheduled.start")?;
            let booked_at = timestamp(event.occurred_at.as_ref(), "CallEvent.occurred_at")?;
            let joinable_from = event
                .card
                .as_ref()
                .and_then(|card| card.joinable_from.as_ref());
            let ready = match joinable_from {
                Some(at) => timestamp(Some(at), "CallCard.joinable_from")?,
                None => start - policy.ready_lead,
            };
            let end = start + Duration::minutes(i64::from(scheduled.duration_minutes));
            let mut timers = Vec::with_capacity(5);
            for (kind, lead) in [
                (TimerKind::Reminder24h, policy.reminder_day_lead),
                (TimerKind::Reminder1h, policy.reminder_hour_lead),
            ] {
                let due_at = start - lead;
                // As the aggregate decides (`Call::reminder_due_at`): a
                // reminder whose moment had passed at booking is never sent.
                if booked_at <= due_at {
                    timers.push(NewTimer { kind, due_at });
                }
            }
            timers.push(NewTimer {
                kind: TimerKind::Ready,
                due_at: ready,
            });
            timers.push(NewTimer {
                kind: TimerKind::Missed,
                due_at: start + policy.missed_after,
            });
            timers.push(NewTimer {
                kind: TimerKind::AutoComplete,
                due_at: end + policy.overrun_grace,
            });
            Plan::Create {
                call_start: start,
                timers,
            }
        }
        Event::Rescheduled(_) | Event::Cancelled(_) | Event::Missed(_) | Event::Ended(_) => {
            Plan::Retire(TimerKind::ALL.to_vec())
        }
        Event::Ready(_) => Plan::Retire(vec![TimerKind::Ready]),
        Event::Started(_) => Plan::Retire(vec![TimerKind::Ready, TimerKind::Missed]),
        Event::ReminderDue(reminder) => match ev::ReminderKind::try_from(reminder.kind) {
            Ok(ev::ReminderKind::ReminderKind24h) => Plan::Retire(vec![TimerKind::Reminder24h]),
            Ok(ev::ReminderKind::ReminderKind1h) => Plan::Retire(vec![TimerKind::Reminder1h]),
            _ => Plan::Nothing,
        },
        Event::ParticipantJoined(_) => Plan::Nothing,
    })
}

fn timestamp(at: Option<&prost_types::Timestamp>, field: &str) -> Result<DateTime<Utc>, PlanError> {
    let at = at.ok_or_else(|| PlanError(format!("{field} is missing")))?;
    u32::try_from(at.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(at.seconds, nanos))
        .ok_or_else(|| PlanError(format!("{field} is not a valid instant")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap(),
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn scheduled(booked: DateTime<Utc>, start: DateTime<Utc>, minutes: u32) -> ev::CallEvent {
        ev::CallEvent {
            call_id: "c".into(),
            stream_version: 1,
            occurred_at: Some(ts(booked)),
            event: Some(Event::Scheduled(ev::CallScheduled {
                start: Some(ts(start)),
                duration_minutes: minutes,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn kinds(plan: &Plan) -> Vec<(TimerKind, DateTime<Utc>)> {
        match plan {
            Plan::Create { timers, .. } => timers.iter().map(|t| (t.kind, t.due_at)).collect(),
            other => panic!("expected Create, got {other:?}"),
        }
    }

    #[test]
    fn a_booking_days_ahead_gets_all_five_timers_at_the_policy_moments() {
        let start = at("2030-01-10T10:00:00Z");
        let plan = plan(
            &scheduled(at("2030-01-01T00:00:00Z"), start, 60),
            &Policy::default(),
        )
        .unwrap();
        assert_eq!(
            kinds(&plan),
            [
                (TimerKind::Reminder24h, at("2030-01-09T10:00:00Z")),
                (TimerKind::Reminder1h, at("2030-01-10T09:00:00Z")),
                (TimerKind::Ready, at("2030-01-10T09:55:00Z")),
                (TimerKind::Missed, at("2030-01-10T10:15:00Z")),
                (TimerKind::AutoComplete, at("2030-01-10T11:15:00Z")),
            ]
        );
    }

    #[test]
    fn a_call_booked_30_minutes_ahead_gets_no_reminder() {
        let start = at("2030-01-10T10:00:00Z");
        let plan = plan(
            &scheduled(at("2030-01-10T09:30:00Z"), start, 15),
            &Policy::default(),
        )
        .unwrap();
        let got: Vec<TimerKind> = kinds(&plan).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            got,
            [TimerKind::Ready, TimerKind::Missed, TimerKind::AutoComplete]
        );
    }

    #[test]
    fn a_reminder_due_exactly_at_booking_is_kept_as_the_aggregate_keeps_it() {
        let start = at("2030-01-10T10:00:00Z");
        let plan = plan(
            &scheduled(at("2030-01-10T09:00:00Z"), start, 15),
            &Policy::default(),
        )
        .unwrap();
        assert!(
            kinds(&plan)
                .iter()
                .any(|(k, _)| *k == TimerKind::Reminder1h)
        );
    }

    #[test]
    fn ready_follows_the_cards_joinable_from() {
        let start = at("2030-01-10T10:00:00Z");
        let mut event = scheduled(at("2030-01-01T00:00:00Z"), start, 15);
        event.card = Some(ev::CallCard {
            joinable_from: Some(ts(at("2030-01-10T09:58:00Z"))),
            ..Default::default()
        });
        let plan = plan(&event, &Policy::default()).unwrap();
        assert!(kinds(&plan).contains(&(TimerKind::Ready, at("2030-01-10T09:58:00Z"))));
    }

    #[test]
    fn later_events_retire_what_no_longer_applies() {
        let policy = Policy::default();
        let with = |event: Event| ev::CallEvent {
            event: Some(event),
            ..Default::default()
        };
        assert_eq!(
            plan(&with(Event::Cancelled(Default::default())), &policy).unwrap(),
            Plan::Retire(TimerKind::ALL.to_vec())
        );
        assert_eq!(
            plan(&with(Event::Rescheduled(Default::default())), &policy).unwrap(),
            Plan::Retire(TimerKind::ALL.to_vec())
        );
        assert_eq!(
            plan(&with(Event::Started(Default::default())), &policy).unwrap(),
            Plan::Retire(vec![TimerKind::Ready, TimerKind::Missed])
        );
        assert_eq!(
            plan(&with(Event::Ready(Default::default())), &policy).unwrap(),
            Plan::Retire(vec![TimerKind::Ready])
        );
        assert_eq!(
            plan(
                &with(Event::ReminderDue(ev::CallReminderDue {
                    kind: ev::ReminderKind::ReminderKind1h as i32
                })),
                &policy
            )
            .unwrap(),
            Plan::Retire(vec![TimerKind::Reminder1h])
        );
        assert_eq!(
            plan(&with(Event::ParticipantJoined(Default::default())), &policy).unwrap(),
            Plan::Nothing
        );
    }

    #[test]
    fn a_booking_without_a_start_is_refused() {
        let mut event = scheduled(Utc::now(), Utc::now(), 15);
        if let Some(Event::Scheduled(s)) = &mut event.event {
            s.start = None;
        }
        assert!(plan(&event, &Policy::default()).is_err());
    }
}
