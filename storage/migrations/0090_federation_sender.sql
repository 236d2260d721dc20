-- Outgoing federation: one ordered queue per destination server. A row is deleted only
-- once the destination acknowledged the transaction that carried it with a 200, so a
-- restart or an outage loses nothing. kind is 'pdu' (event_id names a room event whose
-- JSON is read when sending) or 'edu' (edu_type and content are the EDU).
CREATE TABLE federation_queue (
    id {{SERIAL_PK}},
    destination TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT NOT NULL DEFAULT '',
    edu_type TEXT NOT NULL DEFAULT '',
    content TEXT NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL
);
CREATE INDEX federation_queue_destination ON federation_queue (destination, id);

-- How far the sender has read streams it turns into queue rows (room events, device
-- list changes), so that a restart resumes where it stopped.
CREATE TABLE federation_sender_positions (
    name TEXT NOT NULL PRIMARY KEY,
    pos BIGINT NOT NULL
);

-- The sender reads new room events of every room in stream order.
CREATE INDEX room_events_stream ON room_events (stream_pos) WHERE stream_pos IS NOT NULL;

-- Remote users' device lists, cached while we share a room with them (kept current by
-- m.device_list_update and m.signing_key_update EDUs). stream_id is the origin's
-- position of the last update applied.
CREATE TABLE remote_device_lists (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE TABLE remote_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE remote_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
