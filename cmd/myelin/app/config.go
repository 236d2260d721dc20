// Package app wires Myelin's components into a running server. It is shared by the
// myelin command and the end-to-end tests; it holds wiring only, no logic.
package app

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/myelin-chat/myelin/config"
)

// Flags are the command-line overrides of the configuration. Test harnesses (ours and
// others') start servers with these alone.
type Flags struct {
	ConfigPath             string
	DataDir                string
	ServerName             string
	Listen                 string
	FederationListen       string
	Database               string
	Registration           string
	SharedSecret           string
	TLSCert                string
	TLSKey                 string
	FederationCA           string
	FederationAllowPrivate bool
	MetricsListen          string
}

// Register declares the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.ConfigPath, "config", "", "config file (default: <data-dir>/myelin.yaml, created on first start)")
	fs.StringVar(&f.DataDir, "data-dir", "", "directory for the database, keys and media (default ./myelin-data)")
	fs.StringVar(&f.ServerName, "server-name", "", "server name: the domain of user and room IDs")
	fs.StringVar(&f.Listen, "listen", "", "client-server API listen address (host:port)")
	fs.StringVar(&f.FederationListen, "federation-listen", "", "federation API listen address (host:port, HTTPS)")
	fs.StringVar(&f.Database, "database", "", "database: a SQLite file path or a postgres:// URL")
	fs.StringVar(&f.Registration, "registration", "", "registration mode: disabled, open or token")
	fs.StringVar(&f.SharedSecret, "registration-shared-secret", "", "enables Synapse-compatible shared-secret registration")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "TLS certificate (PEM) of the federation listener")
	fs.StringVar(&f.TLSKey, "tls-key", "", "TLS key (PEM) of the federation listener")
	fs.StringVar(&f.FederationCA, "federation-ca", "", "extra CA bundle (PEM) trusted for outgoing federation")
	fs.BoolVar(&f.FederationAllowPrivate, "federation-allow-private", false, "allow outgoing federation to loopback and private addresses")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "", "Prometheus metrics listen address (host:port)")
}

// apply overrides cfg with every flag that was given.
func (f *Flags) apply(cfg *config.Config) {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.DataDir, f.DataDir)
	set(&cfg.ServerName, f.ServerName)
	set(&cfg.Listen.Client, f.Listen)
	set(&cfg.Listen.Federation, f.FederationListen)
	set(&cfg.Listen.Metrics, f.MetricsListen)
	set(&cfg.Listen.TLSCert, f.TLSCert)
	set(&cfg.Listen.TLSKey, f.TLSKey)
	set(&cfg.Database.DSN, f.Database)
	set(&cfg.Registration.Mode, f.Registration)
	set(&cfg.Registration.SharedSecret, f.SharedSecret)
	set(&cfg.Federation.CAFile, f.FederationCA)
	if f.FederationAllowPrivate {
		cfg.Federation.AllowPrivateAddresses = true
	}
	if f.FederationListen != "" {
		cfg.Federation.Enabled = true
	}
}

// LoadConfig finds, loads (or creates) and validates the configuration. When no config
// file exists yet, one is written with the defaults and the given flags, so the next
// start without flags behaves the same. created reports that.
func LoadConfig(f Flags) (cfg *config.Config, path string, created bool, err error) {
	dataDir := f.DataDir
	if dataDir == "" {
		dataDir = config.Default().DataDir
	}
	path = f.ConfigPath
	if path == "" {
		path = filepath.Join(dataDir, "myelin.yaml")
	}
	cfg, err = config.Load(path)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		cfg = config.Default()
		created = true
	default:
		return nil, path, false, err
	}
	f.apply(cfg)
	if err := cfg.Verify(); err != nil {
		return nil, path, false, err
	}
	if created {
		if err := writeConfig(path, cfg); err != nil {
			return nil, path, false, err
		}
	}
	return cfg, path, created, nil
}

func writeConfig(path string, cfg *config.Config) error {
	data, err := config.Generate(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	// 0600: the file may hold the registration shared secret and database password.
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write config %s: %w", path, err)
	}
	return nil
}
