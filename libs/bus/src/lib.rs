//! NATS JetStream for the services: the bus the call events travel on.
//!
//! - [`Bus`] is the connection. [`Bus::ensure_topology`] creates or updates
//!   the streams and the KV bucket (every service runs it at start);
//!   [`Bus::publish_event`] and [`Bus::publish_batch`] publish with the event
//!   id as `Nats-Msg-Id`, so JetStream drops a republished event within
//!   [`DUPLICATE_WINDOW`]; [`Bus::put_card_if_newer`] keeps the call cards.
//! - [`run_consumer`] runs a durable pull consumer shared by every instance of
//!   a service, with retries, a dead-letter subject, per-key order inside an
//!   instance and a graceful drain. Its [module docs](consumer) state what
//!   handlers can count on and what they must do themselves.
//! - [`inbox`] is the handler's half of exactly-once: dedupe by event id and
//!   per-key version order, in the handler's own Postgres transaction.
//!
//! # Subjects and streams
//!
//! Built by [`Names`] from a root (`skileez`):
//!
//! | stream            | subjects                                   |
//! |-------------------|--------------------------------------------|
//! | `CALL_EVENTS`     | `skileez.call.v1.<EventName>.<call_id>`    |
//! | `PLATFORM_EVENTS` | `skileez.contract.v1.>`, `skileez.user.v1.>` |
//! | `DEAD_LETTERS`    | `skileez.dlq.<consumer>`                   |
//!
//! and the KV bucket `CALL_CARDS` (call id → latest card). All on file
//! storage, kept until someone decides otherwise. The message format is in
//! [`headers`].
//!
//! **Architecture invariant:** this crate knows subjects, headers and
//! delivery, not calls: payloads are opaque bytes.

mod bus;
mod config;
pub mod consumer;
mod error;
pub mod headers;
pub mod inbox;
mod security;

pub use bus::{
    Bus, CALL_EVENT_CONTENT_TYPE, DUPLICATE_WINDOW, OutgoingEvent, PublishAck, connect_until_up,
};
pub use config::{BusConfig, Names};
pub use consumer::{
    ConsumerConfig, Delivery, Handler, HandlerError, PULL_EXPIRES, consumer_pending, run_consumer,
};
pub use error::{BoxError, BusError};
pub use security::{NatsAuth, NatsSecurity, redact_url};

/// Re-exported so that handlers need no async-nats dependency of their own.
pub use async_nats::HeaderMap;
pub use async_trait::async_trait;
