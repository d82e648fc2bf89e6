-- The event store: every event of the system, and one row per stream.
--
-- Readers follow the store in (tx_id, position) order and only read events of
-- transactions below pg_snapshot_xmin(pg_current_snapshot()), the lowest
-- transaction id still running anywhere on the server. An identity/sequence
-- value is handed out when a row is inserted, not when it commits, so
-- "everything after the highest position I have seen" skips a lower position
-- whose transaction commits later. Transaction ids below the snapshot's xmin
-- are all finished, and every transaction that starts writing later gets a
-- higher id, so the set of events below the watermark never changes again:
-- a reader that resumes after the last (tx_id, position) it saw never misses
-- one. The price: one long-open writing transaction anywhere on the server
-- pauses the feed until it ends (set idle_in_transaction_session_timeout and
-- alert on feed lag).

CREATE TABLE events (
    -- Global order inside one transaction, and a tie-breaker for the feed.
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction, assigned by Postgres at the transaction's first
    -- write. The feed orders by it first (see above). The store takes all its
    -- stream locks before that first write, so a transaction that appends to
    -- a stream after another always has the higher tx_id, and per-stream
    -- order equals feed order.
    tx_id          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    -- Chosen by the writer; a retried command that reuses its ids is rejected
    -- instead of appended twice. Also the publish dedupe id downstream.
    event_id       uuid NOT NULL,
    stream_id      text NOT NULL,
    stream_type    text NOT NULL,
    -- 1-based, without gaps, per stream.
    version        bigint NOT NULL CHECK (version > 0),
    event_type     text NOT NULL,
    schema_version int NOT NULL,
    payload        jsonb NOT NULL,
    -- Free-form: actor, traceparent, request id, causation.
    metadata       jsonb NOT NULL,
    -- Start of the writing transaction, not its commit.
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- The last line of defence for optimistic concurrency; the stream lock
    -- normally turns a race into a version conflict before this is reached.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- The feed: WHERE (tx_id, position) > ($after) AND tx_id < xmin ORDER BY tx_id, position.
CREATE INDEX events_feed_idx ON events (tx_id, position);

-- One row per stream: its type and current version, so checking an expected
-- version reads one row instead of max(version) over the stream's events.
-- Appenders to one stream are serialised by a transaction-level advisory lock
-- on the stream id, taken before this row is written (see the eventstore
-- crate for why the row lock itself is not enough).
CREATE TABLE streams (
    stream_id   text PRIMARY KEY,
    stream_type text NOT NULL,
    version     bigint NOT NULL CHECK (version > 0)
);
