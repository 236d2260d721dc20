-- Send-to-device inbox: one row per message and recipient device, ordered by its
-- position in the to_device stream, deleted once the device acknowledges it.
CREATE TABLE e2e_to_device_inbox (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX e2e_to_device_inbox_device ON e2e_to_device_inbox (user_id, device_id, stream_pos);
