//! The feed: nothing skipped, nothing repeated, streams in version order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skileez_eventstore::{
    EventStore, ExpectedVersion, FeedPosition, RecordedEvent, StoreError, StreamAppend,
};
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::support::{append, events, ids, read_feed_until, store, to};

#[tokio::test]
async fn the_feed_holds_back_a_later_commit_until_an_earlier_transaction_ends() -> anyhow::Result<()>
{
    let (_db, store) = store().await;

    // A writes first, so it has the lower transaction id and position, and
    // stays open; B writes later and commits.
    let a = store
        .append(vec![to("call-a", ExpectedVersion::NoStream, events(1))])
        .await?;
    let b = append(&store, "call-b", ExpectedVersion::NoStream, 1).await?;
    assert!(a.events()[0].tx_id < b[0].tx_id);
    assert!(a.events()[0].position < b[0].position);

    // A reader that took B now and checkpointed it would never see A.
    // The watermark keeps B back while A is in flight.
    let feed = store.read_feed(FeedPosition::START, 100).await?;
    assert!(feed.is_empty(), "B was delivered ahead of A: {feed:?}");

    let a = a.commit().await?;
    let feed = read_feed_until(&store, FeedPosition::START, |seen| seen.len() >= 2).await?;
    assert_eq!(ids(&feed), [ids(&a), ids(&b)].concat(), "A first, then B");
    Ok(())
}

#[tokio::test]
async fn a_rolled_back_transaction_releases_the_feed_and_leaves_nothing() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let a = store
        .append(vec![to("call-a", ExpectedVersion::NoStream, events(1))])
        .await?;
    let b = append(&store, "call-b", ExpectedVersion::NoStream, 1).await?;
    assert!(store.read_feed(FeedPosition::START, 100).await?.is_empty());

    a.rollback().await?;
    let feed = read_feed_until(&store, FeedPosition::START, |seen| !seen.is_empty()).await?;
    assert_eq!(ids(&feed), ids(&b));
    Ok(())
}

