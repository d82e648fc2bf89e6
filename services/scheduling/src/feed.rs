//! The change feed: committed call events in commit order, as protobuf
//! `CallEvent`s with their cards, for `WatchCalls` and `GetCallHistory`.
//!
//! One task per process tails the event store's global feed and broadcasts
//! each change; a watcher subscribes first, then catches up from the position
//! its client last saw by reading the store, then follows the broadcast,
//! skipping what it already sent. A watcher that falls behind the broadcast
//! goes back to reading the store, so a slow client never makes the feed skip
//! a change and never holds up others.

use std::{collections::HashMap, sync::Arc, time::Duration};

use skileez_domain::{Call, CallEvent, Policy};
use skileez_eventstore::{EventStore, FeedPosition, RecordedEvent};
use skileez_proto::call as ev;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::{
    app::{call_id_of_stream, replay_records},
    error::ApiError,
    mapping, repo,
};

/// Events read from the store per round trip.
const BATCH: u32 = 500;
/// Changes buffered for slow watchers before they fall back to the store.
const BROADCAST_CAPACITY: usize = 4096;

/// One change of a call, ready to send.
#[derive(Debug, Clone)]
pub struct Change {
    pub position: FeedPosition,
    pub event: ev::CallEvent,
}

impl Change {
    /// Whether `user` takes part in the changed call.
    pub fn concerns(&self, user: &str) -> bool {
        self.event.card.as_ref().is_some_and(|card| {
            card.student.as_ref().is_some_and(|p| p.user_id == user)
                || card.coach.as_ref().is_some_and(|p| p.user_id == user)
        })
    }
}

/// Converts stored records (of any calls, in feed order) into protobuf
/// events, each with the card of its call right after it.
pub async fn to_changes(
    store: &EventStore,
    policy: &Policy,
    records: &[RecordedEvent],
) -> Result<Vec<Change>, ApiError> {
    // Streams are short, so a call's state after an event is cheapest to get
    // by replaying its whole stream once per batch. A stream whose every
    // event up to the batch's last is in the batch (a new booking: the
    // common case) replays from the batch itself; the others are read, all
    // in one round trip.
    let (whole, wanted) = split_by_history(records);
    let mut histories: HashMap<String, Vec<(CallEvent, Call)>> = HashMap::new();
    for stream in whole {
        histories.insert(stream[0].stream_id.clone(), replay_records(&stream)?);
    }
    if !wanted.is_empty() {
        let all = store.read_streams(&wanted).await?;
        for stream in all.chunk_by(|a, b| a.stream_id == b.stream_id) {
            histories.insert(stream[0].stream_id.clone(), replay_records(stream)?);
        }
    }
    let people: Vec<&str> = histories
        .values()
        .filter_map(|h| h.first())
        .flat_map(|(_, c)| [c.student_id.as_str(), c.coach_id.as_str()])
        .collect();
    let mut conn = store.pool().acquire().await.map_err(ApiError::from)?;
    let names = repo::display_names(&mut conn, &people).await?;
    let mut changes = Vec::with_capacity(records.len());
    for record in records {
        let Some(history) = histories.get(record.stream_id.as_str()) else {
            continue;
        };
        let index = usize::try_from(record.version)
            .unwrap_or(0)
            .saturating_sub(1);
        if let Some((event, after)) = history.get(index) {
            changes.push(Change {
                position: record.feed_position(),
                event: mapping::event(record, event, after, &names, policy),
            });
        }
    }
    Ok(changes)
}

/// The call streams of a batch split in two: those whose whole history up
/// to their last event in the batch is in the batch (in version order), and
/// the ids of the others, which must be read (sorted).
fn split_by_history(records: &[RecordedEvent]) -> (Vec<Vec<RecordedEvent>>, Vec<String>) {
    let mut in_batch: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for record in records
        .iter()
        .filter(|r| call_id_of_stream(&r.stream_id).is_some())
    {
        in_batch.entry(&record.stream_id).or_default().push(record);
    }
    let mut whole = Vec::new();
    let mut wanted = Vec::new();
    for (stream_id, mut events) in in_batch {
        events.sort_unstable_by_key(|r| r.version);
        let complete = events
            .iter()
            .enumerate()
            .all(|(i, r)| usize::try_from(r.version).is_ok_and(|v| v == i + 1));
        if complete {
            whole.push(events.into_iter().cloned().collect());
        } else {
            wanted.push(stream_id.to_owned());
        }
    }
    wanted.sort_unstable();
    (whole, wanted)
}

