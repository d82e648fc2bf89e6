use std::time::Duration;

use skileez_bus::headers;

use crate::support::{Recorder, Running, TestBus, call_consumer, event, seen_list, wait_until};

#[tokio::test]
async fn publishing_fails_clearly_while_the_server_is_down_and_resumes_after() {
    let mut t = TestBus::new().await;
    let bus = t.bus.clone().with_timeout(Duration::from_secs(1));
    let before: Vec<_> = (1..=3).map(|n| event(&bus, "c", n)).collect();
    t.publish_all(before.clone()).await;

    t.nats.stop().await;
    let failed = event(&bus, "c", 4);
    let started = tokio::time::Instant::now();
    let error = bus
        .publish_event(failed.clone())
        .await
        .expect_err("nothing answers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed after {:?}",
        started.elapsed()
    );
    let text = error.to_string();
    assert!(text.contains(&t.nats.url()), "names the server: {text}");
    assert!(
        text.contains("skileez.call.v1.CallScheduled.c"),
        "names the subject: {text}"
    );
    assert!(
        text.contains("disconnected"),
        "says the client is disconnected: {text}"
    );
    assert!(error.is_transient());

    t.nats.start().await;
    // The client reconnects on its own. Like the relay, publish the event
    // that failed again until it is acked: the client may have sent the
    // first copy after all once reconnected, and JetStream keeps one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ack = loop {
        match bus.publish_event(failed.clone()).await {
            Ok(ack) => break ack,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no reconnect: {error}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(ack.stream_sequence, 4, "after the earlier messages");
    assert_eq!(t.call_messages().await, 4, "stored once");
    let next = bus.publish_event(event(&bus, "c", 5)).await.unwrap();
    assert_eq!((next.stream_sequence, next.duplicate), (5, false));

    // File storage: what was stored before the outage is still there.
    let stream = t.bus.jetstream().get_stream("CALL_EVENTS").await.unwrap();
    for (i, e) in before.iter().enumerate() {
        let stored = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(
            stored.headers.get(headers::NATS_MSG_ID).unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(stored.payload, e.payload);
    }
}

#[tokio::test]
async fn a_consumer_carries_on_after_the_server_restarts() {
    let mut t = TestBus::new().await;
    let seen = seen_list();
    let running = Running::start(
        t.connect().await,
        call_consumer(&t.bus, "steady"),
        Recorder::ok(&seen),
    );
    t.publish_all(vec![event(&t.bus, "c", 1)]).await;
    wait_until("the first handled", Duration::from_secs(20), || {
        seen.lock().unwrap().len() == 1
    })
    .await;

    t.nats.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.nats.start().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(error) = t.bus.publish_event(event(&t.bus, "c", 2)).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect: {error}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until("the second handled", Duration::from_secs(30), || {
        seen.lock().unwrap().iter().any(|s| s.n == 2)
    })
    .await;
    // At least once: the ack of the first may not have reached the disk
    // before the kill, and then it comes again (the inbox dedupes that).
    let ns: Vec<_> = seen.lock().unwrap().iter().map(|s| s.n).collect();
    assert!(ns[0] == 1 && ns.iter().all(|&n| n == 1 || n == 2), "{ns:?}");
    running.stop().await;
}
