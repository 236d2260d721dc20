-- Thread subscriptions (MSC4306): which threads a user follows, and whether a client
-- subscribed automatically (because the user took part) or by the user's choice.
-- unsubscribed_at is the event stream position when the user last unsubscribed, so a
-- client cannot automatically re-subscribe them because of an older event.
CREATE TABLE thread_subscriptions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    root_event_id TEXT NOT NULL,
    subscribed BOOLEAN NOT NULL,
    automatic BOOLEAN NOT NULL DEFAULT FALSE,
    unsubscribed_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, room_id, root_event_id)
);
