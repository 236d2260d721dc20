package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
)

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy: the rooms of a space tree, depth
// first, from this server's copy of the rooms (children unknown here are left out:
// no federation yet). Rooms the user could not see or join are omitted.

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	defaultHierarchyDepth = 10
	maxHierarchyDepth     = 50
	// maxHierarchyRooms bounds the rooms one walk visits.
	maxHierarchyRooms = 1000
)

// hierarchyRoom is one room of the answer.
type hierarchyRoom struct {
	*roomSummary
	ChildrenState []strippedChild `json:"children_state"`
}

// strippedChild is an m.space.child event as children_state shows it.
type strippedChild struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
	order          string
	suggested      bool
}

// spaceChildren returns the valid m.space.child events of a room (a non-empty via
// list), in the spec's order: by content.order, then timestamp, then room ID.
func (s *Server) spaceChildren(ctx context.Context, roomID string) ([]strippedChild, error) {
	evs, err := s.rooms.CurrentStateOfType(ctx, roomID, "m.space.child")
	if err != nil {
		return nil, err
	}
	var out []strippedChild
	for _, ev := range evs {
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 || ev.StateKey() == nil {
			continue
		}
		if _, err := spec.NewRoomID(*ev.StateKey()); err != nil {
			continue
		}
		order, _ := c.Order.(string)
		if !validChildOrder(order) {
			order = ""
		}
		out = append(out, strippedChild{
			Type: "m.space.child", StateKey: *ev.StateKey(), Content: json.RawMessage(ev.Content()),
			Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS()),
			order: order, suggested: c.Suggested,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.OriginServerTS != b.OriginServerTS {
			return a.OriginServerTS < b.OriginServerTS
		}
		return a.StateKey < b.StateKey
	})
	return out, nil
}

// validChildOrder: at most 50 characters in the printable ASCII range.
func validChildOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

// canSeeInHierarchy applies the spec's rule for listing a room to a user: joined or
// invited, a public or knockable room, world-readable history, or a restricted room
// whose allow list names a room the user is joined to.
func (s *Server) canSeeInHierarchy(ctx context.Context, sum *roomSummary, userID string) (bool, error) {
	membership, _, err := s.rooms.Membership(ctx, sum.RoomID, userID)
	if err != nil {
		return false, err
	}
	switch {
	case membership == spec.Ban:
		return false, nil
	case membership == spec.Join || membership == spec.Invite:
		return true, nil
	case sum.JoinRule == spec.Public || sum.JoinRule == spec.Knock || sum.JoinRule == "knock_restricted" || sum.WorldReadable:
		return true, nil
	case sum.JoinRule == spec.Restricted:
		ev, err := s.rooms.CurrentStateEvent(ctx, sum.RoomID, spec.MRoomJoinRules, "")
		if err != nil || ev == nil {
			return false, err
		}
		var c struct {
			Allow []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		}
		_ = json.Unmarshal(ev.Content(), &c)
		for _, a := range c.Allow {
			if a.Type != "m.room_membership" || a.RoomID == "" {
				continue
			}
			if m, _, err := s.rooms.Membership(ctx, a.RoomID, userID); err == nil && m == spec.Join {
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
	root, err := s.summarizeRoom(ctx, roomID)
	if err != nil {
		if e, ok := httputil.AsError(err); ok && e.Code == string(spec.ErrorNotFound) {
			return nil, httputil.Forbidden("You are not allowed to view this room")
		}
		return nil, err
	}
	if ok, err := s.canSeeInHierarchy(ctx, root, d.UserID); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.Forbidden("You are not allowed to view this room")
	}

	var rooms []hierarchyRoom
	seen := map[string]bool{}
	var walk func(sum *roomSummary, depth int) error
	walk = func(sum *roomSummary, depth int) error {
		seen[sum.RoomID] = true
		children, err := s.spaceChildren(ctx, sum.RoomID)
		if err != nil {
			return err
		}
		if children == nil {
			children = []strippedChild{}
		}
		rooms = append(rooms, hierarchyRoom{roomSummary: sum, ChildrenState: children})
		if depth >= maxDepth {
			return nil
		}
		for _, c := range children {
			if len(rooms) >= maxHierarchyRooms {
				return nil
			}
			if seen[c.StateKey] || (suggestedOnly && !c.suggested) {
				continue
			}
			child, err := s.summarizeRoom(ctx, c.StateKey)
			if err != nil {
				if e, ok := httputil.AsError(err); ok && e.Code == string(spec.ErrorNotFound) {
					continue // not known to this server
				}
				return err
			}
			if ok, err := s.canSeeInHierarchy(ctx, child, d.UserID); err != nil {
				return err
			} else if !ok {
				continue
			}
			if err := walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, 0); err != nil {
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
	sum, err := s.summarizeRoom(ctx, roomID)
	if err != nil {
		if e, ok := httputil.AsError(err); ok && e.Code == string(spec.ErrorNotFound) {
			return nil, notFound
		}
		return nil, err
	}
	open := sum.JoinRule == spec.Public || sum.JoinRule == spec.Knock || sum.JoinRule == "knock_restricted" || sum.WorldReadable
	if d == nil {
		if !open {
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
		*roomSummary
		Membership string `json:"membership"`
	}{sum, membership}, nil
}
