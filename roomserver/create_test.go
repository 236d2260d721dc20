package roomserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

func TestCreateRoomPresetsAndVersions(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		for _, version := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"} {
			for _, preset := range []string{spec.PresetPrivateChat, spec.PresetTrustedPrivateChat, spec.PresetPublicChat} {
				t.Run(version+"/"+preset, func(t *testing.T) {
					roomID := mustCreate(t, rs, CreateRoomRequest{
						Creator: alice, RoomVersion: version, Preset: preset,
						Name: "Room " + version, Topic: "about " + preset,
						Invite: []string{bob}, IsDirect: true,
						CanonicalAlias: fmt.Sprintf("#r%s%s:%s", version, strings.ReplaceAll(preset, "_", ""), testServer),
						InitialState:   []StateEvent{{Type: "m.room.encryption", Content: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}},
					})
					if version == "12" {
						if strings.Contains(roomID, ":") {
							t.Fatalf("v12 room ID %s has a domain", roomID)
						}
					} else if !strings.HasSuffix(roomID, ":"+testServer) {
						t.Fatalf("room ID %s", roomID)
					}
					v, err := rs.RoomVersion(ctx, roomID)
					if err != nil || string(v) != version {
						t.Fatalf("room version %q, %v", v, err)
					}
					wantJR := "invite"
					if preset == spec.PresetPublicChat {
						wantJR = "public"
					}
					want := map[string][2]string{
						spec.MRoomJoinRules:         {"join_rule", wantJR},
						spec.MRoomHistoryVisibility: {"history_visibility", "shared"},
						spec.MRoomName:              {"name", "Room " + version},
						spec.MRoomTopic:             {"topic", "about " + preset},
						"m.room.encryption":         {"algorithm", "m.megolm.v1.aes-sha2"},
					}
					if preset == spec.PresetPublicChat {
						// guest_access forbidden is the absence of the event.
						if ev, err := rs.CurrentStateEvent(ctx, roomID, spec.MRoomGuestAccess, ""); err != nil || ev != nil {
							t.Fatalf("public_chat has an m.room.guest_access event: %v %v", ev, err)
						}
					} else {
						want[spec.MRoomGuestAccess] = [2]string{"guest_access", "can_join"}
					}
					for typ, want := range want {
						ev, err := rs.CurrentStateEvent(ctx, roomID, typ, "")
						if err != nil || ev == nil {
							t.Fatalf("%s: %v %v", typ, ev, err)
						}
						if got := contentField(t, ev, want[0]); got != want[1] {
							t.Fatalf("%s.%s = %v, want %s", typ, want[0], got, want[1])
						}
					}
					m, inv, err := rs.Membership(ctx, roomID, bob)
					if err != nil || m != spec.Invite || contentField(t, inv, "is_direct") != true {
						t.Fatalf("bob: %q %v", m, err)
					}
					create, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomCreate, "")
					pl, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomPowerLevels, "")
					users := contentField(t, pl, "users").(map[string]any)
					if version == "12" {
						if _, listed := users[alice]; listed {
							t.Fatalf("v12: creator listed in power levels")
						}
						ac, _ := contentField(t, create, "additional_creators").([]any)
						if (preset == spec.PresetTrustedPrivateChat) != (len(ac) == 1) {
							t.Fatalf("additional_creators %v", ac)
						}
					} else {
						if users[alice] != float64(100) {
							t.Fatalf("creator power %v", users[alice])
						}
						if (preset == spec.PresetTrustedPrivateChat) != (users[bob] == float64(100)) {
							t.Fatalf("bob power %v", users[bob])
						}
						if hasCreator := contentField(t, create, "creator") != nil; hasCreator != (version != "11") {
							t.Fatalf("creator field present=%v", hasCreator)
						}
					}

					// Bob joins, both talk, alice sets state.
					if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
						t.Fatalf("bob join: %v", err)
					}
					var sent []string
					for i := range 5 {
						from := alice
						if i%2 == 1 {
							from = bob
						}
						sent = append(sent, mustSend(t, rs, roomID, from, "m.room.message", nil, msg(fmt.Sprint("hello ", i))).EventID())
					}
					mustSend(t, rs, roomID, alice, "m.room.name", strp(""), map[string]any{"name": "Renamed"})
					sent = append(sent, mustSend(t, rs, roomID, bob, "m.room.message", nil, msg("after rename")).EventID())

					page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: End, Dir: Backward, Limit: 7, Viewer: bob})
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, ev := range page.Events {
						if ev.Type() == "m.room.message" {
							got = append([]string{ev.EventID()}, got...)
						}
					}
					if strings.Join(got, ",") != strings.Join(sent, ",") {
						t.Fatalf("messages %v, want %v", got, sent)
					}
					name, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomName, "")
					if contentField(t, name, "name") != "Renamed" {
						t.Fatal("rename lost")
					}
					joined, err := rs.JoinedMembers(ctx, roomID)
					if err != nil || strings.Join(joined, ",") != alice+","+bob {
						t.Fatalf("joined members %v %v", joined, err)
					}
				})
			}
		}
		rooms, err := rs.JoinedRooms(ctx, bob)
		if err != nil || len(rooms) != 36 {
			t.Fatalf("bob joined rooms: %d %v", len(rooms), err)
		}
	})
}

