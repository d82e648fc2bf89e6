//! The consumer against the real PostgreSQL, fed deliveries directly: what
//! redelivered, reordered and late events do to a call's timers.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use prost::Message;
use skileez_bus::{Delivery, Handler, HandlerError, HeaderMap};
use skileez_domain::Policy;
use skileez_proto::call::{self as ev, call_event::Event};
use skileez_testkit::TestDatabase;
use skileez_timers::{TimerKind, TimerState, consumer::TimerConsumer, engine::Wake, list_timers};
use uuid::Uuid;

fn ts(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

fn delivery(call: Uuid, version: u64, event: Event) -> Delivery {
    let envelope = ev::CallEvent {
        event_id: Uuid::new_v4().to_string(),
        call_id: call.to_string(),
        stream_version: version,
        occurred_at: Some(ts(Utc::now())),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        event: Some(event),
        ..Default::default()
    };
    Delivery {
        subject: format!("skileez.call.v1.X.{call}"),
        event_id: Uuid::parse_str(&envelope.event_id).ok(),
        key: call.to_string(),
        payload: Bytes::from(envelope.encode_to_vec()),
        headers: HeaderMap::new(),
        stream_sequence: version,
        delivered: 1,
        published: Utc::now(),
    }
}

fn scheduled(start: DateTime<Utc>) -> Event {
    Event::Scheduled(ev::CallScheduled {
        start: Some(ts(start)),
        duration_minutes: 15,
        ..Default::default()
    })
}

fn consumer(db: &TestDatabase) -> TimerConsumer {
    TimerConsumer {
        pool: db.pool().clone(),
        policy: Policy::default(),
        wake: Arc::new(Wake::new(StdDuration::from_millis(200))),
        max_idle: StdDuration::from_secs(30),
    }
}

#[tokio::test]
async fn a_booking_creates_the_timers_once_and_records_the_bookings_trace() {
    let db = TestDatabase::new().await;
    let consumer = consumer(&db);
    let call = Uuid::now_v7();
    let booked = delivery(call, 1, scheduled(Utc::now() + Duration::days(2)));
    consumer.handle(&booked).await.expect("applied");
    consumer.handle(&booked).await.expect("redelivery acked");
    let timers = list_timers(db.pool(), call).await.unwrap();
    assert_eq!(timers.len(), 5);
    assert!(timers.iter().all(|t| t.call_version == 1
        && t.traceparent.as_deref()
            == Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")));
}

#[tokio::test]
async fn a_redelivered_or_late_event_cannot_bring_a_retired_timer_back() {
    let db = TestDatabase::new().await;
    let consumer = consumer(&db);
    let call = Uuid::now_v7();
    let start = Utc::now() + Duration::days(2);
    let booked = delivery(call, 1, scheduled(start));
    consumer.handle(&booked).await.unwrap();
    consumer
        .handle(&delivery(call, 2, Event::Cancelled(Default::default())))
        .await
        .unwrap();
    // The booking again, as a copy with another id (a republish beyond the
    // dedupe window): stale by its version.
    let copy = delivery(call, 1, scheduled(start));
    consumer.handle(&copy).await.expect("acked, not applied");
    let timers = list_timers(db.pool(), call).await.unwrap();
    assert!(
        timers
            .iter()
            .all(|t| t.state == TimerState::Retired && t.call_version == 2),
        "{timers:#?}"
    );
}

#[tokio::test]
async fn an_event_ahead_of_its_predecessor_is_retried_and_then_applies_in_order() {
    let db = TestDatabase::new().await;
    let consumer = consumer(&db);
    let call = Uuid::now_v7();
    let started = delivery(call, 3, Event::Started(Default::default()));
    assert!(matches!(
        consumer.handle(&started).await,
        Err(HandlerError::Retry(_))
    ));
    consumer
        .handle(&delivery(
            call,
            1,
            scheduled(Utc::now() + Duration::days(2)),
        ))
        .await
        .unwrap();
    consumer
        .handle(&delivery(call, 2, Event::Ready(Default::default())))
        .await
        .unwrap();
    // The retried delivery comes back with the same event id.
    consumer.handle(&started).await.expect("now in order");
    let timers = list_timers(db.pool(), call).await.unwrap();
    let state = |kind| timers.iter().find(|t| t.kind == kind).unwrap().state;
    assert_eq!(state(TimerKind::Ready), TimerState::Retired);
    assert_eq!(state(TimerKind::Missed), TimerState::Retired);
    assert_eq!(state(TimerKind::AutoComplete), TimerState::Pending);
    assert_eq!(state(TimerKind::Reminder24h), TimerState::Pending);
}

#[tokio::test]
async fn an_envelope_that_does_not_decode_is_poison() {
    let db = TestDatabase::new().await;
    let mut bad = delivery(Uuid::now_v7(), 1, scheduled(Utc::now()));
    bad.payload = Bytes::from_static(b"\xff\xff not protobuf");
    assert!(matches!(
        consumer(&db).handle(&bad).await,
        Err(HandlerError::Poison(_))
    ));
}
