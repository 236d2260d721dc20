package test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestInvitePermission covers invite blocking (the spec's m.invite_permission_config,
// v1.18) and MSC4155's ignore and block rules, on every way a local user can be invited.
func TestInvitePermission(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		adBase := "/_matrix/client/v3/user/" + esc(alice.UserID.String()) + "/account_data/"
		setConfig := func(typ string, content map[string]any) {
			t.Helper()
			if st, body := s.Do(t, "PUT", adBase+typ, alice.AccessToken, content); st != 200 {
				t.Fatalf("PUT %s: %d %v", typ, st, body)
			}
		}
		newRoom := func(c *mautrix.Client) string {
			t.Helper()
			r, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			if err != nil {
				t.Fatal(err)
			}
			return r.RoomID.String()
		}
		invite := func(c *mautrix.Client, room string) (int, map[string]any) {
			return s.Do(t, "POST", "/_matrix/client/v3/rooms/"+esc(room)+"/invite", c.AccessToken, map[string]any{"user_id": alice.UserID.String()})
		}
		invitedTo := func() map[string]any {
			_, resp := s.Do(t, "GET", "/_matrix/client/v3/sync", alice.AccessToken, nil)
			rooms, _ := resp["rooms"].(map[string]any)
			inv, _ := rooms["invite"].(map[string]any)
			return inv
		}

		// An invite that arrived before alice blocked invites stops showing in her sync.
		early := newRoom(bob)
		if st, body := invite(bob, early); st != 200 {
			t.Fatalf("invite without rules: %d %v", st, body)
		}
		if _, ok := invitedTo()[early]; !ok {
			t.Fatal("invite missing from sync before blocking")
		}

		// The spec's block-everything setting.
		setConfig("m.invite_permission_config", map[string]any{"default_action": "block"})
		if _, ok := invitedTo()[early]; ok {
			t.Fatal("an existing invite is still shown after blocking every invite")
		}
		room := newRoom(bob)
		st, body := invite(bob, room)
		udExpect(t, "POST /invite", st, body, 403, "M_INVITE_BLOCKED")
		st, body = s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/state/m.room.member/"+esc(alice.UserID.String()),
			bob.AccessToken, map[string]any{"membership": "invite"})
		udExpect(t, "PUT m.room.member invite", st, body, 403, "M_INVITE_BLOCKED")
		before, err := bob.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, body = s.Do(t, "POST", "/_matrix/client/v3/createRoom", bob.AccessToken, map[string]any{"invite": []string{alice.UserID.String()}})
		udExpect(t, "createRoom with invite", st, body, 403, "M_INVITE_BLOCKED")
		after, err := bob.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(after.JoinedRooms) != len(before.JoinedRooms) {
			t.Fatal("a refused createRoom still created a room")
		}
		// Other membership changes of alice's are not invites and still work.
		if st, body := s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+esc(room)+"/state/m.room.member/"+esc(alice.UserID.String()),
			bob.AccessToken, map[string]any{"membership": "ban"}); st != 200 {
			t.Fatalf("ban while invites are blocked: %d %v", st, body)
		}

		// An invalid setting means invites as normal.
		setConfig("m.invite_permission_config", map[string]any{"default_action": 5})
		room = newRoom(bob)
		if st, body := invite(bob, room); st != 200 {
			t.Fatalf("invite with an invalid setting: %d %v", st, body)
		}
		if _, ok := invitedTo()[room]; !ok {
			t.Fatal("invite missing from sync with an invalid setting")
		}

		// MSC4155: bob ignored (invite accepted, never shown), carol blocked.
		setConfig("org.matrix.msc4155.invite_permission_config", map[string]any{
			"ignored_users": []string{bob.UserID.String()}, "blocked_users": []string{"@car*"}, "allowed_servers": nil,
		})
		room = newRoom(bob)
		if st, body := invite(bob, room); st != 200 {
			t.Fatalf("ignored invite: %d %v", st, body)
		}
		if _, ok := invitedTo()[room]; ok {
			t.Fatal("an ignored invite is shown")
		}
		st, body = invite(carol, newRoom(carol))
		udExpect(t, "invite by a blocked glob", st, body, 403, "M_INVITE_BLOCKED")
		// Deleting the settings (MSC3391) lets invites through again.
		setConfig("org.matrix.msc4155.invite_permission_config", map[string]any{})
		room = newRoom(carol)
		if st, body := invite(carol, room); st != 200 {
			t.Fatalf("invite after the rules were deleted: %d %v", st, body)
		}
		if _, ok := invitedTo()[room]; !ok {
			t.Fatal("invite missing after the rules were deleted")
		}
	})
}
