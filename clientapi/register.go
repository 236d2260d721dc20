package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// sessionResponse is the body of a successful login, registration or refresh.
type sessionResponse struct {
	UserID       string `json:"user_id,omitempty"`
	AccessToken  string `json:"access_token,omitempty"`
	DeviceID     string `json:"device_id,omitempty"`
	HomeServer   string `json:"home_server,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	WellKnown    any    `json:"well_known,omitempty"`
}

func (s *Server) sessionResponse(sess auth.Session) sessionResponse {
	return sessionResponse{
		UserID:       sess.UserID,
		AccessToken:  sess.AccessToken,
		DeviceID:     sess.DeviceID,
		HomeServer:   s.cfg.ServerName,
		RefreshToken: sess.RefreshToken,
		ExpiresInMS:  sess.ExpiresInMS,
	}
}

// maxUserAgentLen bounds the user agent stored with a new device.
const maxUserAgentLen = 512

// requestClient describes the client of a request for the devices it creates.
func requestClient(r *http.Request) auth.Client {
	ua := r.UserAgent()
	if len(ua) > maxUserAgentLen {
		ua = ua[:maxUserAgentLen]
	}
	return auth.Client{IP: clientIP(r), UserAgent: ua}
}

// postRegister serves POST /register: user-interactive auth with the flow of the configured
// registration mode (m.login.dummy when open, m.login.registration_token with tokens).
func (s *Server) postRegister(r *http.Request) (any, error) {
	kind := r.URL.Query().Get("kind")
	if err := s.accounts.RegistrationAllowed(kind); err != nil {
		return nil, err
	}
	var req auth.RegisterRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	sess, err := s.accounts.Register(r.Context(), kind, r.URL.Path, req, requestClient(r))
	if err != nil {
		return nil, err
	}
	if s.push != nil && sess.UserID != "" {
		// The push rules are account data an initial /sync must show (syncapi/push).
		if err := s.push.EnsureAccountData(r.Context(), sess.UserID); err != nil {
			return nil, err
		}
	}
	return s.sessionResponse(sess), nil
}

// getRegisterAvailable serves GET /register/available?username=.
func (s *Server) getRegisterAvailable(r *http.Request) (any, error) {
	if err := s.accounts.UsernameAvailable(r.Context(), r.URL.Query().Get("username")); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// getRegistrationTokenValidity serves GET /v1/register/m.login.registration_token/validity?token=.
func (s *Server) getRegistrationTokenValidity(r *http.Request) (any, error) {
	valid, err := s.accounts.RegistrationTokenValid(r.Context(), r.URL.Query().Get("token"))
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
}