func TestCreateRoomErrors(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		_, err := rs.CreateRoom(ctx, CreateRoomRequest{Creator: user("alice"), RoomVersion: "99"})
		wantErrCode(t, err, spec.ErrorUnsupportedRoomVersion)
		_, err = rs.CreateRoom(ctx, CreateRoomRequest{Creator: user("alice"), RoomVersion: string(gomatrixserverlib.RoomVersionPseudoIDs)})
		wantErrCode(t, err, spec.ErrorUnsupportedRoomVersion)
		_, err = rs.CreateRoom(ctx, CreateRoomRequest{Creator: "@alice:elsewhere.example"})
		wantErrCode(t, err, spec.ErrorForbidden)
		_, err = rs.CreateRoom(ctx, CreateRoomRequest{Creator: user("alice"), Preset: "party"})
		wantErrCode(t, err, spec.ErrorBadJSON)
		// An initial state event the creator may not send (a member event for someone else).
		_, err = rs.CreateRoom(ctx, CreateRoomRequest{Creator: user("alice"),
			InitialState: []StateEvent{{Type: spec.MRoomMember, StateKey: user("bob"), Content: map[string]any{"membership": "join"}}}})
		wantErrCode(t, err, spec.ErrorForbidden)
		rooms, err := rs.RoomsOfUser(ctx, user("alice"), "")
		if err != nil || len(rooms) != 0 {
			t.Fatalf("failed creations left rooms behind: %v %v", rooms, err)
		}
		// power_level_content_override applies on top.
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice"),
			PowerLevelContentOverride: map[string]any{"events_default": 20, "users": map[string]any{user("alice"): 100, user("bob"): 20}}})
		pl, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomPowerLevels, "")
		if contentField(t, pl, "events_default") != float64(20) || contentField(t, pl, "state_default") != float64(50) {
			t.Fatalf("override not applied: %s", pl.Content())
		}
	})
}

func TestCreateIdenticalV12Rooms(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		frozen := time.UnixMilli(1_700_000_000_000)
		rs := newRS(t, db, func(c *Config) { c.Now = func() time.Time { return frozen } })
		a := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice"), RoomVersion: "12"})
		b := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice"), RoomVersion: "12"})
		if a == b {
			t.Fatal("two rooms share an ID")
		}
	})
}

// In room version 12 creators have unlimited power from the create event; a power
// levels event listing one is a bad request (400), not a lack of power, both in
// createRoom and later.
func TestV12PowerLevelsCannotListCreators(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		_, err := rs.CreateRoom(ctx, CreateRoomRequest{Creator: alice, RoomVersion: "12",
			PowerLevelContentOverride: map[string]any{"users": map[string]any{alice: 100}}})
		wantErrCode(t, err, spec.ErrorBadJSON)

		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: "12", Preset: spec.PresetPublicChat,
			CreationContent: map[string]any{"additional_creators": []any{bob}}})
		mustSend(t, rs, roomID, bob, spec.MRoomMember, strp(bob), map[string]any{"membership": "join"})
		for _, u := range []string{alice, bob} {
			_, err = rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: spec.MRoomPowerLevels, StateKey: strp(""),
				Content: map[string]any{"users": map[string]any{u: 100}}})
			wantErrCode(t, err, spec.ErrorBadJSON)
		}
		// The additional creator has a creator's power.
		mustSend(t, rs, roomID, bob, spec.MRoomName, strp(""), map[string]any{"name": "Bob's room"})
		_, err = rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: alice, Type: spec.MRoomCreate, StateKey: strp(""),
			Content: map[string]any{"room_version": "12"}})
		wantErrCode(t, err, spec.ErrorBadJSON)
	})
}
