package clientapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver/directory"
)

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy: the rooms of a space tree, depth
// first, from this server's copy of the rooms, and through federation (/v1/hierarchy
// of the servers a space names in via) for rooms this server does not know. Rooms the
// user could not see or join are omitted. The walk is roomserver/directory's.

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	defaultHierarchyDepth = 10
	maxHierarchyDepth     = 50
	// maxHierarchyRooms bounds the rooms one walk visits.
	maxHierarchyRooms = 1000
	// maxRemoteHierarchyCalls bounds the federation requests of one walk.
	maxRemoteHierarchyCalls = 20
)

// canSeeInHierarchy applies the spec's rule for listing a room to a user: joined or
// invited, a public or knockable room, world-readable history, or a restricted room
// whose allow list names a room the user is joined to.
func (s *Server) canSeeInHierarchy(ctx context.Context, sum *directory.Summary, userID string) (bool, error) {
	membership, _, err := s.rooms.Membership(ctx, sum.RoomID, userID)
	if err != nil && !directory.IsNotFound(err) { // a remote room: no membership here
		return false, err
	}
	switch {
	case membership == spec.Ban:
		return false, nil
	case membership == spec.Join || membership == spec.Invite:
		return true, nil
	case sum.Open():
		return true, nil
	case sum.JoinRule == spec.Restricted:
		allowed := sum.AllowedRoomIDs
		if allowed == nil {
			if allowed, err = s.dir.AllowedRooms(ctx, sum.RoomID); err != nil {
				return false, err
			}
		}
		for _, id := range allowed {
			if m, _, err := s.rooms.Membership(ctx, id, userID); err == nil && m == spec.Join {
				return true, nil
			}
		}
	}
	return false, nil
}

// getHierarchy serves GET /rooms/{roomId}/hierarchy?suggested_only&limit&max_depth&from.
func (s *Server) getHierarchy(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	suggestedOnly := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return nil, httputil.InvalidParam("suggested_only must be true or false")
	}
	limit := defaultHierarchyLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, httputil.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxHierarchyLimit)
	}
	maxDepth := defaultHierarchyDepth
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = min(n, maxHierarchyDepth)
	}
	offset := 0
	if v := q.Get("from"); v != "" {
		var off, depth, sugg int
		if n, err := fmt.Sscanf(v, "h%d_%d_%d", &off, &depth, &sugg); err != nil || n != 3 || off < 0 {
			return nil, httputil.InvalidParam("Unknown pagination token")
		}
		if depth != maxDepth || (sugg == 1) != suggestedOnly {
			return nil, httputil.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		offset = off
	}

	// The root must be visible to the user (403 otherwise, also when unknown).
	forbidden := httputil.Forbidden("You are not allowed to view this room")
	source := s.hierarchySource(d.UserID, suggestedOnly)
	root, ok, err := source(ctx, roomID, nil)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, forbidden
	}
	rooms, err := directory.Walk(ctx, root, directory.WalkOptions{SuggestedOnly: suggestedOnly, MaxDepth: maxDepth, MaxRooms: maxHierarchyRooms}, source)
	if err != nil {
		return nil, err
	}
	start := min(offset, len(rooms))
	end := min(start+limit, len(rooms))
	resp := map[string]any{"rooms": rooms[start:end]}
	if end < len(rooms) {
		sugg := 0
		if suggestedOnly {
			sugg = 1
		}
		resp["next_batch"] = fmt.Sprintf("h%d_%d_%d", end, maxDepth, sugg)
	}
	return resp, nil
}

// getRoomSummary serves GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (v1.15).
// Anonymous callers get rooms that are public, knockable or world readable; users also
// get the rooms they could see in a space hierarchy and those they have a membership
// of (with that membership). Other rooms, and rooms this server does not know, are
// 404 M_NOT_FOUND so that their existence does not leak.
func (s *Server) getRoomSummary(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	notFound := httputil.NotFound("Room not found")
	roomID, err := s.resolveRoomIDOrAlias(ctx, pathVar(r, "roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	sum, err := s.dir.Summarize(ctx, roomID)
	if err != nil {
		if e, ok := httputil.AsError(err); ok && e.Code == string(spec.ErrorNotFound) {
			return nil, notFound
		}
		return nil, err
	}
	if d == nil {
		if !sum.Open() {
			return nil, notFound
		}
		return sum, nil
	}
	membership, _, err := s.rooms.Membership(ctx, roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if membership == "" {
		visible, err := s.canSeeInHierarchy(ctx, sum, d.UserID)
		if err != nil {
			return nil, err
		}
		if !visible {
			return nil, notFound
		}
		membership = spec.Leave
	}
	return struct {
		*directory.Summary
		Membership string `json:"membership"`
	}{sum, membership}, nil
}

// hierarchySource gives the hierarchy walk the rooms userID may see: from this
// server's state when it knows the room (ours is the authority on its members), else
// from the servers named in via over federation (at most maxRemoteHierarchyCalls per
// walk; the remote server has already left out what we may not see).
func (s *Server) hierarchySource(userID string, suggestedOnly bool) directory.RoomSource {
	calls := 0
	return func(ctx context.Context, roomID string, via []string) (*directory.HierarchyRoom, bool, error) {
		sum, err := s.dir.Summarize(ctx, roomID)
		if err == nil {
			if ok, err := s.canSeeInHierarchy(ctx, sum, userID); err != nil || !ok {
				return nil, false, err
			}
			children, err := s.dir.SpaceChildren(ctx, roomID)
			if err != nil {
				return nil, false, err
			}
			return &directory.HierarchyRoom{Summary: sum, ChildrenState: children}, true, nil
		}
		if !directory.IsNotFound(err) {
			return nil, false, err
		}
		if s.remote == nil || calls >= maxRemoteHierarchyCalls {
			return nil, false, nil
		}
		if len(via) == 0 {
			// The root: a room ID of the older form names the server that created it.
			if rid, err := spec.NewRoomID(roomID); err == nil && rid.Domain() != "" {
				via = []string{string(rid.Domain())}
			}
		}
		if len(via) == 0 {
			return nil, false, nil
		}
		calls++
		h, err := s.remote.Hierarchy(ctx, roomID, via, suggestedOnly)
		if err != nil || h == nil || h.Room.Summary == nil {
			return nil, false, nil // unreachable or refused: leave the room out
		}
		if ok, err := s.canSeeInHierarchy(ctx, h.Room.Summary, userID); err != nil || !ok {
			return nil, false, err
		}
		h.Room.ChildrenState = directory.SortChildren(h.Room.ChildrenState)
		return &h.Room, true, nil
	}
}
