-- End-to-end encryption keys: device identity keys, one-time and fallback keys,
-- cross-signing keys and the signatures uploaded for them, and the device-list stream.
-- JSON is stored as canonical JSON TEXT exactly as it was verified.

-- Identity keys of a device (POST /keys/upload device_keys). The ed25519 and curve25519
-- identity keys are kept in columns: they never change for a device.
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    ed25519_key TEXT NOT NULL,
    curve25519_key TEXT NOT NULL DEFAULT '',
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. id orders them by upload; a claim deletes the row it hands out.
CREATE TABLE e2e_one_time_keys (
    id {{SERIAL_PK}},
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX e2e_one_time_keys_key ON e2e_one_time_keys (user_id, device_id, algorithm, key_id);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys (user_id, device_id, algorithm, id);

-- At most one fallback key per device and algorithm; used once it has been handed out.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys (master, self_signing, user_signing) as uploaded, with the
-- signatures they carried then (e.g. the master key's signature on the self-signing key).
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    updated_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with POST /keys/signatures/upload. target_key_id is a device ID
-- or a master public key (they never collide: such cross-signing keys are refused).
CREATE TABLE e2e_key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Device-list stream: one row per change of a user's devices or keys. device_id is ''
-- for cross-signing changes. only_for is '' when every user sharing a room with user_id
-- should hear of it, or the one user who should (signatures only that user can see).
CREATE TABLE e2e_device_list_changes (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL DEFAULT '',
    only_for TEXT NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL
);
CREATE INDEX e2e_device_list_changes_user ON e2e_device_list_changes (user_id, stream_pos);
