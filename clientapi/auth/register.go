package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// RegisterRequest is the body of POST /register.
type RegisterRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName *string         `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

// registrationFlows are the UIA flows of POST /register in a registration mode.
func registrationFlows(mode string) [][]string {
	if mode == config.RegistrationToken {
		return [][]string{{StageRegistrationToken}}
	}
	return [][]string{{StageDummy}}
}

var errRegistrationDisabled = httputil.Forbidden("Registration is disabled on this server")

// Register creates an account (POST /register) once the request completes the registration
// flow of the configured mode. The username and password are checked before user-interactive
// auth, as the spec requires. With InhibitLogin, Session has only UserID.
func (a *Accounts) Register(ctx context.Context, kind, path string, req RegisterRequest, c Client) (Session, error) {
	if err := a.RegistrationAllowed(kind); err != nil {
		return Session{}, err
	}
	mode := a.cfg.Registration.Mode
	localpart := ""
	if req.Username != nil {
		lp, err := a.availableLocalpart(ctx, *req.Username)
		if err != nil {
			return Session{}, err
		}
		localpart = lp
	}
	if req.Password != nil {
		if err := a.checkNewPassword(*req.Password); err != nil {
			return Session{}, err
		}
	}
	c.DeviceID = req.DeviceID
	c.DisplayName = req.InitialDeviceDisplayName
	c.WantRefresh = req.RefreshToken
	if err := checkClient(c); err != nil {
		return Session{}, err
	}

	sess, err := a.runUIA(ctx, "", path, registrationFlows(mode), req.Auth)
	if err != nil {
		return Session{}, err
	}

	if req.Password == nil || *req.Password == "" {
		return Session{}, httputil.MissingParam("password is required")
	}
	hash, err := HashPassword(*req.Password, a.cfg.Passwords.BcryptCost)
	if err != nil {
		return Session{}, err
	}
	var out Session
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		lp := localpart
		if lp == "" {
			if lp, err = a.generateLocalpart(ctx, tx); err != nil {
				return err
			}
		}
		userID, err := a.insertAccount(ctx, tx, lp, hash, false, nil)
		if err != nil {
			return err
		}
		if sess.RegistrationToken != "" {
			err := storage.ConsumeRegistrationToken(ctx, tx, sess.RegistrationToken)
			if errors.Is(err, storage.ErrNotFound) {
				return httputil.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", "The registration token was revoked")
			}
			if err != nil {
				return err
			}
		}
		if err := storage.DeleteUIASession(ctx, tx, sess.ID); err != nil {
			return err
		}
		out = Session{UserID: userID}
		if req.InhibitLogin {
			return nil
		}
		out, err = a.newSession(ctx, tx, userID, c)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	logrus.WithFields(logrus.Fields{"user_id": out.UserID, "ip": c.IP, "token_used": sess.RegistrationToken != ""}).Info("account registered")
	return out, nil
}

// RegistrationAllowed says whether POST /register?kind=kind can succeed at all: guests are
// refused with M_GUEST_ACCESS_FORBIDDEN, and everyone when registration is disabled.
func (a *Accounts) RegistrationAllowed(kind string) error {
	switch kind {
	case "", "user":
	case "guest":
		return httputil.NewError(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "Guest accounts are not supported")
	default:
		return httputil.InvalidParam("kind must be user or guest")
	}
	if mode := a.cfg.Registration.Mode; mode != config.RegistrationOpen && mode != config.RegistrationToken {
		return errRegistrationDisabled
	}
	return nil
}

func (a *Accounts) generateLocalpart(ctx context.Context, q storage.Querier) (string, error) {
	for range 10 {
		lp := randomLocalpart()
		taken, err := storage.AccountExists(ctx, q, a.userID(lp))
		if err != nil {
			return "", err
		}
		if !taken {
			return lp, nil
		}
	}
	return "", errors.New("could not generate a free user ID")
}

// availableLocalpart normalises a requested username and checks that it is free. Deactivated
// user IDs stay taken for ever.
func (a *Accounts) availableLocalpart(ctx context.Context, username string) (string, error) {
	lp, err := a.newLocalpart(username)
	if err != nil {
		return "", err
	}
	taken, err := storage.AccountExists(ctx, a.db, a.userID(lp))
	if err != nil {
		return "", err
	}
	if taken {
		return "", errUserInUse
	}
	return lp, nil
}

// UsernameAvailable answers GET /register/available.
func (a *Accounts) UsernameAvailable(ctx context.Context, username string) error {
	mode := a.cfg.Registration.Mode
	if mode != config.RegistrationOpen && mode != config.RegistrationToken {
		return errRegistrationDisabled
	}
	if username == "" {
		return httputil.MissingParam("username is required")
	}
	_, err := a.availableLocalpart(ctx, username)
	return err
}

// RegistrationTokenValid answers GET /register/m.login.registration_token/validity.
func (a *Accounts) RegistrationTokenValid(ctx context.Context, token string) (bool, error) {
	if a.cfg.Registration.Mode != config.RegistrationToken {
		return false, httputil.Forbidden("Registration with tokens is not enabled on this server")
	}
	if token == "" {
		return false, httputil.MissingParam("token is required")
	}
	return storage.RegistrationTokenValid(ctx, a.db, token, a.now().UnixMilli())
}

// Shared-secret registration, compatible with Synapse's /_synapse/admin/v1/register and its
// register_new_matrix_user script: a single-use nonce, then an HMAC-SHA1 keyed with the shared
// secret over nonce, username, password and the admin flag.

// nonceLifetime is how long a shared-secret registration nonce may be used.
const nonceLifetime = 60 * time.Second

var errSharedSecretDisabled = httputil.Unknown("Shared secret registration is not enabled")

// SharedSecretNonce returns a new single-use nonce.
func (a *Accounts) SharedSecretNonce(ctx context.Context) (string, error) {
	if a.cfg.Registration.SharedSecret == "" {
		return "", errSharedSecretDisabled
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	nonce := hex.EncodeToString(b[:])
	now := a.now()
	if err := storage.InsertRegistrationNonce(ctx, a.db, HashToken(nonce), now.UnixMilli()); err != nil {
		return "", err
	}
	a.cleanup(ctx, now)
	return nonce, nil
}

// SharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type SharedSecretRequest struct {
	Nonce                    *string `json:"nonce"`
	Username                 *string `json:"username"`
	Password                 *string `json:"password"`
	Admin                    bool    `json:"admin"`
	Displayname              *string `json:"displayname"`
	UserType                 *string `json:"user_type"`
	Mac                      *string `json:"mac"`
	DeviceID                 string  `json:"device_id"`
	InitialDeviceDisplayName *string `json:"initial_device_display_name"`
}

// SharedSecretMAC computes the hex HMAC a shared-secret registration must carry.
func SharedSecretMAC(secret, nonce, username, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(username))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// SharedSecretRegister creates an account (an admin if asked) and logs it in, whatever the
// registration mode, for whoever knows the shared secret.
func (a *Accounts) SharedSecretRegister(ctx context.Context, req SharedSecretRequest, c Client) (Session, error) {
	secret := a.cfg.Registration.SharedSecret
	if secret == "" {
		return Session{}, errSharedSecretDisabled
	}
	if req.Nonce == nil {
		return Session{}, httputil.BadJSON("nonce must be specified")
	}
	var fresh bool
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		fresh, err = storage.TakeRegistrationNonce(ctx, tx, HashToken(*req.Nonce), a.now().Add(-nonceLifetime).UnixMilli())
		return err
	})
	if err != nil {
		return Session{}, err
	}
	if !fresh {
		return Session{}, httputil.Unknown("Unrecognised or expired nonce; get a new one")
	}
	// From here on the nonce is used up, whatever happens.
	if req.Username == nil {
		return Session{}, httputil.BadJSON("username must be specified")
	}
	if len(*req.Username) > 512 || strings.ContainsRune(*req.Username, 0) {
		return Session{}, invalidUsername("Invalid username")
	}
	if req.Password == nil {
		return Session{}, httputil.BadJSON("password must be specified")
	}
	password := *req.Password
	if password == "" || len(password) > MaxPasswordBytes || strings.ContainsRune(password, 0) {
		return Session{}, httputil.InvalidParam("Invalid password: it must be 1 to %d bytes without NUL", MaxPasswordBytes)
	}
	if req.UserType != nil && *req.UserType != "" {
		return Session{}, httputil.InvalidParam("user_type is not supported")
	}
	if req.Mac == nil {
		return Session{}, httputil.BadJSON("mac must be specified")
	}
	want := SharedSecretMAC(secret, *req.Nonce, *req.Username, password, req.Admin)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(*req.Mac))) {
		logrus.WithField("ip", c.IP).Warn("shared-secret registration with a wrong MAC")
		return Session{}, httputil.Forbidden("HMAC incorrect")
	}
	localpart, err := a.newLocalpart(*req.Username)
	if err != nil {
		return Session{}, err
	}
	c.DeviceID = req.DeviceID
	c.DisplayName = req.InitialDeviceDisplayName
	if err := checkClient(c); err != nil {
		return Session{}, err
	}
	hash, err := HashPassword(password, a.cfg.Passwords.BcryptCost)
	if err != nil {
		return Session{}, err
	}
	var out Session
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		userID, err := a.insertAccount(ctx, tx, localpart, hash, req.Admin, req.Displayname)
		if err != nil {
			return err
		}
		out, err = a.newSession(ctx, tx, userID, c)
		return err
	})
	if err != nil {
		return Session{}, err
	}
	logrus.WithFields(logrus.Fields{"user_id": out.UserID, "admin": req.Admin, "ip": c.IP}).Info("account registered with the shared secret")
	return out, nil
}
