package roomserver

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// History visibility values.
const (
	VisibilityWorldReadable = "world_readable"
	VisibilityShared        = "shared"
	VisibilityInvited       = "invited"
	VisibilityJoined        = "joined"
)

// visibilityRank orders visibilities from the most to the least permissive.
var visibilityRank = map[string]int{
	VisibilityWorldReadable: 0,
	VisibilityShared:        1,
	VisibilityInvited:       2,
	VisibilityJoined:        3,
}

// HistoryVisible is the spec's rule for whether a user may see an event:
//   - world_readable: anyone;
//   - the user's membership at the event was join: yes;
//   - shared: if the user joined the room at some point after the event;
//   - invited: if the user's membership at the event was invite;
//   - otherwise no.
//
// visibility is the room's history visibility at the event, membership the user's
// membership just after the event, and joinedLater whether the user joined after it.
// Every read path that serves events to users goes through this function.
func HistoryVisible(visibility, membership string, joinedLater bool) bool {
	if _, ok := visibilityRank[visibility]; !ok {
		visibility = VisibilityShared // unknown values count as the default
	}
	switch {
	case visibility == VisibilityWorldReadable:
		return true
	case membership == spec.Join:
		return true
	case visibility == VisibilityShared && joinedLater:
		return true
	case visibility == VisibilityInvited && membership == spec.Invite:
		return true
	}
	return false
}

// VisibleEvents returns the events userID may see, in the same order. Events of
// several rooms may be mixed. Outliers, rejected and soft-failed events are never
// visible.
func (rs *Roomserver) VisibleEvents(ctx context.Context, userID string, events []*Event) ([]*Event, error) {
	type roomInfo struct {
		lastJoin  int64
		joinedNow bool
		loaded    bool
	}
	rooms := map[int64]*roomInfo{}
	type atState struct{ visibility, membership string }
	cache := map[[2]int64]atState{}
	var memberKey, hvKey state.Key
	var haveMemberKey, haveHVKey bool
	var err error
	if memberKey, haveMemberKey, err = rs.stateKey(ctx, spec.MRoomMember, userID, false); err != nil {
		return nil, err
	}
	if hvKey, haveHVKey, err = rs.stateKey(ctx, spec.MRoomHistoryVisibility, "", false); err != nil {
		return nil, err
	}
	lookup := func(snapNID int64, key state.Key, have bool) (*Event, error) {
		if !have || snapNID == 0 {
			return nil, nil
		}
		snap, err := rs.states.Snapshot(ctx, snapNID)
		if err != nil {
			return nil, err
		}
		nid, ok, err := rs.states.Lookup(ctx, snap, key)
		if err != nil || !ok {
			return nil, err
		}
		return rs.eventByNID(ctx, nid)
	}
	visibilityOf := func(ev *Event) string {
		if ev == nil {
			return VisibilityShared
		}
		if ev.NID != 0 {
			if v, ok := rs.visibilities.Get(ev.NID); ok {
				return v
			}
		}
		v := historyVisibilityOf(ev)
		if ev.NID != 0 {
			rs.visibilities.Add(ev.NID, v)
		}
		return v
	}

	out := make([]*Event, 0, len(events))
	for _, ev := range events {
		if ev.Outlier || ev.Rejected || ev.SoftFailed {
			continue
		}
		if ev.Type() == spec.MRoomMember && ev.StateKeyEquals(userID) {
			out = append(out, ev) // users always see their own membership changes
			continue
		}
		k := [2]int64{ev.stateBefore, ev.stateAfter}
		at, ok := cache[k]
		if !ok {
			hvBefore, err := lookup(ev.stateBefore, hvKey, haveHVKey)
			if err != nil {
				return nil, err
			}
			at.visibility = visibilityOf(hvBefore)
			if ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals("") {
				// The most permissive of the old and new visibility applies to the change itself.
				if v := visibilityOf(ev); visibilityRank[v] < visibilityRank[at.visibility] {
					at.visibility = v
				}
			}
			member, err := lookup(ev.stateAfter, memberKey, haveMemberKey)
			if err != nil {
				return nil, err
			}
			if member != nil {
				at.membership = member.Membership
			}
			cache[k] = at
		}
		joinedLater := false
		if at.visibility == VisibilityShared && at.membership != spec.Join {
			ri := rooms[ev.RoomNID]
			if ri == nil {
				ri = &roomInfo{}
				rooms[ev.RoomNID] = ri
			}
			if !ri.loaded {
				if ri.lastJoin, err = roomstore.LastJoinPos(ctx, rs.db, ev.RoomNID, userID); err != nil {
					return nil, err
				}
				if ri.joinedNow, err = rs.joinedNow(ctx, ev.RoomNID, userID); err != nil {
					return nil, err
				}
				ri.loaded = true
			}
			// Joined after the event: a join that arrived after it, or being a member now
			// (an event of another server concurrent with the join, received after it,
			// has the user not joined at the event in the DAG, yet they are a member
			// after it was sent).
			joinedLater = ri.joinedNow || ri.lastJoin > ev.StreamPos
		}
		if HistoryVisible(at.visibility, at.membership, joinedLater) {
			out = append(out, ev)
		}
	}
	return out, nil
}

