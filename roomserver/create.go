package roomserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/invitefilter"
)

// StateEvent is a state event given in a request (initial_state of createRoom).
type StateEvent struct {
	Type     string
	StateKey string
	// Content is a JSON object (json.RawMessage, []byte or a Go value).
	Content any
}

// CreateRoomRequest is the createRoom request, already parsed by the client API.
type CreateRoomRequest struct {
	// Creator is the local user creating the room.
	Creator string
	// RoomVersion defaults to the configured default version.
	RoomVersion string
	// Preset is private_chat, trusted_private_chat or public_chat; empty picks
	// public_chat for Visibility "public" and private_chat otherwise.
	Preset string
	// Visibility is "public" or "private" (publishing in the directory is the caller's job).
	Visibility string
	// CreationContent is merged into the m.room.create content.
	CreationContent map[string]any
	// PowerLevelContentOverride is merged (top-level keys) into the power levels.
	PowerLevelContentOverride map[string]any
	// CanonicalAlias is the full alias (#room_alias_name:server) for the
	// m.room.canonical_alias event; the caller reserves it in the directory.
	CanonicalAlias string
	Name           string
	Topic          string
	InitialState   []StateEvent
	// Invite lists users to invite (local users only for now).
	Invite []string
	// IsDirect sets is_direct in the invites' member content.
	IsDirect bool
	// Timestamp of the events (zero: now).
	Timestamp time.Time
}

