-- Durable timers (services/timers): the moments at which the timers service
-- sends a command to scheduling. Written by the timers' call-event consumer
-- (in the same transaction as its inbox entry), claimed by the claim loop of
-- any timers instance with FOR UPDATE SKIP LOCKED and a lease.
--
-- Life of a row: `pending` until it is settled as `fired` (the command was
-- answered OK, applied or not), `retired` (a later call event made it moot),
-- `dropped` (a reminder whose moment came after the call's start: never sent
-- late) or `failed` (refused for good, or out of attempts; `last_error` says
-- why). Settled rows are purged after a retention period.
CREATE TABLE timers (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id       uuid NOT NULL,
    kind          text NOT NULL
                  CHECK (kind IN ('reminder_24h', 'reminder_1h', 'ready', 'missed', 'auto_complete')),
    -- The timer's moment. Never moves: a reschedule makes a new call.
    due_at        timestamptz NOT NULL,
    -- The call's start, for the misfire rule (a reminder due after it is dropped).
    call_start    timestamptz NOT NULL,
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'fired', 'retired', 'dropped', 'failed')),
    -- The stream version of the call event that last set this row. An event
    -- of a version not above it changes nothing (a redelivered or late event
    -- cannot bring a retired timer back).
    call_version  bigint NOT NULL CHECK (call_version >= 1),
    -- When the claim loop may take the row next: `due_at` at first; while
    -- leased, the lease's end (so a crashed instance's rows come back by
    -- themselves); after a failed attempt, the retry's moment.
    run_at        timestamptz NOT NULL,
    -- The instance holding the lease, and until when (= run_at while held);
    -- on a settled row, the instance that settled it.
    lease_owner   text,
    lease_until   timestamptz,
    -- Claims so far; also the fence a settle must match (a settle by an
    -- instance whose lease was taken over changes nothing).
    attempts      int NOT NULL DEFAULT 0,
    last_error    text,
    -- For fired rows: whether scheduling appended an event (`applied`) or
    -- answered that the command was stale (`not_applied`).
    outcome       text,
    -- The W3C trace context of the booking, so the firing can link to it.
    traceparent   text,
    tracestate    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- When the row last changed state; retention counts from it.
    updated_at    timestamptz NOT NULL DEFAULT now(),
    fired_at      timestamptz,
    CONSTRAINT timers_call_kind_key UNIQUE (call_id, kind)
);

-- The claim query and the next wake-up: pending rows in run_at order.
CREATE INDEX timers_pending_run_at_idx ON timers (run_at) WHERE state = 'pending';

-- The retention purge: settled rows by age.
CREATE INDEX timers_settled_updated_at_idx ON timers (updated_at) WHERE state <> 'pending';
