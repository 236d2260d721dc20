-- Room aliases (local ones only) and the public room directory.

-- One row per local alias: #localpart:our.server -> room ID.
CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    -- The user who created the alias (may delete it).
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms published in this server's public room directory (a row means "public").
CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    published_ts BIGINT NOT NULL
);
