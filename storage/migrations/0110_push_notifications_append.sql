-- Notification rows keyed so that new rows are appended: a batch of notifications for
-- many users and rooms used to land all over two indexes ordered by event ID and by
-- room (one index page written per row); keyed by (user, stream position) the rows of
-- one user go next to each other at the end. A stream position names one timeline
-- event, so (user_id, stream_pos) is as unique as (user_id, event_id) was.
CREATE TABLE push_notifications_v2 (
    id {{SERIAL_PK}},
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id TEXT NOT NULL DEFAULT '',
    actions TEXT NOT NULL,
    highlight BOOLEAN NOT NULL,
    is_read BOOLEAN NOT NULL DEFAULT FALSE,
    ts BIGINT NOT NULL,
    UNIQUE (user_id, stream_pos)
);
INSERT INTO push_notifications_v2 (user_id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts)
    SELECT user_id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts
    FROM push_notifications ORDER BY id;
DROP TABLE push_notifications;
ALTER TABLE push_notifications_v2 RENAME TO push_notifications;
-- Unread counts and marking read look at a user's unread rows only.
CREATE INDEX push_notifications_unread ON push_notifications (user_id, stream_pos) WHERE is_read = FALSE;
