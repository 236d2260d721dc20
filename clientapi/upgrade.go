package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// POST /rooms/{roomId}/upgrade {new_version, additional_creators?}: the spec's room
// upgrade. A new room is created with the old one as predecessor and the state listed
// in upgradeCopiedState copied over; the old room gets a tombstone, its power levels
// are raised so ordinary users can no longer speak or invite, its canonical alias is
// cleared, its local aliases and its place in the room directory move to the new room.

// upgradeCopiedState are the state events (with empty state key) carried over.
var upgradeCopiedState = []string{
	spec.MRoomJoinRules,
	spec.MRoomHistoryVisibility,
	spec.MRoomGuestAccess,
	spec.MRoomName,
	spec.MRoomTopic,
	"m.room.avatar",
	spec.MRoomEncryption,
	"m.room.server_acl",
	spec.MRoomCanonicalAlias,
}

// postRoomUpgrade serves POST /rooms/{roomId}/upgrade.
func (s *Server) postRoomUpgrade(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	oldID := pathVar(r, "roomId")
	if _, err := spec.NewRoomID(oldID); err != nil {
		return nil, httputil.InvalidParam("%q is not a valid room ID", oldID)
	}
	var body struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == nil || *body.NewVersion == "" {
		return nil, httputil.MissingParam("new_version is required")
	}
	version := gomatrixserverlib.RoomVersion(*body.NewVersion)
	if !gomatrixserverlib.StableRoomVersion(version) {
		return nil, spec.UnsupportedRoomVersion(fmt.Sprintf("This server does not support room version %q", version))
	}
	newImpl := gomatrixserverlib.MustGetRoomVersion(version)
	for _, u := range body.AdditionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, httputil.InvalidParam("Invalid additional creator %q", u)
		}
	}

	// The upgrader must be in the room and allowed to send the tombstone.
	info, err := s.rooms.RoomInfo(ctx, oldID)
	if err != nil {
		return nil, err
	}
	membership, _, err := s.rooms.Membership(ctx, oldID, d.UserID)
	if err != nil {
		return nil, err
	}
	if membership != spec.Join {
		return nil, httputil.Forbidden("You must be in the room to upgrade it")
	}
	if ok, _, err := s.rooms.PowerToSend(ctx, oldID, d.UserID, "m.room.tombstone", true); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.Forbidden("You do not have the power to upgrade this room")
	}

	// The old room's state to carry over.
	contentOf := func(evType string) (map[string]any, error) {
		ev, err := s.rooms.CurrentStateEvent(ctx, oldID, evType, "")
		if err != nil || ev == nil {
			return nil, err
		}
		var c map[string]any
		if err := json.Unmarshal(ev.Content(), &c); err != nil {
			return nil, nil
		}
		return c, nil
	}
	createContent, err := contentOf(spec.MRoomCreate)
	if err != nil {
		return nil, err
	}
	oldPL, err := contentOf(spec.MRoomPowerLevels)
	if err != nil {
		return nil, err
	}
	creation := map[string]any{"predecessor": map[string]any{"room_id": oldID}}
	// predecessor.event_id is deprecated (spec v1.16): rooms whose ID is the hash of
	// their create event (room version 12, MSC4291) no longer carry it; clients find the
	// old room's tombstone instead.
	if len(info.Extremities) > 0 && !newImpl.DomainlessRoomIDs() {
		creation["predecessor"].(map[string]any)["event_id"] = info.Extremities[0]
	}
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := createContent[k]; ok {
			creation[k] = v
		}
	}
	if newImpl.PrivilegedCreators() && len(body.AdditionalCreators) > 0 {
		creation["additional_creators"] = body.AdditionalCreators
	}

	finalPL, initialPL := upgradePowerLevels(oldPL, d.UserID, body.AdditionalCreators,
		gomatrixserverlib.MustGetRoomVersion(info.Version).PrivilegedCreators(), newImpl.PrivilegedCreators())
	var initial []roomserver.StateEvent
	if initialPL != nil {
		initial = append(initial, roomserver.StateEvent{Type: spec.MRoomPowerLevels, Content: initialPL})
	}
	preset := spec.PresetPrivateChat
	for _, typ := range upgradeCopiedState {
		c, err := contentOf(typ)
		if err != nil {
			return nil, err
		}
		if c == nil {
			continue
		}
		if typ == spec.MRoomJoinRules && c["join_rule"] == spec.Public {
			preset = spec.PresetPublicChat
		}
		initial = append(initial, roomserver.StateEvent{Type: typ, Content: c})
	}

	// Space structure (children and parents) is kept.
	for _, typ := range []string{"m.space.child", "m.space.parent"} {
		evs, err := s.rooms.CurrentStateOfType(ctx, oldID, typ)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			var c map[string]any
			if json.Unmarshal(ev.Content(), &c) != nil || len(c) == 0 || ev.StateKey() == nil {
				continue // removed (empty content)
			}
			initial = append(initial, roomserver.StateEvent{Type: typ, StateKey: *ev.StateKey(), Content: c})
		}
	}
	// Bans are carried over (MSC4167), so that an upgrade does not let banned users in.
	bans, err := s.rooms.Members(ctx, roomserver.MembersRequest{RoomID: oldID, Membership: spec.Ban})
	if err != nil {
		return nil, err
	}
	for _, ev := range bans {
		target := *ev.StateKey()
		if slices.Contains(body.AdditionalCreators, target) || !upgradeCanBan(initialPL, d.UserID, target, newImpl.PrivilegedCreators()) {
			continue
		}
		c := map[string]any{"membership": spec.Ban}
		var old struct {
			Reason string `json:"reason"`
		}
		if json.Unmarshal(ev.Content(), &old) == nil && old.Reason != "" {
			c["reason"] = old.Reason
		}
		initial = append(initial, roomserver.StateEvent{Type: spec.MRoomMember, StateKey: target, Content: c})
	}

	newID, err := s.rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator:         d.UserID,
		RoomVersion:     string(version),
		Preset:          preset,
		CreationContent: creation,
		InitialState:    initial,
	})
	if err != nil {
		return nil, err
	}
	log := logrus.WithFields(logrus.Fields{"room_id": oldID, "new_room_id": newID, "user_id": d.UserID})

	// The power levels of the old room, now that the upgrader no longer needs more.
	if finalPL != nil && !reflect.DeepEqual(finalPL, initialPL) {
		if _, err := s.sendState(ctx, newID, d.UserID, spec.MRoomPowerLevels, finalPL); err != nil {
			log.WithError(err).Warn("upgrade: could not restore the power levels in the new room")
		}
	}
	// The tombstone closes the old room.
	if _, err := s.sendState(ctx, oldID, d.UserID, "m.room.tombstone", map[string]any{
		"body":             "This room has been replaced",
		"replacement_room": newID,
	}); err != nil {
		return nil, err
	}
	// Ordinary users can no longer speak or invite in the old room.
	if oldPL != nil {
		restricted := cloneJSONMap(oldPL)
		level := 50.0
		if ud, ok := restricted["users_default"].(float64); ok && ud+1 > level {
			level = ud + 1
		}
		changed := false
		for _, k := range []string{"events_default", "invite"} {
			cur, ok := restricted[k].(float64)
			if !ok && k == "invite" {
				cur = 0
			}
			if cur < level {
				restricted[k] = level
				changed = true
			}
		}
		if changed {
			if _, err := s.sendState(ctx, oldID, d.UserID, spec.MRoomPowerLevels, restricted); err != nil {
				log.WithError(err).Warn("upgrade: could not restrict the power levels of the old room")
			}
		}
	}
	// The canonical alias moves to the new room, the local aliases too.
	if c, err := contentOf(spec.MRoomCanonicalAlias); err == nil && len(c) > 0 {
		if _, err := s.sendState(ctx, oldID, d.UserID, spec.MRoomCanonicalAlias, map[string]any{}); err != nil {
			log.WithError(err).Warn("upgrade: could not clear the canonical alias of the old room")
		}
	}
	if err := storage.MoveRoomAliases(ctx, s.db, oldID, newID); err != nil {
		return nil, err
	}
	if public, err := storage.IsRoomPublished(ctx, s.db, oldID); err != nil {
		return nil, err
	} else if public {
		if err := storage.SetRoomPublished(ctx, s.db, newID, true); err != nil {
			return nil, err
		}
		if err := storage.SetRoomPublished(ctx, s.db, oldID, false); err != nil {
			return nil, err
		}
	}
	return map[string]any{"replacement_room": newID}, nil
}

