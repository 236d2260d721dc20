package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Registration tokens, managed by admins through the Synapse-compatible admin API.

// RegistrationTokenChars are the characters a registration token may contain.
const RegistrationTokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// MaxRegistrationTokenLength bounds registration tokens.
const MaxRegistrationTokenLength = 64

// ValidRegistrationToken reports whether s is a well-formed registration token.
func ValidRegistrationToken(s string) bool {
	if len(s) == 0 || len(s) > MaxRegistrationTokenLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(RegistrationTokenChars, s[i]) < 0 {
			return false
		}
	}
	return true
}

func randomRegistrationToken(length int) string {
	const n = len(RegistrationTokenChars)
	out := make([]byte, 0, length)
	var buf [64]byte
	for len(out) < length {
		if _, err := rand.Read(buf[:]); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		for _, c := range buf {
			// Reject the top of the byte range so every character is equally likely.
			if int(c) < 256/n*n && len(out) < length {
				out = append(out, RegistrationTokenChars[int(c)%n])
			}
		}
	}
	return string(out)
}

// CreateRegistrationToken creates a token; with token "" one of length characters is generated.
// The caller has validated the arguments.
func (a *Accounts) CreateRegistrationToken(ctx context.Context, token string, length int, usesAllowed, expiryTS *int64) (storage.RegistrationToken, error) {
	generated := token == ""
	for attempt := 0; ; attempt++ {
		if generated {
			token = randomRegistrationToken(length)
		}
		t := storage.RegistrationToken{Token: token, UsesAllowed: usesAllowed, ExpiryTS: expiryTS}
		err := storage.InsertRegistrationToken(ctx, a.db, t)
		if errors.Is(err, storage.ErrExists) {
			if generated && attempt < 5 {
				continue
			}
			return t, httputil.InvalidParam("Token already exists: %s", token)
		}
		if err != nil {
			return t, err
		}
		logrus.WithField("uses_allowed", usesAllowed).Info("registration token created")
		return t, nil
	}
}

// ListRegistrationTokens lists tokens, filtered by validity when valid is not nil.
func (a *Accounts) ListRegistrationTokens(ctx context.Context, valid *bool) ([]storage.RegistrationToken, error) {
	return storage.ListRegistrationTokens(ctx, a.db, valid, a.now().UnixMilli())
}

func errNoSuchToken() error { return httputil.NotFound("No such registration token") }

// GetRegistrationToken returns one token (404 M_NOT_FOUND if unknown).
func (a *Accounts) GetRegistrationToken(ctx context.Context, token string) (storage.RegistrationToken, error) {
	t, err := storage.GetRegistrationToken(ctx, a.db, token)
	if errors.Is(err, storage.ErrNotFound) {
		return t, errNoSuchToken()
	}
	return t, err
}

// UpdateRegistrationToken changes a token and returns it.
func (a *Accounts) UpdateRegistrationToken(ctx context.Context, token string, u storage.RegistrationTokenUpdate) (storage.RegistrationToken, error) {
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		return storage.UpdateRegistrationToken(ctx, tx, token, u)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return storage.RegistrationToken{}, errNoSuchToken()
	}
	if err != nil {
		return storage.RegistrationToken{}, err
	}
	return a.GetRegistrationToken(ctx, token)
}

// DeleteRegistrationToken deletes a token (404 M_NOT_FOUND if unknown).
func (a *Accounts) DeleteRegistrationToken(ctx context.Context, token string) error {
	err := storage.DeleteRegistrationToken(ctx, a.db, token)
	if errors.Is(err, storage.ErrNotFound) {
		return errNoSuchToken()
	}
	if err == nil {
		logrus.Info("registration token deleted")
	}
	return err
}