#[tokio::test]
async fn the_feed_resumes_after_the_last_position_without_repeats() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let mut written = Vec::new();
    for i in 0..5 {
        written.extend(append(&store, &format!("call-{}", i % 2), ExpectedVersion::Any, 2).await?);
    }
    // Everything is committed; wait until the watermark has passed it.
    read_feed_until(&store, FeedPosition::START, |seen| {
        seen.len() == written.len()
    })
    .await?;

    let mut read = Vec::new();
    let mut position = FeedPosition::START;
    loop {
        let batch = store.read_feed(position, 3).await?;
        let Some(last) = batch.last() else { break };
        assert!(batch.len() <= 3);
        // Resume from the token a client would have been handed.
        position = last.feed_position().to_string().parse()?;
        read.extend(batch);
    }
    assert_eq!(ids(&read), ids(&written));
    assert!(store.read_feed(FeedPosition::START, 0).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_feed_for_some_streams_returns_only_theirs() -> anyhow::Result<()> {
    let (_db, store) = store().await;
    let mut mine = Vec::new();
    for i in 0..3 {
        mine.extend(append(&store, "call-mine", ExpectedVersion::Any, 1).await?);
        append(&store, &format!("call-other-{i}"), ExpectedVersion::Any, 1).await?;
        mine.extend(append(&store, "call-also-mine", ExpectedVersion::Any, 1).await?);
    }
    read_feed_until(&store, FeedPosition::START, |seen| seen.len() == 9).await?;

    let watched = ["call-mine".to_owned(), "call-also-mine".to_owned()];
    let feed = store
        .read_feed_for_streams(FeedPosition::START, &watched, 100)
        .await?;
    assert_eq!(ids(&feed), ids(&mine));

    let after_first = feed[0].feed_position();
    let rest = store
        .read_feed_for_streams(after_first, &watched, 2)
        .await?;
    assert_eq!(ids(&rest), ids(&mine[1..3]));
    assert!(
        store
            .read_feed_for_streams(FeedPosition::START, &[], 100)
            .await?
            .is_empty()
    );
    Ok(())
}

/// What one writer did: the ids of the events it committed, and of those it
/// appended and then rolled back.
#[derive(Default)]
struct Outcome {
    committed: Vec<Uuid>,
    rolled_back: Vec<Uuid>,
    conflicts: usize,
}

const WRITERS: usize = 16;
const APPENDS_PER_WRITER: usize = 100;
const SHARED_STREAMS: u64 = 6;

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

async fn writer(store: EventStore, writer: usize) -> anyhow::Result<Outcome> {
    let mut rng = Lcg(writer as u64 + 1);
    let mut outcome = Outcome::default();
    let own = format!("own-{writer}");
    let mut own_version = 0;
    for _ in 0..APPENDS_PER_WRITER {
        let shared = format!("shared-{}", rng.below(SHARED_STREAMS));
        let other = format!("shared-{}", rng.below(SHARED_STREAMS));
        let appends: Vec<StreamAppend> = match rng.below(5) {
            // Races on the version of a shared stream, checked.
            0 => {
                let version = store.stream_version(&shared).await?;
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                vec![to(&shared, expected, events(1 + rng.below(2) as usize))]
            }
            // Races on a shared stream, unchecked.
            1 => vec![to(&shared, ExpectedVersion::Any, events(1))],
            // Several streams at once, in either order: deadlocks would show here.
            2 if shared != other => vec![
                to(&other, ExpectedVersion::Any, events(1)),
                to(&shared, ExpectedVersion::Any, events(2)),
            ],
            2 => vec![
                to(&own, ExpectedVersion::Exact(own_version), events(1)),
                to(&shared, ExpectedVersion::Any, events(1)),
            ],
            // A stream nobody else writes.
            _ => vec![to(&own, ExpectedVersion::Exact(own_version), events(2))],
        };
        let own_added: u64 = appends
            .iter()
            .filter(|a| a.stream_id == own)
            .map(|a| a.events.len() as u64)
            .sum();

        let uow = match store.append(appends).await {
            Ok(uow) => uow,
            Err(StoreError::VersionConflict { .. }) => {
                outcome.conflicts += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // Some transactions stay open for a while, holding the watermark back
        // and the lock of their streams.
        if rng.below(4) == 0 {
            tokio::time::sleep(Duration::from_millis(1 + rng.below(5))).await;
        }
        let ids = ids(uow.events());
        if rng.below(10) == 0 {
            uow.rollback().await?;
            outcome.rolled_back.extend(ids);
        } else {
            uow.commit().await?;
            outcome.committed.extend(ids);
            own_version += own_added;
        }
    }
    Ok(outcome)
}

/// Tails the feed until every committed event has come, or the deadline.
async fn reader(
    store: EventStore,
    writers_done: Arc<AtomicBool>,
    expected: Arc<tokio::sync::OnceCell<usize>>,
) -> anyhow::Result<Vec<RecordedEvent>> {
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let mut position = FeedPosition::START;
    // Once the writers are done, the rest must come soon; a reader that
    // skipped an event would otherwise wait here forever.
    let mut deadline = None;
    loop {
        let batch = store.read_feed(position, 50).await?;
        if let Some(last) = batch.last() {
            position = last.feed_position();
        }
        let empty = batch.is_empty();
        seen.extend(batch);
        if writers_done.load(Ordering::Acquire) && expected.get().is_some_and(|&n| seen.len() >= n)
        {
            // One more read: nothing may follow the last committed event.
            seen.extend(store.read_feed(position, 50).await?);
            return Ok(seen);
        }
        if writers_done.load(Ordering::Acquire) {
            let deadline = *deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_secs(10));
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "reader got {} of {:?} committed events",
                seen.len(),
                expected.get()
            );
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_sees_every_committed_event_once_and_in_stream_order() -> anyhow::Result<()>
{
    let (db, _) = store().await;
    // One connection per writer and one for the reader, so nobody waits for
    // the pool, only for Postgres.
    let pool = PgPoolOptions::new()
        .max_connections(WRITERS as u32 + 2)
        .connect_with(db.connect_options())
        .await?;
    let store = EventStore::new(pool.clone());

    let writers_done = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(tokio::sync::OnceCell::new());
    let reading = tokio::spawn(reader(
        store.clone(),
        writers_done.clone(),
        expected.clone(),
    ));
    let writing: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(store.clone(), w)))
        .collect();

    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    let mut conflicts = 0;
    for w in writing {
        let outcome = w.await??;
        committed.extend(outcome.committed);
        rolled_back.extend(outcome.rolled_back);
        conflicts += outcome.conflicts;
    }
    expected.set(committed.len())?;
    writers_done.store(true, Ordering::Release);
    let seen = reading.await??;
    eprintln!(
        "{} committed, {} rolled back, {} version conflicts",
        committed.len(),
        rolled_back.len(),
        conflicts
    );
    assert!(!committed.is_empty() && !rolled_back.is_empty());

    // Every committed event exactly once, nothing else.
    let seen_ids: Vec<Uuid> = ids(&seen);
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "an event was delivered twice");
    assert!(
        unique.is_disjoint(&rolled_back),
        "a rolled-back event was delivered"
    );
    assert_eq!(
        unique, committed,
        "delivered events differ from committed ones"
    );

    // In feed order, and per stream in version order without gaps.
    assert!(
        seen.windows(2)
            .all(|w| w[0].feed_position() < w[1].feed_position())
    );
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for event in &seen {
        let last = versions.entry(&event.stream_id).or_default();
        assert_eq!(
            event.version,
            *last + 1,
            "stream {} out of order at {}",
            event.stream_id,
            event.feed_position()
        );
        *last = event.version;
    }
    for (stream, last) in versions {
        assert_eq!(store.stream_version(stream).await?, Some(last));
    }
    pool.close().await;
    Ok(())
}
