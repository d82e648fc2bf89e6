//! Durable pull consumers: how timers, notifications and the directory ingest
//! take their messages off JetStream.
//!
//! [`run_consumer`] creates (or updates) a durable pull consumer and feeds
//! its messages to a [`Handler`] until shutdown. Every instance of a service
//! runs it with the same durable name, and JetStream spreads the messages
//! over them: each message goes to one instance at a time.
//!
//! # What a handler can count on, and what it must do itself
//!
//! - **At least once.** A message is acked only after [`Handler::handle`]
//!   returned `Ok`. A crash, a lost ack or an expired ack wait delivers it
//!   again, possibly to another instance, so a handler dedupes: in its own
//!   Postgres transaction, with [`crate::inbox::claim`].
//! - **Per key, in order, inside one instance.** The key is the subject's last
//!   token (the call id). Messages of one key go to one lane and are handled
//!   one after the other; when one is retried (NAKed with a delay), the
//!   messages of its key that arrive meanwhile are held back, not handled,
//!   until it has been handled or its redelivery has gone elsewhere (see
//!   below).
//! - **Not in order across instances.** JetStream may hand event 2 of a call
//!   to instance A while instance B still works on (or retries) event 1. A
//!   handler that needs order checks the event's version in its transaction
//!   with [`crate::inbox::advance`] and answers [`HandlerError::Retry`] when a
//!   predecessor has not been applied yet ([`crate::inbox::Order::Ahead`]);
//!   the message then comes back after the backoff, by which time the
//!   predecessor normally is in. That check is also what makes the
//!   per-instance hold-back above safe to give up after a while.
//!
//! # Retries and dead letters
//!
//! `Retry` NAKs the message with the delay `backoff[delivered - 1]` (the last
//! one repeated), so JetStream redelivers it after that long, to whichever
//! instance asks first. When a message has been delivered `max_deliver` times
//! and its handler still fails, or at once when the handler says `Poison`,
//! the original payload and headers are published to the dead-letter subject
//! `<root>.dlq.<durable>` (stored by the dead-letter stream, with the
//! `Skileez-Dlq-*` headers of [`crate::headers`]) and the message is
//! terminated: the ones behind it go on. If that publish fails the message is
//! NAKed and tried again later, never dropped.
//!
//! The JetStream consumer itself has no delivery limit: a server-side limit
//! would silently stop redelivering a message that kept crashing its
//! instances, and deliveries that never reached a handler (an instance
//! stopping) would count against it. A handler that panics counts as
//! `Retry`.
//!
//! # Back-pressure and shutdown
//!
//! One instance holds at most `lanes × 16` messages (bounded further by
//! `max_ack_pending`, which bounds the whole consumer); it asks JetStream
//! for more only when it has room. Held messages that wait (behind their
//! lane's current handler, or behind a retry of their key) get progress acks,
//! so their ack wait does not run out meanwhile. On shutdown no more messages
//! are requested; the handlers already running finish and are acked, and
//! every message not started is NAKed so that another instance takes it at
//! once. `run_consumer` returns when all that is done, at most about one
//! second ([`PULL_EXPIRES`]) after the running handlers have finished.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, Consumer, DeliverPolicy, pull};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::bus::Bus;
use crate::error::BusError;
use crate::headers;

/// How long one pull request waits for messages. Also the longest a shutdown
/// waits for the pull in progress to end (its late arrivals are NAKed).
pub const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Messages held per lane at most (waiting or being handled).
const IN_FLIGHT_PER_LANE: usize = 16;

/// How long after a retried message's redelivery is due the messages of its
/// key stay held back, waiting for it to come back to this instance. If it
/// went to another instance instead, they are released then, and the
/// handler's version check keeps the order.
const REDELIVERY_GRACE: Duration = Duration::from_secs(2);

/// After this many failed pulls in a row the wait between pulls stops growing.
const MAX_PULL_BACKOFF: Duration = Duration::from_secs(10);

