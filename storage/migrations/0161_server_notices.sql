-- Each user's server notice room (POST /_synapse/admin/v1/send_server_notice): one
-- room per user, reused for every notice, also after the user left it.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX server_notice_rooms_room ON server_notice_rooms (room_id);
