//! The connection, the topology, publishing and the call cards.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::kv;
use async_nats::jetstream::kv::UpdateErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::{HeaderMap, ServerAddr};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::config::{BusConfig, Names};
use crate::error::BusError;
use crate::headers;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a repeat. The relay
/// republishes after a crash between publishing and saving its checkpoint;
/// 15 minutes covers a restart with room to spare (JetStream's default is 2).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// A `put_card_if_newer` that keeps losing the race gives up after this many
/// rounds; each lost round means another writer stored a card in between.
const MAX_CARD_ATTEMPTS: usize = 32;

/// Publishes of one batch sent ahead of their acks, at most. Well below
/// async-nats' limit of unanswered publishes per context (5,000).
const PUBLISH_WINDOW: usize = 1024;

/// The `Content-Type` of call events: the `CallEvent` envelope in protobuf.
pub const CALL_EVENT_CONTENT_TYPE: &str =
    "application/protobuf; messageType=skileez.call.v1.CallEvent";

/// A connection to NATS with its JetStream context and the names in use.
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    names: Arc<Names>,
    url: Arc<str>,
    replicas: usize,
    manage_topology: bool,
    cards: Arc<OnceCell<kv::Store>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("url", &self.url)
            .field("state", &self.client.connection_state())
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// An event to publish. The relay makes one per stored call event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingEvent {
    /// Made with [`Names::call_subject`] (or another builder of [`Names`]).
    pub subject: String,
    /// The stored event's id: `Nats-Msg-Id` and `ce-id`.
    pub event_id: Uuid,
    /// The CloudEvents type, e.g. `skileez.call.v1.CallScheduled`.
    pub event_type: String,
    /// The CloudEvents subject: the call id (the subject's last token).
    pub subject_id: String,
    /// When the event happened.
    pub time: DateTime<Utc>,
    pub payload: Bytes,
    /// E.g. [`CALL_EVENT_CONTENT_TYPE`].
    pub content_type: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// The CloudEvents source, e.g. `//skileez/scheduling`.
    pub source: String,
}

/// JetStream's answer to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishAck {
    /// The message's sequence in its stream; for a duplicate, the sequence of
    /// the copy stored first.
    pub stream_sequence: u64,
    /// True if JetStream had already stored a message with this event id
    /// within the duplicate window and dropped this one.
    pub duplicate: bool,
}

impl Bus {
    /// Connects once, without retrying: a caller that wants to wait for NATS
    /// loops itself (and can report while it waits). After this first
    /// connection, async-nats reconnects on its own, forever, and buffers
    /// what is published meanwhile. The connection is named after the
    /// running executable; see [`Bus::connect_named`].
    pub async fn connect(config: &BusConfig) -> Result<Bus, BusError> {
        Bus::connect_named(config, &default_connection_name()).await
    }

