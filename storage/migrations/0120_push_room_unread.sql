-- /sync reads the unread counts of every member of a room at once when a new event
-- wakes their long-polls (syncapi fast path): covering index by room.
CREATE INDEX push_notifications_room_unread ON push_notifications (room_id, is_read, user_id, thread_id, highlight);
