use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{Consumer, pull};
use futures::StreamExt;
use skileez_bus::{HandlerError, consumer_pending, headers};
use tokio::sync::{Notify, Semaphore};

use crate::support::{
    Recorder, Running, TestBus, call_consumer, decide, event, seen_list, wait_until,
};

const WAIT: Duration = Duration::from_secs(20);

async fn ack_pending(t: &TestBus, durable: &str) -> usize {
    let consumer: Consumer<pull::Config> = t
        .bus
        .jetstream()
        .get_consumer_from_stream(durable, "CALL_EVENTS")
        .await
        .unwrap();
    consumer.cached_info().num_ack_pending
}

#[tokio::test]
async fn messages_of_one_call_are_handled_in_order_and_acked_after_ok() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let handler = Recorder {
        // Long enough that several calls are in flight at once.
        delay: Duration::from_millis(3),
        ..Recorder::ok(&seen)
    };
    let running = Running::start(t.connect().await, call_consumer(&t.bus, "ordered"), handler);
    let mut events = Vec::new();
    for n in 1..=15 {
        for call in ["a", "b", "c", "d", "e"] {
            events.push(event(&t.bus, call, n));
        }
    }
    t.publish_all(events).await;

    wait_until("75 handled", WAIT, || seen.lock().unwrap().len() >= 75).await;
    let mut by_call: HashMap<String, Vec<u64>> = HashMap::new();
    for s in seen.lock().unwrap().iter() {
        by_call.entry(s.call.clone()).or_default().push(s.n);
    }
    for (call, ns) in by_call {
        assert_eq!(ns, (1..=15).collect::<Vec<_>>(), "call {call}");
    }
    assert_eq!(
        consumer_pending(&t.bus, "CALL_EVENTS", "ordered")
            .await
            .unwrap(),
        0
    );
    wait_until_acked(&t, "ordered").await;
    running.stop().await;
}

async fn wait_until_acked(t: &TestBus, durable: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while ack_pending(t, durable).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "messages stay unacked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_instances_share_the_work_without_duplicates() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let mut instances = Vec::new();
    for instance in 0..2 {
        let mut config = call_consumer(&t.bus, "shared");
        // 2 lanes × 16: neither instance can take everything.
        config.lanes = 2;
        let handler = Recorder {
            instance,
            delay: Duration::from_millis(5),
            ..Recorder::ok(&seen)
        };
        instances.push(Running::start(t.connect().await, config, handler));
    }
    let events: Vec<_> = (1..=200)
        .map(|n| event(&t.bus, &format!("call-{}", n % 20), n))
        .collect();
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    t.publish_all(events).await;

    wait_until("200 handled", WAIT, || seen.lock().unwrap().len() >= 200).await;
    // Anything extra would show up meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 200, "every message once");
    let handled: HashSet<_> = seen.iter().map(|s| s.event_id.unwrap()).collect();
    assert_eq!(handled, ids);
    for instance in 0..2 {
        assert!(
            seen.iter().any(|s| s.instance == instance),
            "instance {instance} got nothing"
        );
    }
    for running in instances {
        running.stop().await;
    }
}