    /// [`Bus::connect`] with a connection name of the caller's choice, shown
    /// by the server's monitoring (`/connz`), e.g. `skileez-timers`.
    pub async fn connect_named(config: &BusConfig, name: &str) -> Result<Bus, BusError> {
        let addresses = parse_urls(&config.url)?;
        // Only ever shown without credentials.
        let url: Arc<str> = Arc::from(crate::redact_url(&config.url).as_str());
        let event_url = url.clone();
        let options = async_nats::ConnectOptions::new()
            .name(name)
            // Replies (acks, KV reads) come to inboxes under the
            // connection's own prefix, so that NATS permissions can give
            // each service its own and no one else's.
            .custom_inbox_prefix(inbox_prefix(name))
            .event_callback(move |event| {
                let url = event_url.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!(%url, "NATS connected"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!(%url, "NATS disconnected; reconnecting")
                        }
                        other => tracing::warn!(%url, event = %other, "NATS connection event"),
                    }
                }
            });
        let options =
            config
                .security
                .apply(options)
                .await
                .map_err(|source| BusError::Credentials {
                    url: url.to_string(),
                    source,
                })?;
        let client = options
            .connect(addresses)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_string(),
                source,
            })?;
        let jetstream = async_nats::jetstream::new(client.clone());
        Ok(Bus {
            client,
            jetstream,
            names: Arc::new(config.names.clone()),
            url,
            replicas: config.stream_replicas.max(1),
            manage_topology: config.manage_topology,
            cards: Arc::new(OnceCell::new()),
        })
    }

    /// The same connection with another bound on JetStream requests and
    /// publish acks (async-nats' defaults: 5 s for acks, 10 s for requests).
    /// A publish while the server is unreachable fails after this long.
    pub fn with_timeout(mut self, timeout: Duration) -> Bus {
        self.jetstream.set_timeout(timeout);
        // The bucket handle carries the context it was opened with.
        self.cards = Arc::new(OnceCell::new());
        self
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.jetstream
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The URL (or comma-separated URLs) connected to, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// See [`Names::call_subject`].
    pub fn call_subject(&self, event_type: &str, call_id: &str) -> String {
        self.names.call_subject(event_type, call_id)
    }

    /// Creates the streams and the KV bucket, or updates them to the settings
    /// below; safe to run at every start of every instance. Settings that
    /// JetStream cannot change in place (a stream's storage type) fail with
    /// [`BusError::Topology`] naming the stream.
    ///
    /// - the call stream: `<root>.call.v1.>`, file storage, kept forever
    ///   (limits retention without limits; the oldest would go first if
    ///   limits are ever set), duplicate window [`DUPLICATE_WINDOW`], no
    ///   deleting single messages (it is a log);
    /// - the platform stream: `<root>.contract.v1.>` and `<root>.user.v1.>`,
    ///   the same settings;
    /// - the dead-letter stream: `<root>.dlq.>`, the same settings, so that
    ///   what a consumer gave up on is kept until someone looks;
    /// - the cards bucket: history 1, file storage.
    ///
    /// Every one with the configured number of replicas.
    pub async fn ensure_topology(&self) -> Result<(), BusError> {
        if !self.manage_topology {
            return self.check_topology().await;
        }
        let names = &self.names;
        let streams = [
            (
                &names.call_stream,
                vec![names.call_subjects()],
                "call events",
            ),
            (
                &names.platform_stream,
                names.platform_subjects(),
                "platform facts",
            ),
            (
                &names.dead_letter_stream,
                vec![names.dead_letter_subjects()],
                "messages consumers gave up on",
            ),
        ];
        for (name, subjects, description) in streams {
            let config = self.event_stream_config(name, subjects, description);
            self.jetstream
                .create_or_update_stream(config)
                .await
                .map_err(|e| self.topology_error(format!("stream {name}"), e))?;
        }
        let cards = kv::Config {
            bucket: names.cards_bucket.clone(),
            description: "the latest card of each call, by call id".to_owned(),
            history: 1,
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.jetstream
            .create_or_update_key_value(cards)
            .await
            .map_err(|e| {
                self.topology_error(format!("key-value bucket {}", names.cards_bucket), e)
            })?;
        Ok(())
    }

    /// For a service that may not change the topology: checks that the
    /// streams and the bucket exist (the scheduling service creates them).
    async fn check_topology(&self) -> Result<(), BusError> {
        let names = &self.names;
        for name in [
            &names.call_stream,
            &names.platform_stream,
            &names.dead_letter_stream,
        ] {
            self.jetstream
                .get_stream(name.as_str())
                .await
                .map_err(|e| self.topology_error(format!("stream {name} (not created yet?)"), e))?;
        }
        self.jetstream
            .get_key_value(names.cards_bucket.as_str())
            .await
            .map_err(|e| {
                self.topology_error(
                    format!("key-value bucket {} (not created yet?)", names.cards_bucket),
                    e,
                )
            })?;
        Ok(())
    }

    fn event_stream_config(
        &self,
        name: &str,
        subjects: Vec<String>,
        description: &str,
    ) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects,
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            // Zero is "no limit": events are kept until someone decides otherwise.
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: self.replicas,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        }
    }

    fn topology_error(
        &self,
        what: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BusError {
        BusError::Topology {
            what,
            url: self.url.to_string(),
            source: Box::new(source),
        }
    }

    /// Publishes one event and waits for JetStream's ack; see [`headers`] for
    /// what the message carries. A repeat of an event id within
    /// [`DUPLICATE_WINDOW`] is acked with `duplicate: true` and not stored
    /// again.
    #[tracing::instrument(skip_all, fields(subject = %event.subject, event_id = %event.event_id))]
    pub async fn publish_event(&self, event: OutgoingEvent) -> Result<PublishAck, BusError> {
        let subject = event.subject.clone();
        let pending = self.send(event).await?;
        self.await_ack(subject, pending).await
    }

    /// Publishes several events over the one connection, in order, without
    /// waiting for each ack before sending the next (up to 1,024 ahead), and
    /// checks the acks in order. JetStream stores them in the order sent. Returns at the first failure with the number of events acked
    /// before it: the caller checkpoints exactly those and publishes the rest
    /// again later.
    ///
    /// Events after the failed one may have been stored anyway (their acks
    /// were not awaited); publishing them again is harmless within the
    /// duplicate window. But if the failed one itself was lost while a later
    /// one of the same call was stored, the republished copy lands after it:
    /// per-call order in the stream can then be off by such a retry, which is
    /// why consumers check versions ([`crate::inbox::advance`]).
    pub async fn publish_batch(
        &self,
        events: Vec<OutgoingEvent>,
    ) -> Result<Vec<PublishAck>, (usize, BusError)> {
        let mut acks = Vec::with_capacity(events.len());
        let mut pending = VecDeque::with_capacity(events.len().min(PUBLISH_WINDOW));
        for event in events {
            // Each unanswered publish holds one of async-nats' in-flight
            // permits until its ack is awaited: bound them, or a long batch
            // waits for a permit that only its own acks would free.
            if pending.len() >= PUBLISH_WINDOW {
                let (subject, ack) = pending.pop_front().expect("the window is full");
                acks.push(
                    self.await_ack(subject, ack)
                        .await
                        .map_err(|e| (acks.len(), e))?,
                );
            }
            let subject = event.subject.clone();
            match self.send(event).await {
                Ok(ack) => pending.push_back((subject, ack)),
                Err(error) => {
                    // What was sent before it may still be acked.
                    for (subject, ack) in pending {
                        acks.push(
                            self.await_ack(subject, ack)
                                .await
                                .map_err(|e| (acks.len(), e))?,
                        );
                    }
                    return Err((acks.len(), error));
                }
            }
        }
        for (subject, ack) in pending {
            // The acks not awaited after a failure are dropped: async-nats
            // collects them in the background.
            acks.push(
                self.await_ack(subject, ack)
                    .await
                    .map_err(|e| (acks.len(), e))?,
            );
        }
        Ok(acks)
    }

    async fn send(&self, event: OutgoingEvent) -> Result<PublishAckFuture, BusError> {
        check_subject(&event)?;
        let headers = event_headers(&event)?;
        self.jetstream
            .publish_with_headers(event.subject.clone(), headers, event.payload)
            .await
            .map_err(|source| self.publish_error(event.subject, source))
    }

    async fn await_ack(
        &self,
        subject: String,
        pending: PublishAckFuture,
    ) -> Result<PublishAck, BusError> {
        let ack = pending
            .await
            .map_err(|source| self.publish_error(subject, source))?;
        Ok(PublishAck {
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    pub(crate) fn publish_error(
        &self,
        subject: String,
        source: async_nats::jetstream::context::PublishError,
    ) -> BusError {
        BusError::Publish {
            subject,
            url: self.url.to_string(),
            state: self.client.connection_state().to_string(),
            source,
        }
    }

    /// Stores `value` under `key` in the cards bucket unless the card there
    /// is as new or newer: `version_of` reads the version out of the stored
    /// bytes (`None` if they do not decode; such a card is replaced). Returns
    /// whether it wrote.
    ///
    /// A compare-and-set loop on the entry's revision: `update(key, value,
    /// revision)` succeeds only if nobody wrote the key since it was read
    /// (revision 0: the key is absent), so of two concurrent writers the one
    /// with the older card either loses the race or, on its next round, sees
    /// the newer card and stops.
    #[tracing::instrument(level = "debug", skip_all, fields(key = %key, version))]
    pub async fn put_card_if_newer(
        &self,
        key: &str,
        value: Bytes,
        version: u64,
        version_of: impl Fn(&[u8]) -> Option<u64>,
    ) -> Result<bool, BusError> {
        let store = self.cards().await?;
        for _ in 0..MAX_CARD_ATTEMPTS {
            let entry = store.entry(key).await.map_err(|e| self.kv_error(key, e))?;
            let revision = match entry {
                None => 0,
                Some(entry) if entry.operation != kv::Operation::Put => entry.revision,
                Some(entry) => {
                    if version_of(&entry.value).is_some_and(|stored| stored >= version) {
                        return Ok(false);
                    }
                    entry.revision
                }
            };
            match store.update(key, value.clone(), revision).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(self.kv_error(key, e)),
            }
        }
        Err(self.kv_error(
            key,
            format!("gave up after {MAX_CARD_ATTEMPTS} rounds of concurrent updates"),
        ))
    }

    async fn cards(&self) -> Result<&kv::Store, BusError> {
        self.cards
            .get_or_try_init(|| {
                self.jetstream
                    .get_key_value(self.names.cards_bucket.clone())
            })
            .await
            .map_err(|e| self.kv_error("", e))
    }

    fn kv_error(&self, key: &str, source: impl Into<crate::error::BoxError>) -> BusError {
        BusError::KeyValue {
            bucket: self.names.cards_bucket.clone(),
            key: key.to_owned(),
            source: source.into(),
        }
    }
}

/// `_INBOX.<name>`, the name made a single subject token.
pub fn inbox_prefix(name: &str) -> String {
    let token: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("_INBOX.{token}")
}

fn default_connection_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "skileez".to_owned())
}

