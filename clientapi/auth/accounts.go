package auth

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// Accounts registers users, logs them in and out, and manages their tokens and devices.
// STUB: being implemented (registration, login, refresh, logout, UIA, password, deactivation).
type Accounts struct {
	db    *storage.DB
	cfg   *config.Config
	authn *Authenticator
}

// NewAccounts returns the accounts component.
func NewAccounts(db *storage.DB, cfg *config.Config, authn *Authenticator) *Accounts {
	return &Accounts{db: db, cfg: cfg, authn: authn}
}

var errNotImplemented = errors.New("not implemented")

// CheckUIA runs user-interactive auth for an already-authenticated user performing a
// sensitive action (the request at path): it returns nil once authDict completes a flow,
// or an error rendering the spec's 401 UIA response (flows, params, session, completed).
func (a *Accounts) CheckUIA(ctx context.Context, userID, path string, authDict json.RawMessage) error {
	return errNotImplemented
}

// DeleteDevices removes devices with their tokens (invalidating the token cache).
func (a *Accounts) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	return errNotImplemented
}

// CreateAccount creates an account with a password (for the create-account subcommand and the admin API).
func (a *Accounts) CreateAccount(ctx context.Context, localpart, password string, admin bool) (userID string, err error) {
	return "", errNotImplemented
}
