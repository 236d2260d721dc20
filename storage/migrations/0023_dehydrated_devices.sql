-- Dehydrated devices (MSC3814): at most one per user. The device itself is a row of
-- devices (without access tokens); device_data is the client's opaque pickle.
CREATE TABLE e2e_dehydrated_devices (
    user_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    device_data TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
