package federation

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver/directory"
	"github.com/myelin-chat/myelin/storage"
)

// Directory endpoints for other servers: /query/directory (aliases), /publicRooms
// and /hierarchy, answered by roomserver/directory like the client API's.

func (s *Server) directoryRoutes(r *mux.Router) {
	r.HandleFunc("/v1/query/directory", s.queryDirectory).Methods(http.MethodGet)
	r.HandleFunc("/v1/publicRooms", s.getPublicRooms).Methods(http.MethodGet)
	r.HandleFunc("/v1/publicRooms", s.postPublicRooms).Methods(http.MethodPost)
	r.HandleFunc("/v1/hierarchy/{roomID}", s.getHierarchy).Methods(http.MethodGet)
}

// queryDirectory is GET /_matrix/federation/v1/query/directory?room_alias=: a local
// alias's room and the servers to join it through.
func (s *Server) queryDirectory(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("room_alias")
	_, domain, ok := strings.Cut(alias, ":")
	if !strings.HasPrefix(alias, "#") || !ok || domain == "" {
		httputil.WriteError(w, r, httputil.InvalidParam("Bad room_alias"))
		return
	}
	if domain != s.cfg.ServerName {
		httputil.WriteError(w, r, httputil.NotFound("Room alias %s is not on this server", alias))
		return
	}
	got, err := storage.GetRoomAlias(r.Context(), s.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NotFound("Room alias %s not found", alias))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]any{"room_id": got.RoomID, "servers": s.dir.RoomServers(r.Context(), got.RoomID)})
}

// getPublicRooms is GET /_matrix/federation/v1/publicRooms?limit&since&include_all_networks&third_party_instance_id.
func (s *Server) getPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req directory.PublicRoomsRequest
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	page, err := s.dir.PublicRooms(r.Context(), req)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, page)
}

// postPublicRooms is POST /_matrix/federation/v1/publicRooms {limit, since, filter, ...}.
func (s *Server) postPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req directory.PublicRoomsRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	page, err := s.dir.PublicRooms(r.Context(), req)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, page)
}

// serverCanSee applies the hierarchy's rule for a server: rooms anyone may see or
// join (public, knockable, world readable), rooms it has a joined member in, and
// restricted rooms when, as far as this server knows, it has a joined member in one of
// the allowed rooms (the summary carries allowed_room_ids for the asking server to
// check which of its users may see the room).
func (s *Server) serverCanSee(ctx context.Context, sum *directory.Summary) (bool, error) {
	if sum.Open() {
		return true, nil
	}
	rooms := []string{sum.RoomID}
	if sum.JoinRule == spec.Restricted || sum.JoinRule == "knock_restricted" {
		rooms = append(rooms, sum.AllowedRoomIDs...)
	}
	suffix := ":" + string(Origin(ctx))
	for _, roomID := range rooms {
		members, err := s.rooms.JoinedMembers(ctx, roomID)
		if directory.IsNotFound(err) {
			continue // an allowed room this server is not in
		}
		if err != nil {
			return false, err
		}
		for _, m := range members {
			if strings.HasSuffix(m, suffix) {
				return true, nil
			}
		}
	}
	return false, nil
}

// getHierarchy is GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=: a
// local room of a space tree with its children state, and the summaries of its
// direct children this server knows (those the origin may not see are listed in
// inaccessible_children). 404 when the room is unknown or not visible to the origin.
func (s *Server) getHierarchy(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, err := pathVar(r, "roomID")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	suggestedOnly := r.URL.Query().Get("suggested_only") == "true"
	notFound := httputil.NotFound("Room not found")
	sum, err := s.dir.Summarize(ctx, roomID)
	if err != nil {
		if directory.IsNotFound(err) {
			err = notFound
		}
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.checkACL(ctx, roomID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if ok, err := s.serverCanSee(ctx, sum); err != nil || !ok {
		if err == nil {
			err = notFound
		}
		httputil.WriteError(w, r, err)
		return
	}
	children, err := s.dir.SpaceChildren(ctx, roomID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if sum.RoomType != "m.space" {
		children = []directory.Child{} // only spaces have children
	}
	resp := directory.RemoteHierarchy{Room: directory.HierarchyRoom{Summary: sum, ChildrenState: children},
		Children: []*directory.Summary{}, InaccessibleChildren: []string{}}
	for _, c := range children {
		if suggestedOnly && !c.Suggested() {
			continue
		}
		child, err := s.dir.Summarize(ctx, c.StateKey)
		if directory.IsNotFound(err) {
			continue // not known here: the asking server can try the child's via servers
		}
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		ok, err := s.serverCanSee(ctx, child)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if !ok {
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.StateKey)
			continue
		}
		resp.Children = append(resp.Children, child)
	}
	httputil.WriteResult(w, resp)
}

// getOpenIDUserInfo is GET /_matrix/federation/v1/openid/userinfo?access_token=: the
// user an OpenID token was issued to (no X-Matrix: integrations call it).
func (s *Server) getOpenIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" || s.openID == nil {
		httputil.WriteError(w, r, httputil.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Invalid OpenID token"))
		return
	}
	userID, err := s.openID(r.Context(), token)
	if errors.Is(err, storage.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Invalid OpenID token"))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteResult(w, map[string]string{"sub": userID})
}