fn parse_urls(urls: &str) -> Result<Vec<ServerAddr>, BusError> {
    let addresses = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| url.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BusError::Connect {
            url: urls.to_owned(),
            source: async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::ServerParse,
                e,
            ),
        })?;
    if addresses.is_empty() {
        return Err(BusError::Connect {
            url: urls.to_owned(),
            source: async_nats::ConnectError::new(async_nats::ConnectErrorKind::ServerParse),
        });
    }
    Ok(addresses)
}

/// Every token non-empty and literal: consumers read the call id from the
/// last token, and a wildcard cannot be published to.
fn check_subject(event: &OutgoingEvent) -> Result<(), BusError> {
    let bad = event.subject.split('.').find(|token| {
        token.is_empty() || *token == "*" || *token == ">" || token.contains(char::is_whitespace)
    });
    match bad {
        Some(token) => Err(BusError::InvalidEvent {
            event_id: event.event_id,
            reason: format!("subject {:?} has the token {token:?}", event.subject),
        }),
        None => Ok(()),
    }
}

fn event_headers(event: &OutgoingEvent) -> Result<HeaderMap, BusError> {
    let id = event.event_id.to_string();
    let time = event.time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let mut values: Vec<(&'static str, &str)> = vec![
        (headers::NATS_MSG_ID, &id),
        (headers::CONTENT_TYPE, &event.content_type),
        (headers::CE_SPECVERSION, "1.0"),
        (headers::CE_ID, &id),
        (headers::CE_TYPE, &event.event_type),
        (headers::CE_SOURCE, &event.source),
        (headers::CE_SUBJECT, &event.subject_id),
        (headers::CE_TIME, &time),
    ];
    if let Some(traceparent) = &event.traceparent {
        values.push((headers::TRACEPARENT, traceparent));
    }
    if let Some(tracestate) = &event.tracestate {
        values.push((headers::TRACESTATE, tracestate));
    }
    let mut map = HeaderMap::new();
    for (name, value) in values {
        // A line break would end the header block early.
        if value.contains(['\r', '\n']) {
            return Err(BusError::InvalidEvent {
                event_id: event.event_id,
                reason: format!("header {name} contains a line break"),
            });
        }
        map.insert(name, value);
    }
    Ok(map)
}

