-- The notifications service's live feed (services/notifications, `feed`):
-- per user, everything the web app is pushed over the WebSocket `/v1/live`:
-- the user's call changes (with the call card), new calls, ready-to-join
-- alerts and new in-app notifications, each under a per-user `position`.
--
-- Written by the call-event consumer in the transaction that handles the
-- event (once per event and user: the inbox claim of that transaction is the
-- guard), so a client that resumes after position n gets exactly what came
-- after n, nothing twice.

-- The feed's counter sits beside the notifications' counter in the same row:
-- one row lock per user and transaction, taken in user-id order, keeps both
-- gap-free and in commit order. In-app notifications keep their own
-- `sequence` (WatchNotifications' contract); the feed numbers everything.
ALTER TABLE notification_users
    ADD COLUMN last_position bigint NOT NULL DEFAULT 0 CHECK (last_position >= 0);

CREATE TABLE live_feed (
    user_id    text NOT NULL,
    position   bigint NOT NULL CHECK (position >= 1),
    kind       text NOT NULL CHECK (kind IN ('call.new', 'call.changed', 'call.ready', 'notification')),
    call_id    uuid NOT NULL,
    -- The call event that caused it.
    event_id   uuid NOT NULL,
    -- The item as the WebSocket sends it, less its `position`: rendered once,
    -- when the event was handled (a feed item is what happened then).
    item       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, position)
);
-- The retention purge.
CREATE INDEX live_feed_created_at ON live_feed (created_at);