// CreateRoom creates a room following the spec's createRoom algorithm and returns
// its ID. All the room's initial events are persisted in one transaction: on error
// nothing is stored. An unknown or unstable room version is M_UNSUPPORTED_ROOM_VERSION.
func (rs *Roomserver) CreateRoom(ctx context.Context, req CreateRoomRequest) (string, error) {
	if err := rs.checkLocalUser(req.Creator); err != nil {
		return "", err
	}
	version := gomatrixserverlib.RoomVersion(req.RoomVersion)
	if version == "" {
		version = rs.cfg.DefaultRoomVersion
	}
	if !gomatrixserverlib.StableRoomVersion(version) {
		return "", spec.UnsupportedRoomVersion(fmt.Sprintf("Room version %q is not supported", version))
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(version)

	preset := req.Preset
	if preset == "" {
		preset = spec.PresetPrivateChat
		if req.Visibility == "public" {
			preset = spec.PresetPublicChat
		}
	}
	if preset != spec.PresetPrivateChat && preset != spec.PresetTrustedPrivateChat && preset != spec.PresetPublicChat {
		return "", spec.BadJSON(fmt.Sprintf("Unknown preset %q", preset))
	}
	var invites []string
	for _, u := range req.Invite {
		if err := rs.checkLocalUser(u); err != nil {
			if me, ok := err.(spec.MatrixError); ok && me.ErrCode == spec.ErrorForbidden {
				return "", spec.Forbidden(fmt.Sprintf("Inviting %s: users on other servers cannot be invited yet", u))
			}
			return "", err
		}
		if u != req.Creator && !slices.Contains(invites, u) {
			if err := invitefilter.Check(ctx, rs.db, u, req.Creator); err != nil {
				return "", err // before anything is created
			}
			invites = append(invites, u)
		}
	}
	if req.CanonicalAlias != "" {
		if _, domain, err := gomatrixserverlib.SplitID('#', req.CanonicalAlias); err != nil || domain != rs.cfg.ServerName {
			return "", spec.InvalidParam(fmt.Sprintf("Invalid room alias %q", req.CanonicalAlias))
		}
	}

	// The events, in the spec's order.
	var events []protoEvent
	add := func(typ, stateKey string, content any) error {
		c, err := contentJSON(content)
		if err != nil {
			return err
		}
		sk := stateKey
		events = append(events, protoEvent{sender: req.Creator, typ: typ, stateKey: &sk, content: c, ts: req.Timestamp})
		return nil
	}

	// 1. m.room.create
	createContent := map[string]any{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	if version != gomatrixserverlib.RoomVersionV11 && version != gomatrixserverlib.RoomVersionV12 {
		// Room versions 11 and later dropped "creator": the sender is the creator.
		createContent["creator"] = req.Creator
	}
	createContent["room_version"] = string(version)
	if verImpl.PrivilegedCreators() {
		creators, err := additionalCreators(createContent["additional_creators"], preset, invites)
		if err != nil {
			return "", err
		}
		if len(creators) > 0 {
			createContent["additional_creators"] = creators
		} else {
			delete(createContent, "additional_creators")
		}
	}
	if err := add(spec.MRoomCreate, "", createContent); err != nil {
		return "", err
	}

	// 2. The creator's join.
	if err := add(spec.MRoomMember, req.Creator, rs.memberContent(ctx, req.Creator, spec.Join, nil)); err != nil {
		return "", err
	}

	// initial_state, with the entries the algorithm handles itself taken out.
	initial := map[tuple]StateEvent{}
	var initialOrder []tuple
	for _, ev := range req.InitialState {
		if ev.Type == "" {
			return "", spec.BadJSON("initial_state: event type is required")
		}
		t := tuple{ev.Type, ev.StateKey}
		if t.Type == spec.MRoomCreate {
			continue
		}
		if _, seen := initial[t]; !seen {
			initialOrder = append(initialOrder, t)
		}
		initial[t] = ev
	}
	take := func(typ string) (StateEvent, bool) {
		t := tuple{typ, ""}
		ev, ok := initial[t]
		if ok {
			delete(initial, t)
		}
		return ev, ok
	}

	// 3. m.room.power_levels, with power_level_content_override on top.
	pl := defaultPowerLevels(verImpl, req.Creator, preset, invites)
	if ev, ok := take(spec.MRoomPowerLevels); ok {
		c, err := contentJSON(ev.Content)
		if err != nil {
			return "", err
		}
		pl = map[string]any{}
		if err := json.Unmarshal(c, &pl); err != nil {
			return "", spec.BadJSON("initial_state power levels: " + err.Error())
		}
	}
	for k, v := range req.PowerLevelContentOverride {
		pl[k] = v
	}
	if err := add(spec.MRoomPowerLevels, "", pl); err != nil {
		return "", err
	}

	// 4. m.room.canonical_alias.
	if req.CanonicalAlias != "" {
		if _, ok := initial[tuple{spec.MRoomCanonicalAlias, ""}]; !ok {
			if err := add(spec.MRoomCanonicalAlias, "", map[string]any{"alias": req.CanonicalAlias}); err != nil {
				return "", err
			}
		}
	}

	// 5. The preset's events, unless initial_state overrides them.
	// public_chat's guest_access is "forbidden", which is what a room without an
	// m.room.guest_access event means: no event is sent for it (one event less in
	// every public room, and the history other servers see is the usual one).
	joinRule, guestAccess := spec.Invite, "can_join"
	if preset == spec.PresetPublicChat {
		joinRule, guestAccess = spec.Public, ""
	}
	for _, p := range []struct {
		typ     string
		content map[string]any
	}{
		{spec.MRoomJoinRules, map[string]any{"join_rule": joinRule}},
		{spec.MRoomHistoryVisibility, map[string]any{"history_visibility": "shared"}},
		{spec.MRoomGuestAccess, map[string]any{"guest_access": guestAccess}},
	} {
		if _, ok := initial[tuple{p.typ, ""}]; ok {
			continue
		}
		if p.typ == spec.MRoomGuestAccess && guestAccess == "" {
			continue
		}
		if err := add(p.typ, "", p.content); err != nil {
			return "", err
		}
	}

	// 6. initial_state (name and topic from the request win over it).
	for _, t := range initialOrder {
		ev, ok := initial[t]
		if !ok {
			continue
		}
		if (t == tuple{spec.MRoomName, ""} && req.Name != "") || (t == tuple{spec.MRoomTopic, ""} && req.Topic != "") {
			continue
		}
		if err := add(ev.Type, ev.StateKey, ev.Content); err != nil {
			return "", err
		}
	}

	// 7. m.room.name and m.room.topic.
	if req.Name != "" {
		if err := add(spec.MRoomName, "", map[string]any{"name": req.Name}); err != nil {
			return "", err
		}
	}
	if req.Topic != "" {
		topic := map[string]any{
			"topic":   req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]any{{"body": req.Topic, "mimetype": "text/plain"}}},
		}
		if err := add(spec.MRoomTopic, "", topic); err != nil {
			return "", err
		}
	}

	// 8. Invites.
	for _, u := range invites {
		c := map[string]any{"membership": spec.Invite}
		if req.IsDirect {
			c["is_direct"] = true
		}
		if err := add(spec.MRoomMember, u, c); err != nil {
			return "", err
		}
	}

	// Room IDs of version 12 are hashes of the create event: the same user creating two
	// identical rooms within a millisecond would collide, so retry with a later
	// timestamp (and, before v12, with a new random room ID).
	ts := req.Timestamp
	if ts.IsZero() {
		ts = rs.cfg.Now()
	}
	for attempt := 0; ; attempt++ {
		for i := range events {
			events[i].ts = ts.Add(time.Duration(attempt) * time.Millisecond)
		}
		roomID, err := rs.createRoomEvents(ctx, verImpl, events)
		var me spec.MatrixError
		if attempt < 3 && errors.As(err, &me) && me.ErrCode == spec.ErrorRoomInUse {
			continue
		}
		return roomID, err
	}
}

