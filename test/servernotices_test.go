package test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

func TestServerNotices(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		const secret = "notice-secret"
		s := harness.Start(t, harness.Options{Engine: engine, Configure: func(c *config.Config) {
			c.Registration.SharedSecret = secret
			c.ServerNotices.Enabled = true
		}})
		sec := &acctSecrets{}
		admin := acctSharedSecretRegister(t, s, sec, secret, "root", "root-password", true)["access_token"].(string)
		alice := udRegister(t, s, "alice")
		system := "@_server:" + s.ServerName
		notice := func(method, path string) (int, map[string]any) {
			return s.Do(t, method, "/_synapse/admin/v1/send_server_notice"+path, admin, map[string]any{
				"user_id": alice.UserID.String(), "content": map[string]any{"msgtype": "m.text", "body": "maintenance at noon"}})
		}

		// Only admins send notices; nobody may register the system user.
		status, body := s.Do(t, "POST", "/_synapse/admin/v1/send_server_notice", alice.AccessToken, map[string]any{})
		udExpect(t, "notice from a normal user", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "_server", "password": "pw-123456", "auth": map[string]any{"type": "m.login.dummy"}})
		udExpect(t, "register the system user", status, body, 400, "M_INVALID_USERNAME")

		status, body = notice("POST", "")
		udExpect(t, "first notice", status, body, 200, "")
		first, _ := body["event_id"].(string)

		// Alice is invited by the system user and cannot reject the invite.
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Rooms.Invite) != 1 {
			t.Fatalf("invites: %+v", resp.Rooms.Invite)
		}
		var room id.RoomID
		for r, inv := range resp.Rooms.Invite {
			room = r
			for _, ev := range inv.State.Events {
				if ev.Sender.String() != system {
					t.Fatalf("invite state event from %s, want %s", ev.Sender, system)
				}
			}
		}
		status, body = s.Do(t, "POST", dirV3+"/rooms/"+esc(room.String())+"/leave", alice.AccessToken, map[string]any{})
		udExpect(t, "reject the notice invite", status, body, 403, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")

		// She joins, reads the notice, sees the m.server_notice tag, and may leave.
		if _, err := alice.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if ev, err := alice.GetEvent(ctx, room, id.EventID(first)); err != nil || ev.Content.Raw["body"] != "maintenance at noon" {
			t.Fatalf("notice event: %v %v", ev, err)
		}
		tags, err := alice.GetTags(ctx, room)
		if _, ok := tags.Tags["m.server_notice"]; err != nil || !ok {
			t.Fatalf("tags: %+v %v", tags, err)
		}
		if _, err := alice.SendText(ctx, room, "can I reply?"); err == nil {
			t.Fatal("the user could write in the notice room")
		}
		if _, err := alice.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}

		// The next notice invites her back into the same room.
		status, body = notice("POST", "")
		udExpect(t, "notice after leaving", status, body, 200, "")
		rooms, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rooms.Rooms.Invite[room]; !ok || len(rooms.Rooms.Invite) != 1 {
			t.Fatalf("re-invite: %+v", rooms.Rooms.Invite)
		}

		// A transaction ID makes the notice idempotent.
		_, b1 := notice("PUT", "/t1")
		_, b2 := notice("PUT", "/t1")
		if b1["event_id"] == nil || b1["event_id"] != b2["event_id"] {
			t.Fatalf("txn replay: %v %v", b1, b2)
		}
		_, b3 := notice("PUT", "/t2")
		if b3["event_id"] == b1["event_id"] {
			t.Fatalf("new txn reused the event: %v", b3)
		}

		// Bad input.
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/send_server_notice", admin, map[string]any{"user_id": "@nobody:" + s.ServerName, "content": map[string]any{}})
		udExpect(t, "unknown user", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "POST", "/_synapse/admin/v1/send_server_notice", admin, map[string]any{"user_id": alice.UserID.String()})
		udExpect(t, "no content", status, body, 400, "M_BAD_JSON")
	})
}
