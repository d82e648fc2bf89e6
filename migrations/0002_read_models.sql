-- Read models of the scheduling service. They are written in the same
-- transaction as the events they are derived from (the event store's append),
-- so they are never behind the streams and the constraints below settle races
-- between concurrent bookings inside the database.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Participants as learnt from the platform's user events (or the admin upsert).
CREATE TABLE participants (
    user_id       text PRIMARY KEY,
    display_name  text NOT NULL,
    email         text NOT NULL,
    time_zone     text NOT NULL,
    locale        text NOT NULL,
    email_enabled boolean NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Contracts as learnt from the platform's contract events. sessions_used is
-- ours: a booking takes one in its transaction, an early cancellation gives it
-- back. The CHECK makes two racing bookings for the last session impossible.
CREATE TABLE contracts (
    contract_id     text PRIMARY KEY,
    student_id      text NOT NULL,
    coach_id        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('accepted', 'paid', 'cancelled', 'completed')),
    session_minutes integer NOT NULL CHECK (session_minutes BETWEEN 15 AND 240),
    -- NULL: unlimited sessions.
    sessions_total  integer CHECK (sessions_total IS NULL OR sessions_total >= 0),
    sessions_used   integer NOT NULL DEFAULT 0 CHECK (sessions_used >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contracts_sessions_within_total
        CHECK (sessions_total IS NULL OR sessions_used <= sessions_total)
);
CREATE INDEX contracts_pair ON contracts (student_id, coach_id);

-- One row per call: the latest state of its stream, for conflict checks and
-- queries. `state` is the aggregate snapshot (serde JSON of the domain Call).
CREATE TABLE calls (
    call_id          uuid PRIMARY KEY,
    chain_id         uuid NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('free_consultation', 'paid_session')),
    student_id       text NOT NULL,
    coach_id         text NOT NULL,
    contract_id      text,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    -- ends_at plus the coach buffer in force when the call was booked: the
    -- coach's busy range is [starts_at, coach_busy_until).
    coach_busy_until timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN
        ('scheduled', 'ready', 'active', 'completed', 'cancelled', 'rescheduled', 'missed')),
    version          bigint NOT NULL,
    state            jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at AND coach_busy_until >= ends_at),
    -- No double booking, whatever the concurrency: half-open ranges, so
    -- back-to-back calls (10:00–10:15, 10:15–10:30) are both accepted.
    CONSTRAINT calls_coach_no_overlap EXCLUDE USING gist
        (coach_id WITH =, tstzrange(starts_at, coach_busy_until, '[)') WITH &&)
        WHERE (status IN ('scheduled', 'ready', 'active')),
    CONSTRAINT calls_student_no_overlap EXCLUDE USING gist
        (student_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&)
        WHERE (status IN ('scheduled', 'ready', 'active'))
);

-- At most one free consultation per student–coach pair. A cancelled one does
-- not count; a rescheduled one carries on as its successor, which counts.
CREATE UNIQUE INDEX calls_one_free_consultation ON calls (student_id, coach_id)
    WHERE kind = 'free_consultation' AND status NOT IN ('cancelled', 'rescheduled');

CREATE INDEX calls_student_start ON calls (student_id, starts_at, call_id);
CREATE INDEX calls_coach_start ON calls (coach_id, starts_at, call_id);

-- AIP-155 request ids: the first answer to a create/change request, returned
-- again to a retry with the same id from the same principal. Written in the
-- booking's own transaction, so an answer is stored if and only if its events
-- committed.
CREATE TABLE request_ids (
    principal  text NOT NULL,
    request_id text NOT NULL,
    method     text NOT NULL,
    -- The encoded request, to reject the reuse of an id for another request.
    request    bytea NOT NULL,
    response   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, request_id)
);
CREATE INDEX request_ids_created ON request_ids (created_at);