/// How a durable consumer is set up and run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The durable name, shared by every instance of the service; also the
    /// last token of its dead-letter subject, so one subject token
    /// (no `.`, `*`, `>` or whitespace).
    pub durable: String,
    /// The stream to consume, e.g. `bus.names().call_stream`.
    pub stream: String,
    /// Subjects to take from the stream; empty means all of it.
    pub filter_subjects: Vec<String>,
    /// Deliveries after which a message that still fails goes to the dead
    /// letters. Below 1: retried forever.
    pub max_deliver: i64,
    /// The delay before the n-th redelivery of a retried message
    /// (`backoff[n - 1]`, the last one repeated); empty: at once.
    pub backoff: Vec<Duration>,
    /// How long JetStream waits for an ack before it redelivers a message
    /// that is not known to be in progress (its instance died). Messages held
    /// here are kept alive with progress acks, so this only needs to exceed
    /// the time to notice a dead instance, not the handler's run time.
    pub ack_wait: Duration,
    /// Messages handled at once by one instance; one key always goes to the
    /// same lane.
    pub lanes: usize,
    /// Messages delivered and not yet acked, over all instances together.
    pub max_ack_pending: i64,
}

impl ConsumerConfig {
    /// Defaults: up to 5 deliveries, redelivered after 1 s, 5 s, 30 s; ack
    /// wait 30 s; 4 lanes; 256 messages pending.
    pub fn new(
        durable: impl Into<String>,
        stream: impl Into<String>,
        filter_subjects: Vec<String>,
    ) -> ConsumerConfig {
        ConsumerConfig {
            durable: durable.into(),
            stream: stream.into(),
            filter_subjects,
            max_deliver: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            ack_wait: Duration::from_secs(30),
            lanes: 4,
            max_ack_pending: 256,
        }
    }

    fn validate(&self) -> Result<(), BusError> {
        let invalid = |reason: &str| {
            Err(BusError::InvalidConsumerConfig {
                durable: self.durable.clone(),
                reason: reason.to_owned(),
            })
        };
        if self.durable.is_empty()
            || self.durable.contains(['.', '*', '>'])
            || self.durable.contains(char::is_whitespace)
        {
            return invalid("the durable name must be one subject token");
        }
        if self.lanes == 0 {
            return invalid("lanes must be at least 1");
        }
        if self.ack_wait < Duration::from_millis(300) {
            return invalid("ack_wait must be at least 300 ms");
        }
        Ok(())
    }

    /// The most messages one instance holds at once.
    fn in_flight(&self) -> usize {
        let per_instance = self.lanes.saturating_mul(IN_FLIGHT_PER_LANE);
        match usize::try_from(self.max_ack_pending) {
            Ok(limit) if limit > 0 => per_instance.min(limit).max(1),
            _ => per_instance,
        }
    }

    /// The delay before redelivering a message that failed on its
    /// `delivered`-th delivery.
    fn backoff_after(&self, delivered: u64) -> Option<Duration> {
        let index = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff.get(index).or(self.backoff.last()).copied()
    }

    fn retries_exhausted(&self, delivered: u64) -> bool {
        u64::try_from(self.max_deliver).is_ok_and(|max| max >= 1 && delivered >= max)
    }
}

/// One delivered message, as a handler sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subject: String,
    /// The `Nats-Msg-Id`: the event id, when the publisher set one.
    pub event_id: Option<Uuid>,
    /// The subject's last token: the call (or contract, or user) id.
    pub key: String,
    pub payload: Bytes,
    pub headers: HeaderMap,
    pub stream_sequence: u64,
    /// 1 on the first delivery.
    pub delivered: u64,
    /// When JetStream stored the message.
    pub published: DateTime<Utc>,
}

impl Delivery {
    /// A header's value, if it is set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }

    /// The W3C trace context of the publisher, to continue its trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.header(headers::TRACEPARENT)
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.header(headers::TRACESTATE)
    }

    fn from_message(message: &async_nats::jetstream::Message) -> Result<Delivery, String> {
        let info = message
            .info()
            .map_err(|e| format!("not a JetStream message: {e}"))?;
        let subject = message.subject.to_string();
        let headers = message.headers.clone().unwrap_or_default();
        let event_id = headers
            .get(headers::NATS_MSG_ID)
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        let nanos = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        Ok(Delivery {
            key: subject.rsplit('.').next().unwrap_or_default().to_owned(),
            subject,
            event_id,
            payload: message.payload.clone(),
            headers,
            stream_sequence: info.stream_sequence,
            delivered: u64::try_from(info.delivered).unwrap_or(1),
            published: DateTime::from_timestamp_nanos(nanos),
        })
    }
}

