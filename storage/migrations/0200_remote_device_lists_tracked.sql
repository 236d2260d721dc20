-- The room stream position at which a remote user's cached device list was fetched
-- whole. The cache is trusted only while the user has shared a room with a local user
-- without a break since then: the user's server stops sending us updates once no room
-- is shared, so a cache older than the latest (re)join is stale.
ALTER TABLE remote_device_lists ADD COLUMN tracked_from BIGINT NOT NULL DEFAULT 0;
