//! Faults on the path from a committed booking to JetStream, with the real
//! `skileez dev` process: SIGKILL during a burst of bookings, and NATS down
//! for ten seconds during a burst. Afterwards the stream holds exactly the
//! committed events, each once, in per-call order.

mod support;

use std::{
    collections::{HashMap, HashSet},
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use chrono::{DurationRound, Utc};
use futures::StreamExt;
use prost::Message;
use skileez_proto::{call as ev, scheduling as pb};
use skileez_scheduling::auth::TokenIssuer;
use skileez_testkit::{TestDatabase, nats::TestNats};
use support::*;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// `skileez dev` on `port`, against the test database and NATS.
fn start(database_url: &str, nats_url: &str, port: u16) -> Child {
    start_dev(database_url, Some(nats_url), port).0
}

fn kill(child: &mut Child, how: &str) {
    signal(child, how);
    let _ = child.wait();
}

/// Books free consultations `range` (student i with coach i % 50, on
/// distinct slots) with 16 concurrent clients; returns how many answered OK.
async fn burst(
    port: u16,
    range: std::ops::Range<usize>,
    ok: Arc<AtomicUsize>,
    tolerate_errors: bool,
) {
    let issuer = TokenIssuer::new(SECRET, "skileez", "skileez-scheduling");
    let base = (Utc::now() + chrono::Duration::days(2))
        .duration_trunc(chrono::Duration::days(1))
        .unwrap();
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let workers = (0..16).map(|_| {
        let next = next.clone();
        let ok = ok.clone();
        let issuer = &issuer;
        async move {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect_lazy();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= end {
                    return;
                }
                let student = format!("stu-{i}");
                let token = issuer.mint(
                    &student,
                    skileez_domain::ActorRole::Student,
                    Duration::from_secs(600),
                );
                let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
                let mut client =
                    pb::scheduling_service_client::SchedulingServiceClient::with_interceptor(
                        channel.clone(),
                        move |mut r: Request<()>| {
                            r.metadata_mut().insert("authorization", value.clone());
                            Ok(r)
                        },
                    );
                let start = base + chrono::Duration::minutes(15 * (i / 50) as i64);
                let result = client
                    .schedule_free_consultation(pb::ScheduleFreeConsultationRequest {
                        request_id: String::new(),
                        student_id: student,
                        coach_id: format!("coach-{}", i % 50),
                        start: Some(pb::StartTime {
                            time: Some(pb::start_time::Time::Utc(prost_types::Timestamp {
                                seconds: start.timestamp(),
                                nanos: 0,
                            })),
                        }),
                        note: String::new(),
                    })
                    .await;
                match result {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) if tolerate_errors => {
                        // The process is being killed: the connection drops
                        // until it is back.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(status) => panic!("booking {i} failed: {status:?}"),
                }
            }
        }
    });
    futures::future::join_all(workers).await;
}

/// Every committed event in the stream exactly once, per-call versions in
/// stream order; waits up to 60 s for the relay to catch up.
async fn assert_stream_matches_store(db: &TestDatabase, nats_url: &str) -> usize {
    let committed: Vec<(uuid::Uuid, String, i64)> =
        sqlx::query_as("SELECT event_id, stream_id, version FROM events ORDER BY position")
            .fetch_all(db.pool())
            .await
            .expect("events");
    let client = async_nats::connect(nats_url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut stream = js.get_stream("CALL_EVENTS").await.expect("stream");
    while stream.info().await.expect("info").state.messages < committed.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not catch up: {} of {} events",
            stream.info().await.expect("info").state.messages,
            committed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut seen = HashSet::new();
    let mut last_version: HashMap<String, u64> = HashMap::new();
    for _ in 0..committed.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("message in time")
            .expect("open")
            .expect("message");
        let event = ev::CallEvent::decode(message.payload.as_ref()).expect("CallEvent");
        assert!(
            seen.insert(event.event_id.clone()),
            "duplicate {}",
            event.event_id
        );
        let last = last_version.entry(event.call_id.clone()).or_default();
        assert_eq!(
            event.stream_version,
            *last + 1,
            "per-call order of {}",
            event.call_id
        );
        *last = event.stream_version;
    }
    let stored: HashSet<String> = committed.iter().map(|(id, ..)| id.to_string()).collect();
    assert_eq!(
        seen, stored,
        "the stream holds exactly the committed events"
    );
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        committed.len() as u64,
        "nothing extra"
    );
    committed.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_a_burst_of_bookings_loses_and_duplicates_nothing() {
    let db = TestDatabase::new().await;
    let nats = TestNats::new().await;
    let port = free_port();
    let (db_url, nats_url) = (db.url(), nats.url());
    let mut dev = start(&db_url, &nats_url, port);
    let ok = Arc::new(AtomicUsize::new(0));

    let booking = tokio::spawn(burst(port, 0..1000, ok.clone(), true));
    // Kill mid-burst, once a good part has been booked (and published).
    while ok.load(Ordering::SeqCst) < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kill(&mut dev, "-KILL");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut dev = start(&db_url, &nats_url, port);
    booking.await.expect("burst");
    let answered_ok = ok.load(Ordering::SeqCst);

    let booked: i64 = sqlx::query_scalar("SELECT count(*) FROM calls")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(
        booked as usize >= answered_ok,
        "every booking answered OK exists"
    );
    let events = assert_stream_matches_store(&db, &nats_url).await;
    assert_eq!(events as i64, booked, "one CallScheduled per call");
    eprintln!(
        "bookings answered OK: {answered_ok}, calls stored: {booked}, events in the stream: {events}"
    );
    kill(&mut dev, "-TERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_go_on_while_nats_is_down_and_their_events_follow_when_it_returns() {
    let db = TestDatabase::new().await;
    let mut nats = TestNats::new().await;
    let port = free_port();
    let (db_url, nats_url) = (db.url(), nats.url());
    let mut dev = start(&db_url, &nats_url, port);
    let ok = Arc::new(AtomicUsize::new(0));

    burst(port, 0..100, ok.clone(), false).await;
    nats.stop().await;
    let down = tokio::time::Instant::now();
    // Bookings keep succeeding throughout the outage.
    while down.elapsed() < Duration::from_secs(10) {
        let before = ok.load(Ordering::SeqCst);
        burst(port, before..before + 20, ok.clone(), false).await;
    }
    nats.start().await;
    let total = ok.load(Ordering::SeqCst);
    burst(port, total..total + 50, ok.clone(), false).await;

    let events = assert_stream_matches_store(&db, &nats_url).await;
    assert_eq!(events, ok.load(Ordering::SeqCst));
    kill(&mut dev, "-TERM");
}
