package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Verify(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestParseOverridesDefaults(t *testing.T) {
	cfg, err := Parse([]byte("server_name: example.org\nauth:\n  access_token_lifetime: 5m\ndatabase:\n  dsn: postgres://u@h/db\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "example.org" || cfg.Auth.AccessTokenLifetime.Std() != 5*time.Minute || !cfg.Database.IsPostgres() {
		t.Fatalf("parsed %+v", cfg)
	}
	if cfg.Listen.Client != "localhost:8008" {
		t.Fatalf("unset key lost its default: %q", cfg.Listen.Client)
	}
}

func TestEmptyFileMeansDefaults(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil || cfg.ServerName != "localhost" {
		t.Fatalf("empty config: %+v %v", cfg, err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	_, err := Parse([]byte("server_name: a\nlisten:\n  clinet: x:1\n"))
	if err == nil || !strings.Contains(err.Error(), "clinet") {
		t.Fatalf("want an error naming the unknown key, got %v", err)
	}
}

func TestBadDuration(t *testing.T) {
	_, err := Parse([]byte("auth:\n  access_token_lifetime: forever\n"))
	if err == nil || !strings.Contains(err.Error(), "forever") {
		t.Fatalf("want duration error, got %v", err)
	}
}

func TestVerifyListsEveryProblemWithItsKey(t *testing.T) {
	cfg := Default()
	cfg.ServerName = "bad name!"
	cfg.Listen.Client = "nonsense"
	cfg.Registration.Mode = "sometimes"
	cfg.Passwords.BcryptCost = 2
	cfg.Logging.Level = "loud"
	cfg.Rooms.DefaultVersion = "99"
	err := cfg.Verify()
	var p Problems
	if !errors.As(err, &p) {
		t.Fatalf("want Problems, got %v", err)
	}
	for _, key := range []string{"server_name", "listen.client", "registration.mode", "passwords.bcrypt_cost", "logging.level", "rooms.default_version"} {
		found := false
		for _, msg := range p {
			found = found || strings.HasPrefix(msg, key+":")
		}
		if !found {
			t.Errorf("no problem reported for %s in %v", key, p)
		}
	}
	if len(p) != 6 {
		t.Errorf("want 6 problems, got %d: %v", len(p), p)
	}
}

func TestGenerateRoundTrips(t *testing.T) {
	cfg := Default()
	cfg.ServerName = "round.trip"
	cfg.RateLimits.ExemptUsers = []string{"@bot:round.trip"}
	data, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("generated config does not parse: %v\n%s", err, data)
	}
	if back.ServerName != "round.trip" || len(back.RateLimits.ExemptUsers) != 1 || back.Auth.UIASessionLifetime != cfg.Auth.UIASessionLifetime {
		t.Fatalf("round trip lost values: %+v", back)
	}
}

func TestSigningKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "signing.key")
	k1, created, err := LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	k2, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created {
		t.Fatalf("reload: %v %v", created, err)
	}
	if k1.ID != k2.ID || !k1.Private.Equal(k2.Private) {
		t.Fatal("reloaded key differs")
	}
	if !strings.HasPrefix(string(k1.ID), "ed25519:") {
		t.Fatalf("key id %q", k1.ID)
	}
}