/// What a consumer does with each message.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// `Ok` acks the message. Runs once at a time per key inside an
    /// instance, but may run for a message that was already handled (a
    /// redelivery) and, on another instance, beside a later message of the
    /// same key: see the [module docs](self).
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError>;
}

/// Why a handler did not finish a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (the database is down, a predecessor is missing):
    /// redelivered after the next backoff delay, dead-lettered once the
    /// deliveries reach `max_deliver`.
    #[error("retry: {0}")]
    Retry(String),
    /// Will never work (does not decode, breaks a rule for good): dead-lettered
    /// at once.
    #[error("poison: {0}")]
    Poison(String),
}

/// Runs the durable consumer of `config` until `shutdown` is cancelled, then
/// drains (see the [module docs](self)) and returns `Ok`. Fails at the start
/// if the consumer cannot be created or updated (the stream is missing, NATS
/// is unreachable, a setting cannot change); after that, failed pulls (an
/// outage, the consumer deleted behind its back) are logged and retried,
/// recreating the consumer if need be.
pub async fn run_consumer(
    bus: Bus,
    config: ConsumerConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    config.validate()?;
    let consumer = create_consumer(&bus, &config).await?;
    let config = Arc::new(config);
    let in_flight = config.in_flight();
    let room = Arc::new(Semaphore::new(in_flight));
    let mut senders = Vec::with_capacity(config.lanes);
    let mut lanes = Vec::with_capacity(config.lanes);
    for index in 0..config.lanes {
        // Room for every message the instance may hold: a send never waits.
        let (sender, receiver) = mpsc::channel(in_flight);
        senders.push(sender);
        let lane = Lane {
            index,
            receiver,
            handler: handler.clone(),
            bus: bus.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            ready: VecDeque::new(),
            held_back: HashMap::new(),
        };
        lanes.push(tokio::spawn(lane.run()));
    }
    tracing::info!(durable = %config.durable, stream = %config.stream, lanes = config.lanes, in_flight, "consumer started");
    let puller = Puller {
        bus: &bus,
        config: &config,
        consumer,
        room,
        senders,
        shutdown: &shutdown,
    };
    puller.run().await;
    for lane in lanes {
        if let Err(error) = lane.await {
            tracing::error!(durable = %config.durable, %error, "consumer lane failed");
        }
    }
    // Acks and NAKs are buffered: get the last ones to the server before the
    // caller drops the connection.
    if let Err(error) = bus.client().flush().await {
        tracing::warn!(durable = %config.durable, %error, "cannot flush the last acks");
    }
    tracing::info!(durable = %config.durable, "consumer drained");
    Ok(())
}

/// Messages of the stream that the consumer has not been delivered yet (for
/// a lag gauge). Messages delivered and not yet acked are not counted.
pub async fn consumer_pending(bus: &Bus, stream: &str, durable: &str) -> Result<u64, BusError> {
    let consumer: Consumer<pull::Config> = bus
        .jetstream()
        .get_consumer_from_stream(durable, stream)
        .await
        .map_err(|e| consumer_error(stream, durable, e))?;
    Ok(consumer.cached_info().num_pending)
}

