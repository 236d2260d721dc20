-- Membership events of other servers' users that reached the room through us
-- (send_join, send_leave, send_knock): we are the resident server the joining server
-- chose, so the federation sender sends them on to the other servers in the room (the
-- origin excepted). Written before the event enters the room; the sender deletes the
-- row when it queues the event.
CREATE TABLE federation_on_behalf (
    event_id TEXT NOT NULL PRIMARY KEY,
    origin TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
