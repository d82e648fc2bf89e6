//! The events of a call's stream: the facts the system of record keeps.
//!
//! Events are stored as JSON in Postgres forever and mapped one to one to the
//! `skileez.call.v1` protobuf messages, so their shape is a contract: field
//! names are snake_case and never renamed; the JSON `type` tag equals
//! [`CallEvent::event_type`], the protobuf message name. Adding an optional
//! field is fine (older rows read as `None`); changing a meaning needs a new
//! event version and an upcaster.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::call::{Attendance, CallKind, ParticipantRole, ReminderKind};
use crate::command::ActorRole;
use crate::ids::{CallId, ContractId, UserId};

/// A call was booked (first booking, or the successor of a reschedule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallScheduled {
    pub call_id: CallId,
    /// `call_id` of the first call of the reschedule chain.
    pub chain_id: CallId,
    pub kind: CallKind,
    pub student_id: UserId,
    pub coach_id: UserId,
    pub contract_id: Option<ContractId>,
    pub start: DateTime<Utc>,
    pub duration_minutes: u32,
    /// The IANA zone the start was requested in, if any.
    pub requested_time_zone: Option<String>,
    /// The local `YYYY-MM-DDTHH:MM` the start was requested as, if any.
    pub requested_local_time: Option<String>,
    /// The tz database version that resolved the start.
    pub tzdb_version: String,
    pub rescheduled_from: Option<CallId>,
    /// Reschedules before this call in its chain (0 for a first booking).
    pub reschedule_count: u32,
    pub booked_by: UserId,
    pub booked_at: DateTime<Utc>,
    /// The booker's note for the call, if any. Added after v1 shipped, so
    /// older rows read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The call was moved; `new_call_id` carries on (its own stream begins with
/// a `CallScheduled` whose `rescheduled_from` points back here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRescheduled {
    pub new_call_id: CallId,
    pub new_start: DateTime<Utc>,
    pub by: UserId,
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A reminder of `kind` is due now; notifications sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReminderDue {
    pub kind: ReminderKind,
    /// When the reminder was decided. Lets metrics see timer lateness.
    pub at: DateTime<Utc>,
}

/// The call can be joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReady {
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantJoined {
    pub user_id: UserId,
    pub role: ParticipantRole,
    pub at: DateTime<Utc>,
}

/// The first participant joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStarted {
    pub at: DateTime<Utc>,
    pub first_participant: UserId,
}

/// The call completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEnded {
    pub at: DateTime<Utc>,
    /// `None` when completed automatically after the overrun grace.
    pub ended_by: Option<UserId>,
    pub auto: bool,
    pub attendance: Attendance,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCancelled {
    pub by: UserId,
    pub by_role: ActorRole,
    pub reason: Option<String>,
    /// Cancelled inside `late_cancel_window` before the start.
    pub late: bool,
    /// The contract session goes back to the contract.
    pub session_returned: bool,
    pub at: DateTime<Utc>,
}

/// Nobody joined by `start + missed_after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallMissed {
    /// Always `Nobody` today; kept so a future partial-attendance rule needs
    /// no new event version.
    pub attendance: Attendance,
    pub session_returned: bool,
    pub at: DateTime<Utc>,
}

/// Every event of a call stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CallEvent {
    #[serde(rename = "CallScheduled")]
    Scheduled(CallScheduled),
    #[serde(rename = "CallRescheduled")]
    Rescheduled(CallRescheduled),
    #[serde(rename = "CallReminderDue")]
    ReminderDue(CallReminderDue),
    #[serde(rename = "CallReady")]
    Ready(CallReady),
    #[serde(rename = "ParticipantJoined")]
    ParticipantJoined(ParticipantJoined),
    #[serde(rename = "CallStarted")]
    Started(CallStarted),
    #[serde(rename = "CallEnded")]
    Ended(CallEnded),
    #[serde(rename = "CallCancelled")]
    Cancelled(CallCancelled),
    #[serde(rename = "CallMissed")]
    Missed(CallMissed),
}

macro_rules! event_types {
    ($($variant:ident($ty:ident) = $name:literal),* $(,)?) => {
        $(
            impl $ty {
                /// The protobuf message name and JSON `type` tag.
                pub const EVENT_TYPE: &'static str = $name;

                #[must_use]
                pub fn event_type(&self) -> &'static str {
                    Self::EVENT_TYPE
                }
            }

            impl From<$ty> for CallEvent {
                fn from(event: $ty) -> Self {
                    Self::$variant(event)
                }
            }
        )*

        impl CallEvent {
            /// Every event type name, e.g. for declaring NATS subjects.
            pub const ALL_TYPES: &'static [&'static str] = &[$($name),*];

            /// The protobuf message name and JSON `type` tag.
            #[must_use]
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)*
                }
            }
        }
    };
}

