package directory

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Child is an m.space.child event as a hierarchy's children_state shows it.
type Child struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

type childContent struct {
	Via       []string `json:"via"`
	Order     any      `json:"order"`
	Suggested bool     `json:"suggested"`
}

func (c Child) parsed() (childContent, bool) {
	var cc childContent
	if json.Unmarshal(c.Content, &cc) != nil || len(cc.Via) == 0 {
		return cc, false
	}
	if _, err := spec.NewRoomID(c.StateKey); err != nil {
		return cc, false
	}
	return cc, true
}

// Via returns the servers to ask about the child room.
func (c Child) Via() []string { cc, _ := c.parsed(); return cc.Via }

// Suggested reports content.suggested.
func (c Child) Suggested() bool { cc, _ := c.parsed(); return cc.Suggested }

func (c Child) order() string {
	cc, _ := c.parsed()
	o, _ := cc.Order.(string)
	if !validChildOrder(o) {
		return ""
	}
	return o
}

// SpaceChildren returns the valid m.space.child events of a room (a non-empty via
// list), in the spec's order.
func (d *Directory) SpaceChildren(ctx context.Context, roomID string) ([]Child, error) {
	evs, err := d.rooms.CurrentStateOfType(ctx, roomID, "m.space.child")
	if err != nil {
		return nil, err
	}
	out := []Child{}
	for _, ev := range evs {
		if ev.StateKey() == nil {
			continue
		}
		out = append(out, Child{Type: "m.space.child", StateKey: *ev.StateKey(), Content: json.RawMessage(ev.Content()),
			Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS())})
	}
	return SortChildren(out), nil
}

// SortChildren keeps the valid children (room ID state key, non-empty via) in the
// spec's order: by content.order, then timestamp, then room ID.
func SortChildren(in []Child) []Child {
	out := make([]Child, 0, len(in))
	for _, c := range in {
		if _, ok := c.parsed(); ok {
			out = append(out, c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		ao, bo := a.order(), b.order()
		if (ao != "") != (bo != "") {
			return ao != ""
		}
		if ao != bo {
			return ao < bo
		}
		if a.OriginServerTS != b.OriginServerTS {
			return a.OriginServerTS < b.OriginServerTS
		}
		return a.StateKey < b.StateKey
	})
	return out
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

// HierarchyRoom is one room of a space hierarchy.
type HierarchyRoom struct {
	*Summary
	ChildrenState []Child `json:"children_state"`
}

// RoomSource gives the walk a room's summary and children; ok false leaves the room
// out (unknown, or not visible to whoever asks). via are the servers the parent names
// for the room (empty for the root).
type RoomSource func(ctx context.Context, roomID string, via []string) (room *HierarchyRoom, ok bool, err error)

// WalkOptions bound a hierarchy walk.
type WalkOptions struct {
	SuggestedOnly bool
	MaxDepth      int
	// MaxRooms bounds the rooms one walk returns.
	MaxRooms int
}

// IsSpace reports whether the room is a space (room_type m.space): only spaces have
// children in a hierarchy.
func (r *HierarchyRoom) IsSpace() bool { return r.Summary != nil && r.RoomType == "m.space" }

// Walk returns the rooms of the space tree under root, depth first in the children's
// order, each room once. The root must be given by source (ok true). The children of
// rooms that are not spaces are ignored (their children_state is empty), and with
// SuggestedOnly only the suggested children are listed and followed.
func Walk(ctx context.Context, root *HierarchyRoom, opts WalkOptions, source RoomSource) ([]HierarchyRoom, error) {
	var rooms []HierarchyRoom
	seen := map[string]bool{}
	var walk func(r *HierarchyRoom, depth int) error
	walk = func(r *HierarchyRoom, depth int) error {
		seen[r.RoomID] = true
		children := []Child{}
		if r.IsSpace() {
			for _, c := range r.ChildrenState {
				if !opts.SuggestedOnly || c.Suggested() {
					children = append(children, c)
				}
			}
		}
		r.ChildrenState = children
		rooms = append(rooms, *r)
		if depth >= opts.MaxDepth {
			return nil
		}
		for _, c := range r.ChildrenState {
			if opts.MaxRooms > 0 && len(rooms) >= opts.MaxRooms {
				return nil
			}
			if seen[c.StateKey] {
				continue
			}
			child, ok, err := source(ctx, c.StateKey, c.Via())
			if err != nil {
				return err
			}
			if !ok || seen[child.RoomID] {
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
	return rooms, nil
}

// RemoteHierarchy is the federation /hierarchy answer: the room, its visible
// children's summaries and the children the asking server may not see.
type RemoteHierarchy struct {
	Room                 HierarchyRoom `json:"room"`
	Children             []*Summary    `json:"children"`
	InaccessibleChildren []string      `json:"inaccessible_children"`
}
