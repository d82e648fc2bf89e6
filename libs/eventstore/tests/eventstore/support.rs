//! The common moves of the store's tests.

use std::time::Duration;

use serde_json::json;
use skileez_eventstore::{
    EventStore, ExpectedVersion, FeedPosition, NewEvent, RecordedEvent, StoreError, StreamAppend,
};
use skileez_testkit::TestDatabase;
use uuid::Uuid;

/// A store on a fresh database; keep the database alive for the whole test.
pub async fn store() -> (TestDatabase, EventStore) {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool().clone());
    (db, store)
}

pub fn event(event_type: &str) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        payload: json!({ "kind": event_type }),
        metadata: json!({ "actor": "test" }),
    }
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|i| event(&format!("Event{i}"))).collect()
}

pub fn to(stream_id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamAppend {
    StreamAppend {
        stream_id: stream_id.to_owned(),
        stream_type: "call".to_owned(),
        expected,
        events,
    }
}

/// Appends and commits.
pub async fn append(
    store: &EventStore,
    stream_id: &str,
    expected: ExpectedVersion,
    n: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let uow = store
        .append(vec![to(stream_id, expected, events(n))])
        .await?;
    uow.commit().await
}

/// Reads the feed from `after` until `until` holds for what was read, or
/// fails after a few seconds. Other tests' transactions on the same server
/// may hold the watermark back for a moment, so a test waits for events
/// instead of expecting them at once.
pub async fn read_feed_until(
    store: &EventStore,
    after: FeedPosition,
    until: impl Fn(&[RecordedEvent]) -> bool,
) -> anyhow::Result<Vec<RecordedEvent>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut position = after;
    loop {
        let batch = store.read_feed(position, 100).await?;
        if let Some(last) = batch.last() {
            position = last.feed_position();
        }
        let empty = batch.is_empty();
        seen.extend(batch);
        if until(&seen) {
            return Ok(seen);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "feed did not deliver in time; got {} events",
            seen.len()
        );
        if empty {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}
