package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Problems is every validation error found in a configuration, each naming its key path.
type Problems []string

func (p Problems) Error() string {
	return fmt.Sprintf("%d configuration problem(s):\n  - %s", len(p), strings.Join(p, "\n  - "))
}

// Verify checks the whole configuration and returns all problems at once (nil when valid).
func (c *Config) Verify() error {
	var p Problems
	add := func(key, format string, args ...any) {
		p = append(p, key+": "+fmt.Sprintf(format, args...))
	}
	if c.ServerName == "" {
		add("server_name", "must be set")
	} else if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(c.ServerName)); !ok {
		add("server_name", "%q is not a valid server name (hostname, IP literal, optional :port)", c.ServerName)
	}
	if c.DataDir == "" {
		add("data_dir", "must be set")
	}
	if c.SigningKeyPath == "" {
		add("signing_key_path", "must be set")
	}
	checkAddr := func(key, v string, required bool) {
		if v == "" {
			if required {
				add(key, "must be set")
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			add(key, "%q is not host:port (%v)", v, err)
		}
	}
	checkAddr("listen.client", c.Listen.Client, true)
	checkAddr("listen.federation", c.Listen.Federation, false)
	checkAddr("listen.metrics", c.Listen.Metrics, false)
	if (c.Listen.TLSCert == "") != (c.Listen.TLSKey == "") {
		add("listen.tls_cert", "tls_cert and tls_key must be set together")
	}
	if c.Listen.Federation != "" && c.Listen.TLSCert == "" {
		add("listen.federation", "the federation listener serves HTTPS only: set listen.tls_cert and listen.tls_key")
	}
	if c.Database.DSN == "" {
		add("database.dsn", "must be set (a SQLite file path or a postgres:// URL)")
	}
	if c.Database.MaxOpenConns < 1 {
		add("database.max_open_conns", "must be at least 1, got %d", c.Database.MaxOpenConns)
	}
	switch c.Database.SQLiteSynchronous {
	case "full", "normal":
	default:
		add("database.sqlite_synchronous", "must be full or normal, got %q", c.Database.SQLiteSynchronous)
	}
	switch c.Registration.Mode {
	case RegistrationDisabled, RegistrationOpen, RegistrationToken:
	default:
		add("registration.mode", "must be disabled, open or token, got %q", c.Registration.Mode)
	}
	if c.Registration.MinPasswordLength < 0 {
		add("registration.min_password_length", "must not be negative")
	}
	if c.Passwords.BcryptCost < 4 || c.Passwords.BcryptCost > 31 {
		add("passwords.bcrypt_cost", "must be between 4 and 31, got %d", c.Passwords.BcryptCost)
	}
	if c.Auth.AccessTokenLifetime < 0 {
		add("auth.access_token_lifetime", "must not be negative")
	}
	if c.Auth.UIASessionLifetime <= 0 {
		add("auth.uia_session_lifetime", "must be positive")
	}
	if c.RateLimits.Enabled {
		if c.RateLimits.PerSecond <= 0 {
			add("rate_limits.per_second", "must be positive when rate limits are enabled")
		}
		if c.RateLimits.Burst < 1 {
			add("rate_limits.burst", "must be at least 1 when rate limits are enabled")
		}
	}
	if c.Limits.MaxRequestBytes < 1024 {
		add("limits.max_request_bytes", "must be at least 1024, got %d", c.Limits.MaxRequestBytes)
	}
	switch c.Logging.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		add("logging.level", "must be trace, debug, info, warn or error, got %q", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		add("logging.format", "must be text or json, got %q", c.Logging.Format)
	}
	if _, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(c.Rooms.DefaultVersion)); err != nil {
		add("rooms.default_version", "unsupported room version %q", c.Rooms.DefaultVersion)
	}
	if c.Push.RequestTimeout <= 0 {
		add("push.request_timeout", "must be positive")
	}
	if c.Push.MaxBackoff < Duration(time.Second) {
		add("push.max_backoff", "must be at least 1s")
	}
	if c.Push.GiveUpAfter < c.Push.MaxBackoff {
		add("push.give_up_after", "must be at least push.max_backoff")
	}
	if c.ServerNotices.Enabled && (c.ServerNotices.SystemUserLocalpart == "" ||
		c.ServerNotices.SystemUserLocalpart != strings.ToLower(c.ServerNotices.SystemUserLocalpart) ||
		strings.ContainsAny(c.ServerNotices.SystemUserLocalpart, ":@ ")) {
		add("server_notices.system_user_localpart", "must be a non-empty lower-case localpart, got %q", c.ServerNotices.SystemUserLocalpart)
	}
	for i, pat := range c.AppServices.ConfigFiles {
		if _, err := filepath.Glob(pat); err != nil {
			add(fmt.Sprintf("app_services.config_files[%d]", i), "invalid pattern %q: %v", pat, err)
		}
	}
	if c.Media.MaxUploadBytes <= 0 {
		add("media.max_upload_bytes", "must be positive")
	}
	if c.Media.UserQuotaBytes < 0 {
		add("media.user_quota_bytes", "must be 0 (no quota) or positive")
	}
	if c.Media.MaxImagePixels <= 0 {
		add("media.max_image_pixels", "must be positive")
	}
	if c.Media.RemoteMaxBytes <= 0 {
		add("media.remote_max_bytes", "must be positive")
	}
	for i, ts := range c.Media.ThumbnailSizes {
		if ts.Width <= 0 || ts.Height <= 0 || ts.Width > 4096 || ts.Height > 4096 || (ts.Method != "crop" && ts.Method != "scale") {
			add(fmt.Sprintf("media.thumbnail_sizes[%d]", i), "needs width and height in 1..4096 and method crop or scale")
		}
	}
	if len(p) > 0 {
		return p
	}
	return nil
}

// Path resolves a path from the config against the data directory (absolute paths are kept).
func (c *Config) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.DataDir, p)
}

// SQLitePath returns the SQLite database path resolved against the data directory.
func (c *Config) SQLitePath() string {
	dsn := strings.TrimPrefix(c.Database.DSN, "file:")
	return c.Path(dsn)
}
