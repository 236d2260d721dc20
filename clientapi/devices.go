package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// maxDeviceNameChars bounds device display names (Synapse's limit; names are shown to other users).
const maxDeviceNameChars = 100

// deviceJSON is the spec's Device object.
type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  string  `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64   `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// getDevices serves GET /devices: all devices of the requester.
func (s *Server) getDevices(r *http.Request) (any, error) {
	devs, err := storage.ListDevices(r.Context(), s.db, requestDevice(r).UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, 0, len(devs))
	for _, d := range devs {
		out = append(out, toDeviceJSON(d))
	}
	return map[string]any{"devices": out}, nil
}

// getDevice serves GET /devices/{deviceId}; another user's device is as unknown as a missing one.
func (s *Server) getDevice(r *http.Request) (any, error) {
	d, err := storage.GetDevice(r.Context(), s.db, requestDevice(r).UserID, pathVar(r, "deviceId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(d), nil
}

// putDevice serves PUT /devices/{deviceId}: renames one of the requester's devices.
// (Creating devices this way is for application services, which do not exist yet.)
func (s *Server) putDevice(r *http.Request) (any, error) {
	userID, deviceID := requestDevice(r).UserID, pathVar(r, "deviceId")
	var body struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.DisplayName == nil {
		// Nothing to change, but the device must exist.
		if _, err := storage.GetDevice(r.Context(), s.db, userID, deviceID); errors.Is(err, storage.ErrNotFound) {
			return nil, httputil.NotFound("Unknown device")
		} else if err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
	if utf8.RuneCountInString(*body.DisplayName) > maxDeviceNameChars {
		return nil, httputil.NewError(http.StatusBadRequest, "M_TOO_LARGE", "Device display name is longer than %d characters", maxDeviceNameChars)
	}
	// A rename is a change of the device list (the spec lists "changes in device
	// information such as the device's human-readable name"): room-mates' clients and
	// other servers hear of it.
	err := s.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		if err := storage.SetDeviceDisplayName(r.Context(), tx, userID, deviceID, body.DisplayName); err != nil {
			return err
		}
		_, err := storage.RecordDeviceListChange(r.Context(), tx, userID, deviceID, "")
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Unknown device")
	}
	if err != nil {
		return nil, err
	}
	s.sync.OnKeysChanged(userID, true)
	return struct{}{}, nil
}

// deleteDevice serves DELETE /devices/{deviceId}, behind user-interactive auth. Deleting
// a device that is already gone succeeds, as the spec says.
func (s *Server) deleteDevice(r *http.Request) (any, error) {
	var body struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	// The spec answers 404 for a device the user does not have (before asking for auth).
	deviceID := pathVar(r, "deviceId")
	if _, err := storage.GetDevice(r.Context(), s.db, requestDevice(r).UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Unknown device")
	} else if err != nil {
		return nil, err
	}
	return s.deleteDevicesWithUIA(r, []string{deviceID}, body.Auth)
}

// postDeleteDevices serves POST /delete_devices {devices: [...]}, behind user-interactive auth.
func (s *Server) postDeleteDevices(r *http.Request) (any, error) {
	var body struct {
		Devices *[]string       `json:"devices"`
		Auth    json.RawMessage `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Devices == nil {
		return nil, httputil.MissingParam("Missing devices")
	}
	seen := map[string]bool{}
	ids := make([]string, 0, len(*body.Devices))
	for _, id := range *body.Devices {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return s.deleteDevicesWithUIA(r, ids, body.Auth)
}

func (s *Server) deleteDevicesWithUIA(r *http.Request, deviceIDs []string, authDict json.RawMessage) (any, error) {
	userID := requestDevice(r).UserID
	if string(authDict) == "null" {
		authDict = nil
	}
	if err := s.accounts.CheckUIA(r.Context(), userID, r.URL.Path, authDict); err != nil {
		return nil, err
	}
	if len(deviceIDs) > 0 {
		if err := s.accounts.DeleteDevices(r.Context(), userID, deviceIDs); err != nil {
			return nil, err
		}
		s.sync.OnKeysChanged(userID, true) // room-mates' clients forget the devices
	}
	return struct{}{}, nil
}

// Last-seen tracking: a device's last_seen_ts/ip/user agent is written at most once per
// lastSeenInterval, in the background, so requests never wait for it.
const (
	lastSeenInterval   = time.Minute
	maxLastSeenWriters = 4 // concurrent background writes; beyond, updates wait for a later request
	maxLastSeenEntries = 100_000
	maxUserAgentBytes  = 512
)

type seenKey struct{ userID, deviceID string }

// deviceSeen throttles last-seen writes. Its zero value is ready to use.
type deviceSeen struct {
	mu      sync.Mutex
	last    map[seenKey]time.Time // when each device's last-seen was last written
	writers int
	wg      sync.WaitGroup // background writes, for tests
	now     func() time.Time
}

// touchDevice records that a device made a request, writing its last-seen time, IP and
// user agent unless that was done less than a minute ago. It never blocks on the database.
func (s *Server) touchDevice(r *http.Request, d *auth.Device) {
	t := &s.seen
	key := seenKey{d.UserID, d.DeviceID}
	t.mu.Lock()
	now := time.Now()
	if t.now != nil {
		now = t.now()
	}
	if prev, ok := t.last[key]; ok && now.Sub(prev) < lastSeenInterval {
		t.mu.Unlock()
		return
	}
	if t.writers >= maxLastSeenWriters {
		t.mu.Unlock()
		return
	}
	if t.last == nil {
		t.last = map[seenKey]time.Time{}
	}
	if len(t.last) >= maxLastSeenEntries {
		for k, at := range t.last {
			if now.Sub(at) >= lastSeenInterval {
				delete(t.last, k)
			}
		}
	}
	t.last[key] = now
	t.writers++
	t.wg.Add(1)
	t.mu.Unlock()

	ip, ua := clientIP(r), sanitizeUserAgent(r.UserAgent())
	go func() {
		defer t.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := storage.UpdateDeviceLastSeen(ctx, s.db, key.userID, key.deviceID, now.UnixMilli(), ip, ua)
		t.mu.Lock()
		t.writers--
		if err != nil {
			delete(t.last, key) // try again on the next request
		}
		t.mu.Unlock()
		if err != nil {
			logrus.WithError(err).WithField("user_id", key.userID).Warn("could not record device last seen")
		}
	}()
}

// sanitizeUserAgent bounds the stored user agent and keeps it valid UTF-8 (PostgreSQL text).
func sanitizeUserAgent(ua string) string {
	if len(ua) > maxUserAgentBytes {
		ua = ua[:maxUserAgentBytes]
	}
	return strings.ToValidUTF8(strings.ReplaceAll(ua, "\x00", ""), "")
}