/// Connects as `name` and ensures the topology, retrying with back-off
/// (200 ms doubling to 10 s) until it works or `shutdown`; `None` only on
/// shutdown. Meanwhile `<component>/nats` reports not ready (with the
/// error), and once connected a watcher on `tasks` follows the connection
/// for `/readyz`. `waiting` says in the log what stands still meanwhile.
pub async fn connect_until_up(
    config: &BusConfig,
    name: &str,
    component: &'static str,
    waiting: &str,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Bus> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let connected = match Bus::connect_named(config, name).await {
            Ok(bus) => match bus.ensure_topology().await {
                Ok(()) => Ok(bus),
                // The streams exist, only updating them did not answer in
                // time (a cluster that just lost a node, or is electing its
                // meta leader): go on with them and update them in the
                // background. Waiting here held the relay back for up to a
                // minute in the reliability suite's 3-node cluster, while
                // publishing to the streams worked.
                Err(error) if topology_timed_out(&error) && bus.check_topology().await.is_ok() => {
                    tracing::warn!(%error, "NATS streams exist but their update timed out; going on, updating in the background");
                    tasks.spawn(update_topology_until_done(bus.clone(), shutdown.clone()));
                    Ok(bus)
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        match connected {
            Ok(bus) => {
                tasks.spawn(skileez_telemetry::health::watch_nats(
                    bus.client().clone(),
                    component,
                    shutdown.clone(),
                ));
                return Some(bus);
            }
            Err(error) => {
                skileez_telemetry::health::nats_pending(component, &error.to_string());
                tracing::warn!(%error, "NATS unavailable; {waiting}; retrying in {backoff:?}");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Whether setting up the topology failed only because JetStream did not
/// answer in time (not because a setting was refused).
fn topology_timed_out(error: &BusError) -> bool {
    use async_nats::jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
    };
    let BusError::Topology { source, .. } = error else {
        return false;
    };
    source
        .downcast_ref::<CreateStreamError>()
        .is_some_and(|e| e.kind() == CreateStreamErrorKind::TimedOut)
        || source
            .downcast_ref::<CreateKeyValueError>()
            .is_some_and(|e| e.kind() == CreateKeyValueErrorKind::TimedOut)
}

/// Retries [`Bus::ensure_topology`] with back-off until it succeeds or the
/// service shuts down.
async fn update_topology_until_done(bus: Bus, shutdown: tokio_util::sync::CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        match bus.ensure_topology().await {
            Ok(()) => {
                tracing::info!("NATS topology updated");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "NATS topology still not updated; retrying in {backoff:?}");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_timed_out_topology_update_is_gone_past() {
        use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
        let error = |kind| BusError::Topology {
            what: "stream CALL_EVENTS".to_owned(),
            url: "nats://127.0.0.1:4222".to_owned(),
            source: Box::new(CreateStreamError::new(kind)),
        };
        assert!(topology_timed_out(&error(CreateStreamErrorKind::TimedOut)));
        // A refused setting must stop the service, as before.
        assert!(!topology_timed_out(&error(CreateStreamErrorKind::Response)));
        assert!(!topology_timed_out(&error(
            CreateStreamErrorKind::JetStreamUnavailable
        )));
    }

    fn event(subject: &str) -> OutgoingEvent {
        OutgoingEvent {
            subject: subject.to_owned(),
            event_id: Uuid::nil(),
            event_type: "skileez.call.v1.CallScheduled".to_owned(),
            subject_id: "c1".to_owned(),
            time: DateTime::UNIX_EPOCH,
            payload: Bytes::new(),
            content_type: CALL_EVENT_CONTENT_TYPE.to_owned(),
            traceparent: None,
            tracestate: None,
            source: "//skileez/test".to_owned(),
        }
    }

    #[test]
    fn subjects_with_empty_or_wildcard_tokens_are_rejected() {
        assert!(check_subject(&event("skileez.call.v1.CallScheduled.c1")).is_ok());
        for bad in [
            "skileez.call.v1.CallScheduled.",
            "skileez.call.v1.*.c1",
            "a.>",
            "a..b",
            "a.b c",
        ] {
            assert!(check_subject(&event(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_values_with_line_breaks_are_rejected() {
        let mut bad = event("a.b");
        bad.traceparent = Some("00-x\r\nInjected: yes".to_owned());
        assert!(event_headers(&bad).is_err());
    }

    #[test]
    fn cloudevents_time_is_rfc3339_utc() {
        let mut e = event("a.b");
        e.time = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        let headers = event_headers(&e).unwrap();
        assert_eq!(
            headers.get(headers::CE_TIME).map(|v| v.as_str()),
            Some("2023-11-14T22:13:20.123Z")
        );
    }

    #[test]
    fn several_urls_are_accepted() {
        assert_eq!(parse_urls("nats://a:4222, nats://b:4222").unwrap().len(), 2);
        assert!(parse_urls(" , ").is_err());
    }
}
