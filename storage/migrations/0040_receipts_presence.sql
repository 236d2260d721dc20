-- Read receipts: the latest receipt of each type a user sent in a room, per thread
-- (thread_id '' is the unthreaded receipt), with its position in the receipts stream.
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_pos ON receipts (room_id, stream_pos);
CREATE INDEX receipts_pos ON receipts (stream_pos);

-- Presence: one row per user, with its position in the presence stream.
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT NOT NULL,
    last_active_ts BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX presence_pos ON presence (stream_pos);
