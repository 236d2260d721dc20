package federation

import (
	"encoding/json"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// routes registers the authenticated endpoints (under /_matrix/federation).
func (s *Server) routes(r *mux.Router) {
	r.HandleFunc("/v1/query/profile", s.queryProfile).Methods(http.MethodGet)
	if s.rooms != nil {
		s.roomRoutes(r)
	}
	if s.members != nil {
		s.membershipRoutes(r)
	}
	if s.userKeys != nil {
		s.userKeyRoutes(r)
	}
	r.NotFoundHandler = s.router404()
}

func (s *Server) router404() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		httputil.WriteError(w, req, httputil.Unrecognized("Unrecognized request"))
	})
}

// queryProfile is GET /_matrix/federation/v1/query/profile?user_id=...&field=...
func (s *Server) queryProfile(w http.ResponseWriter, r *http.Request) {
	userID := r.URL.Query().Get("user_id")
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Bad user_id"))
		return
	}
	if string(uid.Domain()) != s.cfg.ServerName {
		httputil.WriteError(w, r, httputil.InvalidParam("User %s is not on this server", userID))
		return
	}
	exists, err := storage.AccountExists(r.Context(), s.db, userID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !exists {
		httputil.WriteError(w, r, httputil.NotFound("Profile not found"))
		return
	}
	p, err := storage.GetProfile(r.Context(), s.db, userID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	all := p.Map()
	if field := r.URL.Query().Get("field"); field != "" {
		v, ok := all[field]
		if !ok {
			httputil.WriteError(w, r, httputil.NotFound("Profile field not found"))
			return
		}
		httputil.WriteResult(w, map[string]json.RawMessage{field: v})
		return
	}
	httputil.WriteResult(w, all)
}
