//! Appending and reading: the SQL, and the mapping of its outcomes to
//! [`StoreError`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::error::StoreError;
use crate::types::{ExpectedVersion, FeedPosition, RecordedEvent, StreamAppend};

/// The columns of [`EventRow`], in one place for every query that returns events.
/// `xid8` has no sqlx type; its text form fits a `bigint` (a 64-bit transaction
/// id passes 2^63 only after 2^31 wraparound epochs).
macro_rules! event_columns {
    () => {
        "position, tx_id::text::bigint AS tx_id, event_id, stream_id, stream_type, version, \
         event_type, schema_version, payload, metadata, recorded_at"
    };
}

/// The advisory-lock key of a stream, as SQL over the text expression
/// `$id`: every stream lock, of a stream appended to or only locked (see
/// [`EventStore::append_locking`]), is taken on exactly this key.
macro_rules! stream_lock_key {
    ($id:literal) => {
        concat!("hashtextextended('skileez.stream:' || ", $id, ", 0)")
    };
}

/// Locks every stream of an append, checks its expected version and moves it
/// to its new version, in one statement. Returns a row for each stream that
/// passed, or that did not exist and was created (the caller tells the two
/// apart by the returned version); a stream that failed its check returns
/// nothing.
///
/// `$3` encodes the expectation: `-1` no stream, `-2` any, `n >= 0` exactly `n`.
/// `$5` names streams that are locked too but not appended to.
///
/// The locks are transaction-level advisory locks, in one global order (by
/// key) so that two multi-stream appends cannot deadlock. `locked` is an
/// aggregate, so it has taken every lock before it yields the one row the
/// INSERT needs: nothing is written, and no transaction id is assigned, until
/// all locks are held. `ON CONFLICT DO UPDATE` then sees the latest committed
/// row even though this statement's snapshot was taken before the wait.
const LOCK_STREAMS: &str = concat!(
    "
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
        AS t(stream_id, stream_type, expected, added)
),
locked AS MATERIALIZED (
    SELECT count(pg_advisory_xact_lock(key)) AS n
    FROM (
        SELECT DISTINCT ",
    stream_lock_key!("stream_id"),
    " AS key
        FROM (SELECT stream_id FROM input UNION ALL SELECT unnest($5::text[])) AS ids(stream_id)
        ORDER BY key
    ) AS keys
)
INSERT INTO streams AS s (stream_id, stream_type, version)
SELECT i.stream_id, i.stream_type, i.added
FROM input AS i CROSS JOIN locked
WHERE locked.n > 0
ON CONFLICT (stream_id) DO UPDATE
    SET version = s.version + excluded.version
    WHERE (
        SELECT i.expected = s.version OR i.expected = -2
        FROM input AS i
        WHERE i.stream_id = excluded.stream_id
    )
RETURNING s.stream_id, s.version"
);

/// The streams' versions, read after a failed check to report what was found.
/// Run in the appending transaction, which still holds the locks, so this is
/// the version the check saw.
const STREAM_VERSIONS: &str = "SELECT stream_id, version FROM streams WHERE stream_id = ANY($1)";

/// All events of an append in one statement, in the caller's order, so their
/// positions follow it. A duplicate event id is skipped rather than raised,
/// so the caller can name it without a second query; the append is then
/// rolled back.
const INSERT_EVENTS: &str = concat!(
    "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata)
     SELECT e.event_id, e.stream_id, e.stream_type, e.version, e.event_type, e.schema_version, e.payload, e.metadata
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::jsonb[], $8::jsonb[])
         WITH ORDINALITY AS e(event_id, stream_id, stream_type, version, event_type, schema_version, payload, metadata, ord)
     ORDER BY e.ord
     ON CONFLICT (event_id) DO NOTHING
     RETURNING ",
    event_columns!()
);

const READ_STREAM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_id = $1 ORDER BY version"
);

const READ_STREAMS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, version"
);

