//! The events of a coach's availability stream, and deciding them.
//!
//! Like call events they are stored as JSON forever: field names are
//! snake_case and never renamed, the JSON `type` tag equals
//! [`AvailabilityEvent::event_type`]. The state is the latest published
//! availability, or `None` (bookable at any time).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Availability;
use crate::command::{Actor, ActorRole};
use crate::error::DomainError;
use crate::ids::UserId;

/// The coach's hours are now `availability` (replacing any before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityPublished {
    pub availability: Availability,
    pub by: UserId,
    pub published_at: DateTime<Utc>,
}

/// The coach's hours were withdrawn: bookable at any time again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityCleared {
    pub by: UserId,
    pub cleared_at: DateTime<Utc>,
}

/// Every event of a coach's availability stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AvailabilityEvent {
    #[serde(rename = "AvailabilityPublished")]
    Published(AvailabilityPublished),
    #[serde(rename = "AvailabilityCleared")]
    Cleared(AvailabilityCleared),
}

impl AvailabilityPublished {
    pub const EVENT_TYPE: &'static str = "AvailabilityPublished";
}

impl AvailabilityCleared {
    pub const EVENT_TYPE: &'static str = "AvailabilityCleared";
}

impl From<AvailabilityPublished> for AvailabilityEvent {
    fn from(event: AvailabilityPublished) -> Self {
        Self::Published(event)
    }
}

impl From<AvailabilityCleared> for AvailabilityEvent {
    fn from(event: AvailabilityCleared) -> Self {
        Self::Cleared(event)
    }
}

impl AvailabilityEvent {
    /// Every event type name, e.g. for declaring NATS subjects.
    pub const ALL_TYPES: &'static [&'static str] = &[
        AvailabilityPublished::EVENT_TYPE,
        AvailabilityCleared::EVENT_TYPE,
    ];

    /// The JSON `type` tag (and protobuf message name).
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Published(_) => AvailabilityPublished::EVENT_TYPE,
            Self::Cleared(_) => AvailabilityCleared::EVENT_TYPE,
        }
    }

    /// When it happened.
    #[must_use]
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Published(e) => e.published_at,
            Self::Cleared(e) => e.cleared_at,
        }
    }
}

/// Folds one event into the coach's availability. Records facts: it does
/// not re-validate what was published.
#[must_use]
pub fn evolve_availability(
    _state: Option<Availability>,
    event: &AvailabilityEvent,
) -> Option<Availability> {
    match event {
        AvailabilityEvent::Published(e) => Some(e.availability.clone()),
        AvailabilityEvent::Cleared(_) => None,
    }
}

/// The availability after a coach's whole stream.
#[must_use]
pub fn replay_availability<'a>(
    events: impl IntoIterator<Item = &'a AvailabilityEvent>,
) -> Option<Availability> {
    events.into_iter().fold(None, evolve_availability)
}

/// A change a person asks of a coach's availability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AvailabilityCommand {
    Publish {
        coach_id: UserId,
        availability: Availability,
        by: Actor,
    },
    Clear {
        coach_id: UserId,
        by: Actor,
    },
}

/// Coaches change their own availability; admins and services anyone's.
pub fn check_may_edit_availability(by: &Actor, coach_id: &UserId) -> Result<(), DomainError> {
    match by.role {
        ActorRole::Coach if by.user_id == *coach_id => Ok(()),
        ActorRole::Admin | ActorRole::Service => Ok(()),
        ActorRole::Coach => Err(DomainError::RoleNotAllowed {
            role: ActorRole::Coach,
            action: "change another coach's availability",
        }),
        ActorRole::Student => Err(DomainError::RoleNotAllowed {
            role: ActorRole::Student,
            action: "change a coach's availability",
        }),
    }
}

/// Decides a change against the coach's current availability `state` at
/// `now`. Publishing validates and stores the
/// [normalized](Availability::normalized) form; publishing what is already published,
/// or clearing what is already clear, decides nothing (an empty `Vec`).
pub fn decide_availability(
    state: Option<&Availability>,
    command: &AvailabilityCommand,
    now: DateTime<Utc>,
) -> Result<Vec<AvailabilityEvent>, DomainError> {
    match command {
        AvailabilityCommand::Publish {
            coach_id,
            availability,
            by,
        } => {
            check_may_edit_availability(by, coach_id)?;
            availability.validate()?;
            let availability = availability.normalized();
            if state == Some(&availability) {
                return Ok(Vec::new());
            }
            Ok(vec![
                AvailabilityPublished {
                    availability,
                    by: by.user_id.clone(),
                    published_at: now,
                }
                .into(),
            ])
        }
        AvailabilityCommand::Clear { coach_id, by } => {
            check_may_edit_availability(by, coach_id)?;
            if state.is_none() {
                return Ok(Vec::new());
            }
            Ok(vec![
                AvailabilityCleared {
                    by: by.user_id.clone(),
                    cleared_at: now,
                }
                .into(),
            ])
        }
    }
}
