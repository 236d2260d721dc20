-- How far the push service got: the stream position up to which room events are
-- evaluated and their notification sets and queued pushes are committed. It is written
-- in the same transaction as those rows, so after a crash the service evaluates the
-- events after it again (read from the room event stream) and no acknowledged event
-- goes without its notifications, or gets them twice. No row until the service first
-- starts: it then begins at the stream's current position (history is not evaluated).
CREATE TABLE push_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream_pos BIGINT NOT NULL
);
