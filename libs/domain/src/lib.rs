//! The pure core of Skileez call scheduling.
//!
//! A call is an event-sourced aggregate: [`decide()`] turns a [`Command`] and
//! the call's current state into the events to append (or a
//! [`DomainError`]); [`evolve`] folds an event into the state. Around them sit
//! the booking rules ([`rules`]), local-time resolution ([`time`]), the
//! call card a chat client draws ([`card`]) and coaches' published hours
//! with `FindSlots` ([`availability`]).
//!
//! Architecture invariant: this crate does no I/O, has no async, and never
//! reads the clock or a random source in its decisions. `now` is always an
//! argument and ids arrive in commands, so every rule is decided, and
//! tested, here, deterministically. Nothing in it panics on any input
//! (except the [`testing`] helpers, which are assertions by design).

pub mod availability;
pub mod call;
pub mod card;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod ids;
pub mod policy;
pub mod rules;
pub mod testing;
pub mod time;

#[cfg(test)]
mod proptests;

pub use availability::{
    Availability, AvailabilityEvent, CoachBusy, DateOverride, LocalInterval, Slot, SlotQuery,
    TimeOfDay, Unavailability, WeeklyInterval, evolve_availability, explain, find_slots,
};
pub use call::{
    Attendance, Call, CallKind, CallStatus, Cancellation, Join, ParticipantRole, ReminderKind,
    evolve, replay,
};
pub use card::{Action, CallCard, allowed_actions, joinable_from};
pub use command::{
    Actor, ActorRole, Command, ContractSnapshot, ContractStatus, RequestedStart, RescheduleCall,
    ScheduleCall,
};
pub use decide::{Decided, decide};
pub use error::{DomainError, ErrorKind};
pub use event::{
    CallCancelled, CallEnded, CallEvent, CallMissed, CallReady, CallReminderDue, CallRescheduled,
    CallScheduled, CallStarted, ParticipantJoined,
};
pub use ids::{CallId, ContractId, UserId};
pub use policy::Policy;
pub use rules::{BusySlot, find_conflict};
pub use time::{Fold, TZDB_VERSION, TimeError};
