-- Custom profile fields (spec v1.16, MSC4133): any key other than displayname and
-- avatar_url, which stay in profiles. value is the field's JSON value (TEXT).
CREATE TABLE profile_fields (
    user_id TEXT NOT NULL,
    field_name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, field_name)
);

-- Expired OpenID tokens are purged by expiry time.
CREATE INDEX openid_tokens_expires ON openid_tokens (expires_ts);

