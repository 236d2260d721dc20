// Package config holds Myelin's YAML configuration: its types, defaults,
// validation and generation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Registration modes.
const (
	RegistrationDisabled = "disabled"
	RegistrationOpen     = "open"
	RegistrationToken    = "token"
)

// Config is the whole server configuration. Field names map to YAML keys.
type Config struct {
	// ServerName is the domain part of user and room IDs (e.g. "example.com").
	ServerName string `yaml:"server_name"`
	// DataDir holds the database (SQLite), media and other local state.
	DataDir string `yaml:"data_dir"`
	// SigningKeyPath is the ed25519 server key file (PEM "MATRIX PRIVATE KEY").
	SigningKeyPath string `yaml:"signing_key_path"`
	// PublicBaseURL is the client API URL advertised in /.well-known/matrix/client.
	PublicBaseURL string `yaml:"public_base_url"`
	// WellKnownServer is the "m.server" value served at /.well-known/matrix/server; empty serves 404.
	WellKnownServer string `yaml:"well_known_server"`

	Listen       Listeners    `yaml:"listen"`
	Database     Database     `yaml:"database"`
	Registration Registration `yaml:"registration"`
	Passwords    Passwords    `yaml:"passwords"`
	Auth         Auth         `yaml:"auth"`
	RateLimits   RateLimits   `yaml:"rate_limits"`
	Limits       Limits       `yaml:"limits"`
	Logging      Logging      `yaml:"logging"`
	Rooms        Rooms        `yaml:"rooms"`
	Federation   Federation   `yaml:"federation"`
	Push         Push         `yaml:"push"`
	Media        Media        `yaml:"media"`
	AppServices  AppServices  `yaml:"app_services"`
	// ServerNotices is the system user that sends server notices (Synapse's admin API).
	ServerNotices ServerNotices `yaml:"server_notices"`
}

// ServerNotices configures server notices: messages from the server's administrators,
// sent with POST /_synapse/admin/v1/send_server_notice into a per-user room that the
// user cannot reject (spec: Server Notices).
type ServerNotices struct {
	// Enabled turns the admin API on; off, it answers 404 M_UNRECOGNIZED.
	Enabled bool `yaml:"enabled"`
	// SystemUserLocalpart is the localpart of the user that sends the notices.
	SystemUserLocalpart string `yaml:"system_user_localpart"`
	// SystemUserDisplayName is that user's display name.
	SystemUserDisplayName string `yaml:"system_user_display_name"`
	// RoomName is the name of each user's notice room.
	RoomName string `yaml:"room_name"`
}

// AppServices lists the application service registrations (bridges, bots) to load.
type AppServices struct {
	// ConfigFiles are registration YAML files (Synapse's format); each entry may be a glob
	// such as /etc/myelin/appservices/*.yaml. A pattern matching nothing is not an error.
	ConfigFiles []string `yaml:"config_files"`
}

// Listeners are the network addresses Myelin serves on.
type Listeners struct {
	// Client serves the client-server API over plain HTTP (put TLS in front).
	Client string `yaml:"client"`
	// Federation serves the server-server API over HTTPS; empty disables it.
	Federation string `yaml:"federation"`
	// TLSCert and TLSKey are the federation listener's certificate and key (PEM).
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// Metrics serves Prometheus metrics at /metrics; empty disables it.
	Metrics string `yaml:"metrics"`
}

// Database selects and tunes the SQL backend.
type Database struct {
	// DSN is a SQLite file path (or "file:" URI) or a postgres:// URL.
	DSN string `yaml:"dsn"`
	// MaxOpenConns caps the connection pool (readers, for SQLite).
	MaxOpenConns int `yaml:"max_open_conns"`
	// SQLiteSynchronous is SQLite's synchronous pragma: "full" survives power loss, "normal" survives process crashes.
	SQLiteSynchronous string `yaml:"sqlite_synchronous"`
}

// Registration controls who may create accounts.
type Registration struct {
	// Mode is disabled, open or token.
	Mode string `yaml:"mode"`
	// SharedSecret enables Synapse-compatible /_synapse/admin/v1/register when set.
	SharedSecret string `yaml:"shared_secret"`
	// MinPasswordLength rejects shorter passwords with M_WEAK_PASSWORD (0 = no minimum).
	MinPasswordLength int `yaml:"min_password_length"`
}

// Passwords tunes password hashing.
type Passwords struct {
	// BcryptCost is the bcrypt work factor (4..31).
	BcryptCost int `yaml:"bcrypt_cost"`
}

// Auth tunes access tokens.
type Auth struct {
	// AccessTokenLifetime makes access tokens expire when the client asked for a refresh token (0 = never).
	AccessTokenLifetime Duration `yaml:"access_token_lifetime"`
	// UIASessionLifetime is how long a user-interactive auth session stays valid.
	UIASessionLifetime Duration `yaml:"uia_session_lifetime"`
}

// RateLimits limits request rates per user (or per IP when unauthenticated).
type RateLimits struct {
	Enabled bool `yaml:"enabled"`
	// PerSecond is the sustained request rate per client.
	PerSecond float64 `yaml:"per_second"`
	// Burst is the number of requests allowed at once.
	Burst int `yaml:"burst"`
	// ExemptUsers are never limited (bots, bridges).
	ExemptUsers []string `yaml:"exempt_users"`
}

// Limits bounds request sizes.
type Limits struct {
	// MaxRequestBytes caps JSON request bodies (M_TOO_LARGE beyond).
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
}

