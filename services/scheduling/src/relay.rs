//! The outbox relay: publishes every committed call event to JetStream, in
//! commit order, and keeps each call's latest card in the CALL_CARDS bucket.
//!
//! The event store is the outbox (DESIGN.md rule 2). The relay reads the
//! store's gap-free feed from its checkpoint, publishes with `Nats-Msg-Id` =
//! event id, and moves the checkpoint only past events JetStream has
//! acknowledged. A crash between the ack and the checkpoint republishes, and
//! JetStream drops the repeat inside its duplicate window; consumers dedupe by
//! event id beyond it.
//!
//! One relay publishes at a time, whatever the number of scheduling
//! instances: leadership is a session advisory lock held on a dedicated
//! connection. If that connection dies the lock is released and another
//! instance takes over from the shared checkpoint; for the moment both may
//! publish, each does so in feed order and JetStream keeps the first copy of
//! each event, so the stream's per-call order holds.
//!
//! The relay wakes at once on a commit of this instance (an in-process
//! signal) or of another (a `NOTIFY` sent after commit), and polls slowly as
//! a safety net; `NOTIFY` only wakes, it is never the queue.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use skileez_bus::{Bus, OutgoingEvent};
use skileez_domain::Policy;
use skileez_eventstore::{EventStore, FeedPosition};
use skileez_proto::call::CallCard;
use skileez_telemetry::propagation;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgListener};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{
    error::ApiError,
    feed::{self, Change},
};

/// The channel a commit notifies to wake relays of other instances.
pub const WAKE_CHANNEL: &str = "skileez_events";
/// The relay's name in `relay_checkpoints`.
pub const RELAY_NAME: &str = "call-events";
/// Advisory lock key of the relay's leadership ("skileez relay").
const LEADER_LOCK: i64 = 0x736b_696c_6565_7a01;
const BATCH: u32 = 500;
/// The safety-net poll when no wake-up comes.
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Batches of cards waiting for the card writer before the relay waits too.
const CARD_BATCHES: usize = 16;
/// Card writes in flight at once.
const CARD_WRITES_IN_FLIGHT: usize = 32;
/// `ce-source` of our events.
pub const EVENT_SOURCE: &str = "//skileez/scheduling";
pub const CONTENT_TYPE: &str = "application/protobuf; messageType=skileez.call.v1.CallEvent";

/// Why a relay round stopped.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("bus: {0}")]
    Bus(#[from] skileez_bus::BusError),
}

pub struct Relay {
    pub store: EventStore,
    pub bus: Bus,
    pub policy: Policy,
    /// Fired by this instance after each commit.
    pub committed: Arc<Notify>,
    /// True while this relay holds leadership (read by
    /// [`wake_other_instances`]).
    pub leading: Arc<AtomicBool>,
    pub database_url: String,
}

