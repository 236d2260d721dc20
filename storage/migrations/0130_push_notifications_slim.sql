-- Notification rows cost one B-tree insert each: every message in a room writes one
-- row per local member, and with the rowid table, its unique key and two unread indexes
-- (0110, 0120) each row was four inserts. The rows are now only keyed by (user, stream
-- position), without a rowid on SQLite; whether a row is read is no longer stored but
-- follows from the user's read receipts in push_receipts (a receipt reads everything up
-- to its position in its scope), so a receipt updates one receipt row instead of every
-- notification it reads. Unread counts are kept in memory by the push service and
-- counted from these rows (after the receipts) when a user's counts are first needed.

-- Rows already marked read become receipts. Read rows are a prefix of their scope
-- (room main timeline, or one thread): receipts and leaves read everything up to a
-- position, so the latest read row of a scope is that scope's receipt.
INSERT INTO push_receipts (user_id, room_id, thread_id, stream_pos)
    SELECT user_id, room_id, CASE WHEN thread_id = '' THEN 'main' ELSE thread_id END, MAX(stream_pos)
    FROM push_notifications WHERE is_read = TRUE
    GROUP BY user_id, room_id, CASE WHEN thread_id = '' THEN 'main' ELSE thread_id END
    ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET stream_pos = excluded.stream_pos
    WHERE excluded.stream_pos > push_receipts.stream_pos;

CREATE TABLE push_notifications_v3 (
    user_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL DEFAULT '',
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
) {{WITHOUT_ROWID}};
INSERT INTO push_notifications_v3 (user_id, stream_pos, room_id, event_id, thread_id, actions, highlight, ts)
    SELECT user_id, stream_pos, room_id, event_id, thread_id, actions, highlight, ts FROM push_notifications;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_v3 RENAME TO push_notifications;
