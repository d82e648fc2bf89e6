-- The notifications service (services/notifications): in-app notifications,
-- the record of every delivery (e-mail and in-app), what it knows of each
-- call, and its daily jobs. It reads `participants` (0002) and writes only
-- the tables below.

-- Every notification to one recipient on one channel, at most one per
-- (call, kind, recipient, channel): that key is what makes redelivered
-- events, restarts and several instances yield one of each. Written by the
-- call-event consumer in the transaction that claims the event; e-mails are
-- then sent by the delivery worker, outside any transaction, and the outcome
-- recorded after.
--
-- Life of an e-mail row: `pending` → `sending` (leased by one instance until
-- `next_attempt_at`; a crashed instance's lease runs out and the row is taken
-- again) → `sent`, or back to `pending` after a transient failure (with
-- back-off), or `dead` (refused for good, or out of attempts; an operator can
-- put it back to `pending`). `skipped` (e-mail off, participant unknown) and
-- `stale` (the call moved on) are final. In-app rows are born `sent` or
-- `stale`.
CREATE TABLE notification_deliveries (
    delivery_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id         uuid NOT NULL,
    chain_id        uuid NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('booked', 'rescheduled', 'cancelled',
                        'reminder_24h', 'reminder_1h', 'ready', 'completed', 'missed')),
    recipient_id    text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'in_app')),
    state           text NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'dead', 'skipped', 'stale')),
    -- E-mail: the address and Message-ID it was rendered with.
    address         text,
    message_id      text,
    -- E-mail with a calendar invite: its METHOD and SEQUENCE. Invites of one
    -- (chain, recipient) go out in SEQUENCE order (a CANCEL never before its
    -- REQUEST).
    invite_method   text CHECK (invite_method IN ('REQUEST', 'CANCEL')),
    invite_sequence integer CHECK (invite_sequence >= 0),
    -- The whole formatted message (RFC 5322), rendered once so that every
    -- attempt sends the same bytes; cleared once sent or dropped.
    message         bytea,
    attempts        integer NOT NULL DEFAULT 0,
    -- Pending: not before then. Sending: the lease's end.
    next_attempt_at timestamptz,
    last_error      text,
    -- The call event that caused it.
    event_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT notification_deliveries_once UNIQUE (call_id, kind, recipient_id, channel),
    CHECK (channel = 'in_app' OR state NOT IN ('pending', 'sending') OR
           (message IS NOT NULL AND next_attempt_at IS NOT NULL))
);

-- The delivery worker's queue.
CREATE INDEX notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE state IN ('pending', 'sending');
-- The invite order check: earlier invites of the same chain and recipient.
CREATE INDEX notification_deliveries_invites ON notification_deliveries (chain_id, recipient_id, invite_sequence)
    WHERE invite_sequence IS NOT NULL;
-- ListDeliveries by state, newest first.
CREATE INDEX notification_deliveries_state ON notification_deliveries (state, delivery_id);

-- Each user's notification counter. Taking the next sequence locks the row
-- until the transaction ends, so a user's sequences commit in order and
-- without gaps: a watcher that has seen n has seen everything up to n.
CREATE TABLE notification_users (
    user_id       text PRIMARY KEY,
    last_sequence bigint NOT NULL CHECK (last_sequence >= 0)
);

-- In-app notifications, rendered for their recipient.
CREATE TABLE notifications (
    notification_id uuid PRIMARY KEY,
    user_id         text NOT NULL,
    sequence        bigint NOT NULL CHECK (sequence >= 1),
    call_id         uuid NOT NULL,
    chain_id        uuid NOT NULL,
    kind            text NOT NULL,
    title           text NOT NULL,
    body            text NOT NULL,
    -- The encoded skileez.call.v1.CallCard of the event.
    card            bytea NOT NULL,
    event_id        uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    CONSTRAINT notifications_user_sequence UNIQUE (user_id, sequence),
    CONSTRAINT notifications_once UNIQUE (call_id, kind, user_id)
);
CREATE INDEX notifications_unread ON notifications (user_id, sequence) WHERE read_at IS NULL;
-- The retention purge of read notifications.
CREATE INDEX notifications_read_at ON notifications (read_at) WHERE read_at IS NOT NULL;

-- What the service knows of each call, from the events it handled (in
-- version order): the newest card, and what the events carry but the card
-- does not (the reschedule count, for the invite's SEQUENCE). Used to drop
-- stale reminders and to word a reschedule ("moved from …").
CREATE TABLE notification_calls (
    call_id          uuid PRIMARY KEY,
    chain_id         uuid NOT NULL,
    version          bigint NOT NULL CHECK (version >= 1),
    status           text NOT NULL,
    starts_at        timestamptz NOT NULL,
    reschedule_count integer NOT NULL DEFAULT 0,
    -- The encoded skileez.call.v1.CallCard.
    card             bytea NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Daily jobs run once across instances: the instance whose conditional
-- UPDATE moves `last_run_at` to the current slot runs it.
CREATE TABLE notification_jobs (
    job         text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    last_result text
);
INSERT INTO notification_jobs (job, last_run_at) VALUES ('purge_read_notifications', '-infinity');
