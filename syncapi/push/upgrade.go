package push

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver"
)

// Room upgrades: when a local user joins a room whose m.room.create names a
// predecessor, their room-specific push rules for the predecessor are copied for the
// new room (spec: Room Upgrades, "server behaviour": the user's settings follow them),
// whether the upgrade was made here, by hand (createRoom with a predecessor, then a
// tombstone), or on another server and joined over federation.

// errUnchanged aborts a rules transaction that has nothing to write.
var errUnchanged = errors.New("push rules unchanged")

// SetAccountDataNotifier sets what is told that a user's m.push_rules account data
// changed outside a client request (the sync service, to wake the user's /sync).
func (s *Service) SetAccountDataNotifier(fn func(userID string)) { s.accountData.Store(&fn) }

// noteLocalJoin starts the copy of a joining local user's rules from the room's
// predecessor. Called from OnNewEvent (the roomserver's commit goroutine): only the
// cheap checks happen here.
func (s *Service) noteLocalJoin(ev roomserver.OutputEvent) {
	e := ev.Event
	if ev.OutOfBand || e.Type() != spec.MRoomMember || e.Membership != spec.Join || e.StateKey() == nil {
		return
	}
	userID := *e.StateKey()
	if !strings.HasSuffix(userID, ":"+s.serverName) {
		return
	}
	go func() {
		if err := s.carryOverRoomRules(context.Background(), userID, e.RoomID().String(), e.EventID()); err != nil {
			s.log.WithError(err).WithField("room_id", e.RoomID().String()).Warn("copy push rules from the predecessor room")
		}
	}()
}

// carryOverRoomRules copies the user's room rule for the predecessor of roomID (as of
// the join event) to roomID, unless the user already has a rule for roomID.
func (s *Service) carryOverRoomRules(ctx context.Context, userID, roomID, joinEventID string) error {
	create, err := s.rooms.StateEventAt(ctx, joinEventID, spec.MRoomCreate, "", true)
	if err != nil || create == nil {
		return err
	}
	var c struct {
		Predecessor *struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if json.Unmarshal(create.Content(), &c) != nil || c.Predecessor == nil || c.Predecessor.RoomID == "" || c.Predecessor.RoomID == roomID {
		return nil
	}
	old := c.Predecessor.RoomID
	// Most joins are of rooms without a rule for the predecessor: read before writing.
	u, err := loadUserRules(ctx, s.db, userID)
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(u.Rules[KindRoom], func(r *StoredRule) bool { return r.RuleID == old }) {
		return nil
	}
	err = s.modify(ctx, userID, func(u *UserRules, _ *Ruleset) error {
		list := u.Rules[KindRoom]
		if slices.ContainsFunc(list, func(r *StoredRule) bool { return r.RuleID == roomID }) {
			return errUnchanged
		}
		i := slices.IndexFunc(list, func(r *StoredRule) bool { return r.RuleID == old })
		if i < 0 {
			return errUnchanged
		}
		cp := *list[i]
		cp.RuleID = roomID
		cp.Actions = slices.Clone(cp.Actions)
		// Right after the old room's rule: the same importance.
		u.Rules[KindRoom] = slices.Insert(list, i+1, &cp)
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	if err != nil {
		return err
	}
	if fn := s.accountData.Load(); fn != nil {
		(*fn)(userID)
	}
	return nil
}