// sendState sends a state event with an empty state key as userID.
func (s *Server) sendState(ctx context.Context, roomID, userID, evType string, content any) (*roomserver.Event, error) {
	sk := ""
	return s.rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: userID, Type: evType, StateKey: &sk, Content: content})
}

func cloneJSONMap(m map[string]any) map[string]any {
	raw, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out
}

// upgradePowerLevels derives the power levels of the new room from the old ones: final
// is the old content (with creators taken out of users in room versions where creators
// have unlimited power), initial is final with the upgrader raised to the highest level
// it names, so that the upgrader can send every copied state event.
func upgradePowerLevels(old map[string]any, upgrader string, additional []string, oldPrivileged, privilegedCreators bool) (final, initial map[string]any) {
	if old == nil {
		return nil, nil
	}
	final = cloneJSONMap(old)
	users, _ := final["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	final["users"] = users
	if privilegedCreators {
		delete(users, upgrader)
		for _, u := range additional {
			delete(users, u)
		}
		return final, cloneJSONMap(final)
	}
	initial = cloneJSONMap(final)
	top := 100.0
	num := func(v any) {
		if f, ok := v.(float64); ok && f > top {
			top = f
		}
	}
	for _, k := range []string{"ban", "kick", "redact", "invite", "state_default", "events_default", "users_default"} {
		num(final[k])
	}
	if evs, ok := final["events"].(map[string]any); ok {
		for _, v := range evs {
			num(v)
		}
	}
	iu := initial["users"].(map[string]any)
	cur, _ := iu[upgrader].(float64)
	if cur < top {
		iu[upgrader] = top
	}
	if _, ok := users[upgrader]; !ok && oldPrivileged {
		// From a room where the upgrader was a creator (no users entry): keep full power.
		users[upgrader] = 100.0
		iu[upgrader] = max(top, 100.0)
	}
	return final, initial
}

// upgradeCanBan reports whether the upgrader may ban target under the new room's
// initial power levels (the auth rules need ban power and a higher level than the
// target's).
func upgradeCanBan(pl map[string]any, upgrader, target string, privilegedCreators bool) bool {
	if target == upgrader {
		return false
	}
	level := func(key string, def float64) float64 {
		if v, ok := pl[key].(float64); ok {
			return v
		}
		return def
	}
	userLevel := func(u string) float64 {
		if users, ok := pl["users"].(map[string]any); ok {
			if v, ok := users[u].(float64); ok {
				return v
			}
		}
		return level("users_default", 0)
	}
	if pl == nil {
		return true // default power levels: the creator has 100, everyone else 0
	}
	targetLevel := userLevel(target)
	if privilegedCreators {
		return true // the upgrader is a creator: unlimited power
	}
	mine := userLevel(upgrader)
	return mine >= level("ban", 50) && mine > targetLevel
}
