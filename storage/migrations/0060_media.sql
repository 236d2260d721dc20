-- Media repository. One row per mxc:// URI; the content lives on disk under
-- <data_dir>/media, addressed by its SHA-256 so identical files are stored once.
-- A row created by POST /_matrix/media/v1/create has sha256 '' and uploaded_ts 0
-- until its content arrives; expires_ts bounds how long it may stay empty.
CREATE TABLE media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    upload_name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    uploaded_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_user ON media (user_id);
CREATE INDEX media_sha256 ON media (sha256);

-- Thumbnails generated on demand, one per (media, size, method); content addressed like media.
CREATE TABLE media_thumbnails (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method)
);

-- URL preview cache: the Open Graph JSON of a URL, as fetched at fetched_ts.
CREATE TABLE media_url_previews (
    url TEXT PRIMARY KEY,
    og_json TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