// createRoomEvents builds, authorises and persists the initial events of a new room.
func (rs *Roomserver) createRoomEvents(ctx context.Context, verImpl gomatrixserverlib.IRoomVersion, events []protoEvent) (string, error) {
	r := &room{version: verImpl.Version(), verImpl: verImpl}
	if !verImpl.DomainlessRoomIDs() {
		r.id = "!" + randomString(18) + ":" + string(rs.cfg.ServerName)
	}
	auth, _ := gomatrixserverlib.NewAuthEvents(nil)
	var prevs []extremity
	w := &roomWrite{r: r, newRoom: true, moveHead: true}
	tuples := make([]tuple, 0, len(events))
	for i, p := range events {
		pdu, _, err := rs.build(r, prevs, p, auth, nil)
		if err != nil {
			return "", err
		}
		if i == 0 && verImpl.DomainlessRoomIDs() {
			r.id = pdu.RoomID().String()
		}
		if err := gomatrixserverlib.Allowed(pdu, auth, userIDForSender); err != nil {
			return "", forbidden(fmt.Errorf("%s event: %w", p.typ, err))
		}
		if err := auth.AddEvent(pdu); err != nil {
			return "", err
		}
		prevs = []extremity{{ID: pdu.EventID(), Depth: pdu.Depth()}}
		w.events = append(w.events, &newEvent{pdu: pdu, chain: true, hasKey: true})
		tuples = append(tuples, tuple{pdu.Type(), *pdu.StateKey()})
	}
	keys, err := rs.stateKeys(ctx, tuples, true)
	if err != nil {
		return "", err
	}
	for i, ne := range w.events {
		ne.key = keys[tuples[i]]
	}
	w.headFrom = len(w.events) - 1
	w.exts = []extRef{{idx: len(w.events) - 1}}
	unlock, err := rs.locker.Lock(ctx, r.id)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := rs.commit(w); err != nil {
		return "", err
	}
	return r.id, nil
}

// defaultPowerLevels is the power levels content of a new room (Synapse's defaults).
func defaultPowerLevels(verImpl gomatrixserverlib.IRoomVersion, creator, preset string, invites []string) map[string]any {
	users := map[string]any{}
	tombstone := 100
	if verImpl.PrivilegedCreators() {
		// Creators have unlimited power from the create event and must not be listed.
		tombstone = 150
	} else {
		users[creator] = 100
		if preset == spec.PresetTrustedPrivateChat {
			for _, u := range invites {
				users[u] = 100
			}
		}
	}
	invite := 50
	if preset != spec.PresetPublicChat {
		invite = 0
	}
	return map[string]any{
		"users":          users,
		"users_default":  0,
		"events_default": 0,
		"state_default":  50,
		"ban":            50,
		"kick":           50,
		"redact":         50,
		"invite":         invite,
		"events": map[string]any{
			"m.room.name":               50,
			"m.room.power_levels":       100,
			"m.room.history_visibility": 100,
			"m.room.canonical_alias":    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          tombstone,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		},
	}
}

// additionalCreators returns the additional_creators of a v12 create event: those in
// creation_content plus, for trusted_private_chat, the invitees.
func additionalCreators(given any, preset string, invites []string) ([]string, error) {
	var out []string
	if given != nil {
		list, ok := given.([]any)
		if !ok {
			if l, ok2 := given.([]string); ok2 {
				for _, s := range l {
					list = append(list, s)
				}
			} else {
				return nil, spec.BadJSON("additional_creators must be a list of user IDs")
			}
		}
		for _, v := range list {
			s, ok := v.(string)
			if !ok {
				return nil, spec.BadJSON("additional_creators must be a list of user IDs")
			}
			if _, err := spec.NewUserID(s, true); err != nil {
				return nil, spec.BadJSON(fmt.Sprintf("Invalid additional creator %q", s))
			}
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	if preset == spec.PresetTrustedPrivateChat {
		for _, u := range invites {
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// memberContent is the content of a membership event of a local user: membership,
// profile (for joins) and extra fields.
func (rs *Roomserver) memberContent(ctx context.Context, userID, membership string, extra map[string]any) map[string]any {
	c := map[string]any{}
	if membership == spec.Join && rs.cfg.Profiles != nil {
		if name, avatar, err := rs.cfg.Profiles.Profile(ctx, userID); err == nil {
			if name != "" {
				c["displayname"] = name
			}
			if avatar != "" {
				c["avatar_url"] = avatar
			}
		}
	}
	for k, v := range extra {
		c[k] = v
	}
	c["membership"] = membership
	return c
}

const idChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(idChars[int(c)%len(idChars)])
	}
	return sb.String()
}