async fn create_consumer(
    bus: &Bus,
    config: &ConsumerConfig,
) -> Result<Consumer<pull::Config>, BusError> {
    let (filter_subject, filter_subjects) = match config.filter_subjects.as_slice() {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let consumer = pull::Config {
        durable_name: Some(config.durable.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // No server-side limit: see the module docs.
        max_deliver: -1,
        filter_subject,
        filter_subjects,
        max_ack_pending: config.max_ack_pending,
        ..Default::default()
    };
    bus.jetstream()
        .create_consumer_on_stream(consumer, config.stream.as_str())
        .await
        .map_err(|e| consumer_error(&config.stream, &config.durable, e))
}

fn consumer_error(
    stream: &str,
    durable: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> BusError {
    BusError::Consumer {
        stream: stream.to_owned(),
        durable: durable.to_owned(),
        source: Box::new(source),
    }
}

/// A message held by this instance, with its share of the in-flight room.
struct Held {
    message: async_nats::jetstream::Message,
    delivery: Arc<Delivery>,
    _room: OwnedSemaphorePermit,
}

/// Asks JetStream for as many messages as there is room for, and hands each
/// to the lane of its key.
struct Puller<'a> {
    bus: &'a Bus,
    config: &'a ConsumerConfig,
    consumer: Consumer<pull::Config>,
    room: Arc<Semaphore>,
    senders: Vec<mpsc::Sender<Held>>,
    shutdown: &'a CancellationToken,
}

impl Puller<'_> {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            // A pull sent while disconnected would be buffered and replayed
            // after the reconnect, long after anyone waits for its answer.
            if self.bus.client().connection_state() != async_nats::connection::State::Connected {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            let first = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return,
                permit = self.room.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let mut room = vec![first];
            while let Ok(permit) = self.room.clone().try_acquire_owned() {
                room.push(permit);
            }
            let pulled = self
                .consumer
                .batch()
                .max_messages(room.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match pulled {
                Ok(batch) => batch,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(durable = %self.config.durable, %error, failures, "cannot pull messages");
                    drop(room);
                    if !self.pause_after_failure(failures).await {
                        return;
                    }
                    continue;
                }
            };
            // Read the pull to its end even when shutting down: what arrives
            // late is NAKed, not left to wait out its ack wait. The server
            // ends a pull at its expiry; one that outlives it by a second
            // was lost with a connection, and waiting longer (as async-nats
            // would, 5 s) only delays the next pull.
            let lost_after = Instant::now() + PULL_EXPIRES + Duration::from_secs(1);
            while let Ok(Some(item)) = tokio::time::timeout_at(lost_after, batch.next()).await {
                match item {
                    Ok(message) => {
                        failures = 0;
                        match room.pop() {
                            Some(permit) if !self.shutdown.is_cancelled() => {
                                self.dispatch(message, permit).await
                            }
                            _ => nak(&message, None).await,
                        }
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(durable = %self.config.durable, %error, failures, "pull failed");
                        break;
                    }
                }
            }
            drop(room);
            if failures > 0 && !self.pause_after_failure(failures).await {
                return;
            }
        }
    }

    /// Waits before the next pull and recreates the consumer (it may have
    /// been deleted, or the stream recreated). False on shutdown.
    async fn pause_after_failure(&mut self, failures: u32) -> bool {
        let delay = Duration::from_millis(200)
            .saturating_mul(2u32.saturating_pow(failures.min(10)))
            .min(MAX_PULL_BACKOFF);
        tokio::select! {
            () = self.shutdown.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        match create_consumer(self.bus, self.config).await {
            Ok(consumer) => self.consumer = consumer,
            Err(error) => tracing::warn!(%error, "cannot recreate the consumer"),
        }
        true
    }

    async fn dispatch(&self, message: async_nats::jetstream::Message, room: OwnedSemaphorePermit) {
        let delivery = match Delivery::from_message(&message) {
            Ok(delivery) => delivery,
            Err(error) => {
                // Cannot happen with a pull consumer; never loop on it.
                tracing::error!(durable = %self.config.durable, %error, "terminating an unreadable message");
                settle(&message, AckKind::Term).await;
                return;
            }
        };
        let lane = lane_of(&delivery.key, self.senders.len());
        let held = Held {
            message,
            delivery: Arc::new(delivery),
            _room: room,
        };
        if let Err(mpsc::error::SendError(held)) = self.senders[lane].send(held).await {
            // The lane has stopped (shutdown): another instance takes it.
            nak(&held.message, None).await;
        }
    }
}

fn lane_of(key: &str, lanes: usize) -> usize {
    // SipHash with fixed keys: the same key, the same lane, within a process.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    usize::try_from(hasher.finish() % lanes as u64).unwrap_or(0)
}

/// Messages of one key held back behind a retried message of that key.
struct HeldBack {
    /// The stream sequence of the retried message.
    sequence: u64,
    /// When to stop waiting for it to come back here.
    until: Instant,
    waiting: Vec<Held>,
}

/// Handles the messages of its keys one at a time.
struct Lane {
    index: usize,
    receiver: mpsc::Receiver<Held>,
    handler: Arc<dyn Handler>,
    bus: Bus,
    config: Arc<ConsumerConfig>,
    shutdown: CancellationToken,
    /// Received, not started, in arrival order.
    ready: VecDeque<Held>,
    held_back: HashMap<String, HeldBack>,
}

impl Lane {
    async fn run(mut self) {
        let mut current: Option<(Held, JoinHandle<Result<(), HandlerError>>)> = None;
        let mut closed = false;
        let every = (self.config.ack_wait / 3).max(Duration::from_millis(100));
        let mut progress = tokio::time::interval_at(Instant::now() + every, every);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if current.is_none() {
                if self.shutdown.is_cancelled()
                    || (closed && self.ready.is_empty() && self.held_back.is_empty())
                {
                    break;
                }
                current = self.start_next();
            }
            let release_at = self.held_back.values().map(|h| h.until).min();
            tokio::select! {
                biased;
                joined = async { (&mut current.as_mut().expect("guarded").1).await }, if current.is_some() => {
                    let (held, _) = current.take().expect("guarded");
                    let outcome = joined.unwrap_or_else(|error| Err(HandlerError::Retry(panic_text(error))));
                    self.settle(held, outcome).await;
                }
                () = self.shutdown.cancelled(), if current.is_none() => {}
                received = self.receiver.recv(), if !closed => match received {
                    Some(held) => self.ready.push_back(held),
                    None => closed = true,
                },
                _ = progress.tick() => self.keep_alive(current.as_ref().map(|(held, _)| held)).await,
                () = tokio::time::sleep_until(release_at.unwrap_or_else(Instant::now)), if release_at.is_some() => {
                    self.release_expired();
                }
            }
        }
        self.drain().await;
    }

    /// The next message to handle, spawned; messages of a key held back
    /// behind a retry are set aside on the way.
    fn start_next(&mut self) -> Option<(Held, JoinHandle<Result<(), HandlerError>>)> {
        while let Some(held) = self.ready.pop_front() {
            if let Some(back) = self.held_back.get_mut(&held.delivery.key) {
                // The retried message itself, or an earlier one, may go.
                if held.delivery.stream_sequence > back.sequence {
                    back.waiting.push(held);
                    continue;
                }
            }
            let handler = self.handler.clone();
            let delivery = held.delivery.clone();
            // A consumer span in the publisher's trace (OpenTelemetry
            // messaging conventions), around the handler's whole effect.
            let span = tracing::info_span!(
                "consumer.handle",
                otel.name = format_args!("process {}", self.config.stream),
                otel.kind = "consumer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "nats",
                messaging.operation.type = "process",
                messaging.operation.name = "process",
                messaging.destination.name = %delivery.subject,
                messaging.consumer.group.name = %self.config.durable,
                messaging.message.id = delivery.event_id.map(tracing::field::display),
                skileez.key = %delivery.key,
                lane = self.index,
                stream_sequence = delivery.stream_sequence,
                delivered = delivery.delivered,
                error.type = tracing::field::Empty,
            );
            skileez_telemetry::propagation::set_parent(
                &span,
                delivery.traceparent(),
                delivery.tracestate(),
            );
            let task = tokio::spawn(
                async move {
                    let outcome = handler.handle(&delivery).await;
                    if let Err(error) = &outcome {
                        let span = tracing::Span::current();
                        span.record("otel.status_code", "ERROR");
                        span.record("error.type", tracing::field::display(error));
                    }
                    outcome
                }
                .instrument(span),
            );
            return Some((held, task));
        }
        None
    }

    async fn settle(&mut self, held: Held, outcome: Result<(), HandlerError>) {
        let delivery = held.delivery.clone();
        match outcome {
            Ok(()) => {
                settle(&held.message, AckKind::Ack).await;
                self.release(&delivery.key, delivery.stream_sequence);
            }
            Err(HandlerError::Poison(error)) => self.dead_letter(held, "poison", &error).await,
            Err(HandlerError::Retry(error))
                if self.config.retries_exhausted(delivery.delivered) =>
            {
                self.dead_letter(held, "retry", &error).await
            }
            Err(HandlerError::Retry(error)) => {
                let delay = self.config.backoff_after(delivery.delivered);
                tracing::info!(
                    durable = %self.config.durable,
                    subject = %delivery.subject,
                    stream_sequence = delivery.stream_sequence,
                    delivered = delivery.delivered,
                    retry_in = ?delay,
                    %error,
                    "handler asked for a retry"
                );
                nak(&held.message, delay).await;
                self.hold_back(&delivery, delay.unwrap_or_default());
            }
        }
    }

    /// Publishes the message to the dead letters and terminates it; if the
    /// dead letter cannot be stored, retries later instead.
    async fn dead_letter(&mut self, held: Held, reason: &str, error: &str) {
        let delivery = held.delivery.clone();
        let subject = self.bus.names().dead_letter_subject(&self.config.durable);
        let headers = dead_letter_headers(&delivery, &self.config, reason, error);
        let stored = match self
            .bus
            .jetstream()
            .publish_with_headers(subject.clone(), headers, delivery.payload.clone())
            .await
        {
            Ok(ack) => ack.await,
            Err(error) => Err(error),
        };
        match stored {
            Ok(_) => {
                tracing::error!(
                    durable = %self.config.durable,
                    subject = %delivery.subject,
                    stream_sequence = delivery.stream_sequence,
                    delivered = delivery.delivered,
                    reason,
                    %error,
                    dead_letters = %subject,
                    "gave up on a message"
                );
                metrics::counter!(
                    "skileez_consumer_dead_letters_total",
                    "consumer" => self.config.durable.clone(),
                )
                .increment(1);
                settle(&held.message, AckKind::Term).await;
                self.release(&delivery.key, delivery.stream_sequence);
            }
            Err(publish_error) => {
                let delay = self
                    .config
                    .backoff
                    .last()
                    .copied()
                    .unwrap_or(Duration::from_secs(5));
                tracing::error!(
                    durable = %self.config.durable,
                    subject = %delivery.subject,
                    stream_sequence = delivery.stream_sequence,
                    error = %self.bus.publish_error(subject, publish_error),
                    "cannot store a dead letter; retrying the message later"
                );
                nak(&held.message, Some(delay)).await;
                self.hold_back(&delivery, delay);
            }
        }
    }

    fn hold_back(&mut self, delivery: &Delivery, delay: Duration) {
        let until = Instant::now() + delay + REDELIVERY_GRACE;
        let back = self
            .held_back
            .entry(delivery.key.clone())
            .or_insert_with(|| HeldBack {
                sequence: delivery.stream_sequence,
                until,
                waiting: Vec::new(),
            });
        back.sequence = delivery.stream_sequence;
        back.until = until;
    }

    /// The message `sequence` of `key` is done: what waited behind it goes
    /// first.
    fn release(&mut self, key: &str, sequence: u64) {
        if self
            .held_back
            .get(key)
            .is_some_and(|back| back.sequence == sequence)
            && let Some(back) = self.held_back.remove(key)
        {
            self.requeue(back.waiting);
        }
    }

    /// Stops waiting for retried messages that did not come back in time.
    fn release_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .held_back
            .iter()
            .filter(|(_, back)| back.until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            if let Some(back) = self.held_back.remove(&key) {
                self.requeue(back.waiting);
            }
        }
    }

    fn requeue(&mut self, mut waiting: Vec<Held>) {
        waiting.sort_by_key(|held| held.delivery.stream_sequence);
        for held in waiting.into_iter().rev() {
            self.ready.push_front(held);
        }
    }

    /// Tells JetStream that every message held here is still being worked on.
    async fn keep_alive(&self, current: Option<&Held>) {
        let waiting = self.held_back.values().flat_map(|back| back.waiting.iter());
        for held in current.into_iter().chain(self.ready.iter()).chain(waiting) {
            settle(&held.message, AckKind::Progress).await;
        }
    }

    /// After shutdown: hands back everything not started.
    async fn drain(mut self) {
        self.receiver.close();
        while let Some(held) = self.receiver.recv().await {
            self.ready.push_back(held);
        }
        for held in self.ready.drain(..) {
            nak(&held.message, None).await;
        }
        let now = Instant::now();
        for (_, back) in self.held_back.drain() {
            let delay = back
                .until
                .saturating_duration_since(now)
                .saturating_sub(REDELIVERY_GRACE);
            for held in back.waiting {
                nak(&held.message, Some(delay)).await;
            }
        }
    }
}