#[tokio::test]
async fn a_retry_is_redelivered_after_the_backoff_and_is_not_overtaken() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let handler = Recorder {
        decide: decide(|_, s| {
            if s.call == "a" && s.n == 1 && s.delivered == 1 {
                Err(HandlerError::Retry("not yet".to_owned()))
            } else {
                Ok(())
            }
        }),
        ..Recorder::ok(&seen)
    };
    let mut config = call_consumer(&t.bus, "retrying");
    config.backoff = vec![Duration::from_millis(500)];
    let running = Running::start(t.connect().await, config, handler);
    t.publish_all(vec![
        event(&t.bus, "a", 1),
        event(&t.bus, "a", 2),
        event(&t.bus, "a", 3),
        event(&t.bus, "b", 1),
    ])
    .await;

    wait_until("5 handlings", WAIT, || seen.lock().unwrap().len() >= 5).await;
    let seen = seen.lock().unwrap().clone();
    let a: Vec<_> = seen
        .iter()
        .filter(|s| s.call == "a")
        .map(|s| (s.n, s.delivered, s.ok))
        .collect();
    assert_eq!(a, [(1, 1, false), (1, 2, true), (2, 1, true), (3, 1, true)]);
    let first = seen
        .iter()
        .find(|s| s.call == "a" && s.delivered == 1 && s.n == 1)
        .unwrap()
        .at;
    let second = seen
        .iter()
        .find(|s| s.call == "a" && s.delivered == 2)
        .unwrap()
        .at;
    assert!(
        second - first >= Duration::from_millis(450),
        "redelivered after {:?}",
        second - first
    );
    // The other call did not wait for the retry.
    let b = seen.iter().find(|s| s.call == "b").unwrap().at;
    assert!(b < second, "call b waited behind call a's retry");
    running.stop().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dead_letters_and_the_rest_goes_on() {
    let t = TestBus::new().await;
    let mut dead = t
        .bus
        .client()
        .subscribe("skileez.dlq.mailer")
        .await
        .unwrap();
    let seen = seen_list();
    let handler = Recorder {
        decide: decide(|_, s| match (s.call.as_str(), s.n) {
            ("a", 2) => Err(HandlerError::Retry("smtp says no".to_owned())),
            ("b", 1) => Err(HandlerError::Poison("does not decode\nat all".to_owned())),
            _ => Ok(()),
        }),
        ..Recorder::ok(&seen)
    };
    let mut config = call_consumer(&t.bus, "mailer");
    config.max_deliver = 3;
    config.backoff = vec![Duration::from_millis(50)];
    let running = Running::start(t.connect().await, config, handler);
    let retried = event(&t.bus, "a", 2);
    let poisoned = event(&t.bus, "b", 1);
    t.publish_all(vec![
        event(&t.bus, "a", 1),
        retried.clone(),
        event(&t.bus, "a", 3),
        poisoned.clone(),
        event(&t.bus, "b", 2),
    ])
    .await;

    let mut letters = Vec::new();
    for _ in 0..2 {
        let letter = tokio::time::timeout(WAIT, dead.next())
            .await
            .expect("a dead letter")
            .unwrap();
        letters.push(letter);
    }
    letters.sort_by_key(|m| m.payload.clone());
    let header = |m: &async_nats::Message, name: &str| {
        m.headers
            .as_ref()
            .unwrap()
            .get(name)
            .unwrap()
            .as_str()
            .to_owned()
    };

    let (a, b) = (&letters[0], &letters[1]);
    assert_eq!(a.payload, retried.payload);
    assert_eq!(
        header(a, headers::DLQ_SUBJECT),
        "skileez.call.v1.CallScheduled.a"
    );
    assert_eq!(header(a, headers::DLQ_STREAM), "CALL_EVENTS");
    assert_eq!(header(a, headers::DLQ_STREAM_SEQUENCE), "2");
    assert_eq!(
        header(a, headers::DLQ_EVENT_ID),
        retried.event_id.to_string()
    );
    assert_eq!(header(a, headers::DLQ_CONSUMER), "mailer");
    assert_eq!(header(a, headers::DLQ_ERROR), "smtp says no");
    assert_eq!(header(a, headers::DLQ_DELIVERED), "3");
    assert_eq!(header(a, headers::DLQ_REASON), "retry");
    assert_eq!(
        header(a, "ce-id"),
        retried.event_id.to_string(),
        "original headers travel along"
    );

    assert_eq!(b.payload, poisoned.payload);
    assert_eq!(
        header(b, headers::DLQ_DELIVERED),
        "1",
        "poison is not retried"
    );
    assert_eq!(header(b, headers::DLQ_ERROR), "does not decode at all");
    assert_eq!(header(b, headers::DLQ_REASON), "poison");

    // The messages behind them were handled, after them.
    wait_until("a/3 and b/2 handled", WAIT, || {
        let seen = seen.lock().unwrap();
        seen.iter().any(|s| s.call == "a" && s.n == 3)
            && seen.iter().any(|s| s.call == "b" && s.n == 2)
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let a_order: Vec<_> = seen.iter().filter(|s| s.call == "a").map(|s| s.n).collect();
    assert_eq!(a_order, [1, 2, 2, 2, 3]);
    // Stored in the dead-letter stream, not only sent.
    assert_eq!(
        crate::support::stream_messages(&t.bus, "DEAD_LETTERS").await,
        2
    );
    wait_until_acked(&t, "mailer").await;
    running.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_counts_as_a_retry() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let panicked = Arc::new(AtomicBool::new(false));
    let flag = panicked.clone();
    let handler = Recorder {
        decide: decide(move |_, _| {
            if !flag.swap(true, Ordering::SeqCst) {
                panic!("boom");
            }
            Ok(())
        }),
        ..Recorder::ok(&seen)
    };
    let running = Running::start(t.connect().await, call_consumer(&t.bus, "panicky"), handler);
    t.publish_all(vec![event(&t.bus, "a", 1)]).await;
    wait_until("handled after the panic", WAIT, || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(seen.lock().unwrap()[0].delivered, 2);
    running.stop().await;
}

/// Holds every handling until a permit is released for it.
struct Gate {
    started: Arc<Notify>,
    release: Arc<Semaphore>,
    inner: Recorder,
}

#[skileez_bus::async_trait]
impl skileez_bus::Handler for Gate {
    async fn handle(&self, delivery: &skileez_bus::Delivery) -> Result<(), HandlerError> {
        self.started.notify_one();
        self.release.acquire().await.unwrap().forget();
        skileez_bus::Handler::handle(&self.inner, delivery).await
    }
}

#[tokio::test]
async fn pending_messages_are_counted_for_metrics() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Semaphore::new(0)));
    let gate = Gate {
        started: started.clone(),
        release: release.clone(),
        inner: Recorder::ok(&seen),
    };
    let mut config = call_consumer(&t.bus, "metered");
    config.max_ack_pending = 1;
    t.publish_all((1..=5).map(|n| event(&t.bus, "a", n)).collect())
        .await;
    let running = Running::start(t.connect().await, config, gate);

    started.notified().await;
    assert_eq!(
        consumer_pending(&t.bus, "CALL_EVENTS", "metered")
            .await
            .unwrap(),
        4
    );
    release.add_permits(5);
    wait_until("all handled", WAIT, || seen.lock().unwrap().len() == 5).await;
    assert_eq!(
        consumer_pending(&t.bus, "CALL_EVENTS", "metered")
            .await
            .unwrap(),
        0
    );
    running.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_running_handlers_and_hands_back_the_rest() {
    let t = TestBus::new().await;
    let seen = seen_list();
    let handler = Recorder {
        delay: Duration::from_millis(400),
        ..Recorder::ok(&seen)
    };
    let mut config = call_consumer(&t.bus, "draining");
    config.lanes = 1;
    config.ack_wait = Duration::from_secs(30);
    let first = Running::start(t.connect().await, config.clone(), handler);
    // One call: one lane, one after the other.
    t.publish_all((1..=6).map(|n| event(&t.bus, "a", n)).collect())
        .await;
    // Let the first handling start, then shut down in its middle.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let took = first.stop().await;

    let handled: Vec<_> = seen.lock().unwrap().iter().map(|s| s.n).collect();
    assert_eq!(
        handled,
        [1],
        "the running handler finished, nothing new started"
    );
    assert!(took < Duration::from_secs(3), "drained in {took:?}");
    // Another instance takes the rest at once: they were NAKed, not left to
    // wait out their ack wait.
    let started = tokio::time::Instant::now();
    let second = Running::start(t.connect().await, config, Recorder::ok(&seen));
    wait_until("the rest handled", WAIT, || seen.lock().unwrap().len() == 6).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let handled: Vec<_> = seen.lock().unwrap().iter().map(|s| s.n).collect();
    assert_eq!(handled, [1, 2, 3, 4, 5, 6], "each once, in order");
    second.stop().await;
}

#[tokio::test]
async fn a_missing_stream_fails_at_the_start() {
    let t = TestBus::new().await;
    let config = skileez_bus::ConsumerConfig::new("lost", "NO_SUCH_STREAM", vec![]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let error = skileez_bus::run_consumer(
        t.bus.clone(),
        config,
        Arc::new(Recorder::ok(&seen_list())),
        shutdown,
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("lost") && text.contains("NO_SUCH_STREAM"),
        "{text}"
    );
}