// joinedNow reports whether userID is currently joined to the room roomNID.
func (rs *Roomserver) joinedNow(ctx context.Context, roomNID int64, userID string) (bool, error) {
	rb, err := rs.roomByNID(ctx, roomNID)
	if err != nil {
		return false, err
	}
	r, err := rs.room(ctx, rb.id)
	if err != nil {
		return false, err
	}
	m, _, err := rs.membershipIn(ctx, r.head.Load(), userID)
	return m == spec.Join, err
}

// CanSeeEvent reports whether userID may see ev (see HistoryVisible).
func (rs *Roomserver) CanSeeEvent(ctx context.Context, userID string, ev *Event) (bool, error) {
	vis, err := rs.VisibleEvents(ctx, userID, []*Event{ev})
	return len(vis) == 1, err
}

// VisibleToServer reports, for each event, whether another server may see it (the
// spec's history visibility applied to a server: world_readable and shared history is
// visible; invited history when one of the server's users was invited or joined at the
// event; joined history when one was joined). Federation sends events a server may
// not see redacted, so that its copy of the DAG stays whole.
func (rs *Roomserver) VisibleToServer(ctx context.Context, server spec.ServerName, events []*Event) ([]bool, error) {
	hvKey, haveHVKey, err := rs.stateKey(ctx, spec.MRoomHistoryVisibility, "", false)
	if err != nil {
		return nil, err
	}
	visCache := map[int64]string{}
	memberCache := map[int64]string{} // best membership of the server's users after
	suffix := ":" + string(server)
	out := make([]bool, len(events))
	for i, ev := range events {
		if ev.Outlier {
			continue
		}
		vis, ok := visCache[ev.stateBefore]
		if !ok {
			vis = VisibilityShared
			if haveHVKey && ev.stateBefore != 0 {
				snap, err := rs.states.Snapshot(ctx, ev.stateBefore)
				if err != nil {
					return nil, err
				}
				if nid, found, err := rs.states.Lookup(ctx, snap, hvKey); err != nil {
					return nil, err
				} else if found {
					hv, err := rs.eventByNID(ctx, nid)
					if err != nil {
						return nil, err
					}
					vis = historyVisibilityOf(hv)
				}
			}
			visCache[ev.stateBefore] = vis
		}
		if ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals("") {
			if v := historyVisibilityOf(ev); visibilityRank[v] < visibilityRank[vis] {
				vis = v
			}
		}
		if vis == VisibilityWorldReadable || vis == VisibilityShared {
			out[i] = true
			continue
		}
		best, ok := memberCache[ev.stateAfter]
		if !ok {
			snap, err := rs.states.Snapshot(ctx, ev.stateAfter)
			if err != nil {
				return nil, err
			}
			members, err := rs.stateOfType(ctx, snap, spec.MRoomMember)
			if err != nil {
				return nil, err
			}
			for _, m := range members {
				if sk := m.StateKey(); sk == nil || !strings.HasSuffix(*sk, suffix) {
					continue
				}
				if m.Membership == spec.Join {
					best = spec.Join
					break
				}
				if m.Membership == spec.Invite {
					best = spec.Invite
				}
			}
			memberCache[ev.stateAfter] = best
		}
		out[i] = best == spec.Join || (best == spec.Invite && vis == VisibilityInvited)
	}
	return out, nil
}

// historyVisibilityOf reads an m.room.history_visibility event (shared when absent or
// unknown).
func historyVisibilityOf(ev *Event) string {
	if ev == nil {
		return VisibilityShared
	}
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	if json.Unmarshal(ev.Content(), &c) != nil {
		return VisibilityShared
	}
	if _, ok := visibilityRank[c.HistoryVisibility]; !ok {
		return VisibilityShared
	}
	return c.HistoryVisibility
}
