package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// Device is who an authenticated request comes from.
type Device struct {
	UserID    string
	DeviceID  string
	IsAdmin   bool
	TokenHash string
	// ExpiresTS is when the access token expires (ms), 0 for never.
	ExpiresTS int64
	// AppServiceID is set when an application service's as_token made the request
	// (UserID is then its sender or the user it masquerades as).
	AppServiceID string
}

// ErrUnknownToken means the token is not (or no longer) valid.
var ErrUnknownToken = errors.New("unknown access token")

// ErrExpiredToken means the token was valid but has expired; the client should refresh (soft logout).
var ErrExpiredToken = errors.New("access token expired")

// Authenticator resolves access tokens to devices. Lookups are cached in memory so
// an authenticated request does not hit the database; every path that removes a token
// (logout, device deletion, deactivation, refresh) must call Invalidate.
type Authenticator struct {
	db    *storage.DB
	now   func() time.Time
	mu    sync.RWMutex
	cache map[string]*Device // token hash -> device
	// maxEntries bounds the cache; when full it is cleared (rare: one entry per live token).
	maxEntries int
	// gen counts invalidations. A lookup that started before an invalidation does not cache
	// its result, so a token deleted while it was being loaded cannot linger in the cache.
	gen uint64
}

// NewAuthenticator returns an Authenticator backed by db.
func NewAuthenticator(db *storage.DB) *Authenticator {
	return &Authenticator{db: db, now: time.Now, cache: map[string]*Device{}, maxEntries: 100_000}
}

// Authenticate returns the device a token belongs to.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*Device, error) {
	hash := HashToken(token)
	a.mu.RLock()
	d, ok := a.cache[hash]
	gen := a.gen
	a.mu.RUnlock()
	if !ok {
		var err error
		d, err = a.load(ctx, hash)
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		if a.gen == gen {
			if len(a.cache) >= a.maxEntries {
				a.cache = map[string]*Device{}
			}
			a.cache[hash] = d
		}
		a.mu.Unlock()
	}
	if d.ExpiresTS != 0 && a.now().UnixMilli() >= d.ExpiresTS {
		return nil, ErrExpiredToken
	}
	return d, nil
}

func (a *Authenticator) load(ctx context.Context, hash string) (*Device, error) {
	t, err := storage.GetAccessToken(ctx, a.db, hash)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	acc, err := storage.GetAccount(ctx, a.db, t.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrUnknownToken
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if acc.Deactivated {
		return nil, ErrUnknownToken
	}
	return &Device{UserID: t.UserID, DeviceID: t.DeviceID, IsAdmin: acc.IsAdmin, TokenHash: hash, ExpiresTS: t.ExpiresTS}, nil
}

// Invalidate drops token hashes from the cache. Call it after deleting tokens.
func (a *Authenticator) Invalidate(hashes ...string) {
	a.mu.Lock()
	a.gen++
	for _, h := range hashes {
		delete(a.cache, h)
	}
	a.mu.Unlock()
}

// InvalidateUser drops every cached token of a user (admin flag change, deactivation).
func (a *Authenticator) InvalidateUser(userID string) {
	a.mu.Lock()
	a.gen++
	for h, d := range a.cache {
		if d.UserID == userID {
			delete(a.cache, h)
		}
	}
	a.mu.Unlock()
}