event_types! {
    Scheduled(CallScheduled) = "CallScheduled",
    Rescheduled(CallRescheduled) = "CallRescheduled",
    ReminderDue(CallReminderDue) = "CallReminderDue",
    Ready(CallReady) = "CallReady",
    ParticipantJoined(ParticipantJoined) = "ParticipantJoined",
    Started(CallStarted) = "CallStarted",
    Ended(CallEnded) = "CallEnded",
    Cancelled(CallCancelled) = "CallCancelled",
    Missed(CallMissed) = "CallMissed",
}

impl CallEvent {
    /// When the event happened (for a booking, when it was booked).
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Scheduled(e) => e.booked_at,
            Self::Rescheduled(e) => e.at,
            Self::ReminderDue(e) => e.at,
            Self::Ready(e) => e.at,
            Self::ParticipantJoined(e) => e.at,
            Self::Started(e) => e.at,
            Self::Ended(e) => e.at,
            Self::Cancelled(e) => e.at,
            Self::Missed(e) => e.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, at};
    use serde_json::json;

    #[test]
    fn scheduled_json_shape_is_the_stored_contract() {
        let event = testing::free_call_scheduled(testing::call_id(1), at("2026-03-10T10:00:00Z"));
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "CallScheduled",
                "call_id": "00000000-0000-0000-0000-000000000001",
                "chain_id": "00000000-0000-0000-0000-000000000001",
                "kind": "free_consultation",
                "student_id": "student-1",
                "coach_id": "coach-1",
                "contract_id": null,
                "start": "2026-03-10T10:00:00Z",
                "duration_minutes": 15,
                "requested_time_zone": null,
                "requested_local_time": null,
                "tzdb_version": crate::TZDB_VERSION,
                "rescheduled_from": null,
                "reschedule_count": 0,
                "booked_by": "student-1",
                "booked_at": "2026-03-01T09:00:00Z",
            })
        );
    }

    #[test]
    fn other_events_json_shapes() {
        let t = at("2026-03-10T10:00:00Z");
        let cases = [
            (
                CallEvent::from(CallEnded {
                    at: t,
                    ended_by: None,
                    auto: true,
                    attendance: Attendance::StudentOnly,
                }),
                json!({"type": "CallEnded", "at": "2026-03-10T10:00:00Z", "ended_by": null,
                       "auto": true, "attendance": "student_only"}),
            ),
            (
                CallEvent::from(CallCancelled {
                    by: testing::coach(),
                    by_role: ActorRole::Coach,
                    reason: Some("ill".into()),
                    late: true,
                    session_returned: false,
                    at: t,
                }),
                json!({"type": "CallCancelled", "by": "coach-1", "by_role": "coach",
                       "reason": "ill", "late": true, "session_returned": false,
                       "at": "2026-03-10T10:00:00Z"}),
            ),
            (
                CallEvent::from(CallReminderDue {
                    kind: ReminderKind::Hour,
                    at: t,
                }),
                json!({"type": "CallReminderDue", "kind": "hour", "at": "2026-03-10T10:00:00Z"}),
            ),
            (
                CallEvent::from(ParticipantJoined {
                    user_id: testing::student(),
                    role: ParticipantRole::Student,
                    at: t,
                }),
                json!({"type": "ParticipantJoined", "user_id": "student-1", "role": "student",
                       "at": "2026-03-10T10:00:00Z"}),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(serde_json::to_value(&event).unwrap(), expected);
            let back: CallEvent = serde_json::from_value(expected).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn missing_optional_fields_read_as_none() {
        let stored = json!({"type": "CallRescheduled",
            "new_call_id": "00000000-0000-0000-0000-000000000002",
            "new_start": "2026-03-11T10:00:00Z", "by": "coach-1",
            "at": "2026-03-10T10:00:00Z"});
        let event: CallEvent = serde_json::from_value(stored).unwrap();
        assert!(matches!(
            event,
            CallEvent::Rescheduled(CallRescheduled { reason: None, .. })
        ));
    }

    #[test]
    fn stored_events_with_invalid_ids_are_rejected() {
        let stored = json!({"type": "CallStarted", "at": "2026-03-10T10:00:00Z",
            "first_participant": "not valid"});
        assert!(serde_json::from_value::<CallEvent>(stored).is_err());
    }

    #[test]
    fn event_type_names_match_the_json_tag() {
        let t = at("2026-03-10T10:00:00Z");
        let events = [
            testing::free_call_scheduled(testing::call_id(1), t),
            CallReady { at: t }.into(),
            CallStarted {
                at: t,
                first_participant: testing::coach(),
            }
            .into(),
            CallMissed {
                attendance: Attendance::Nobody,
                session_returned: false,
                at: t,
            }
            .into(),
        ];
        for event in events {
            let value = serde_json::to_value(&event).unwrap();
            assert_eq!(value["type"], event.event_type());
            assert!(CallEvent::ALL_TYPES.contains(&event.event_type()));
            assert_eq!(
                event.at(),
                if matches!(event, CallEvent::Scheduled(_)) {
                    at("2026-03-01T09:00:00Z")
                } else {
                    t
                }
            );
        }
        assert_eq!(CallEvent::ALL_TYPES.len(), 9);
        assert_eq!(CallScheduled::EVENT_TYPE, "CallScheduled");
    }
}
