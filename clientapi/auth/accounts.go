package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// Accounts registers users, logs them in and out, and manages their tokens, devices and
// user-interactive auth. Its methods return *httputil.Error values for everything a
// client did wrong, so handlers can pass errors through unchanged.
type Accounts struct {
	db    *storage.DB
	cfg   *config.Config
	authn *Authenticator
	now   func() time.Time

	// dummyHash is checked against when a login names an unknown user, so that the
	// answer takes as long as for a wrong password.
	dummyOnce sync.Once
	dummyHash string

	// lastCleanup (unix ms) throttles the removal of expired UIA sessions and nonces.
	lastCleanup atomic.Int64
}

// NewAccounts returns the accounts component.
func NewAccounts(db *storage.DB, cfg *config.Config, authn *Authenticator) *Accounts {
	return &Accounts{db: db, cfg: cfg, authn: authn, now: time.Now}
}

// Client describes the client a login or registration creates a device for.
type Client struct {
	// DeviceID is the requested device ID; "" generates one.
	DeviceID string
	// DisplayName is the initial device display name (nil for none).
	DisplayName *string
	IP          string
	UserAgent   string
	// WantRefresh asks for a refresh token (and an expiring access token).
	WantRefresh bool
}

// Session is what a successful login, registration or refresh hands to the client.
type Session struct {
	UserID       string
	DeviceID     string
	AccessToken  string
	RefreshToken string
	// ExpiresInMS is the access token's lifetime, 0 when it does not expire.
	ExpiresInMS int64
}

// maxDeviceIDBytes bounds client-chosen device IDs.
const maxDeviceIDBytes = 255

func checkClient(c Client) error {
	if len(c.DeviceID) > maxDeviceIDBytes {
		return httputil.InvalidParam("device_id must not be longer than %d bytes", maxDeviceIDBytes)
	}
	if c.DisplayName != nil && len(*c.DisplayName) > 1024 {
		return httputil.InvalidParam("initial_device_display_name must not be longer than 1024 bytes")
	}
	return nil
}

// newSession creates (or reuses) the client's device and issues its tokens, in tx.
func (a *Accounts) newSession(ctx context.Context, tx *storage.Tx, userID string, c Client) (Session, error) {
	deviceID := c.DeviceID
	if deviceID == "" {
		deviceID = NewDeviceID()
	}
	now := a.now().UnixMilli()
	err := storage.InsertDevice(ctx, tx, storage.Device{
		UserID: userID, DeviceID: deviceID, DisplayName: c.DisplayName, CreatedTS: now,
		LastSeenTS: now, LastSeenIP: c.IP, LastSeenUserAgent: c.UserAgent,
	})
	if err != nil {
		return Session{}, err
	}
	return a.issueTokens(ctx, tx, userID, deviceID, c.WantRefresh)
}

// issueTokens creates an access token (and, when asked, a refresh token) for an existing device.
func (a *Accounts) issueTokens(ctx context.Context, tx *storage.Tx, userID, deviceID string, withRefresh bool) (Session, error) {
	now := a.now().UnixMilli()
	s := Session{UserID: userID, DeviceID: deviceID, AccessToken: NewToken("myt_")}
	t := storage.AccessToken{TokenHash: HashToken(s.AccessToken), UserID: userID, DeviceID: deviceID, CreatedTS: now}
	if withRefresh {
		s.RefreshToken = NewToken("myr_")
		t.RefreshTokenHash = HashToken(s.RefreshToken)
		if life := a.cfg.Auth.AccessTokenLifetime.Std().Milliseconds(); life > 0 {
			t.ExpiresTS = now + life
			s.ExpiresInMS = life
		}
		if err := storage.InsertRefreshToken(ctx, tx, t.RefreshTokenHash, userID, deviceID, now); err != nil {
			return Session{}, err
		}
	}
	if err := storage.InsertAccessToken(ctx, tx, t); err != nil {
		return Session{}, err
	}
	return s, nil
}

// deleteDevices removes devices with their access and refresh tokens in tx and returns the
// removed access token hashes. This is the one place devices are deleted: logout, device
// deletion, password change and deactivation all come through here.
func (a *Accounts) deleteDevices(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) ([]string, error) {
	var hashes []string
	for _, id := range deviceIDs {
		h, err := storage.DeleteDevice(ctx, tx, userID, id)
		if err != nil {
			return nil, err
		}
		hashes = append(hashes, h...)
	}
	return hashes, nil
}

