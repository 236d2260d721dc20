-- Accounts, devices, tokens and the per-user data of the foundation.
-- Timestamps are milliseconds since the Unix epoch (BIGINT); JSON is TEXT.

CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL DEFAULT '',
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    account_type TEXT NOT NULL DEFAULT 'user',
    deactivated BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ts BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL DEFAULT 0,
    last_seen_ip TEXT NOT NULL DEFAULT '',
    last_seen_user_agent TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored only as SHA-256 hashes (hex); the plaintext never touches disk.
CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    -- 0 means the token never expires.
    expires_ts BIGINT NOT NULL DEFAULT 0,
    refresh_token_hash TEXT
);
CREATE INDEX access_tokens_user_device ON access_tokens (user_id, device_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_user_device ON refresh_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url TEXT
);

-- Global counters for streams that sync will order by (account data, ...).
CREATE TABLE stream_positions (
    stream TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_pos ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    filter_id {{SERIAL_PK}},
    user_id TEXT NOT NULL,
    filter TEXT NOT NULL
);
CREATE INDEX filters_user ON filters (user_id);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    -- NULL means unlimited.
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    -- NULL means never expires.
    expiry_ts BIGINT
);

-- User-interactive auth sessions: which stages are done, bound to one request.
CREATE TABLE uia_sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL DEFAULT '',
    request_path TEXT NOT NULL,
    completed TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL DEFAULT '{}',
    created_ts BIGINT NOT NULL
);

-- Idempotency of client transaction IDs: the first response is replayed.
CREATE TABLE transaction_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

-- OpenID tokens handed to integrations (hashed like access tokens).
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
