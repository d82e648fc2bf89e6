use std::time::Duration;

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use skileez_bus::DUPLICATE_WINDOW;

use crate::support::TestBus;

#[tokio::test]
async fn ensure_topology_twice_is_fine_and_sets_up_streams_and_bucket() {
    let t = TestBus::new().await;
    // TestBus::new ran it once already; again, and once more from another instance.
    t.bus
        .ensure_topology()
        .await
        .expect("second ensure_topology");
    t.connect()
        .await
        .ensure_topology()
        .await
        .expect("ensure_topology from a second connection");

    let names = t.bus.names();
    let js = t.bus.jetstream();
    let expected = [
        (names.call_stream.as_str(), vec!["skileez.call.v1.>"]),
        (
            names.platform_stream.as_str(),
            vec!["skileez.contract.v1.>", "skileez.user.v1.>"],
        ),
        (names.dead_letter_stream.as_str(), vec!["skileez.dlq.>"]),
    ];
    for (name, subjects) in expected {
        let info = js.get_stream(name).await.unwrap().get_info().await.unwrap();
        let config = info.config;
        assert_eq!(config.subjects, subjects, "{name}");
        assert_eq!(config.storage, StorageType::File, "{name}");
        assert_eq!(config.retention, RetentionPolicy::Limits, "{name}");
        assert_eq!(config.discard, DiscardPolicy::Old, "{name}");
        assert_eq!(config.duplicate_window, DUPLICATE_WINDOW, "{name}");
        assert!(
            config.duplicate_window >= Duration::from_secs(600),
            "{name}"
        );
        assert_eq!(config.max_age, Duration::ZERO, "{name}: kept forever");
        assert_eq!(config.num_replicas, 1, "{name}");
        assert!(config.deny_delete, "{name}");
    }
    assert_eq!(names.call_stream, "CALL_EVENTS");
    assert_eq!(names.platform_stream, "PLATFORM_EVENTS");

    let cards = js
        .get_key_value(names.cards_bucket.as_str())
        .await
        .expect("the cards bucket exists");
    let status = cards.status().await.unwrap();
    assert_eq!(status.bucket, "CALL_CARDS");
    assert_eq!(status.history(), 1);
    assert_eq!(status.info.config.storage, StorageType::File);
}

#[tokio::test]
async fn ensure_topology_reports_a_setting_that_cannot_change() {
    let t = TestBus::new().await;
    let mut config = t
        .bus
        .jetstream()
        .get_stream("CALL_EVENTS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .config;
    // Storage cannot be changed in place: make the stream a memory stream
    // by deleting and recreating it, then ask for file storage again.
    t.bus
        .jetstream()
        .delete_stream("CALL_EVENTS")
        .await
        .unwrap();
    config.storage = StorageType::Memory;
    t.bus.jetstream().create_stream(config).await.unwrap();

    let error = t
        .bus
        .ensure_topology()
        .await
        .expect_err("storage cannot change");
    let text = error.to_string();
    assert!(text.contains("stream CALL_EVENTS"), "{text}");
    assert!(text.contains(&t.nats.url()), "{text}");
}