// Logging configures log output.
type Logging struct {
	// Level is one of trace, debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Rooms holds room defaults.
type Rooms struct {
	// DefaultVersion is the room version of new rooms.
	DefaultVersion string `yaml:"default_version"`
}

// Federation holds server-server settings.
type Federation struct {
	// Enabled turns the federation listener and outgoing federation on.
	Enabled bool `yaml:"enabled"`
	// AllowPrivateAddresses permits outgoing requests to loopback and private networks.
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
	// CAFile is an extra PEM bundle trusted for outgoing federation TLS.
	CAFile string `yaml:"ca_file"`
	// AllowedServers, when non-empty, is the only set of servers we federate with.
	AllowedServers []string `yaml:"allowed_servers"`
	// DeniedServers are refused in both directions.
	DeniedServers []string `yaml:"denied_servers"`
	// ShareDeviceNames lets other servers see local users' device display names (in
	// key queries, /user/devices and device list updates). Off by default: a device's
	// name often says where or who its owner is.
	ShareDeviceNames bool `yaml:"share_device_names"`
	// TrustedKeyServers are notaries asked for remote keys.
	TrustedKeyServers []string `yaml:"trusted_key_servers"`
}

// Push configures push notifications to push gateways.
type Push struct {
	// AllowPrivateAddresses permits pushers whose gateway resolves to loopback, private
	// or link-local addresses (off by default: a user could aim the server at internal hosts).
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
	// RequestTimeout bounds one request to a push gateway.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MaxBackoff caps the delay between retries of a failed push.
	MaxBackoff Duration `yaml:"max_backoff"`
	// GiveUpAfter drops a push still failing this long after the event.
	GiveUpAfter Duration `yaml:"give_up_after"`
}

// Media configures the media repository (uploads, thumbnails, URL previews).
type Media struct {
	// MaxUploadBytes caps one upload (413 M_TOO_LARGE beyond).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UserQuotaBytes caps the total size of a user's uploads (0 = no quota).
	UserQuotaBytes int64 `yaml:"user_quota_bytes"`
	// MaxImagePixels refuses to decode images larger than this (width x height) for thumbnails.
	MaxImagePixels int64 `yaml:"max_image_pixels"`
	// ThumbnailSizes are the sizes generated; requests are rounded up to one of them.
	ThumbnailSizes []ThumbnailSize `yaml:"thumbnail_sizes"`
	// RemoteMaxBytes caps media fetched from other servers.
	RemoteMaxBytes int64 `yaml:"remote_max_bytes"`
	// URLPreview configures GET /preview_url.
	URLPreview URLPreview `yaml:"url_preview"`
}

// ThumbnailSize is one thumbnail size and method (crop or scale).
type ThumbnailSize struct {
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	Method string `yaml:"method"`
}

// URLPreview configures URL previews.
type URLPreview struct {
	Enabled bool `yaml:"enabled"`
	// AllowPrivateAddresses permits previews of loopback, private, link-local and CGNAT
	// addresses (off by default: users could probe internal hosts and cloud metadata).
	AllowPrivateAddresses bool `yaml:"allow_private_addresses"`
}

// Duration is a time.Duration written in YAML as "30s", "1h", ...
type Duration time.Duration

// UnmarshalYAML parses Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 30s, 15m, 24h)", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the value as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Default returns the configuration used when nothing else is given.
func Default() *Config {
	return &Config{
		ServerName:     "localhost",
		DataDir:        "./myelin-data",
		SigningKeyPath: "signing.key",
		Listen: Listeners{
			Client: "localhost:8008",
		},
		Database: Database{
			DSN:               "myelin.db",
			MaxOpenConns:      10,
			SQLiteSynchronous: "full",
		},
		Registration: Registration{Mode: RegistrationOpen},
		Passwords:    Passwords{BcryptCost: 12},
		Auth: Auth{
			AccessTokenLifetime: Duration(time.Hour),
			UIASessionLifetime:  Duration(15 * time.Minute),
		},
		RateLimits: RateLimits{Enabled: true, PerSecond: 10, Burst: 50},
		Limits:     Limits{MaxRequestBytes: 1 << 20},
		Logging:    Logging{Level: "info", Format: "text"},
		Rooms:      Rooms{DefaultVersion: "11"},
		Push: Push{
			RequestTimeout: Duration(10 * time.Second),
			MaxBackoff:     Duration(10 * time.Minute),
			GiveUpAfter:    Duration(24 * time.Hour),
		},
		Media: Media{
			MaxUploadBytes: 50 << 20,
			MaxImagePixels: 32_000_000,
			ThumbnailSizes: []ThumbnailSize{
				{32, 32, "crop"}, {96, 96, "crop"}, {320, 240, "scale"}, {640, 480, "scale"}, {800, 600, "scale"},
			},
			RemoteMaxBytes: 50 << 20,
			URLPreview:     URLPreview{Enabled: true},
		},
		ServerNotices: ServerNotices{SystemUserLocalpart: "_server", SystemUserDisplayName: "Server Notices", RoomName: "Server Notices"},
	}
}

// Load reads a YAML file on top of the defaults. Unknown keys are errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data)
}

// Parse decodes YAML on top of the defaults. Unknown keys are errors.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is valid: it means "all defaults".
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	return cfg, nil
}

// Marshal renders the configuration as YAML.
func (c *Config) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// IsPostgres reports whether the database DSN names PostgreSQL.
func (d Database) IsPostgres() bool {
	return strings.HasPrefix(d.DSN, "postgres://") || strings.HasPrefix(d.DSN, "postgresql://")
}
