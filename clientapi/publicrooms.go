package clientapi

import (
	"context"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver/directory"
	"github.com/myelin-chat/myelin/storage"
)

// The public room directory: GET/PUT /directory/list/room/{roomId} and
// GET/POST /publicRooms (?server= of another server asks it over federation). The
// listing itself is roomserver/directory's, shared with the federation API.

// getDirectoryListRoom serves GET /directory/list/room/{roomId}.
func (s *Server) getDirectoryListRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	if _, err := s.rooms.RoomInfo(ctx, roomID); err != nil {
		return nil, err
	}
	public, err := storage.IsRoomPublished(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	vis := "private"
	if public {
		vis = "public"
	}
	return map[string]any{"visibility": vis}, nil
}

// putDirectoryListRoom serves PUT /directory/list/room/{roomId} {visibility}: room
// members who may send m.room.canonical_alias, and server admins, may change it.
func (s *Server) putDirectoryListRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Visibility == "" {
		body.Visibility = "public"
	}
	if body.Visibility != "public" && body.Visibility != "private" {
		return nil, httputil.InvalidParam("visibility must be public or private")
	}
	if _, err := s.rooms.RoomInfo(ctx, roomID); err != nil {
		return nil, err
	}
	if !d.IsAdmin {
		if err := s.requireRoomPower(ctx, roomID, d.UserID, spec.MRoomCanonicalAlias, "change the room's directory visibility"); err != nil {
			return nil, err
		}
	}
	if err := storage.SetRoomPublished(ctx, s.db, roomID, body.Visibility == "public"); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// requireRoomPower checks that userID is joined to the room and may send the state
// event type there: 403 M_FORBIDDEN otherwise.
func (s *Server) requireRoomPower(ctx context.Context, roomID, userID, stateType, what string) error {
	membership, _, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if membership != spec.Join {
		return httputil.Forbidden("You must be in the room to %s", what)
	}
	ok, _, err := s.rooms.PowerToSend(ctx, roomID, userID, stateType, true)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.Forbidden("You do not have the power to %s", what)
	}
	return nil
}

// publicRoomsRequest is the body of POST /publicRooms (GET uses the query), with the
// server query parameter.
type publicRoomsRequest struct {
	directory.PublicRoomsRequest
	Server string `json:"-"`
}

// getPublicRooms serves GET /publicRooms?limit&since&server.
func (s *Server) getPublicRooms(r *http.Request) (any, error) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, httputil.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.Server = q.Get("server")
	return s.publicRooms(r.Context(), req)
}

// postPublicRooms serves POST /publicRooms?server {limit, since, filter, ...}.
func (s *Server) postPublicRooms(r *http.Request) (any, error) {
	var req publicRoomsRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	req.Server = r.URL.Query().Get("server")
	return s.publicRooms(r.Context(), req)
}

func (s *Server) publicRooms(ctx context.Context, req publicRoomsRequest) (any, error) {
	if req.Server != "" && req.Server != s.cfg.ServerName {
		if s.remote == nil {
			return nil, httputil.NotFound("Cannot query the room directory of %s", req.Server)
		}
		return s.remote.PublicRooms(ctx, req.Server, req.PublicRoomsRequest)
	}
	return s.dir.PublicRooms(ctx, req.PublicRoomsRequest)
}
