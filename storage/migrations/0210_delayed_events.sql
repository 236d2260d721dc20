-- Delayed events (MSC4140): events a client schedules to be sent later unless it cancels
-- or restarts the timer first (e.g. a "left the call" state event for when the client
-- dies). Rows stay after they fire or are cancelled so that a retried schedule request
-- (same device and transaction ID) gets the same delay_id; status is 'pending', 'sent',
-- 'cancelled' or 'failed'.
CREATE TABLE delayed_events (
    delay_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL DEFAULT '',
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    content TEXT NOT NULL,
    delay_ms BIGINT NOT NULL,
    running_since BIGINT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX delayed_events_user ON delayed_events (user_id, status);
CREATE INDEX delayed_events_pending ON delayed_events (status, running_since);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events (user_id, device_id, txn_id) WHERE txn_id <> '';
