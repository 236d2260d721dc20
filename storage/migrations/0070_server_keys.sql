-- Remote servers' signing keys (the key ring's cache). valid_until_ts is when the
-- origin said the key may be used until (0 for an old key); expired_ts is when an old
-- key stopped being used (0 while current).
CREATE TABLE server_signing_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL DEFAULT 0,
    expired_ts BIGINT NOT NULL DEFAULT 0,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
-- The latest signed key response from each remote server, as received, for answering
-- notary queries (/_matrix/key/v2/query) from our cache.
CREATE TABLE server_key_responses (
    server_name TEXT NOT NULL PRIMARY KEY,
    key_json TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
-- Our own retired signing keys (myelin rotate-signing-key), published in
-- old_verify_keys so events signed with them still verify.
CREATE TABLE own_old_signing_keys (
    key_id TEXT NOT NULL PRIMARY KEY,
    public_key TEXT NOT NULL,
    expired_ts BIGINT NOT NULL
);
