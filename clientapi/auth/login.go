package auth

import (
	"context"
	"errors"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// LoginRequest is the body of POST /login.
type LoginRequest struct {
	Type       string          `json:"type"`
	Identifier *UserIdentifier `json:"identifier"`
	// User and Medium are the deprecated forms of Identifier.
	User                     string  `json:"user"`
	Medium                   string  `json:"medium"`
	Password                 string  `json:"password"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName *string `json:"initial_device_display_name"`
	RefreshToken             bool    `json:"refresh_token"`
}

// LoginTypePassword is the only login type Myelin offers.
const LoginTypePassword = "m.login.password"

var errBadCredentials = httputil.Forbidden("Invalid username or password")

// Login checks a user's password and creates a device with its tokens. Failures are logged
// (user and IP, never the password) at info level.
func (a *Accounts) Login(ctx context.Context, req LoginRequest, c Client) (Session, error) {
	if req.Type != LoginTypePassword {
		return Session{}, httputil.Unknown("Unknown or unsupported login type; supported: %s", LoginTypePassword)
	}
	user, err := identifiedUser(req.Identifier, req.User, req.Medium)
	if err != nil {
		return Session{}, err
	}
	if req.Password == "" {
		return Session{}, httputil.MissingParam("password is required")
	}
	c.DeviceID = req.DeviceID
	c.DisplayName = req.InitialDeviceDisplayName
	c.WantRefresh = req.RefreshToken
	if err := checkClient(c); err != nil {
		return Session{}, err
	}
	log := logrus.WithField("ip", c.IP)
	userID, ok := a.loginUserID(user)
	if !ok {
		a.checkLoginPassword("", req.Password)
		log.Info("login failed: not a user ID of this server")
		return Session{}, errBadCredentials
	}
	log = log.WithField("user_id", userID)
	acc, err := storage.GetAccount(ctx, a.db, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return Session{}, err
	}
	if acc.Deactivated {
		a.checkLoginPassword("", req.Password)
		log.Info("login failed: account deactivated")
		return Session{}, httputil.NewError(http.StatusForbidden, "M_USER_DEACTIVATED", "This account has been deactivated")
	}
	if !a.checkLoginPassword(acc.PasswordHash, req.Password) {
		if acc.UserID == "" {
			log.Info("login failed: no such user")
		} else {
			log.Info("login failed: wrong password")
		}
		return Session{}, errBadCredentials
	}
	var s Session
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		s, err = a.newSession(ctx, tx, userID, c)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	log.WithField("device_id", s.DeviceID).Debug("logged in")
	return s, nil
}

var errUnknownRefreshToken = httputil.UnknownToken("Unknown or already used refresh token").With("soft_logout", false)

// Refresh exchanges a refresh token, once, for a new access token and refresh token. The
// access tokens issued with the old refresh token stop working.
func (a *Accounts) Refresh(ctx context.Context, refreshToken string) (Session, error) {
	if refreshToken == "" {
		return Session{}, httputil.MissingParam("refresh_token is required")
	}
	hash := HashToken(refreshToken)
	var s Session
	var removed []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		userID, deviceID, err := storage.TakeRefreshToken(ctx, tx, hash)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownRefreshToken
		}
		if err != nil {
			return err
		}
		acc, err := storage.GetAccount(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && acc.Deactivated) {
			return errUnknownRefreshToken
		}
		if err != nil {
			return err
		}
		if removed, err = storage.DeleteAccessTokensForRefresh(ctx, tx, hash); err != nil {
			return err
		}
		s, err = a.issueTokens(ctx, tx, userID, deviceID, true)
		return err
	})
	a.authn.Invalidate(removed...)
	if err != nil {
		return Session{}, err
	}
	return s, nil
}