fn dead_letter_headers(
    delivery: &Delivery,
    config: &ConsumerConfig,
    reason: &str,
    error: &str,
) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, values) in delivery.headers.iter() {
        // Nats-Msg-Id, Nats-Expected-* and the like belong to the original
        // publish; the dead letter gets its own.
        if AsRef::<str>::as_ref(name).starts_with("Nats-") {
            continue;
        }
        for value in values {
            map.append(name.clone(), value.clone());
        }
    }
    // A dead letter repeated after a crash is dropped by the stream's
    // duplicate window.
    let id = format!(
        "{}:{}:{}",
        config.durable, config.stream, delivery.stream_sequence
    );
    map.insert(headers::NATS_MSG_ID, id.as_str());
    map.insert(headers::DLQ_SUBJECT, delivery.subject.as_str());
    map.insert(headers::DLQ_STREAM, config.stream.as_str());
    map.insert(
        headers::DLQ_STREAM_SEQUENCE,
        delivery.stream_sequence.to_string().as_str(),
    );
    if let Some(event_id) = delivery.event_id {
        map.insert(headers::DLQ_EVENT_ID, event_id.to_string().as_str());
    }
    map.insert(headers::DLQ_CONSUMER, config.durable.as_str());
    map.insert(
        headers::DLQ_ERROR,
        one_line(error, headers::DLQ_ERROR_MAX_LEN).as_str(),
    );
    map.insert(
        headers::DLQ_DELIVERED,
        delivery.delivered.to_string().as_str(),
    );
    map.insert(headers::DLQ_REASON, reason);
    map
}

