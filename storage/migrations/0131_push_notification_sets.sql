-- A message in a room of n local members notified n-1 users: n-1 rows, each a B-tree
-- insert, which cost more CPU than everything else of the message put together. The
-- notifications are now written per user and write batch: one row holds all of one
-- user's notifications from one batch of evaluated events (the push writer commits a
-- batch every 50 ms or so under load), as a JSON list. Unread counts live in memory
-- (push service) and are counted from these rows, after the user's receipts, when a
-- user's counts are first needed; GET /notifications decodes a user's newest rows.
CREATE TABLE push_notification_sets (
    id {{SERIAL_PK}},
    user_id TEXT NOT NULL,
    first_pos BIGINT NOT NULL,
    last_pos BIGINT NOT NULL,
    last_ts BIGINT NOT NULL,
    -- [{"p": stream position, "r": room, "e": event ID, "t": thread root (absent for
    --   the main timeline), "a": actions, "h": highlight (absent when false), "ts": ms}]
    entries TEXT NOT NULL,
    UNIQUE (user_id, first_pos, last_pos)
);
-- Each existing notification becomes a set of one.
INSERT INTO push_notification_sets (user_id, first_pos, last_pos, last_ts, entries)
    SELECT user_id, stream_pos, stream_pos, ts,
        '[{"p":' || CAST(stream_pos AS TEXT) || ',"r":"' || room_id || '","e":"' || event_id || '"'
        || CASE WHEN thread_id = '' THEN '' ELSE ',"t":"' || thread_id || '"' END
        || ',"a":' || actions
        || CASE WHEN highlight THEN ',"h":true' ELSE '' END
        || ',"ts":' || CAST(ts AS TEXT) || '}]'
    FROM push_notifications ORDER BY user_id, stream_pos;
DROP TABLE push_notifications;