// DeleteDevices removes devices with their tokens (invalidating the token cache), all in one
// transaction. Unknown device IDs are ignored.
func (a *Accounts) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	var hashes []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		hashes, err = a.deleteDevices(ctx, tx, userID, deviceIDs)
		return err
	})
	// Invalidate even after a failure: dropping cache entries is always safe.
	a.authn.Invalidate(hashes...)
	return err
}

// Logout deletes the device of the access token (and so the token).
func (a *Accounts) Logout(ctx context.Context, d *Device) error {
	err := a.DeleteDevices(ctx, d.UserID, []string{d.DeviceID})
	a.authn.Invalidate(d.TokenHash)
	return err
}

// LogoutAll deletes every device and token of a user.
func (a *Accounts) LogoutAll(ctx context.Context, userID string) error {
	var hashes []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		hashes, err = a.deleteAllSessions(ctx, tx, userID)
		return err
	})
	a.authn.Invalidate(hashes...)
	a.authn.InvalidateUser(userID)
	return err
}

// deleteAllSessions removes every device and every token of a user in tx.
func (a *Accounts) deleteAllSessions(ctx context.Context, tx *storage.Tx, userID string) ([]string, error) {
	ids, err := storage.DeviceIDs(ctx, tx, userID)
	if err != nil {
		return nil, err
	}
	hashes, err := a.deleteDevices(ctx, tx, userID, ids)
	if err != nil {
		return nil, err
	}
	// Tokens whose device row is gone (none are expected) go too.
	more, err := storage.DeleteAccessTokensExcept(ctx, tx, userID, "")
	if err != nil {
		return nil, err
	}
	return append(hashes, more...), nil
}

// CreateAccount creates an account with a password (for the create-account subcommand and the
// admin API). user is a localpart or a full user ID of this server; it is lower-cased.
func (a *Accounts) CreateAccount(ctx context.Context, user, password string, admin bool) (userID string, err error) {
	localpart := user
	if strings.HasPrefix(user, "@") {
		lp, server, ok := strings.Cut(user[1:], ":")
		if !ok || server != a.cfg.ServerName {
			return "", fmt.Errorf("user %q is not a user ID of this server (%s)", user, a.cfg.ServerName)
		}
		localpart = lp
	}
	localpart, err = a.newLocalpart(localpart)
	if err != nil {
		return "", plainError(err)
	}
	if password == "" {
		return "", errors.New("the password must not be empty")
	}
	if len(password) > MaxPasswordBytes {
		return "", fmt.Errorf("the password must not be longer than %d bytes", MaxPasswordBytes)
	}
	hash, err := HashPassword(password, a.cfg.Passwords.BcryptCost)
	if err != nil {
		return "", err
	}
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		userID, err = a.insertAccount(ctx, tx, localpart, hash, admin, nil)
		return err
	})
	if err != nil {
		return "", plainError(err)
	}
	logrus.WithFields(logrus.Fields{"user_id": userID, "admin": admin}).Info("account created")
	return userID, nil
}

// insertAccount creates the account and its profile in tx; displayName defaults to the localpart.
func (a *Accounts) insertAccount(ctx context.Context, tx *storage.Tx, localpart, passwordHash string, admin bool, displayName *string) (string, error) {
	userID := a.userID(localpart)
	err := storage.InsertAccount(ctx, tx, storage.Account{
		UserID: userID, PasswordHash: passwordHash, IsAdmin: admin, CreatedTS: a.now().UnixMilli(),
	})
	if errors.Is(err, storage.ErrExists) {
		return "", errUserInUse
	}
	if err != nil {
		return "", err
	}
	if displayName == nil {
		displayName = &localpart
	}
	if err := storage.InitProfile(ctx, tx, userID, displayName); err != nil {
		return "", err
	}
	return userID, nil
}

