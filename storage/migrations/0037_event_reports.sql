-- Reports of rooms and events by users (POST /rooms/{roomId}/report[/{eventId}]), kept
-- for the server's administrators.
CREATE TABLE event_reports (
    id {{SERIAL_PK}},
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL DEFAULT '',
    reporter TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    score BIGINT,
    received_ts BIGINT NOT NULL
);
CREATE INDEX event_reports_room ON event_reports (room_id, received_ts);
