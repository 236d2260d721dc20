package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// User-interactive authentication (UIA), as the spec describes it: a request that needs it
// is answered 401 with the flows (lists of stages) that would authorise it and a session;
// the client completes stages by repeating the request with an "auth" object naming the
// session, until one flow is complete. Sessions live in the database (they survive restarts
// and work across processes), expire after auth.uia_session_lifetime, and are bound to the
// request path and the user they were created for.

// The stage types Myelin supports.
const (
	StagePassword          = "m.login.password"
	StageDummy             = "m.login.dummy"
	StageRegistrationToken = "m.login.registration_token"
)

var passwordFlows = [][]string{{StagePassword}}

// authDict is the "auth" object of a request.
type authDict struct {
	Type       string          `json:"type"`
	Session    string          `json:"session"`
	Identifier *UserIdentifier `json:"identifier"`
	User       string          `json:"user"`
	Medium     string          `json:"medium"`
	Password   string          `json:"password"`
	Token      string          `json:"token"`
}

// CheckUIA runs user-interactive auth for an already-authenticated user performing a
// sensitive action (the request at path): it returns nil once authDict completes a flow,
// or an error rendering the spec's 401 UIA response (flows, params, session, completed).
// The only flow is m.login.password; the identifier must name userID. A completed session
// is used up: the next sensitive request starts a new one.
func (a *Accounts) CheckUIA(ctx context.Context, userID, path string, authDict json.RawMessage) error {
	sess, err := a.runUIA(ctx, userID, path, passwordFlows, authDict)
	if err != nil {
		return err
	}
	return storage.DeleteUIASession(ctx, a.db, sess.ID)
}

// uiaSession is a session being worked on; persisted is false for a session created by this
// request and not yet stored (one that completes at once is never written).
type uiaSession struct {
	storage.UIASession
	persisted bool
}

// runUIA checks the auth object of a request against flows. It returns the session once a flow
// is complete; the caller deletes it (storage.DeleteUIASession) in the transaction that
// performs the protected action, so that a failed action can be retried with the session.
func (a *Accounts) runUIA(ctx context.Context, userID, path string, flows [][]string, raw json.RawMessage) (*storage.UIASession, error) {
	var ad authDict
	raw = bytes.TrimSpace(raw)
	hasAuth := len(raw) > 0 && !bytes.Equal(raw, []byte("null"))
	if hasAuth {
		if raw[0] != '{' {
			return nil, httputil.BadJSON("auth must be an object")
		}
		if err := json.Unmarshal(raw, &ad); err != nil {
			return nil, httputil.BadJSON("auth has a field of the wrong type")
		}
	}
	now := a.now()
	var s *uiaSession
	if ad.Session != "" {
		stored, err := storage.GetUIASession(ctx, a.db, ad.Session)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && a.sessionExpired(stored, now)) {
			return nil, errUnknownSession
		}
		if err != nil {
			return nil, err
		}
		if stored.UserID != userID || stored.Path != path {
			return nil, httputil.Forbidden("Requested operation has changed during the UI authentication session")
		}
		s = &uiaSession{UIASession: stored, persisted: true}
	} else {
		s = &uiaSession{UIASession: storage.UIASession{
			ID: NewToken(""), UserID: userID, Path: path, Completed: []string{}, CreatedTS: now.UnixMilli(),
		}}
		a.cleanup(ctx, now)
	}

	if hasAuth && ad.Type != "" {
		if !stageOffered(flows, ad.Type) {
			return nil, a.challenge(ctx, s, flows, httputil.NewError(http.StatusUnauthorized, "M_UNRECOGNIZED", "Auth stage %q is not offered for this request", truncate(ad.Type, 64)))
		}
		if err := a.runStage(ctx, s, flows, &ad); err != nil {
			return nil, err
		}
	}
	if flowComplete(flows, s.Completed) {
		return &s.UIASession, nil
	}
	return nil, a.challenge(ctx, s, flows, nil)
}

// runStage checks one stage and records it as completed.
func (a *Accounts) runStage(ctx context.Context, s *uiaSession, flows [][]string, ad *authDict) error {
	switch ad.Type {
	case StageDummy:
	case StagePassword:
		user, err := identifiedUser(ad.Identifier, ad.User, ad.Medium)
		if err != nil {
			return err
		}
		id, ok := a.loginUserID(user)
		if !ok || id != s.UserID {
			return httputil.Forbidden("The identifier does not name the user making this request")
		}
		acc, err := storage.GetAccount(ctx, a.db, s.UserID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if acc.Deactivated || !a.checkLoginPassword(acc.PasswordHash, ad.Password) {
			logrus.WithFields(logrus.Fields{"user_id": s.UserID, "path": s.Path}).Info("user-interactive auth: wrong password")
			return a.challenge(ctx, s, flows, httputil.Forbidden("Invalid password"))
		}
	case StageRegistrationToken:
		return a.registrationTokenStage(ctx, s, flows, ad.Token)
	}
	if !slices.Contains(s.Completed, ad.Type) {
		s.Completed = append(s.Completed, ad.Type)
	}
	if s.persisted {
		return sessionGone(storage.UpdateUIASession(ctx, a.db, s.UIASession))
	}
	return nil
}

// sessionGone maps a session deleted by a concurrent request to the unknown-session error.
func sessionGone(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return errUnknownSession
	}
	return err
}