const STREAM_VERSION: &str = "SELECT version FROM streams WHERE stream_id = $1";

/// Below the xmin of the current snapshot every transaction has finished and
/// every later writer gets a higher id: see the crate docs.
const READ_FEED: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events
     WHERE (tx_id, position) > ($1::text::xid8, $2)
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY tx_id, position
     LIMIT $3"
);

const READ_FEED_FOR_STREAMS: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events
     WHERE (tx_id, position) > ($1::text::xid8, $2)
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
       AND stream_id = ANY($4)
     ORDER BY tx_id, position
     LIMIT $3"
);

/// Where the writes go and the reads come from. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction and appends events to one or more streams,
    /// atomically: if any stream is not at its expected version, nothing is
    /// written. Returns the open transaction as a [`UnitOfWork`], so the
    /// caller writes its read models in it and commits events and read models
    /// together; dropping it rolls everything back.
    ///
    /// The first thing the transaction does is lock every stream it appends
    /// to (advisory locks on the stream ids, in one global order against
    /// deadlocks) and check their expected versions; the `streams` rows and
    /// the events are written only after all locks are held. That order is
    /// what keeps each stream's versions in feed order: Postgres assigns a
    /// transaction its id at its first write, so a transaction that appends
    /// to a stream after another committed to it always has the higher
    /// `tx_id`. Row locks would not do: `UPDATE` takes its transaction id
    /// before it waits for the row, and with several streams the first row
    /// lock takes it before the wait for the second, so a transaction that
    /// starts waiting early can end up with a lower id than one that appended
    /// to the same stream before it.
    ///
    /// A version conflict comes back as [`StoreError::VersionConflict`],
    /// whether the check or the `(stream_id, version)` unique constraint
    /// caught it; a reused event id as [`StoreError::DuplicateEvent`].
    ///
    /// Round trips: `BEGIN`, one statement for all locks and checks, one for
    /// all events; then the caller's writes and `COMMIT`.
    pub async fn append(&self, appends: Vec<StreamAppend>) -> Result<UnitOfWork, StoreError> {
        self.append_locking(appends, &[]).await
    }

    /// [`EventStore::append`] that also locks the streams `also_lock`
    /// without appending to them, for a rule that spans streams: until this
    /// unit of work ends, appends to those streams wait for it, and it was
    /// granted their locks only after every earlier append to them had
    /// committed, so its reads (after the append) see those appends' read
    /// models. A booking locks its coach's availability stream this way.
    ///
    /// These locks are taken with the others, in the same global order and
    /// before the transaction's first write, so deadlocks stay impossible
    /// and the feed's transaction-id order agrees with the order in which
    /// this transaction and the appends to a locked stream were serialised.
    #[tracing::instrument(
        name = "append",
        skip_all,
        fields(
            otel.name = "INSERT events",
            otel.kind = "client",
            db.system.name = "postgresql",
            db.operation.name = "INSERT",
            db.collection.name = "events",
            streams = appends.len(),
            stream_id = appends.first().map(|a| a.stream_id.as_str()),
            events = appends.iter().map(|a| a.events.len()).sum::<usize>(),
            also_locked = also_lock.len(),
            tx_id = tracing::field::Empty,
        )
    )]
    pub async fn append_locking(
        &self,
        appends: Vec<StreamAppend>,
        also_lock: &[String],
    ) -> Result<UnitOfWork, StoreError> {
        let plan = AppendPlan::new(&appends)?;
        let mut tx = match crate::deadline::begin_statement()? {
            None => self.pool.begin().await?,
            // One round trip: the timeout rides with the BEGIN.
            Some(begin) => self.pool.begin_with(sqlx::AssertSqlSafe(begin)).await?,
        };
        match append_in(&mut tx, &appends, &plan, also_lock).await {
            Ok(events) => {
                if let Some(first) = events.first() {
                    tracing::Span::current().record("tx_id", first.tx_id);
                }
                Ok(UnitOfWork { tx, events })
            }
            Err(error) => {
                // The transaction may be aborted already; rolling back is all
                // that is left, and its own failure adds nothing to `error`.
                let _ = tx.rollback().await;
                Err(self.refine_append_error(error, &appends).await)
            }
        }
    }

    /// A stream's events in version order; empty if the stream does not exist.
    #[tracing::instrument(skip_all, fields(otel.name = "SELECT events", otel.kind = "client", db.system.name = "postgresql", stream_id = %stream_id))]
    pub async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(READ_STREAM)
            .bind(stream_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Every event of several streams in one round trip, grouped by stream
    /// (in `stream_id` order) and in version order within each.
    #[tracing::instrument(skip_all, fields(otel.name = "SELECT events", otel.kind = "client", db.system.name = "postgresql", streams = stream_ids.len()))]
    pub async fn read_streams(
        &self,
        stream_ids: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(READ_STREAMS)
            .bind(stream_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// The version of a stream's last event, `None` if the stream does not exist.
    #[tracing::instrument(skip_all, fields(stream_id = %stream_id))]
    pub async fn stream_version(&self, stream_id: &str) -> Result<Option<u64>, StoreError> {
        let version: Option<i64> = sqlx::query_scalar(STREAM_VERSION)
            .bind(stream_id)
            .fetch_optional(&self.pool)
            .await?;
        version.map(|v| to_u64(v, "stream version")).transpose()
    }

    /// Up to `limit` committed events after `after`, in feed order
    /// (`(tx_id, position)`), only from transactions older than every
    /// transaction still running, so a reader that resumes from the last
    /// position it saw never skips an event that was still in flight.
    ///
    /// Call it outside a transaction of your own (through the pool): a reader
    /// whose transaction has written something holds back its own feed.
    #[tracing::instrument(level = "debug", skip_all, fields(after = %after, limit))]
    pub async fn read_feed(
        &self,
        after: FeedPosition,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_FEED)
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// [`EventStore::read_feed`] restricted to the given streams (a per-user
    /// watch, say). Positions are those of the whole feed, so a reader may
    /// switch between the two without losing its place.
    #[tracing::instrument(level = "debug", skip_all, fields(after = %after, limit, streams = stream_ids.len()))]
    pub async fn read_feed_for_streams(
        &self,
        after: FeedPosition,
        stream_ids: &[String],
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if limit == 0 || stream_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<EventRow> = sqlx::query_as(READ_FEED_FOR_STREAMS)
            .bind(after.tx_id.to_string())
            .bind(after.position)
            .bind(i64::from(limit))
            .bind(stream_ids)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// A `(stream_id, version)` unique violation means a writer bypassed the
    /// stream lock; report it as the version conflict it is. Runs after the
    /// rollback, so it reads committed state.
    async fn refine_append_error(&self, error: StoreError, appends: &[StreamAppend]) -> StoreError {
        if error.constraint().as_deref() != Some("events_stream_version_key") {
            return error;
        }
        let ids: Vec<String> = appends.iter().map(|a| a.stream_id.clone()).collect();
        let found: Result<Vec<(String, i64)>, _> =
            sqlx::query_as("SELECT stream_id, max(version) FROM events WHERE stream_id = ANY($1) GROUP BY stream_id")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await;
        let Ok(found) = found else { return error };
        let found: HashMap<String, i64> = found.into_iter().collect();
        // The first stream that already holds a version we tried to write.
        let clash = appends.iter().find(|a| {
            found
                .get(&a.stream_id)
                .is_some_and(|&max| max >= first_new_version(a.expected))
        });
        match clash {
            Some(append) => StoreError::VersionConflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual: found
                    .get(&append.stream_id)
                    .and_then(|&v| u64::try_from(v).ok()),
            },
            None => error,
        }
    }
}

/// The lowest version an append with this expectation writes, as far as the
/// caller can know it.
fn first_new_version(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Exact(v) => i64::try_from(v).unwrap_or(i64::MAX).saturating_add(1),
        ExpectedVersion::NoStream | ExpectedVersion::Any => 1,
    }
}

/// An append that has written its events but not committed: the caller adds
/// its read-model writes through [`UnitOfWork::conn`] and commits. Dropping
/// it rolls back. Keep it short-lived: while it is open, the feed waits for it.
pub struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
    events: Vec<RecordedEvent>,
}

