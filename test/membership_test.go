package test

import (
	"context"
	"sort"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// rmMembership returns the membership of user in a room as alice sees it ("" when none).
func rmMembership(t *testing.T, cli *mautrix.Client, roomID id.RoomID, user id.UserID) string {
	t.Helper()
	var m map[string]any
	if err := cli.StateEvent(context.Background(), roomID, event.StateMember, user.String(), &m); err != nil {
		if st, _ := udErr(t, err); st == 404 {
			return ""
		}
		t.Fatal(err)
	}
	s, _ := m["membership"].(string)
	return s
}

func TestMembershipLifecycle(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")

		// Invite-only room: carol cannot join until invited.
		private := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		_, err := carol.JoinRoomByID(ctx, private)
		rmWantErr(t, "join an invite-only room", err, 403, "M_FORBIDDEN")
		_, err = bob.InviteUser(ctx, private, &mautrix.ReqInviteUser{UserID: carol.UserID})
		rmWantErr(t, "invite by a non-member", err, 403, "M_FORBIDDEN")
		if _, err := alice.InviteUser(ctx, private, &mautrix.ReqInviteUser{UserID: carol.UserID, Reason: "welcome"}); err != nil {
			t.Fatal(err)
		}
		if m := rmMembership(t, alice, private, carol.UserID); m != "invite" {
			t.Fatalf("after invite: %q", m)
		}
		// Joining by /join/{roomIdOrAlias} (server_name ignored for local rooms).
		resp, err := carol.JoinRoom(ctx, private.String(), &mautrix.ReqJoinRoom{Via: []string{"elsewhere.test"}})
		if err != nil || resp.RoomID != private {
			t.Fatalf("join: %+v %v", resp, err)
		}
		if jr, err := carol.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 1 || jr.JoinedRooms[0] != private {
			t.Fatalf("carol's joined rooms: %+v %v", jr, err)
		}

		// Malformed requests.
		for _, c := range []struct {
			name, path string
			body       any
			status     int
			code       string
		}{
			{"invite without user_id", roomPath(private, "/invite"), map[string]any{}, 400, "M_MISSING_PARAM"},
			{"invite of a malformed ID", roomPath(private, "/invite"), map[string]any{"user_id": "bob"}, 400, "M_INVALID_PARAM"},
			{"invite with numeric user_id", roomPath(private, "/invite"), `{"user_id": 1}`, 400, "M_BAD_JSON"},
			{"kick without user_id", roomPath(private, "/kick"), map[string]any{"reason": "x"}, 400, "M_MISSING_PARAM"},
			{"join of garbage", "/_matrix/client/v3/join/" + esc("garbage"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"join of an unknown alias", "/_matrix/client/v3/join/" + esc("#nowhere:hs1.test"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"join of an unknown room", "/_matrix/client/v3/join/" + esc("!nowhere:hs1.test"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"leave a room never joined", roomPath(private, "/leave"), map[string]any{}, 403, "M_FORBIDDEN"},
			{"forget while joined", roomPath(private, "/forget"), map[string]any{}, 400, "M_UNKNOWN"},
		} {
			token := alice.AccessToken
			if c.name == "leave a room never joined" {
				token = bob.AccessToken
			}
			status, body := s.Do(t, "POST", c.path, token, c.body)
			udExpect(t, c.name, status, body, c.status, c.code)
		}

		// Kick: needs power; carol (power 0) cannot kick alice.
		_, err = carol.KickUser(ctx, private, &mautrix.ReqKickUser{UserID: alice.UserID})
		rmWantErr(t, "kick without power", err, 403, "M_FORBIDDEN")
		if _, err := alice.KickUser(ctx, private, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "bye"}); err != nil {
			t.Fatal(err)
		}
		if m := rmMembership(t, alice, private, carol.UserID); m != "leave" {
			t.Fatalf("after kick: %q", m)
		}
		_, err = alice.KickUser(ctx, private, &mautrix.ReqKickUser{UserID: carol.UserID})
		rmWantErr(t, "kick a user not in the room", err, 403, "M_FORBIDDEN")
		// Forget after leaving works; the room is then absent from joined rooms.
		if _, err := carol.ForgetRoom(ctx, private); err != nil {
			t.Fatalf("forget: %v", err)
		}
		if jr, err := carol.JoinedRooms(ctx); err != nil || len(jr.JoinedRooms) != 0 {
			t.Fatalf("joined rooms after kick: %+v %v", jr, err)
		}

		// Ban in a public room: banned users cannot join; unban lets them back.
		public := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, public); err != nil {
			t.Fatal(err)
		}
		_, err = bob.BanUser(ctx, public, &mautrix.ReqBanUser{UserID: alice.UserID})
		rmWantErr(t, "ban without power", err, 403, "M_FORBIDDEN")
		if _, err := alice.BanUser(ctx, public, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "spam"}); err != nil {
			t.Fatal(err)
		}
		if m := rmMembership(t, alice, public, bob.UserID); m != "ban" {
			t.Fatalf("after ban: %q", m)
		}
		_, err = bob.JoinRoomByID(ctx, public)
		rmWantErr(t, "banned user joins", err, 403, "M_FORBIDDEN")
		_, err = bob.SendMessageEvent(ctx, public, event.EventMessage, map[string]any{"body": "banned"})
		rmWantErr(t, "banned user sends", err, 403, "M_FORBIDDEN")
		_, err = alice.UnbanUser(ctx, public, &mautrix.ReqUnbanUser{UserID: carol.UserID})
		rmWantErr(t, "unban a user who is not banned", err, 403, "M_FORBIDDEN")
		if _, err := alice.UnbanUser(ctx, public, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.JoinRoomByID(ctx, public); err != nil {
			t.Fatalf("join after unban: %v", err)
		}

		// Knocking: only where the join rule allows it.
		_, err = carol.KnockRoom(ctx, public.String(), &mautrix.ReqKnockRoom{Reason: "hi"})
		if err == nil {
			t.Fatalf("knock on a public room succeeded")
		}
		knockRoom := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{
			{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}},
		}})
		if kr, err := carol.KnockRoom(ctx, knockRoom.String(), &mautrix.ReqKnockRoom{Reason: "let me in"}); err != nil || kr.RoomID != knockRoom {
			t.Fatalf("knock: %+v %v", kr, err)
		}
		if m := rmMembership(t, alice, knockRoom, carol.UserID); m != "knock" {
			t.Fatalf("after knock: %q", m)
		}
		status, body := s.Do(t, "POST", "/_matrix/client/v3/knock/"+esc("!nowhere:hs1.test"), carol.AccessToken, map[string]any{})
		udExpect(t, "knock on an unknown room", status, body, 404, "M_NOT_FOUND")

		// Members, with filters; joined_members with profiles.
		if err := alice.SetDisplayName(ctx, "Alice A."); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, public, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		members := func(req mautrix.ReqMembers) []string {
			t.Helper()
			resp, err := alice.Members(ctx, public, req)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, ev := range resp.Chunk {
				out = append(out, *ev.StateKey+"="+ev.Content.Raw["membership"].(string))
			}
			sort.Strings(out)
			return out
		}
		all := members(mautrix.ReqMembers{})
		if len(all) != 3 || all[0] != "@alice:hs1.test=join" || all[1] != "@bob:hs1.test=join" || all[2] != "@carol:hs1.test=invite" {
			t.Fatalf("members: %v", all)
		}
		if got := members(mautrix.ReqMembers{Membership: event.MembershipJoin}); len(got) != 2 {
			t.Fatalf("membership=join: %v", got)
		}
		if got := members(mautrix.ReqMembers{NotMembership: event.MembershipJoin}); len(got) != 1 || got[0] != "@carol:hs1.test=invite" {
			t.Fatalf("not_membership=join: %v", got)
		}
		status, body = s.Do(t, "GET", roomPath(public, "/members?membership=member"), alice.AccessToken, nil)
		udExpect(t, "bad membership filter", status, body, 400, "M_INVALID_PARAM")
		if _, err := carol.Members(ctx, private); err != nil {
			t.Fatalf("members of a room carol was kicked from (state at her leave): %v", err)
		}
		dave := udRegister(t, s, "dave")
		_, err = dave.Members(ctx, public)
		rmWantErr(t, "members for a non-member", err, 403, "M_FORBIDDEN")
		_, err = dave.JoinedMembers(ctx, public)
		rmWantErr(t, "joined_members for a non-member", err, 403, "M_FORBIDDEN")

		// The display name change reached alice's member events (spec: profile changes
		// update the member events of joined rooms).
		var jm *mautrix.RespJoinedMembers
		deadline := time.Now().Add(10 * time.Second)
		for {
			jm, err = bob.JoinedMembers(ctx, public)
			if err != nil {
				t.Fatal(err)
			}
			if jm.Joined[alice.UserID].DisplayName == "Alice A." || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(jm.Joined) != 2 || jm.Joined[alice.UserID].DisplayName != "Alice A." {
			t.Fatalf("joined_members: %+v", jm.Joined)
		}
		if _, ok := jm.Joined[bob.UserID]; !ok {
			t.Fatalf("bob missing from joined_members: %+v", jm.Joined)
		}

		// Leave: bob leaves, no longer joined; leave again is refused.
		if _, err := bob.LeaveRoom(ctx, public, &mautrix.ReqLeave{Reason: "done"}); err != nil {
			t.Fatal(err)
		}
		_, err = bob.LeaveRoom(ctx, public)
		rmWantErr(t, "leave twice", err, 403, "M_FORBIDDEN")
		// A user who left sees the members as of their leave; "at" gives earlier members.
		sync, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dave.JoinRoomByID(ctx, public); err != nil {
			t.Fatal(err)
		}
		hasDave := func(req mautrix.ReqMembers) bool {
			t.Helper()
			resp, err := alice.Members(ctx, public, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range resp.Chunk {
				if *ev.StateKey == dave.UserID.String() && ev.Content.Raw["membership"] == "join" {
					return true
				}
			}
			return false
		}
		if !hasDave(mautrix.ReqMembers{}) || hasDave(mautrix.ReqMembers{At: sync.NextBatch}) {
			t.Fatalf("members now / at %s: dave's join misplaced", sync.NextBatch)
		}
		status, body = s.Do(t, "GET", roomPath(public, "/members?at=garbage"), alice.AccessToken, nil)
		udExpect(t, "bad at token", status, body, 400, "M_INVALID_PARAM")
		_, err = bob.JoinedMembers(ctx, public)
		rmWantErr(t, "joined_members after leaving", err, 403, "M_FORBIDDEN")
		resp2, err := bob.Members(ctx, public)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp2.Chunk {
			if *ev.StateKey == dave.UserID.String() {
				t.Fatalf("bob sees a member who joined after he left")
			}
		}
	})
}

