// Package directory answers the questions about rooms that the client API and the
// federation API share: room summaries (public room directory, space hierarchy, room
// summary), the published room list with its filters and pagination, the children of a
// space, the servers to ask to join a room, and the walk of a space tree. Who may see
// what is decided by the callers (a user for the client API, a server for federation).
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Rooms is what the directory needs of the roomserver.
type Rooms interface {
	CurrentStateEvent(ctx context.Context, roomID, eventType, stateKey string) (*roomserver.Event, error)
	CurrentStateOfType(ctx context.Context, roomID, eventType string) ([]*roomserver.Event, error)
	JoinedMembers(ctx context.Context, roomID string) ([]string, error)
}

// Directory reads room summaries and the published room list.
type Directory struct {
	db         *storage.DB
	rooms      Rooms
	serverName string
}

// New builds a Directory for the server named serverName.
func New(db *storage.DB, rooms Rooms, serverName string) *Directory {
	return &Directory{db: db, rooms: rooms, serverName: serverName}
}

// Summary is a room as the public room directory and the space hierarchy show it.
type Summary struct {
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
	// AllowedRoomIDs are the rooms whose members may join a restricted room (the
	// m.room_membership entries of its join rules); omitted for other join rules.
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// Open reports whether anyone may see the room in a directory or hierarchy: public,
// knockable or world-readable.
func (s *Summary) Open() bool {
	return s.JoinRule == spec.Public || s.JoinRule == spec.Knock || s.JoinRule == "knock_restricted" || s.WorldReadable
}

// Summarize reads a room's summary from its current state (M_NOT_FOUND for rooms
// this server does not know).
func (d *Directory) Summarize(ctx context.Context, roomID string) (*Summary, error) {
	sum := &Summary{RoomID: roomID, JoinRule: spec.Invite}
	str := func(evType, key string, dst *string) error {
		ev, err := d.rooms.CurrentStateEvent(ctx, roomID, evType, "")
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
	var hv, guest string
	for _, f := range []struct {
		typ, key string
		dst      *string
	}{
		{spec.MRoomName, "name", &sum.Name},
		{spec.MRoomTopic, "topic", &sum.Topic},
		{"m.room.avatar", "url", &sum.AvatarURL},
		{spec.MRoomCanonicalAlias, "alias", &sum.CanonicalAlias},
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
	sum.WorldReadable = hv == roomserver.VisibilityWorldReadable
	sum.GuestCanJoin = guest == "can_join"
	members, err := d.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	sum.NumJoinedMembers = len(members)
	if sum.JoinRule == spec.Restricted || sum.JoinRule == "knock_restricted" {
		if sum.AllowedRoomIDs, err = d.AllowedRooms(ctx, roomID); err != nil {
			return nil, err
		}
	}
	return sum, nil
}

// AllowedRooms returns the room IDs of the m.room_membership entries of a restricted
// room's join rules.
func (d *Directory) AllowedRooms(ctx context.Context, roomID string) ([]string, error) {
	ev, err := d.rooms.CurrentStateEvent(ctx, roomID, spec.MRoomJoinRules, "")
	if err != nil || ev == nil {
		return nil, err
	}
	var c struct {
		Allow []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	var out []string
	for _, a := range c.Allow {
		if a.Type == "m.room_membership" && a.RoomID != "" {
			out = append(out, a.RoomID)
		}
	}
	return out, nil
}

// RoomServers lists servers that can be asked to join a room: ours first, then the
// servers of its joined members, sorted.
func (d *Directory) RoomServers(ctx context.Context, roomID string) []string {
	out := []string{d.serverName}
	members, err := d.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return out
	}
	seen := map[string]bool{d.serverName: true}
	var others []string
	for _, m := range members {
		if u, err := spec.NewUserID(m, false); err == nil && !seen[string(u.Domain())] {
			seen[string(u.Domain())] = true
			others = append(others, string(u.Domain()))
		}
	}
	sort.Strings(others)
	return append(out, others...)
}

// PublicRoomsRequest is a query of the published room list (client and federation
// /publicRooms).
type PublicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// PublicRoomsPage is a page of the published room list, as /publicRooms answers it.
type PublicRoomsPage struct {
	Chunk                  []*Summary `json:"chunk"`
	NextBatch              string     `json:"next_batch,omitempty"`
	PrevBatch              string     `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int        `json:"total_room_count_estimate"`
}

// MaxPublicRoomsLimit caps one page of the directory.
const MaxPublicRoomsLimit = 500

// PublicRooms returns a page of the rooms published in this server's directory,
// filtered by name/topic/alias/ID and room type, by member count (most first).
func (d *Directory) PublicRooms(ctx context.Context, req PublicRoomsRequest) (*PublicRoomsPage, error) {
	if req.ThirdPartyInstanceID != "" {
		// No third-party networks are bridged here: their directories are empty.
		return &PublicRoomsPage{Chunk: []*Summary{}}, nil
	}
	limit := MaxPublicRoomsLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, spec.InvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, MaxPublicRoomsLimit)
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "o") {
			return nil, spec.InvalidParam("Invalid since token")
		}
		offset = n
	}
	ids, err := storage.PublishedRooms(ctx, d.db)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
	rooms := make([]*Summary, 0, len(ids))
	for _, id := range ids {
		sum, err := d.Summarize(ctx, id)
		if err != nil {
			if IsNotFound(err) {
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
	page := &PublicRoomsPage{TotalRoomCountEstimate: len(rooms)}
	start := min(offset, len(rooms))
	end := min(start+limit, len(rooms))
	page.Chunk = rooms[start:end]
	if end < len(rooms) {
		page.NextBatch = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		page.PrevBatch = "o" + strconv.Itoa(max(0, start-limit))
	}
	return page, nil
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

// IsNotFound reports whether err is M_NOT_FOUND.
func IsNotFound(err error) bool {
	var me spec.MatrixError
	return errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound
}
