package clientapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/myelin-chat/myelin/clientapi/appservice"
	"github.com/myelin-chat/myelin/clientapi/auth"
	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// appServiceDevice authenticates a request made with an application service's as_token.
// It acts as the service's sender user, or, with ?user_id=, as a user of the service's
// namespaces (masquerading). ?device_id= (MSC3202, also under its unstable name) picks the
// device of the masqueraded user.
func (s *Server) appServiceDevice(r *http.Request, reg *appservice.Registration) (*auth.Device, error) {
	q := r.URL.Query()
	userID := reg.SenderID(s.cfg.ServerName)
	if u := q.Get("user_id"); u != "" {
		if !reg.OwnsUser(u, s.cfg.ServerName) {
			return nil, httputil.Forbidden("The application service cannot masquerade as %s", u)
		}
		userID = u
	}
	deviceID := q.Get("device_id")
	if deviceID == "" {
		deviceID = q.Get("org.matrix.msc3202.device_id")
	}
	return &auth.Device{UserID: userID, DeviceID: deviceID, AppServiceID: reg.ID}, nil
}

// rateLimitExempt reports whether d's requests skip rate limiting: those of application
// services registered with rate_limited: false.
func (s *Server) rateLimitExempt(d *auth.Device) bool {
	if d == nil || d.AppServiceID == "" {
		return false
	}
	reg := s.appsvcs.ByID(d.AppServiceID)
	return reg != nil && !reg.Limited()
}

// appServiceTimestamp is the origin_server_ts an application service asked for with ?ts=
// (timestamp massaging, for bridges importing history). Zero means now: the parameter is
// ignored for ordinary users.
func appServiceTimestamp(r *http.Request) (time.Time, error) {
	d := requestDevice(r)
	ts := r.URL.Query().Get("ts")
	if d == nil || d.AppServiceID == "" || ts == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, httputil.InvalidParam("ts must be a timestamp in milliseconds")
	}
	return time.UnixMilli(ms), nil
}
