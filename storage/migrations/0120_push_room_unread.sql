-- /sync reads the unread counts of every member of a room at once when a new event
-- wakes their long-polls (syncapi fast path). Keyed by (room, stream position) so the
-- rows of a new event are appended, as 0110 keeps notification writes; it covers the
-- query so counting reads no table rows.
CREATE INDEX push_notifications_room_unread ON push_notifications (room_id, stream_pos, user_id, thread_id, highlight)
    WHERE is_read = FALSE;
