-- Coaches' published hours (libs/domain availability): the latest state of
-- each coach's availability stream (`coach-<coach_id>`, stream_type `coach`),
-- written in the same transaction as the stream's events, so bookings that
-- check it under the coach's stream lock see exactly the hours in force.
-- No row: the coach has published nothing (or cleared it) and is bookable at
-- any time.
CREATE TABLE coach_availability (
    coach_id     text PRIMARY KEY,
    -- serde JSON of the domain Availability (a storage contract, like events).
    availability jsonb NOT NULL,
    -- The coach stream's version that published it.
    version      bigint NOT NULL CHECK (version > 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
