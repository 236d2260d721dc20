-- Loading a user's unread counts read every notification set the user had (read ones
-- are kept 30 days) and decoded it. push_unread_from is a per-user mark: every set of the
-- user whose first_pos is below it holds only read notifications (receipts only move
-- forward and new sets come later in the stream, so that stays true). A load reads the
-- sets from the mark on, over the (user_id, first_pos, last_pos) key, and moves the mark
-- past the sets it finds all read.
CREATE TABLE push_unread_from (
    user_id TEXT PRIMARY KEY,
    first_pos BIGINT NOT NULL
);
