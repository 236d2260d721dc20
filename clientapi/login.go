package clientapi

import (
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// getLoginFlows serves GET /login.
func (s *Server) getLoginFlows(r *http.Request) (any, error) {
	return map[string]any{"flows": []map[string]string{{"type": auth.LoginTypePassword}}}, nil
}

// postLogin serves POST /login (m.login.password).
func (s *Server) postLogin(r *http.Request) (any, error) {
	var req auth.LoginRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	sess, err := s.accounts.Login(r.Context(), req, requestClient(r))
	if err != nil {
		return nil, err
	}
	resp := s.sessionResponse(sess)
	if base := s.cfg.PublicBaseURL; base != "" {
		resp.WellKnown = map[string]any{"m.homeserver": map[string]string{"base_url": strings.TrimSuffix(base, "/")}}
	}
	return resp, nil
}

// postRefresh serves POST /refresh: a refresh token is good for exactly one refresh.
func (s *Server) postRefresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	sess, err := s.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return sessionResponse{AccessToken: sess.AccessToken, RefreshToken: sess.RefreshToken, ExpiresInMS: sess.ExpiresInMS}, nil
}

// postLogout serves POST /logout: the access token and its device are deleted.
func (s *Server) postLogout(r *http.Request) (any, error) {
	if err := s.accounts.Logout(r.Context(), requestDevice(r)); err != nil {
		return nil, err
	}
	s.sync.OnKeysChanged(requestDevice(r).UserID, true) // room-mates' clients forget the device
	return struct{}{}, nil
}

// postLogoutAll serves POST /logout/all: every device and token of the user is deleted.
func (s *Server) postLogoutAll(r *http.Request) (any, error) {
	if err := s.accounts.LogoutAll(r.Context(), requestDevice(r).UserID); err != nil {
		return nil, err
	}
	s.sync.OnKeysChanged(requestDevice(r).UserID, true) // room-mates' clients forget the devices
	return struct{}{}, nil
}
