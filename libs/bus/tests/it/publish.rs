use std::time::Duration;

use skileez_bus::{BusError, headers};

use crate::support::{TestBus, event, parse, stream_messages};

#[tokio::test]
async fn the_same_event_id_is_stored_once() {
    let t = TestBus::new().await;
    let e = event(&t.bus, "call-1", 1);

    let first = t.bus.publish_event(e.clone()).await.unwrap();
    let second = t.bus.publish_event(e.clone()).await.unwrap();

    assert!(!first.duplicate);
    assert!(second.duplicate, "a repeated Nats-Msg-Id is dropped");
    assert_eq!(second.stream_sequence, first.stream_sequence);
    assert_eq!(t.call_messages().await, 1);
}

#[tokio::test]
async fn headers_arrive_as_set() {
    let t = TestBus::new().await;
    let mut e = event(&t.bus, "call-7", 1);
    e.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
    e.tracestate = Some("congo=t61rcWkgMzE".to_owned());
    e.time = chrono::DateTime::parse_from_rfc3339("2030-05-06T07:08:09.5Z")
        .unwrap()
        .to_utc();
    let ack = t.bus.publish_event(e.clone()).await.unwrap();

    let stream = t.bus.jetstream().get_stream("CALL_EVENTS").await.unwrap();
    let stored = stream.get_raw_message(ack.stream_sequence).await.unwrap();
    assert_eq!(
        stored.subject.as_str(),
        "skileez.call.v1.CallScheduled.call-7"
    );
    assert_eq!(stored.payload, e.payload);
    let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_owned());
    let id = e.event_id.to_string();
    assert_eq!(header(headers::NATS_MSG_ID).as_deref(), Some(id.as_str()));
    assert_eq!(
        header(headers::CONTENT_TYPE).as_deref(),
        Some("application/protobuf; messageType=skileez.call.v1.CallEvent")
    );
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-id").as_deref(), Some(id.as_str()));
    assert_eq!(
        header("ce-type").as_deref(),
        Some("skileez.call.v1.CallScheduled")
    );
    assert_eq!(header("ce-source").as_deref(), Some("//skileez/test"));
    assert_eq!(header("ce-subject").as_deref(), Some("call-7"));
    assert_eq!(
        header("ce-time").as_deref(),
        Some("2030-05-06T07:08:09.500Z")
    );
    assert_eq!(header("traceparent"), e.traceparent);
    assert_eq!(header("tracestate"), e.tracestate);
}

#[tokio::test]
async fn trace_headers_are_left_out_when_absent() {
    let t = TestBus::new().await;
    let ack = t.bus.publish_event(event(&t.bus, "c", 1)).await.unwrap();
    let stream = t.bus.jetstream().get_stream("CALL_EVENTS").await.unwrap();
    let stored = stream.get_raw_message(ack.stream_sequence).await.unwrap();
    assert!(stored.headers.get("traceparent").is_none());
    assert!(stored.headers.get("tracestate").is_none());
}

#[tokio::test]
async fn an_invalid_subject_is_refused_before_sending() {
    let t = TestBus::new().await;
    for call_id in ["*", "", "a b"] {
        let mut e = event(&t.bus, call_id, 1);
        e.subject = t.bus.call_subject("CallScheduled", call_id);
        let error = t.bus.publish_event(e).await.unwrap_err();
        assert!(matches!(error, BusError::InvalidEvent { .. }), "{error}");
        assert!(!error.is_transient());
    }
    assert_eq!(t.call_messages().await, 0);
}

#[tokio::test]
async fn a_subject_no_stream_takes_fails_clearly() {
    let t = TestBus::new().await;
    let mut e = event(&t.bus, "c", 1);
    e.subject = "elsewhere.c".to_owned();
    let error = t.bus.publish_event(e).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("elsewhere.c") && text.contains(&t.nats.url()),
        "{text}"
    );
}

#[tokio::test]
async fn publish_batch_keeps_order() {
    let t = TestBus::new().await;
    let events: Vec<_> = (1..=60)
        .map(|n| event(&t.bus, &format!("call-{}", n % 4), n))
        .collect();
    let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();

    let acks = t
        .bus
        .publish_batch(events)
        .await
        .map_err(|(n, e)| format!("{n}: {e}"))
        .unwrap();

    assert_eq!(acks.len(), 60);
    assert!(
        acks.windows(2)
            .all(|w| w[1].stream_sequence == w[0].stream_sequence + 1)
    );
    let stream = t.bus.jetstream().get_stream("CALL_EVENTS").await.unwrap();
    for (i, ack) in acks.iter().enumerate() {
        let stored = stream.get_raw_message(ack.stream_sequence).await.unwrap();
        assert_eq!(
            stored.headers.get(headers::NATS_MSG_ID).unwrap().as_str(),
            ids[i].to_string()
        );
        assert_eq!(parse(&stored.payload).1, i as u64 + 1);
    }
}

#[tokio::test]
async fn publish_batch_returns_the_acked_count_when_the_server_stops_mid_batch() {
    let mut t = TestBus::new().await;
    let bus = t.bus.clone().with_timeout(Duration::from_secs(1));
    let observer = t.connect().await;
    // Enough that the batch is still going when the server freezes.
    let events: Vec<_> = (1..=20_000u64)
        .map(|n| {
            let mut e = event(&bus, &format!("call-{}", n % 7), n);
            e.payload = format!("call-{}/{n}/{}", n % 7, "x".repeat(512)).into();
            e
        })
        .collect();
    let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
    let batch = tokio::spawn(async move { bus.publish_batch(events).await });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream_messages(&observer, "CALL_EVENTS").await < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch did not start"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.nats.pause();
    let (acked, error) = batch
        .await
        .unwrap()
        .expect_err("a frozen server cannot ack everything");
    assert!((500..20_000).contains(&acked), "acked {acked}");
    let text = error.to_string();
    assert!(text.contains(&t.nats.url()), "{text}");

    // A crash on top; whatever was acked is in the store after the restart,
    // in order.
    t.nats.kill();
    t.nats.start().await;
    let after = t.connect().await;
    let stream = after.jetstream().get_stream("CALL_EVENTS").await.unwrap();
    let stored = stream.get_info().await.unwrap().state.messages;
    assert!(stored >= acked as u64, "stored {stored} < acked {acked}");
    for (i, id) in ids.iter().enumerate().take(acked).step_by(97) {
        let message = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(
            message.headers.get(headers::NATS_MSG_ID).unwrap().as_str(),
            id.to_string()
        );
    }
}

#[tokio::test]
async fn publish_batch_stops_at_a_refused_event() {
    let t = TestBus::new().await;
    // The fourth publish is refused by the stream (a limit with discard new).
    let js = t.bus.jetstream();
    let mut config = js
        .get_stream("CALL_EVENTS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .config;
    config.max_messages = 3;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(config).await.unwrap();

    let events: Vec<_> = (1..=6).map(|n| event(&t.bus, "c", n)).collect();
    let (acked, error) = t.bus.publish_batch(events).await.unwrap_err();
    assert_eq!(acked, 3);
    assert!(matches!(error, BusError::Publish { .. }), "{error}");
}

#[tokio::test]
async fn connect_fails_at_once_naming_the_url_when_nothing_listens() {
    let mut t = TestBus::new().await;
    t.nats.stop().await;
    let started = std::time::Instant::now();
    let error = skileez_bus::Bus::connect(&skileez_bus::BusConfig::new(t.nats.url()))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(text.contains(&t.nats.url()), "{text}");
}