// TestMembersAtSyncPrevBatch: /members?at= the prev_batch of a /sync timeline
// (Complement's TestGetRoomMembersAtPoint). A timeline that starts with the room's
// create event has no members before it, so its prev_batch names the members the
// /sync answer was made at: alice alone, not bob who joined later. Paginating from
// that token still finds nothing older than the create event, and a timeline that
// starts later gives the members at its start, with the events before it paginable.
func TestMembersAtSyncPrevBatch(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		room := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := alice.SendText(ctx, room, "Hello world!"); err != nil {
			t.Fatal(err)
		}
		sync, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
		if err != nil {
			t.Fatal(err)
		}
		whole := sync.Rooms.Join[room].Timeline
		if len(whole.Events) == 0 || whole.Events[0].Type != event.StateCreate || whole.Limited {
			t.Fatalf("the first sync's timeline does not hold the whole room: %+v", whole)
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx, room, "Hello back"); err != nil {
			t.Fatal(err)
		}
		members := func(at string) []string {
			t.Helper()
			resp, err := alice.Members(ctx, room, mautrix.ReqMembers{At: at})
			if err != nil {
				t.Fatalf("members at %q: %v", at, err)
			}
			var out []string
			for _, ev := range resp.Chunk {
				if ev.RoomID != room {
					t.Fatalf("member event of another room: %+v", ev)
				}
				out = append(out, *ev.StateKey+"="+ev.Content.Raw["membership"].(string))
			}
			sort.Strings(out)
			return out
		}
		want := []string{alice.UserID.String() + "=join"}
		if got := members(whole.PrevBatch); len(got) != 1 || got[0] != want[0] {
			t.Fatalf("members at the first sync's prev_batch %q: %v, want %v", whole.PrevBatch, got, want)
		}
		// Nothing precedes the create event; forwards the page starts with it.
		older, err := alice.Messages(ctx, room, whole.PrevBatch, "", mautrix.DirectionBackward, nil, 10)
		if err != nil || len(older.Chunk) != 0 {
			t.Fatalf("events before the create event: %+v %v", older, err)
		}
		newer, err := alice.Messages(ctx, room, whole.PrevBatch, "", mautrix.DirectionForward, nil, 3)
		if err != nil || len(newer.Chunk) == 0 || newer.Chunk[0].Type != event.StateCreate {
			t.Fatalf("paging forward from the first sync's prev_batch: %+v %v", newer, err)
		}

		// A timeline of bob's join and message: the members at its start are alice alone,
		// and back-pagination continues with alice's message.
		sync, err = alice.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, FilterID: `{"room":{"timeline":{"limit":2}}}`})
		if err != nil {
			t.Fatal(err)
		}
		tail := sync.Rooms.Join[room].Timeline
		if len(tail.Events) != 2 || tail.Events[0].Type != event.StateMember || !tail.Limited {
			t.Fatalf("a two-event timeline: %+v", tail)
		}
		if got := members(tail.PrevBatch); len(got) != 1 || got[0] != want[0] {
			t.Fatalf("members at a limited timeline's prev_batch: %v, want %v", got, want)
		}
		older, err = alice.Messages(ctx, room, tail.PrevBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(older.Chunk) != 1 || older.Chunk[0].Content.Raw["body"] != "Hello world!" {
			t.Fatalf("paging back from a limited timeline: %+v %v", older, err)
		}
		// And the members now include bob.
		if got := members(""); len(got) != 2 {
			t.Fatalf("members now: %v", got)
		}
	})
}