// checkNewPassword applies the password policy to a password being set.
func (a *Accounts) checkNewPassword(password string) error {
	if len(password) > MaxPasswordBytes {
		return httputil.InvalidParam("Password must not be longer than %d bytes", MaxPasswordBytes)
	}
	if min := a.cfg.Registration.MinPasswordLength; min > 0 && len([]rune(password)) < min {
		return httputil.NewError(http.StatusBadRequest, "M_WEAK_PASSWORD", "Password must be at least %d characters long", min)
	}
	return nil
}

// checkLoginPassword compares a password with an account's hash, or with a dummy hash when
// there is no account, so that both cases take the same time.
func (a *Accounts) checkLoginPassword(hash, password string) bool {
	if len(password) > MaxPasswordBytes {
		return false
	}
	if hash == "" {
		a.dummyOnce.Do(func() {
			a.dummyHash, _ = HashPassword(NewToken(""), a.cfg.Passwords.BcryptCost)
		})
		CheckPassword(a.dummyHash, password)
		return false
	}
	return CheckPassword(hash, password)
}

// ChangePassword sets a new password after user-interactive auth (m.login.password) of the
// request at path. With logoutDevices, every other device and token of the user is removed;
// the device making the request keeps working.
func (a *Accounts) ChangePassword(ctx context.Context, d *Device, path, newPassword string, logoutDevices bool, authDict []byte) error {
	if newPassword == "" {
		return httputil.MissingParam("new_password is required")
	}
	if err := a.checkNewPassword(newPassword); err != nil {
		return err
	}
	sess, err := a.runUIA(ctx, d.UserID, path, passwordFlows, authDict)
	if err != nil {
		return err
	}
	hash, err := HashPassword(newPassword, a.cfg.Passwords.BcryptCost)
	if err != nil {
		return err
	}
	var hashes []string
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.SetPasswordHash(ctx, tx, d.UserID, hash); err != nil {
			return err
		}
		if err := storage.DeleteUIASession(ctx, tx, sess.ID); err != nil {
			return err
		}
		if !logoutDevices {
			return nil
		}
		ids, err := storage.DeviceIDs(ctx, tx, d.UserID)
		if err != nil {
			return err
		}
		others := ids[:0]
		for _, id := range ids {
			if id != d.DeviceID {
				others = append(others, id)
			}
		}
		if hashes, err = a.deleteDevices(ctx, tx, d.UserID, others); err != nil {
			return err
		}
		more, err := storage.DeleteAccessTokensExcept(ctx, tx, d.UserID, d.TokenHash)
		hashes = append(hashes, more...)
		return err
	})
	a.authn.Invalidate(hashes...)
	if err != nil {
		return err
	}
	logrus.WithFields(logrus.Fields{"user_id": d.UserID, "logout_devices": logoutDevices}).Info("password changed")
	return nil
}

// Deactivate deactivates the account after user-interactive auth of the request at path:
// every device and token is deleted, the password wiped and the user ID kept reserved for
// ever. With erase, the profile is cleared too.
func (a *Accounts) Deactivate(ctx context.Context, d *Device, path string, erase bool, authDict []byte) error {
	if _, err := a.runUIA(ctx, d.UserID, path, passwordFlows, authDict); err != nil {
		return err
	}
	var hashes []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		if hashes, err = a.deleteAllSessions(ctx, tx, d.UserID); err != nil {
			return err
		}
		if err := storage.SetDeactivated(ctx, tx, d.UserID); err != nil {
			return err
		}
		if err := storage.DeleteAllAccountData(ctx, tx, d.UserID); err != nil {
			return err
		}
		if err := storage.DeleteUserE2EE(ctx, tx, d.UserID); err != nil {
			return err
		}
		if erase {
			if err := storage.EraseProfile(ctx, tx, d.UserID); err != nil {
				return err
			}
		}
		return storage.DeleteUIASessionsForUser(ctx, tx, d.UserID)
	})
	a.authn.Invalidate(hashes...)
	a.authn.InvalidateUser(d.UserID)
	if err != nil {
		return err
	}
	logrus.WithFields(logrus.Fields{"user_id": d.UserID, "erase": erase}).Info("account deactivated")
	return nil
}

// plainError turns a client-facing error into a plain one for the command line.
func plainError(err error) error {
	var he *httputil.Error
	if errors.As(err, &he) {
		return errors.New(he.Msg)
	}
	return err
}