impl std::fmt::Debug for UnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl UnitOfWork {
    /// The events as they will be stored, in position order.
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    /// The transaction's connection, for read-model writes that must commit
    /// or roll back with the events.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits events and read-model writes together.
    #[tracing::instrument(skip_all, fields(otel.name = "COMMIT", otel.kind = "client", db.system.name = "postgresql", events = self.events.len()))]
    pub async fn commit(self) -> Result<Vec<RecordedEvent>, StoreError> {
        self.tx.commit().await?;
        Ok(self.events)
    }

    /// Rolls back events and read-model writes; the same as dropping, but
    /// waits for the rollback and reports its failure.
    #[tracing::instrument(skip_all, fields(events = self.events.len()))]
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// An append validated and laid out as the array parameters of the two
/// statements.
struct AppendPlan {
    stream_ids: Vec<String>,
    stream_types: Vec<String>,
    expected: Vec<i64>,
    added: Vec<i64>,
}

impl AppendPlan {
    fn new(appends: &[StreamAppend]) -> Result<Self, StoreError> {
        let invalid = |reason: String| Err(StoreError::InvalidAppend { reason });
        if appends.is_empty() {
            return invalid("no streams to append to".to_owned());
        }
        let mut streams = HashSet::new();
        let mut event_ids = HashSet::new();
        for append in appends {
            if !streams.insert(append.stream_id.as_str()) {
                return invalid(format!("stream {} appears twice", append.stream_id));
            }
            if append.events.is_empty() {
                return invalid(format!("no events for stream {}", append.stream_id));
            }
            for event in &append.events {
                if !event_ids.insert(event.event_id) {
                    return Err(StoreError::DuplicateEvent {
                        event_id: event.event_id,
                    });
                }
            }
        }
        let mut plan = AppendPlan {
            stream_ids: Vec::with_capacity(appends.len()),
            stream_types: Vec::with_capacity(appends.len()),
            expected: Vec::with_capacity(appends.len()),
            added: Vec::with_capacity(appends.len()),
        };
        for append in appends {
            let expected = match append.expected {
                ExpectedVersion::NoStream => -1,
                ExpectedVersion::Any => -2,
                ExpectedVersion::Exact(v) => match i64::try_from(v) {
                    Ok(v) => v,
                    Err(_) => return invalid(format!("expected version {v} is out of range")),
                },
            };
            plan.stream_ids.push(append.stream_id.clone());
            plan.stream_types.push(append.stream_type.clone());
            plan.expected.push(expected);
            // Bounded by memory long before i64.
            plan.added.push(append.events.len() as i64);
        }
        Ok(plan)
    }
}

/// Locks and checks the streams, then inserts the events; the caller rolls
/// back on any error.
async fn append_in(
    tx: &mut PgConnection,
    appends: &[StreamAppend],
    plan: &AppendPlan,
    also_lock: &[String],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let moved: Vec<(String, i64)> = sqlx::query_as(LOCK_STREAMS)
        .bind(&plan.stream_ids)
        .bind(&plan.stream_types)
        .bind(&plan.expected)
        .bind(&plan.added)
        .bind(also_lock)
        .fetch_all(&mut *tx)
        .await?;
    let moved: HashMap<String, i64> = moved.into_iter().collect();

    // Each stream's new last version, or the first conflict in the caller's order.
    let mut last_versions = Vec::with_capacity(appends.len());
    for (append, &added) in appends.iter().zip(&plan.added) {
        let last = moved.get(&append.stream_id).copied();
        let passed = match (append.expected, last) {
            (ExpectedVersion::Any, Some(_)) => true,
            // Created by the INSERT branch: right only if no stream was expected.
            (ExpectedVersion::NoStream | ExpectedVersion::Exact(0), Some(last)) => last == added,
            (ExpectedVersion::Exact(v), Some(last)) => {
                i64::try_from(v).ok().map(|v| v + added) == Some(last)
            }
            (_, None) => false,
        };
        if !passed {
            let actual = match last {
                // The stream exists but was not at the expected version.
                None => current_version(tx, &append.stream_id).await?,
                // The INSERT created it: it did not exist.
                Some(_) => None,
            };
            return Err(StoreError::VersionConflict {
                stream_id: append.stream_id.clone(),
                expected: append.expected,
                actual,
            });
        }
        last_versions.push(last.unwrap_or_default());
    }

    let total: usize = appends.iter().map(|a| a.events.len()).sum();
    let mut event_ids = Vec::with_capacity(total);
    let mut stream_ids = Vec::with_capacity(total);
    let mut stream_types = Vec::with_capacity(total);
    let mut versions = Vec::with_capacity(total);
    let mut event_types = Vec::with_capacity(total);
    let mut schema_versions = Vec::with_capacity(total);
    let mut payloads = Vec::with_capacity(total);
    let mut metadata = Vec::with_capacity(total);
    for ((append, &added), &last) in appends.iter().zip(&plan.added).zip(&last_versions) {
        let first = last - added + 1;
        for (event, version) in append.events.iter().zip(first..) {
            event_ids.push(event.event_id);
            stream_ids.push(append.stream_id.as_str());
            stream_types.push(append.stream_type.as_str());
            versions.push(version);
            event_types.push(event.event_type.as_str());
            schema_versions.push(event.schema_version);
            payloads.push(&event.payload);
            metadata.push(&event.metadata);
        }
    }

    let rows: Vec<EventRow> = sqlx::query_as(INSERT_EVENTS)
        .bind(&event_ids)
        .bind(&stream_ids)
        .bind(&stream_types)
        .bind(&versions)
        .bind(&event_types)
        .bind(&schema_versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_all(&mut *tx)
        .await?;
    if rows.len() != total {
        let inserted: HashSet<Uuid> = rows.iter().map(|r| r.event_id).collect();
        if let Some(&event_id) = event_ids.iter().find(|id| !inserted.contains(id)) {
            return Err(StoreError::DuplicateEvent { event_id });
        }
    }
    let mut events = rows
        .into_iter()
        .map(RecordedEvent::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING promises no order.
    events.sort_by_key(|e| e.position);
    Ok(events)
}

async fn current_version(
    tx: &mut PgConnection,
    stream_id: &str,
) -> Result<Option<u64>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(STREAM_VERSIONS)
        .bind([stream_id])
        .fetch_all(&mut *tx)
        .await?;
    rows.first()
        .map(|(_, v)| to_u64(*v, "stream version"))
        .transpose()
}

fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Decode(format!("{what} {value} is negative")))
}

/// An `events` row as Postgres returns it; [`RecordedEvent`] is the checked form.
#[derive(sqlx::FromRow)]
struct EventRow {
    position: i64,
    tx_id: i64,
    event_id: Uuid,
    stream_id: String,
    stream_type: String,
    version: i64,
    event_type: String,
    schema_version: i32,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        Ok(RecordedEvent {
            position: row.position,
            tx_id: to_u64(row.tx_id, "transaction id")?,
            event_id: row.event_id,
            stream_id: row.stream_id,
            stream_type: row.stream_type,
            version: to_u64(row.version, "version")?,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload,
            metadata: row.metadata,
            recorded_at: row.recorded_at,
        })
    }
}
