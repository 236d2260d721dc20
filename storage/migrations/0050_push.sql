-- Push notifications (syncapi/push).

-- A user's changes to their push rules (their own rules and their changes to the
-- server-default rules) as one JSON document; the defaults are merged in at read time.
CREATE TABLE push_rules (
    user_id TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- One row per event that notified a user (its push actions contained "notify").
-- thread_id is the thread root for events in a thread, '' otherwise.
CREATE TABLE push_notifications (
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
    UNIQUE (user_id, event_id)
);
CREATE INDEX push_notifications_unread ON push_notifications (user_id, is_read, room_id);

-- The latest read receipt (m.read or m.read.private) per user, room and thread, as a
-- stream position: thread_id '' is an unthreaded receipt, 'main' the main timeline.
-- Kept so that notifications evaluated after the receipt arrived are already read.
CREATE TABLE push_receipts (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
CREATE INDEX push_receipts_room ON push_receipts (room_id, stream_pos);

-- Pushers (POST /pushers/set).
CREATE TABLE pushers (
    id {{SERIAL_PK}},
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT NOT NULL DEFAULT '',
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);

-- Pending pushes to gateways: one row per notification and pusher, deleted once the
-- gateway accepted it (or rejected it for good), retried with backoff otherwise.
CREATE TABLE push_queue (
    id {{SERIAL_PK}},
    pusher_id BIGINT NOT NULL REFERENCES pushers (id) ON DELETE CASCADE,
    payload TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts BIGINT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_ts);
