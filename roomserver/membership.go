package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/invitefilter"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// MembershipRequest is a membership change asked for by a local user.
type MembershipRequest struct {
	RoomID string
	// Sender is the local user acting.
	Sender string
	// Target is the user whose membership changes (invite, kick, ban, unban); empty
	// means the sender (join, leave, knock).
	Target string
	Reason string
	// IsDirect marks an invite as a direct chat.
	IsDirect bool
	// Content holds extra member content (e.g. displayname, avatar_url overrides).
	Content map[string]any
	// TxnID and DeviceID identify the client transaction.
	TxnID    string
	DeviceID string
}

// Invite invites Target (a local user; remote invites need federation, not built yet).
func (rs *Roomserver) Invite(ctx context.Context, req MembershipRequest) (*Event, error) {
	if err := rs.checkLocalUser(req.Target); err != nil {
		if me, ok := err.(spec.MatrixError); ok && me.ErrCode == spec.ErrorForbidden {
			return nil, spec.Forbidden("Users on other servers cannot be invited yet")
		}
		return nil, err
	}
	if err := invitefilter.Check(ctx, rs.db, req.Target, req.Sender); err != nil {
		return nil, err
	}
	extra := map[string]any{}
	if req.IsDirect {
		extra["is_direct"] = true
	}
	return rs.changeMembership(ctx, req, req.Target, spec.Invite, extra, nil)
}

// Join joins Sender to a room this server knows (restricted rooms are authorised by a
// local member with invite power). Joining a room only known to other servers needs
// federation and fails with M_NOT_FOUND for now. A join that changes nothing returns
// the current join event.
func (rs *Roomserver) Join(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Sender, spec.Join, nil, nil)
}

// Leave makes Sender leave the room (or reject an invite, or withdraw a knock).
func (rs *Roomserver) Leave(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Sender, spec.Leave, nil, inRoom("You are not in the room"))
}

// inRoom refuses a change for users who are not joined, invited or knocking
// (gomatrixserverlib accepts leave -> leave, which the spec does not).
func inRoom(msg string) func(string) error {
	return func(cur string) error {
		if cur != spec.Join && cur != spec.Invite && cur != spec.Knock {
			return spec.Forbidden(msg)
		}
		return nil
	}
}

// Kick removes Target from the room.
func (rs *Roomserver) Kick(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Target, spec.Leave, nil, inRoom("The target user is not in the room"))
}

// Ban bans Target from the room.
func (rs *Roomserver) Ban(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Target, spec.Ban, nil, nil)
}

// Unban lifts Target's ban.
func (rs *Roomserver) Unban(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Target, spec.Leave, nil, func(cur string) error {
		if cur != spec.Ban {
			return spec.Forbidden("The target user is not banned")
		}
		return nil
	})
}

// Knock asks to join a room whose join rule is knock or knock_restricted.
func (rs *Roomserver) Knock(ctx context.Context, req MembershipRequest) (*Event, error) {
	return rs.changeMembership(ctx, req, req.Sender, spec.Knock, nil, nil)
}

// Forget hides a room the user has left from their room lists. It fails while the
// user is still joined or invited.
func (rs *Roomserver) Forget(ctx context.Context, roomID, userID string) error {
	r, err := rs.room(ctx, roomID)
	if err != nil {
		return err
	}
	unlock, err := rs.lockRoom(ctx, r)
	if err != nil {
		return err
	}
	defer unlock()
	cur, _, err := rs.membershipIn(ctx, r.head.Load(), userID)
	if err != nil {
		return err
	}
	if cur == spec.Join || cur == spec.Invite || cur == spec.Knock {
		return spec.Unknown(fmt.Sprintf("User %s is in room %s", userID, roomID))
	}
	return rs.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := roomstore.SetForgotten(ctx, tx, r.nid, userID)
		return err
	})
}

// membershipIn returns the membership of userID in a head's state ("" when none) and
// the member event.
func (rs *Roomserver) membershipIn(ctx context.Context, head *roomHead, userID string) (string, *Event, error) {
	ev, err := rs.stateEvent(ctx, head.state, spec.MRoomMember, userID)
	if err != nil || ev == nil {
		return "", nil, err
	}
	return ev.Membership, ev, nil
}

