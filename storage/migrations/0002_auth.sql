-- Registration and user-interactive auth bookkeeping.

-- The registration token a UIA session reserved (its "pending" use), released when the
-- session expires without completing a registration. '' when none.
ALTER TABLE uia_sessions ADD COLUMN registration_token TEXT NOT NULL DEFAULT '';
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);

-- Single-use nonces of Synapse-compatible shared-secret registration, stored hashed and
-- in the database so that any process behind a load balancer can check them.
CREATE TABLE registration_nonces (
    nonce_hash TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL
);
CREATE INDEX registration_nonces_created ON registration_nonces (created_ts);