impl Relay {
    /// Runs until `shutdown`: waits for leadership, then relays; on any
    /// failure backs off and starts over from the stored checkpoint.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        // Set once the topology was set up by a round of this relay; later
        // rounds set it up again off the publishing path (see `relay`).
        let mut topology_ready = false;
        while !shutdown.is_cancelled() {
            let began = tokio::time::Instant::now();
            match self.lead(&shutdown, &mut topology_ready).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(error) => {
                    backoff = backoff_after_failure(backoff, began.elapsed());
                    metrics::counter!("skileez_relay_errors_total").increment(1);
                    tracing::warn!(%error, "relay interrupted; retrying in {backoff:?}");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Takes leadership (or waits for it) and relays while it holds.
    async fn lead(
        &self,
        shutdown: &CancellationToken,
        topology_ready: &mut bool,
    ) -> Result<(), RelayError> {
        let mut lock = PgConnection::connect(&self.database_url).await?;
        loop {
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(LEADER_LOCK)
                .fetch_one(&mut lock)
                .await?;
            if leader {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        tracing::info!("relay leadership taken");
        metrics::gauge!("skileez_relay_leader").set(1.0);
        self.leading.store(true, Ordering::Release);
        let result = self.relay(&mut lock, shutdown, topology_ready).await;
        // Before the lock goes: from now on this instance's commits must
        // wake whoever leads next.
        self.leading.store(false, Ordering::Release);
        metrics::gauge!("skileez_relay_leader").set(0.0);
        // The lag is the leader's to report: a stale figure here would
        // sum with the new leader's on a dashboard.
        metrics::gauge!("skileez_relay_lag_events").set(0.0);
        metrics::gauge!("skileez_relay_lag_seconds").set(0.0);
        // Closing the session releases the advisory lock.
        let _ = lock.close().await;
        result
    }

    async fn relay(
        &self,
        lock: &mut PgConnection,
        shutdown: &CancellationToken,
        topology_ready: &mut bool,
    ) -> Result<(), RelayError> {
        if *topology_ready {
            // Set up again in case a server lost its store, but beside the
            // publishing, not before it: right after a NATS node died, a
            // stream update can wait for the cluster's meta leader until it
            // times out (10 s), while publishing to the stream's new leader
            // already works (the reliability suite's 3-node cluster: the
            // relay stalled up to a minute). A publish that finds no stream
            // fails the round, and the next round sets it up again.
            let bus = self.bus.clone();
            tokio::spawn(async move {
                if let Err(error) = bus.ensure_topology().await {
                    tracing::warn!(%error, "cannot set up the NATS topology again");
                }
            });
        } else {
            self.bus.ensure_topology().await?;
            *topology_ready = true;
        }
        // Cards are a cache of the stream: written by a task of their own so
        // that their compare-and-set round trips never delay publishing.
        let (cards, pending_cards) = mpsc::channel(CARD_BATCHES);
        let writer = tokio::spawn(write_cards(self.bus.clone(), pending_cards));
        // The checkpoint too is written off the publishing path: a crash
        // that loses its last writes republishes a few events, which
        // JetStream drops as duplicates (`Nats-Msg-Id`, a window of minutes).
        let pool = self.store.pool().clone();
        let start = load_checkpoint(&pool).await?;
        let (checkpoint, published) = watch::channel(start);
        let saver = tokio::spawn(save_checkpoints(pool.clone(), published.clone()));
        let lag = tokio::spawn(report_lag_events(pool, published, shutdown.clone()));
        let result = self
            .relay_events(lock, start, &checkpoint, &cards, shutdown)
            .await;
        drop((cards, checkpoint));
        for (task, what) in [(writer, "card writer"), (saver, "checkpoint writer")] {
            if let Err(error) = task.await {
                tracing::warn!(%error, "the relay's {what} failed");
            }
        }
        lag.abort();
        result
    }

    async fn relay_events(
        &self,
        lock: &mut PgConnection,
        mut position: FeedPosition,
        checkpoint: &watch::Sender<FeedPosition>,
        cards: &mpsc::Sender<Vec<CallCard>>,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut listener = PgListener::connect(&self.database_url).await?;
        listener.listen(WAKE_CHANNEL).await?;
        loop {
            // Register for the in-process wake-up before reading, so a commit
            // landing during the read still wakes the next wait.
            let woken = self.committed.notified();
            let records = self
                .store
                .read_feed(position, BATCH)
                .await
                .map_err(ApiError::from)?;
            report_lag_seconds(records.first().map(|r| r.recorded_at));
            if !records.is_empty() {
                // Still the leader? A dead lock connection means another
                // instance may have taken over. Asked while the batch's
                // streams are read, so it costs no round trip of its own.
                // A batch is a unit of work worth seeing on its own (how long
                // the relay takes to read what it publishes); each event's
                // publish span continues the trace of the request behind it.
                let batch = tracing::info_span!(
                    "relay.batch",
                    otel.name = "relay batch",
                    events = records.len(),
                );
                let (alive, changes) = tokio::join!(
                    sqlx::query("SELECT 1").execute(&mut *lock),
                    feed::to_changes(&self.store, &self.policy, &records).instrument(batch)
                );
                alive?;
                let changes = changes?;
                let published = self.publish(&changes).await;
                let (acked, reached) = match &published {
                    // Everything read is out, including records of streams
                    // that are not calls (they have no change to publish).
                    Ok(()) => (changes.len(), records.last().map(|r| r.feed_position())),
                    Err((acked, _)) => (*acked, changes[..*acked].last().map(|c| c.position)),
                };
                if let Some(reached) = reached {
                    position = reached;
                    checkpoint.send_replace(position);
                    metrics::counter!("skileez_relay_published_total").increment(acked as u64);
                    let latest = latest_cards(&changes[..acked]);
                    if !latest.is_empty() && cards.send(latest).await.is_err() {
                        tracing::warn!(
                            "the card writer is gone; cards wait for the call's next event"
                        );
                    }
                }
                if let Err((_, error)) = published {
                    return Err(error.into());
                }
                if records.len() == BATCH as usize {
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = woken => {}
                notification = listener.recv() => { notification?; }
                () = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Publishes a batch, each event in a producer span that continues the
    /// trace of the request that committed it; the span's context, not the
    /// request's, goes out in `traceparent`, so consumers hang off it.
    async fn publish(&self, changes: &[Change]) -> Result<(), (usize, skileez_bus::BusError)> {
        let mut spans = Vec::with_capacity(changes.len());
        let events = changes
            .iter()
            .map(|change| {
                let mut event = self.outgoing(change);
                let span = tracing::info_span!(
                    "publish",
                    otel.name = "publish CALL_EVENTS",
                    otel.kind = "producer",
                    otel.status_code = tracing::field::Empty,
                    messaging.system = "nats",
                    messaging.operation.type = "send",
                    messaging.operation.name = "publish",
                    messaging.destination.name = %event.subject,
                    messaging.message.id = %event.event_id,
                    skileez.call_id = %event.subject_id,
                    error.type = tracing::field::Empty,
                );
                propagation::set_parent(
                    &span,
                    event.traceparent.as_deref(),
                    event.tracestate.as_deref(),
                );
                if let Some(headers) = propagation::of_span(&span) {
                    event.traceparent = Some(headers.traceparent);
                    event.tracestate = Some(headers.tracestate).filter(|s| !s.is_empty());
                }
                spans.push(span);
                event
            })
            .collect();
        let published = self.bus.publish_batch(events).await;
        if let Err((acked, error)) = &published {
            for span in spans.iter().skip(*acked) {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", tracing::field::display(error));
            }
        }
        published.map(|_| ())
    }

    fn outgoing(&self, change: &Change) -> OutgoingEvent {
        let event = &change.event;
        let event_type = event_type(event);
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        OutgoingEvent {
            subject: self.bus.call_subject(event_type, &event.call_id),
            event_id: uuid::Uuid::parse_str(&event.event_id).unwrap_or_default(),
            event_type: format!("skileez.call.v1.{event_type}"),
            subject_id: event.call_id.clone(),
            time: event
                .occurred_at
                .and_then(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                })
                .unwrap_or_default(),
            payload: Bytes::from(event.encode_to_vec()),
            content_type: CONTENT_TYPE.to_owned(),
            traceparent: non_empty(&event.traceparent),
            tracestate: non_empty(&event.tracestate),
            source: EVENT_SOURCE.to_owned(),
        }
    }
}

/// The latest card of each call among `changes`.
fn latest_cards(changes: &[Change]) -> Vec<CallCard> {
    let mut latest: Vec<CallCard> = Vec::new();
    for change in changes.iter().rev() {
        if let Some(card) = &change.event.card
            && !latest.iter().any(|c| c.call_id == card.call_id)
        {
            latest.push(card.clone());
        }
    }
    latest
}

/// Writes cards to CALL_CARDS until the relay closes the channel; a card
/// never replaces one of a higher version. The calls of one batch are
/// distinct, so their writes run concurrently.
async fn write_cards(bus: Bus, mut batches: mpsc::Receiver<Vec<CallCard>>) {
    while let Some(batch) = batches.recv().await {
        let writes = batch.into_iter().map(|card| {
            let bus = &bus;
            async move {
                let result = bus
                    .put_card_if_newer(
                        &card.call_id,
                        Bytes::from(card.encode_to_vec()),
                        card.version,
                        |bytes| CallCard::decode(bytes).ok().map(|c| c.version),
                    )
                    .await;
                if let Err(error) = result {
                    // The card is a cache of the stream; the call's next
                    // event writes it again.
                    tracing::warn!(%error, call_id = %card.call_id, "cannot write the call card");
                }
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(CARD_WRITES_IN_FLIGHT)
            .collect::<()>()
            .await;
    }
}

/// The protobuf message name of the event in an envelope.
pub fn event_type(event: &skileez_proto::call::CallEvent) -> &'static str {
    use skileez_proto::call::call_event::Event;
    match &event.event {
        Some(Event::Scheduled(_)) => "CallScheduled",
        Some(Event::Rescheduled(_)) => "CallRescheduled",
        Some(Event::ReminderDue(_)) => "CallReminderDue",
        Some(Event::Ready(_)) => "CallReady",
        Some(Event::ParticipantJoined(_)) => "ParticipantJoined",
        Some(Event::Started(_)) => "CallStarted",
        Some(Event::Ended(_)) => "CallEnded",
        Some(Event::Cancelled(_)) => "CallCancelled",
        Some(Event::Missed(_)) => "CallMissed",
        None => "Unknown",
    }
}

async fn load_checkpoint(pool: &PgPool) -> Result<FeedPosition, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, position FROM relay_checkpoints WHERE name = $1")
            .bind(RELAY_NAME)
            .fetch_optional(pool)
            .await?;
    Ok(
        row.map_or(FeedPosition::START, |(tx_id, position)| FeedPosition {
            tx_id: u64::try_from(tx_id).unwrap_or(0),
            position,
        }),
    )
}

async fn save_checkpoint(pool: &PgPool, position: FeedPosition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (name, tx_id, position) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()
          WHERE (relay_checkpoints.tx_id, relay_checkpoints.position) < (EXCLUDED.tx_id, EXCLUDED.position)",
    )
    .bind(RELAY_NAME)
    .bind(i64::try_from(position.tx_id).unwrap_or(i64::MAX))
    .bind(position.position)
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes the newest published position to `relay_checkpoints` as it
/// changes, coalescing whatever came meanwhile; ends, after a last write,
/// when the relay drops its sender.
async fn save_checkpoints(pool: PgPool, mut published: watch::Receiver<FeedPosition>) {
    let mut saved = *published.borrow_and_update();
    loop {
        let closed = published.changed().await.is_err();
        let mut failures = 0;
        loop {
            let position = *published.borrow_and_update();
            if position == saved {
                break;
            }
            match save_checkpoint(&pool, position).await {
                Ok(()) => saved = position,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot save the relay checkpoint");
                    // At the end, give up after a few tries: the next leader
                    // republishes from the older checkpoint, deduplicated.
                    if closed && failures >= 3 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if closed {
            return;
        }
    }
}

/// Relay lag in events: how far the newest committed event is ahead of the
/// newest published one (in store positions), read once a second.
async fn report_lag_events(
    pool: PgPool,
    published: watch::Receiver<FeedPosition>,
    shutdown: CancellationToken,
) {
    loop {
        if let Ok(Some(newest)) =
            sqlx::query_scalar::<_, Option<i64>>("SELECT max(position) FROM events")
                .fetch_one(&pool)
                .await
        {
            let behind = newest - published.borrow().position;
            metrics::gauge!("skileez_relay_lag_events").set(behind.max(0) as f64);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Relay lag in time: how old the oldest unpublished event is.
fn report_lag_seconds(oldest_unpublished: Option<chrono::DateTime<chrono::Utc>>) {
    let seconds = oldest_unpublished
        .map(|at| (chrono::Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("skileez_relay_lag_seconds").set(seconds);
}

/// Wakes the relays of every instance after this instance's commits: one
/// `NOTIFY` per wake-up however many commits it covers, sent off the request
/// path and outside any transaction, so commits neither wait for it nor
/// serialise on the notify queue. Only the leader's relay publishes, and it
/// is woken by its own instance's commits directly: while this instance
/// leads (`leading`), its commits need no `NOTIFY` — one transaction less
/// per wake-up, which under load is nearly one per booking.
pub async fn wake_other_instances(
    pool: PgPool,
    committed: Arc<Notify>,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = committed.notified() => {}
        }
        if leading.load(Ordering::Acquire) {
            continue;
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(WAKE_CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "cannot notify other relays; they will poll");
        }
    }
}

/// The wait before the next round after one failed, given the current
/// back-off and how long the failed round ran: a round that ran at least
/// [`MAX_BACKOFF`] had been healthy, so the back-off starts over instead of
/// going on from where an earlier outage left it.
fn backoff_after_failure(current: Duration, round: Duration) -> Duration {
    if round >= MAX_BACKOFF {
        FIRST_BACKOFF
    } else {
        current
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn the_backoff_starts_over_after_a_round_that_ran_healthy_for_a_while() {
        // Found by the reliability suite: after a few failures in a row the
        // back-off stayed at its maximum for good, so every later blip of
        // NATS cost ten seconds of relay lag.
        assert_eq!(
            backoff_after_failure(MAX_BACKOFF, Duration::from_secs(60)),
            FIRST_BACKOFF
        );
        assert_eq!(
            backoff_after_failure(MAX_BACKOFF, MAX_BACKOFF),
            FIRST_BACKOFF
        );
        // Failures in quick succession keep backing off.
        assert_eq!(
            backoff_after_failure(Duration::from_secs(3), Duration::from_millis(50)),
            Duration::from_secs(3)
        );
    }
}
