package clientapi

import (
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Synapse-compatible admin API: shared-secret registration (used by
// register_new_matrix_user and test harnesses) and registration tokens.

// getSharedSecretNonce serves GET /_synapse/admin/v1/register.
func (s *Server) getSharedSecretNonce(r *http.Request) (any, error) {
	nonce, err := s.accounts.SharedSecretNonce(r.Context())
	if err != nil {
		return nil, err
	}
	return map[string]string{"nonce": nonce}, nil
}

// postSharedSecretRegister serves POST /_synapse/admin/v1/register.
func (s *Server) postSharedSecretRegister(r *http.Request) (any, error) {
	var req auth.SharedSecretRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	sess, err := s.accounts.SharedSecretRegister(r.Context(), req, requestClient(r))
	if err != nil {
		return nil, err
	}
	return s.sessionResponse(sess), nil
}

// requireAdmin refuses requests from users who are not server admins.
func requireAdmin(r *http.Request) error {
	if d := requestDevice(r); d == nil || !d.IsAdmin {
		return httputil.Forbidden("You are not a server admin")
	}
	return nil
}

// registrationTokenJSON is a token as the Synapse admin API shows it.
type registrationTokenJSON struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

func tokenJSON(t storage.RegistrationToken) registrationTokenJSON {
	return registrationTokenJSON{Token: t.Token, UsesAllowed: t.UsesAllowed, Pending: t.Pending, Completed: t.Completed, ExpiryTime: t.ExpiryTS}
}

// getRegistrationTokens serves GET /_synapse/admin/v1/registration_tokens[?valid=true|false].
func (s *Server) getRegistrationTokens(r *http.Request) (any, error) {
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	var valid *bool
	switch v := r.URL.Query().Get("valid"); v {
	case "":
	case "true", "false":
		b := v == "true"
		valid = &b
	default:
		return nil, httputil.InvalidParam("valid must be true or false")
	}
	tokens, err := s.accounts.ListRegistrationTokens(r.Context(), valid)
	if err != nil {
		return nil, err
	}
	out := make([]registrationTokenJSON, len(tokens))
	for i, t := range tokens {
		out[i] = tokenJSON(t)
	}
	return map[string]any{"registration_tokens": out}, nil
}

// decodeObject reads a JSON object body as raw fields, so that absent and null differ.
func decodeObject(r *http.Request) (map[string]json.RawMessage, error) {
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	return body, nil
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// tokenUses parses uses_allowed: a non-negative integer or null.
func tokenUses(raw json.RawMessage) (*int64, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < 0 || n > math.MaxInt32 {
		return nil, httputil.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	return &n, nil
}

// tokenExpiry parses expiry_time: a timestamp in ms, not in the past, or null.
func tokenExpiry(raw json.RawMessage) (*int64, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, httputil.InvalidParam("expiry_time must be an integer or null")
	}
	if n < time.Now().UnixMilli() {
		return nil, httputil.InvalidParam("expiry_time must not be in the past")
	}
	return &n, nil
}

// postRegistrationToken serves POST /_synapse/admin/v1/registration_tokens/new
// {token?, length?, uses_allowed?, expiry_time?}.
func (s *Server) postRegistrationToken(r *http.Request) (any, error) {
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	body, err := decodeObject(r)
	if err != nil {
		return nil, err
	}
	token, length := "", 16
	if raw, ok := body["token"]; ok {
		if err := json.Unmarshal(raw, &token); err != nil || isNull(raw) {
			return nil, httputil.InvalidParam("token must be a string")
		}
		if !auth.ValidRegistrationToken(token) {
			return nil, httputil.InvalidParam("token must be 1 to %d characters from A-Z, a-z, 0-9, '.', '_', '~' and '-'", auth.MaxRegistrationTokenLength)
		}
	} else if raw, ok := body["length"]; ok {
		if err := json.Unmarshal(raw, &length); err != nil || isNull(raw) || length < 1 || length > auth.MaxRegistrationTokenLength {
			return nil, httputil.InvalidParam("length must be an integer from 1 to %d", auth.MaxRegistrationTokenLength)
		}
	}
	var uses, expiry *int64
	if raw, ok := body["uses_allowed"]; ok {
		if uses, err = tokenUses(raw); err != nil {
			return nil, err
		}
	}
	if raw, ok := body["expiry_time"]; ok {
		if expiry, err = tokenExpiry(raw); err != nil {
			return nil, err
		}
	}
	t, err := s.accounts.CreateRegistrationToken(r.Context(), token, length, uses, expiry)
	if err != nil {
		return nil, err
	}
	return tokenJSON(t), nil
}

// getRegistrationToken serves GET /_synapse/admin/v1/registration_tokens/{token}.
func (s *Server) getRegistrationToken(r *http.Request) (any, error) {
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	t, err := s.accounts.GetRegistrationToken(r.Context(), pathVar(r, "token"))
	if err != nil {
		return nil, err
	}
	return tokenJSON(t), nil
}

// putRegistrationToken serves PUT /_synapse/admin/v1/registration_tokens/{token} {uses_allowed?, expiry_time?}.
func (s *Server) putRegistrationToken(r *http.Request) (any, error) {
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	body, err := decodeObject(r)
	if err != nil {
		return nil, err
	}
	var u storage.RegistrationTokenUpdate
	if raw, ok := body["uses_allowed"]; ok {
		if u.UsesAllowed, err = tokenUses(raw); err != nil {
			return nil, err
		}
		u.SetUsesAllowed = true
	}
	if raw, ok := body["expiry_time"]; ok {
		if u.ExpiryTS, err = tokenExpiry(raw); err != nil {
			return nil, err
		}
		u.SetExpiry = true
	}
	t, err := s.accounts.UpdateRegistrationToken(r.Context(), pathVar(r, "token"), u)
	if err != nil {
		return nil, err
	}
	return tokenJSON(t), nil
}

// deleteRegistrationToken serves DELETE /_synapse/admin/v1/registration_tokens/{token}.
func (s *Server) deleteRegistrationToken(r *http.Request) (any, error) {
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	if err := s.accounts.DeleteRegistrationToken(r.Context(), pathVar(r, "token")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
