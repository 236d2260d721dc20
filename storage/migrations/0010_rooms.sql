-- The room DAG (roomserver). See docs/roomserver.md for the model.
-- NIDs are numeric IDs local to this database. Timestamps are ms since the epoch.

-- One row per room this server knows.
CREATE TABLE rooms (
    room_nid {{SERIAL_PK}},
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    -- Snapshot of the current state (the resolved state after the forward extremities).
    state_snapshot_nid BIGINT NOT NULL DEFAULT 0,
    -- Forward extremities as a JSON array of event NIDs.
    extremities TEXT NOT NULL DEFAULT '[]',
    -- NID of the last event that changed this row: lets a writer that does not own the
    -- room exclusively detect that its cached head is stale.
    last_event_nid BIGINT NOT NULL DEFAULT 0,
    created_ts BIGINT NOT NULL
);

-- Numeric IDs for event types and state keys, used inside state blocks.
CREATE TABLE room_event_types (
    event_type_nid {{SERIAL_PK}},
    event_type TEXT NOT NULL UNIQUE
);
CREATE TABLE room_state_keys (
    state_key_nid {{SERIAL_PK}},
    state_key TEXT NOT NULL UNIQUE
);

-- Every event is stored once. event_nid is allocated by the roomserver (from this
-- column's sequence on PostgreSQL) and always inserted explicitly; stream_pos equals
-- event_nid for events in the timeline and is NULL for outliers, rejected and
-- soft-failed events.
CREATE TABLE room_events (
    event_nid {{SERIAL_PK}},
    event_id TEXT NOT NULL UNIQUE,
    room_nid BIGINT NOT NULL,
    stream_pos BIGINT UNIQUE,
    depth BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    -- NULL for non-state events.
    state_key TEXT,
    event_type_nid BIGINT NOT NULL DEFAULT 0,
    state_key_nid BIGINT NOT NULL DEFAULT 0,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- content.membership of m.room.member events.
    membership TEXT,
    -- State snapshots before and after the event (0 for outliers).
    state_before BIGINT NOT NULL DEFAULT 0,
    state_after BIGINT NOT NULL DEFAULT 0,
    -- The state event this one replaced in the state before it.
    replaces_event_id TEXT,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    rejected BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    -- The redaction event that applies to this event, if any.
    redacted_by TEXT,
    -- content["m.relates_to"] (rel_type, event_id), for /relations and /threads.
    rel_type TEXT,
    relates_to TEXT,
    -- Client transaction ID and device of the sender, for local echo.
    txn_id TEXT,
    device_id TEXT,
    json TEXT NOT NULL
);
CREATE INDEX room_events_room_stream ON room_events (room_nid, stream_pos);
CREATE INDEX room_events_room_topo ON room_events (room_nid, depth, stream_pos);
CREATE INDEX room_events_room_state ON room_events (room_nid, event_type, state_key) WHERE state_key IS NOT NULL;
CREATE INDEX room_events_relates_to ON room_events (relates_to, rel_type, stream_pos) WHERE relates_to IS NOT NULL;
CREATE INDEX room_events_room_rel ON room_events (room_nid, rel_type, stream_pos) WHERE rel_type IS NOT NULL;

-- Room state is stored as snapshots made of blocks: a block is an immutable sorted run
-- of (type NID, state key NID, event NID) entries; a snapshot is the list of blocks
-- covering the whole state. A new snapshot rewrites only the blocks that changed, so
-- writing and reading state costs the same however long the room's history is.
CREATE TABLE room_state_blocks (
    block_nid {{SERIAL_PK}},
    entries {{BLOB}} NOT NULL
);
CREATE TABLE room_state_snapshots (
    snapshot_nid {{SERIAL_PK}},
    room_nid BIGINT NOT NULL,
    blocks {{BLOB}} NOT NULL
);

-- The current state of every room as rows, for membership queries and for other
-- components (joined rooms of a user, members of a room, public room summaries).
CREATE TABLE room_current_state (
    room_nid BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_nid BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership TEXT,
    -- The user forgot the room (only for m.room.member rows; reset by a new membership).
    forgotten BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (room_nid, event_type, state_key)
);
CREATE INDEX room_current_state_member ON room_current_state (state_key, membership) WHERE event_type = 'm.room.member';

-- Redactions whose target was not known (or not checkable) when they arrived.
CREATE TABLE room_pending_redactions (
    redaction_event_id TEXT PRIMARY KEY,
    redacts_event_id TEXT NOT NULL,
    room_nid BIGINT NOT NULL
);
CREATE INDEX room_pending_redactions_target ON room_pending_redactions (redacts_event_id);
