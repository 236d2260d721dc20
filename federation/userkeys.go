package federation

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// UserKeys are device and cross-signing keys of users, as /keys/query shapes them.
type UserKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// LocalKeys reads the end-to-end encryption keys of local users (the E2EE component,
// wired in cmd/myelin/app).
type LocalKeys interface {
	// QueryKeys returns device keys (a user mapped to no devices means all of them)
	// and master and self-signing keys of local users, as other users see them.
	QueryKeys(ctx context.Context, users map[string][]string) (*UserKeys, error)
	// ClaimKeys hands out one-time (or fallback) keys: user → device → algorithm.
	ClaimKeys(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

func (s *Server) userKeyRoutes(r *mux.Router) {
	r.HandleFunc("/v1/user/keys/query", s.postUserKeysQuery).Methods(http.MethodPost)
	r.HandleFunc("/v1/user/keys/claim", s.postUserKeysClaim).Methods(http.MethodPost)
	r.HandleFunc("/v1/user/devices/{userID}", s.getUserDevices).Methods(http.MethodGet)
}

// isLocalUser reports whether userID is a valid ID of a user of this server.
func (s *Server) isLocalUser(userID string) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && string(u.Domain()) == s.cfg.ServerName
}

// StripUnsigned drops a key object's unsigned section: device display names are not
// shared over federation unless federation.share_device_names says so.
func StripUnsigned(raw json.RawMessage) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return raw
	}
	if _, ok := obj["unsigned"]; !ok {
		return raw
	}
	delete(obj, "unsigned")
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}

// postUserKeysQuery is POST /_matrix/federation/v1/user/keys/query: device and
// cross-signing keys of local users; users of other servers are ignored.
func (s *Server) postUserKeysQuery(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		httputil.WriteError(w, r, httputil.MissingParam("device_keys is required"))
		return
	}
	local := map[string][]string{}
	for u, devs := range req.DeviceKeys {
		if s.isLocalUser(u) {
			local[u] = devs
		}
	}
	out := &UserKeys{DeviceKeys: map[string]map[string]json.RawMessage{}}
	if len(local) > 0 {
		got, err := s.userKeys.QueryKeys(r.Context(), local)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		out = got
		if !s.cfg.Federation.ShareDeviceNames {
			for _, devs := range out.DeviceKeys {
				for id, js := range devs {
					devs[id] = StripUnsigned(js)
				}
			}
		}
	}
	httputil.WriteResult(w, out)
}

// postUserKeysClaim is POST /_matrix/federation/v1/user/keys/claim.
func (s *Server) postUserKeysClaim(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		httputil.WriteError(w, r, httputil.MissingParam("one_time_keys is required"))
		return
	}
	local := map[string]map[string]string{}
	for u, devs := range req.OneTimeKeys {
		if s.isLocalUser(u) {
			local[u] = devs
		}
	}
	keys := map[string]map[string]map[string]json.RawMessage{}
	if len(local) > 0 {
		var err error
		if keys, err = s.userKeys.ClaimKeys(r.Context(), local); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	httputil.WriteResult(w, map[string]any{"one_time_keys": keys})
}

type userDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// getUserDevices is GET /_matrix/federation/v1/user/devices/{userId}: a local user's
// devices with keys, the position of the user's last device change (stream_id, the
// prev_id of the next m.device_list_update) and the cross-signing keys.
func (s *Server) getUserDevices(w http.ResponseWriter, r *http.Request) {
	userID, err := pathVar(r, "userID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !s.isLocalUser(userID) {
		httputil.WriteError(w, r, httputil.InvalidParam("User %s is not on this server", userID))
		return
	}
	streamID, err := storage.PreviousDeviceChange(r.Context(), s.db, userID, 1<<62)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	keys, err := s.userKeys.QueryKeys(r.Context(), map[string][]string{userID: {}})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	out := map[string]any{"user_id": userID, "stream_id": streamID}
	devices := []userDevice{}
	for id, js := range keys.DeviceKeys[userID] {
		d := userDevice{DeviceID: id, Keys: StripUnsigned(js)}
		if s.cfg.Federation.ShareDeviceNames {
			d.DisplayName = DeviceDisplayName(js)
		}
		devices = append(devices, d)
	}
	out["devices"] = devices
	if k, ok := keys.MasterKeys[userID]; ok {
		out["master_key"] = k
	}
	if k, ok := keys.SelfSigningKeys[userID]; ok {
		out["self_signing_key"] = k
	}
	httputil.WriteResult(w, out)
}

// DeviceDisplayName is unsigned.device_display_name of a device key object ("" when none).
func DeviceDisplayName(raw json.RawMessage) string {
	var obj struct {
		Unsigned struct {
			Name string `json:"device_display_name"`
		} `json:"unsigned"`
	}
	if json.Unmarshal(raw, &obj) != nil {
		return ""
	}
	return obj.Unsigned.Name
}

// WithDeviceDisplayName returns a device key object with unsigned.device_display_name
// set to name (unchanged when name is empty or the object is not JSON).
func WithDeviceDisplayName(raw json.RawMessage, name string) json.RawMessage {
	if name == "" {
		return raw
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return raw
	}
	unsigned := map[string]json.RawMessage{}
	if u, ok := obj["unsigned"]; ok {
		_ = json.Unmarshal(u, &unsigned)
	}
	n, _ := json.Marshal(name)
	unsigned["device_display_name"] = n
	u, err := json.Marshal(unsigned)
	if err != nil {
		return raw
	}
	obj["unsigned"] = u
	out, err := json.Marshal(obj)
	if err != nil {
		return raw
	}
	return out
}
