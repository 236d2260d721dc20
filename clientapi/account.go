package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// getWhoami serves GET /account/whoami.
func (s *Server) getWhoami(r *http.Request) (any, error) {
	d := requestDevice(r)
	return map[string]any{"user_id": d.UserID, "device_id": d.DeviceID, "is_guest": false}, nil
}

// postPassword serves POST /account/password, behind user-interactive auth (m.login.password).
func (s *Server) postPassword(r *http.Request) (any, error) {
	var req struct {
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := s.accounts.ChangePassword(r.Context(), requestDevice(r), r.URL.Path, req.NewPassword, logout, req.Auth); err != nil {
		return nil, err
	}
	if logout {
		s.sync.OnKeysChanged(requestDevice(r).UserID, true) // room-mates' clients forget the devices
	}
	return struct{}{}, nil
}

// postDeactivate serves POST /account/deactivate, behind user-interactive auth (m.login.password).
func (s *Server) postDeactivate(r *http.Request) (any, error) {
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := s.accounts.Deactivate(r.Context(), requestDevice(r), r.URL.Path, req.Erase, req.Auth); err != nil {
		return nil, err
	}
	// Myelin keeps no third-party identifiers, so there was nothing to unbind: the spec
	// asks for "success" in that case.
	return map[string]string{"id_server_unbind_result": "success"}, nil
}
