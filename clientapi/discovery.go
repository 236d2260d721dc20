package clientapi

import (
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// supportedVersions are the spec versions whose endpoints we serve; clients pick
// features by these, so only versions we really implement are listed.
var supportedVersions = []string{
	"r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "r0.6.0", "r0.6.1",
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// unstableFeatures are MSC flags clients look for in /versions.
var unstableFeatures = map[string]bool{
	// Dehydrated devices (clientapi/dehydrated.go).
	"org.matrix.msc3814": true,
	// Deleting account data (clientapi/accountdata.go).
	"org.matrix.msc3391": true,
	// Invite filtering rules in account data (roomserver/invitefilter).
	"org.matrix.msc4155": true,
	// /messages filtered by relation type (syncapi/filter).
	"org.matrix.msc3874": true,
	// Delayed events (clientapi/delayed).
	"org.matrix.msc4140": true,
	// Thread subscriptions (clientapi/threadsubs.go).
	"org.matrix.msc4306": true,
}

func (s *Server) getVersions(r *http.Request) (any, error) {
	return map[string]any{
		"versions":          supportedVersions,
		"unstable_features": unstableFeatures,
	}, nil
}

func (s *Server) getWellKnownClient(r *http.Request) (any, error) {
	base := s.cfg.PublicBaseURL
	if base == "" {
		base = "http://" + r.Host
	}
	return map[string]any{"m.homeserver": map[string]string{"base_url": strings.TrimSuffix(base, "/")}}, nil
}

func (s *Server) getWellKnownServer(r *http.Request) (any, error) {
	if s.cfg.WellKnownServer == "" {
		return nil, httputil.NotFound("No .well-known/matrix/server is configured")
	}
	return map[string]string{"m.server": s.cfg.WellKnownServer}, nil
}

// getHealth answers 200 while the database answers, 503 otherwise (for load balancers).
func (s *Server) getHealth(w http.ResponseWriter, r *http.Request) {
	if err := s.db.Ping(r.Context()); err != nil {
		http.Error(w, "database unavailable", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("OK"))
}

func (s *Server) getCapabilities(r *http.Request) (any, error) {
	available := map[string]string{}
	for v := range gomatrixserverlib.StableRoomVersions() {
		available[string(v)] = "stable"
	}
	return map[string]any{"capabilities": map[string]any{
		"m.room_versions": map[string]any{
			"default":   s.cfg.Rooms.DefaultVersion,
			"available": available,
		},
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": false},
		"m.profile_fields":  map[string]any{"enabled": true},
	}}, nil
}
