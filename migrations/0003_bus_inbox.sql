-- The consumers' inbox (libs/bus, module inbox): what each durable consumer
-- has processed, written in the same transaction as the consumer's own
-- changes, so that a redelivered or concurrently delivered message is applied
-- once and the events of one call are applied in version order.

-- One row per (consumer, event) processed. A redelivery finds its row and is
-- acked without being applied again. Purged after a retention period well
-- beyond any redelivery (purge_inbox).
CREATE TABLE consumer_inbox (
    -- The durable consumer's name.
    consumer     text NOT NULL,
    -- The event id (Nats-Msg-Id).
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- For the retention purge.
CREATE INDEX consumer_inbox_processed_at_idx ON consumer_inbox (processed_at);

-- The last version each consumer applied per key (call id). Its row lock
-- serialises two instances handling events of the same call; an event that
-- is not the next one waits (Ahead) or is skipped (Stale). One row per key,
-- never purged.
CREATE TABLE consumer_positions (
    consumer text NOT NULL,
    key      text NOT NULL,
    version  bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (consumer, key)
);
