-- The outbox relay's checkpoint: the feed position (see the event store's
-- watermark) up to which every event has been acknowledged by JetStream. It
-- only moves forward.
CREATE TABLE relay_checkpoints (
    name       text PRIMARY KEY,
    tx_id      bigint NOT NULL,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The version of the platform fact a directory row was last projected from,
-- so that a redelivered or reordered older message never overwrites newer
-- data. Admin upserts leave it as it is.
ALTER TABLE participants ADD COLUMN source_version bigint NOT NULL DEFAULT 0;
ALTER TABLE contracts ADD COLUMN source_version bigint NOT NULL DEFAULT 0;