/// The position just behind every transaction still in flight: reading from
/// it yields only changes committed from now on.
pub async fn head(store: &EventStore) -> Result<FeedPosition, ApiError> {
    let xmin: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(store.pool())
            .await?;
    Ok(FeedPosition {
        tx_id: u64::try_from(xmin).unwrap_or(1).saturating_sub(1),
        position: i64::MAX,
    })
}

/// Tails the store and broadcasts every change.
#[derive(Clone)]
pub struct FeedHub {
    sender: broadcast::Sender<Arc<Change>>,
    /// Wakes an idle hub (one with nobody watching) when somebody starts.
    subscribed: Arc<Notify>,
}

impl FeedHub {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            sender,
            subscribed: Arc::new(Notify::new()),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        let receiver = self.sender.subscribe();
        self.subscribed.notify_one();
        receiver
    }

    /// Runs until `shutdown`: reads new events whenever `committed` fires
    /// (a commit of this instance) or `poll` passes (commits of others).
    pub async fn run(
        self,
        store: EventStore,
        policy: Policy,
        committed: Arc<Notify>,
        poll: Duration,
        shutdown: CancellationToken,
    ) {
        let mut position = loop {
            match head(&store).await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::warn!(%error, "change feed cannot read its start position; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(poll.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        };
        loop {
            if self.sender.receiver_count() == 0 {
                // Nobody watches: no reading on every commit (under load that
                // is a query and a conversion per booking), only keeping up
                // with the head at the poll's pace. Safe: the head is read
                // first and taken only if still nobody watches, so whoever
                // subscribes later subscribed after it was read, and their
                // own catch-up from the store reads past it.
                let started = self.subscribed.notified();
                if let Ok(head) = head(&store).await
                    && self.sender.receiver_count() == 0
                {
                    position = head;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = started => {}
                    () = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            // Register interest before reading, so a commit that lands while
            // we read still wakes the next wait.
            let woken = committed.notified();
            match store.read_feed(position, BATCH).await {
                Ok(records) if !records.is_empty() => {
                    let full = records.len() == BATCH as usize;
                    match to_changes(&store, &policy, &records).await {
                        Ok(changes) => {
                            for change in changes {
                                // No receivers is fine: nobody is watching.
                                let _ = self.sender.send(Arc::new(change));
                            }
                            if let Some(last) = records.last() {
                                position = last.feed_position();
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "change feed cannot convert events; retrying")
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "change feed cannot read the store; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = woken => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

impl Default for FeedHub {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, version: u64, position: i64) -> RecordedEvent {
        RecordedEvent {
            position,
            tx_id: 1,
            event_id: uuid::Uuid::now_v7(),
            stream_id: stream.to_owned(),
            stream_type: "call".to_owned(),
            version,
            event_type: "CallScheduled".to_owned(),
            schema_version: 1,
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_streams_whose_whole_history_is_in_the_batch_skip_the_read() {
        let new = format!("call-{}", uuid::Uuid::nil());
        let moved = format!("call-{}", uuid::Uuid::from_u128(1));
        let gap = format!("call-{}", uuid::Uuid::from_u128(2));
        let records = [
            record(&new, 1, 1),
            record(&moved, 3, 2),
            record(&new, 2, 3),
            record(&gap, 1, 4),
            record(&gap, 3, 5),
            record("coach-grace", 1, 6),
        ];
        let (whole, wanted) = split_by_history(&records);
        assert_eq!(whole.len(), 1);
        let versions: Vec<(String, u64)> = whole[0]
            .iter()
            .map(|r| (r.stream_id.clone(), r.version))
            .collect();
        assert_eq!(versions, vec![(new.clone(), 1), (new, 2)]);
        // Coach streams are not call streams: neither replayed nor read.
        let mut expected = vec![moved, gap];
        expected.sort_unstable();
        assert_eq!(wanted, expected);
    }
}