func (rs *Roomserver) changeMembership(ctx context.Context, req MembershipRequest, target, membership string,
	extra map[string]any, check func(current string) error) (*Event, error) {
	if err := rs.checkLocalUser(req.Sender); err != nil {
		return nil, err
	}
	if target == "" {
		return nil, spec.MissingParam("A target user is required")
	}
	if _, err := spec.NewUserID(target, true); err != nil {
		return nil, spec.InvalidParam(fmt.Sprintf("Invalid user ID %q", target))
	}
	r, err := rs.room(ctx, req.RoomID)
	if err != nil {
		return nil, err
	}
	unlock, err := rs.lockRoom(ctx, r)
	if err != nil {
		return nil, err
	}
	defer unlock()
	head := r.head.Load()
	cur, curEv, err := rs.membershipIn(ctx, head, target)
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(cur); err != nil {
			return nil, err
		}
	}
	if extra == nil {
		extra = map[string]any{}
	}
	for k, v := range req.Content {
		extra[k] = v
	}
	if req.Reason != "" {
		extra["reason"] = req.Reason
	}
	var content map[string]any
	if target == req.Sender {
		content = rs.memberContent(ctx, target, membership, extra)
	} else {
		content = extra
		content["membership"] = membership
	}
	if membership == spec.Join && cur != spec.Join && cur != spec.Invite {
		via, err := rs.restrictedJoinAuthoriser(ctx, r, head, target)
		if err != nil {
			return nil, err
		}
		if via != "" {
			content["join_authorised_via_users_server"] = via
		}
	}
	if membership == spec.Join && cur == spec.Join && curEv != nil && sameContent(curEv.Content(), content) {
		return curEv, nil
	}
	raw, err := json.Marshal(content)
	if err != nil {
		return nil, spec.BadJSON(err.Error())
	}
	sk := target
	return rs.sendLocked(ctx, r, protoEvent{
		sender: req.Sender, typ: spec.MRoomMember, stateKey: &sk, content: raw,
		txnID: req.TxnID, deviceID: req.DeviceID,
	})
}

func sameContent(a []byte, b map[string]any) bool {
	var m map[string]any
	if json.Unmarshal(a, &m) != nil {
		return false
	}
	bb, err := json.Marshal(b)
	if err != nil {
		return false
	}
	var n map[string]any
	if json.Unmarshal(bb, &n) != nil {
		return false
	}
	return reflect.DeepEqual(m, n)
}

// restrictedJoinAuthoriser picks the local member that authorises user's join of a
// restricted room: user must be joined to one of the rooms the join rule allows, and
// the authoriser must be a joined local user of this room who can invite. It returns
// "" when the join rule is not restricted (event auth then decides).
//
// gomatrixserverlib's CheckRestrictedJoin is not used: it picks the authoriser among
// the members of the allowed room rather than of the room being joined.
func (rs *Roomserver) restrictedJoinAuthoriser(ctx context.Context, r *room, head *roomHead, user string) (string, error) {
	jrEv, err := rs.stateEvent(ctx, head.state, spec.MRoomJoinRules, "")
	if err != nil || jrEv == nil {
		return "", err
	}
	var jr gomatrixserverlib.JoinRuleContent
	if err := json.Unmarshal(jrEv.Content(), &jr); err != nil {
		return "", nil
	}
	if jr.JoinRule != spec.Restricted && jr.JoinRule != spec.KnockRestricted {
		return "", nil
	}
	if err := r.verImpl.CheckRestrictedJoinsAllowed(); err != nil {
		return "", nil
	}
	allowed, knowsAny := false, false
	for _, rule := range jr.Allow {
		if rule.Type != spec.MRoomMembership || rule.RoomID == "" {
			continue
		}
		other, err := rs.room(ctx, rule.RoomID)
		if err != nil {
			continue
		}
		// Our copy of a room we left is not kept current: it cannot tell whether the
		// user is still joined there.
		if in, err := rs.ServerInRoom(ctx, rule.RoomID, rs.cfg.ServerName); err != nil {
			return "", err
		} else if !in {
			continue
		}
		knowsAny = true
		m, _, err := rs.membershipIn(ctx, other.head.Load(), user)
		if err != nil {
			return "", err
		}
		if m == spec.Join {
			allowed = true
			break
		}
	}
	if !allowed {
		if jr.JoinRule == spec.KnockRestricted {
			return "", nil // event auth refuses the join; the user may knock instead
		}
		if !knowsAny {
			// Another server of the room may be in an allowed room and authorise it.
			return "", spec.UnableToAuthoriseJoin("This server is in none of the rooms that allow joining this room")
		}
		return "", spec.Forbidden("You are not joined to any of the rooms that allow joining this room")
	}
	pls, err := rs.powerLevels(ctx, head.state, head.create)
	if err != nil {
		return "", err
	}
	members, err := roomstore.MembersOfRoom(ctx, rs.db, r.nid, spec.Join, "")
	if err != nil {
		return "", err
	}
	best, bestLevel := "", int64(-1)
	for _, m := range members {
		u, err := spec.NewUserID(m.StateKey, true)
		if err != nil || u.Domain() != rs.cfg.ServerName {
			continue
		}
		lvl := pls.level(spec.SenderID(m.StateKey))
		if lvl >= pls.Invite && (lvl > bestLevel || (lvl == bestLevel && m.StateKey < best)) {
			best, bestLevel = m.StateKey, lvl
		}
	}
	if best == "" {
		return "", spec.UnableToAuthoriseJoin("No local member of the room can authorise the join")
	}
	return best, nil
}
