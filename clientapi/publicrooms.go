package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// The public room directory: GET/PUT /directory/list/room/{roomId} and
// GET/POST /publicRooms. Only this server's directory is served (no federation yet).

// roomSummary is a room as the public room directory and the space hierarchy show it.
type roomSummary struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
	RoomVersion      string `json:"room_version,omitempty"`
	Encryption       string `json:"encryption,omitempty"`
}

// summarizeRoom reads a room's summary from its current state.
func (s *Server) summarizeRoom(ctx context.Context, roomID string) (*roomSummary, error) {
	sum := &roomSummary{RoomID: roomID, JoinRule: spec.Invite}
	str := func(evType, key string, dst *string) error {
		ev, err := s.rooms.CurrentStateEvent(ctx, roomID, evType, "")
		if err != nil || ev == nil {
			return err
		}
		var c map[string]any
		if json.Unmarshal(ev.Content(), &c) == nil {
			if v, ok := c[key].(string); ok {
				*dst = v
			}
		}
		return nil
	}
	var hv, guest, alias string
	for _, f := range []struct {
		typ, key string
		dst      *string
	}{
		{spec.MRoomName, "name", &sum.Name},
		{spec.MRoomTopic, "topic", &sum.Topic},
		{"m.room.avatar", "url", &sum.AvatarURL},
		{spec.MRoomCanonicalAlias, "alias", &alias},
		{spec.MRoomJoinRules, "join_rule", &sum.JoinRule},
		{spec.MRoomHistoryVisibility, "history_visibility", &hv},
		{spec.MRoomGuestAccess, "guest_access", &guest},
		{spec.MRoomCreate, "type", &sum.RoomType},
		{spec.MRoomCreate, "room_version", &sum.RoomVersion},
		{spec.MRoomEncryption, "algorithm", &sum.Encryption},
	} {
		if err := str(f.typ, f.key, f.dst); err != nil {
			return nil, err
		}
	}
	if sum.RoomVersion == "" {
		sum.RoomVersion = "1"
	}
	sum.CanonicalAlias = alias
	sum.WorldReadable = hv == "world_readable"
	sum.GuestCanJoin = guest == "can_join"
	members, err := s.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	sum.NumJoinedMembers = len(members)
	return sum, nil
}

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

// publicRoomsRequest is the body of POST /publicRooms (GET uses the query).
type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Server string `json:"-"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
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

// maxPublicRoomsLimit caps one page of the directory.
const maxPublicRoomsLimit = 500

func (s *Server) publicRooms(ctx context.Context, req publicRoomsRequest) (any, error) {
	if req.Server != "" && req.Server != s.cfg.ServerName {
		return nil, httputil.NotFound("Cannot query the room directory of %s", req.Server)
	}
	if req.ThirdPartyInstanceID != "" {
		// No third-party networks are bridged here: their directories are empty.
		return map[string]any{"chunk": []any{}, "total_room_count_estimate": 0}, nil
	}
	limit := maxPublicRoomsLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httputil.InvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, maxPublicRoomsLimit)
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "o") {
			return nil, httputil.InvalidParam("Invalid since token")
		}
		offset = n
	}
	ids, err := storage.PublishedRooms(ctx, s.db)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
	rooms := make([]*roomSummary, 0, len(ids))
	for _, id := range ids {
		sum, err := s.summarizeRoom(ctx, id)
		if err != nil {
			var me spec.MatrixError
			if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
				continue
			}
			return nil, err
		}
		if !matchRoomTypes(sum.RoomType, req.Filter.RoomTypes) {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(sum.Name), term) &&
			!strings.Contains(strings.ToLower(sum.Topic), term) &&
			!strings.Contains(strings.ToLower(sum.CanonicalAlias), term) &&
			!strings.Contains(strings.ToLower(sum.RoomID), term) {
			continue
		}
		rooms = append(rooms, sum)
	}
	sort.SliceStable(rooms, func(i, j int) bool {
		if rooms[i].NumJoinedMembers != rooms[j].NumJoinedMembers {
			return rooms[i].NumJoinedMembers > rooms[j].NumJoinedMembers
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	resp := map[string]any{"total_room_count_estimate": len(rooms)}
	start := min(offset, len(rooms))
	end := min(start+limit, len(rooms))
	chunk := rooms[start:end]
	if end < len(rooms) {
		resp["next_batch"] = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(0, start-limit))
	}
	resp["chunk"] = chunk
	return resp, nil
}

// matchRoomTypes applies filter.room_types: a null entry stands for rooms without a
// type; no filter matches every room.
func matchRoomTypes(roomType string, types []*string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if (t == nil && roomType == "") || (t != nil && *t == roomType) {
			return true
		}
	}
	return false
}
