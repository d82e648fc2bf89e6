//! What the tests share: a server with the topology, events, a recording
//! handler, waiting for a condition.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use skileez_bus::{
    Bus, BusConfig, CALL_EVENT_CONTENT_TYPE, ConsumerConfig, Delivery, Handler, HandlerError,
    OutgoingEvent, async_trait, run_consumer,
};
use skileez_testkit::nats::TestNats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A private server with the streams and the bucket in place.
pub struct TestBus {
    pub nats: TestNats,
    pub bus: Bus,
}

impl TestBus {
    pub async fn new() -> TestBus {
        let nats = TestNats::new().await;
        let bus = connect(&nats).await;
        bus.ensure_topology().await.expect("ensure_topology");
        TestBus { nats, bus }
    }

    /// Another connection to the same server (another "instance").
    pub async fn connect(&self) -> Bus {
        connect(&self.nats).await
    }

    /// Publishes `events` and panics unless all are stored.
    pub async fn publish_all(&self, events: Vec<OutgoingEvent>) {
        let count = events.len();
        let acks = self
            .bus
            .publish_batch(events)
            .await
            .map_err(|(n, e)| format!("{n} acked, then {e}"))
            .unwrap();
        assert_eq!(acks.len(), count);
    }

    /// The call stream's message count.
    pub async fn call_messages(&self) -> u64 {
        stream_messages(&self.bus, &self.bus.names().call_stream).await
    }
}

pub async fn connect(nats: &TestNats) -> Bus {
    Bus::connect(&BusConfig::new(nats.url()))
        .await
        .expect("connect")
}

pub async fn stream_messages(bus: &Bus, stream: &str) -> u64 {
    let stream = bus
        .jetstream()
        .get_stream(stream)
        .await
        .expect("get_stream");
    stream.get_info().await.expect("stream info").state.messages
}

/// Event `n` of call `call`; its payload is `"<call>/<n>"`.
pub fn event(bus: &Bus, call: &str, n: u64) -> OutgoingEvent {
    OutgoingEvent {
        subject: bus.call_subject("CallScheduled", call),
        event_id: Uuid::now_v7(),
        event_type: "skileez.call.v1.CallScheduled".to_owned(),
        subject_id: call.to_owned(),
        time: Utc::now(),
        payload: Bytes::from(format!("{call}/{n}")),
        content_type: CALL_EVENT_CONTENT_TYPE.to_owned(),
        traceparent: None,
        tracestate: None,
        source: "//skileez/test".to_owned(),
    }
}

/// `(call, n)` back from an [`event`]'s payload.
pub fn parse(payload: &[u8]) -> (String, u64) {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    let (call, n) = text.rsplit_once('/').expect("<call>/<n>");
    (call.to_owned(), n.parse().expect("a number"))
}

/// One handling of a message, as a [`Recorder`] saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub instance: usize,
    pub call: String,
    pub n: u64,
    pub event_id: Option<Uuid>,
    pub delivered: u64,
    pub at: tokio::time::Instant,
    pub ok: bool,
}

type Decide = dyn Fn(&Delivery, &Seen) -> Result<(), HandlerError> + Send + Sync;

/// A handler that records every call and answers with `decide`, after
/// `delay`.
pub struct Recorder {
    pub instance: usize,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub delay: Duration,
    pub decide: Box<Decide>,
}

impl Recorder {
    pub fn ok(seen: &Arc<Mutex<Vec<Seen>>>) -> Recorder {
        Recorder {
            instance: 0,
            seen: seen.clone(),
            delay: Duration::ZERO,
            decide: decide(|_, _| Ok(())),
        }
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let (call, n) = parse(&delivery.payload);
        let mut seen = Seen {
            instance: self.instance,
            call,
            n,
            event_id: delivery.event_id,
            delivered: delivery.delivered,
            at: tokio::time::Instant::now(),
            ok: true,
        };
        let outcome = (self.decide)(delivery, &seen);
        seen.ok = outcome.is_ok();
        self.seen.lock().unwrap().push(seen);
        outcome
    }
}

/// A [`Recorder`]'s answer, from a closure.
pub fn decide(
    f: impl Fn(&Delivery, &Seen) -> Result<(), HandlerError> + Send + Sync + 'static,
) -> Box<Decide> {
    Box::new(f)
}

pub fn seen_list() -> Arc<Mutex<Vec<Seen>>> {
    Arc::new(Mutex::new(Vec::new()))
}

/// A consumer running in the background, as one service instance would.
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), skileez_bus::BusError>>,
}

impl Running {
    pub fn start(bus: Bus, config: ConsumerConfig, handler: impl Handler) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_consumer(
            bus,
            config,
            Arc::new(handler),
            shutdown.clone(),
        ));
        Running { shutdown, task }
    }

    /// Cancels and waits for the drain; returns how long that took.
    pub async fn stop(self) -> Duration {
        let started = tokio::time::Instant::now();
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the consumer drains within 30 s")
            .expect("the consumer task does not panic")
            .expect("run_consumer returns Ok");
        started.elapsed()
    }
}

/// A consumer of the whole call stream with quick retries.
pub fn call_consumer(bus: &Bus, durable: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(
        durable,
        bus.names().call_stream.clone(),
        vec![bus.names().call_subjects()],
    );
    config.backoff = vec![Duration::from_millis(200)];
    config.ack_wait = Duration::from_secs(5);
    config
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn wait_until<F: FnMut() -> bool>(what: &str, limit: Duration, mut condition: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