var errUnknownSession = httputil.Unknown("Unknown or expired UIA session; start again without a session")

// registrationTokenStage reserves a use of a registration token for the session (it counts as
// pending until the registration completes or the session expires). The session is stored in
// the same transaction so that the reservation is never lost.
func (a *Accounts) registrationTokenStage(ctx context.Context, s *uiaSession, flows [][]string, token string) error {
	if token == "" {
		return httputil.MissingParam("auth.token is required")
	}
	if s.RegistrationToken != "" {
		// Already reserved by this session: the stage is done.
		if !slices.Contains(s.Completed, StageRegistrationToken) {
			s.Completed = append(s.Completed, StageRegistrationToken)
		}
		return sessionGone(storage.UpdateUIASession(ctx, a.db, s.UIASession))
	}
	valid := false
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		valid, err = storage.ReserveRegistrationToken(ctx, tx, token, a.now().UnixMilli())
		if err != nil || !valid {
			return err
		}
		next := s.UIASession
		next.RegistrationToken = token
		next.Completed = append(slices.Clone(s.Completed), StageRegistrationToken)
		if s.persisted {
			err = storage.UpdateUIASession(ctx, tx, next)
		} else {
			err = storage.InsertUIASession(ctx, tx, next)
		}
		if err == nil {
			s.UIASession, s.persisted = next, true
		}
		return err
	})
	if err != nil {
		return sessionGone(err)
	}
	if !valid {
		logrus.WithField("path", s.Path).Info("registration with an invalid registration token")
		return a.challenge(ctx, s, flows, httputil.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", "Invalid registration token"))
	}
	return nil
}

// challenge stores the session if needed and returns the 401 UIA response: flows, params,
// session and completed stages, plus errcode and error when a stage failed.
func (a *Accounts) challenge(ctx context.Context, s *uiaSession, flows [][]string, stageErr *httputil.Error) error {
	if !s.persisted {
		if err := storage.InsertUIASession(ctx, a.db, s.UIASession); err != nil {
			return err
		}
		s.persisted = true
	}
	e := &httputil.Error{Status: http.StatusUnauthorized}
	if stageErr != nil {
		e.Code, e.Msg = stageErr.Code, stageErr.Msg
	}
	fl := make([]map[string][]string, len(flows))
	for i, f := range flows {
		fl[i] = map[string][]string{"stages": f}
	}
	completed := s.Completed
	if completed == nil {
		completed = []string{}
	}
	e.Extra = map[string]any{
		"flows":     fl,
		"params":    map[string]any{},
		"session":   s.ID,
		"completed": completed,
	}
	return e
}

func (a *Accounts) sessionExpired(s storage.UIASession, now time.Time) bool {
	return now.UnixMilli()-s.CreatedTS > a.cfg.Auth.UIASessionLifetime.Std().Milliseconds()
}

// cleanup removes expired UIA sessions (releasing their registration-token reservations)
// and expired shared-secret nonces, at most once a minute.
func (a *Accounts) cleanup(ctx context.Context, now time.Time) {
	last := a.lastCleanup.Load()
	if now.UnixMilli()-last < time.Minute.Milliseconds() || !a.lastCleanup.CompareAndSwap(last, now.UnixMilli()) {
		return
	}
	before := now.UnixMilli() - a.cfg.Auth.UIASessionLifetime.Std().Milliseconds()
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.DeleteExpiredUIASessions(ctx, tx, before); err != nil {
			return err
		}
		return storage.DeleteExpiredRegistrationNonces(ctx, tx, now.Add(-nonceLifetime).UnixMilli())
	})
	if err != nil {
		logrus.WithError(err).Warn("removing expired UIA sessions")
	}
}

func stageOffered(flows [][]string, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f, stage) {
			return true
		}
	}
	return false
}

func flowComplete(flows [][]string, completed []string) bool {
	for _, f := range flows {
		done := true
		for _, st := range f {
			if !slices.Contains(completed, st) {
				done = false
				break
			}
		}
		if done {
			return true
		}
	}
	return false
}