/// `text` without line breaks, cut to at most `max` bytes.
fn one_line(text: &str, max: usize) -> String {
    let mut line: String = text.replace(['\r', '\n'], " ");
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

fn panic_text(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return format!("handler task failed: {error}");
    }
    let payload = error.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    format!("handler panicked: {text}")
}

async fn nak(message: &async_nats::jetstream::Message, delay: Option<Duration>) {
    settle(message, AckKind::Nak(delay)).await;
}

/// Sends an ack of some kind. A lost ack only means a redelivery, which the
/// handler dedupes, so a failure is logged and otherwise ignored.
async fn settle(message: &async_nats::jetstream::Message, kind: AckKind) {
    let what = format!("{kind:?}");
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, %error, ack = %what, "cannot acknowledge a message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_delay() {
        let config = ConsumerConfig::new("d", "S", vec![]);
        assert_eq!(config.backoff_after(1), Some(Duration::from_secs(1)));
        assert_eq!(config.backoff_after(3), Some(Duration::from_secs(30)));
        assert_eq!(config.backoff_after(9), Some(Duration::from_secs(30)));
        let none = ConsumerConfig {
            backoff: vec![],
            ..config
        };
        assert_eq!(none.backoff_after(1), None);
    }

    #[test]
    fn retries_end_at_max_deliver_unless_it_is_below_one() {
        let config = ConsumerConfig::new("d", "S", vec![]);
        assert!(!config.retries_exhausted(4));
        assert!(config.retries_exhausted(5));
        let forever = ConsumerConfig {
            max_deliver: -1,
            ..config
        };
        assert!(!forever.retries_exhausted(1000));
    }

    #[test]
    fn in_flight_is_bounded_by_lanes_and_max_ack_pending() {
        let mut config = ConsumerConfig::new("d", "S", vec![]);
        assert_eq!(config.in_flight(), 64);
        config.max_ack_pending = 10;
        assert_eq!(config.in_flight(), 10);
        config.max_ack_pending = -1;
        assert_eq!(config.in_flight(), 64);
    }

    #[test]
    fn durable_names_must_be_one_token() {
        for bad in ["", "a.b", "a*", "a b", ">"] {
            assert!(
                ConsumerConfig::new(bad, "S", vec![]).validate().is_err(),
                "{bad:?}"
            );
        }
        assert!(
            ConsumerConfig::new("timers", "S", vec![])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn one_line_cuts_at_a_character_boundary() {
        assert_eq!(one_line("a\r\nb", 10), "a  b");
        assert_eq!(one_line("ééé", 3), "é");
    }

    #[test]
    fn a_key_always_maps_to_the_same_lane() {
        let lanes: Vec<usize> = (0..100).map(|i| lane_of(&format!("call-{i}"), 4)).collect();
        let again: Vec<usize> = (0..100).map(|i| lane_of(&format!("call-{i}"), 4)).collect();
        assert_eq!(lanes, again);
        assert!(
            (0..4).all(|lane| lanes.contains(&lane)),
            "keys spread over all lanes"
        );
    }
}
