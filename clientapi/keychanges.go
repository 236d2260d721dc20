package clientapi

import (
	"context"
	"net/http"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi"
)

// keyChangesScanLimit bounds the room events read per room between the two tokens.
const keyChangesScanLimit = 10000

// getKeysChanges is GET /keys/changes?from=&to=: the users sharing a room with the
// requester whose device keys changed between two /sync tokens (or who joined a shared
// room), and the users who no longer share any room with the requester.
func (s *Server) getKeysChanges(r *http.Request) (any, error) {
	q := r.URL.Query()
	fromS, toS := q.Get("from"), q.Get("to")
	if fromS == "" {
		return nil, httputil.MissingParam("from is required")
	}
	from, err := syncapi.ParseToken(fromS)
	if err != nil {
		return nil, httputil.InvalidParam("from: %v", err)
	}
	var to syncapi.Token
	if toS == "" {
		if to, err = s.sync.CurrentToken(r.Context()); err != nil {
			return nil, err
		}
	} else if to, err = syncapi.ParseToken(toS); err != nil {
		return nil, httputil.InvalidParam("to: %v", err)
	}
	changed, left, err := s.keyChanges(r.Context(), requestDevice(r).UserID, from, to)
	if err != nil {
		return nil, err
	}
	return map[string][]string{"changed": changed, "left": left}, nil
}

func (s *Server) keyChanges(ctx context.Context, userID string, from, to syncapi.Token) (changed, left []string, err error) {
	joined, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	shared := map[string]bool{userID: true}
	for _, room := range joined {
		members, err := s.rooms.JoinedMembers(ctx, room)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range members {
			shared[u] = true
		}
	}
	cand, gone := map[string]bool{}, map[string]bool{}
	if from.DeviceLists < to.DeviceLists {
		users, err := storage.DeviceListChangedUsers(ctx, s.db, userID, from.DeviceLists, to.DeviceLists)
		if err != nil {
			return nil, nil, err
		}
		for _, u := range users {
			cand[u] = true
		}
	}
	if from.Events < to.Events {
		// Membership changes between the tokens in the rooms the user is or was in: a
		// join makes the joiner's keys new to us (or everyone's, when we joined); a leave
		// may end the last room we share.
		var rooms []string
		for _, m := range []string{spec.Join, spec.Leave, spec.Ban} {
			ms, err := s.rooms.RoomsOfUser(ctx, userID, m)
			if err != nil {
				return nil, nil, err
			}
			for _, rm := range ms {
				rooms = append(rooms, rm.RoomID)
			}
		}
		for _, room := range rooms {
			evs, err := s.rooms.StreamEvents(ctx, room, from.Events, to.Events, keyChangesScanLimit, false)
			if err != nil {
				return nil, nil, err
			}
			for _, ev := range evs {
				if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
					continue
				}
				target := *ev.StateKey()
				switch ev.Membership {
				case spec.Join:
					if target == userID {
						members, err := s.rooms.JoinedMembers(ctx, room)
						if err != nil {
							return nil, nil, err
						}
						for _, u := range members {
							cand[u] = true
						}
					} else {
						cand[target] = true
					}
				case spec.Leave, spec.Ban:
					if target == userID {
						members, err := s.rooms.JoinedMembers(ctx, room)
						if err != nil {
							return nil, nil, err
						}
						for _, u := range members {
							gone[u] = true
						}
					} else {
						gone[target] = true
					}
				}
			}
		}
	}
	changed, left = []string{}, []string{}
	for u := range cand {
		if shared[u] {
			changed = append(changed, u)
		}
	}
	for u := range gone {
		if !shared[u] {
			left = append(left, u)
		}
	}
	sort.Strings(changed)
	sort.Strings(left)
	return changed, left, nil
}
