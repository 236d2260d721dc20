-- Full-text search over room events (POST /search; indexed by searchapi following the
-- room event stream). PostgreSQL: a tsvector column ('simple' configuration: no
-- stemming, like SQLite's unicode61 tokenizer) under a GIN index.
CREATE TABLE search_events (
    event_nid BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    -- The content key the text came from: content.body, content.name or content.topic.
    search_key TEXT NOT NULL,
    value TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX search_events_room ON search_events (room_id, stream_pos);
CREATE INDEX search_events_vector ON search_events USING GIN (vector);

-- How far the indexer got in the room event stream.
CREATE TABLE search_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_pos BIGINT NOT NULL
);
INSERT INTO search_position (id, stream_pos) VALUES (1, 0);
