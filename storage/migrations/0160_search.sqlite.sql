-- Full-text search over room events (POST /search; indexed by searchapi following the
-- room event stream). SQLite: an FTS4 table (compiled into mattn/go-sqlite3 by default)
-- whose docid is the event's NID, next to a plain table with what the query filters on.
CREATE TABLE search_events (
    event_nid BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    -- The content key the text came from: content.body, content.name or content.topic.
    search_key TEXT NOT NULL
);
CREATE INDEX search_events_room ON search_events (room_id, stream_pos);
CREATE VIRTUAL TABLE search_fts USING fts4(value, tokenize=unicode61);

-- How far the indexer got in the room event stream.
CREATE TABLE search_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_pos BIGINT NOT NULL
);
INSERT INTO search_position (id, stream_pos) VALUES (1, 0);
