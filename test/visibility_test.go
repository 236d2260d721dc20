package test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestVisibilityHistory checks, over HTTP, what /messages, /event and /context return for
// an event sent while users are in different memberships, for each history visibility.
func TestVisibilityHistory(t *testing.T) {
	// Viewers: "before" joined before the event, "after" joined after it, "invited" was
	// invited before it and never joined, "never" never had a membership, "left" joined
	// before and left before the event.
	type want map[string]bool
	cases := []struct {
		visibility string
		sees       want
	}{
		{"world_readable", want{"before": true, "after": true, "invited": true, "never": true, "left": true}},
		{"shared", want{"before": true, "after": true, "invited": false, "never": false, "left": false}},
		{"invited", want{"before": true, "after": false, "invited": true, "never": false, "left": false}},
		{"joined", want{"before": true, "after": false, "invited": false, "never": false, "left": false}},
	}
	viewers := []string{"before", "after", "invited", "never", "left"}
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		users := map[string]*mautrix.Client{}
		for _, v := range viewers {
			users[v] = udRegister(t, s, "u"+v)
		}
		for _, c := range cases {
			roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{
				{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": c.visibility}}},
			}})
			for _, v := range []string{"before", "left"} {
				if _, err := users[v].JoinRoomByID(ctx, roomID); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := users["left"].LeaveRoom(ctx, roomID); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: users["invited"].UserID}); err != nil {
				t.Fatal(err)
			}
			secret := rmSend(t, alice, roomID, "secret in "+c.visibility)
			if _, err := users["after"].JoinRoomByID(ctx, roomID); err != nil {
				t.Fatal(err)
			}
			rmSend(t, alice, roomID, "after everyone in "+c.visibility)

			for _, v := range viewers {
				cli := users[v]
				what := fmt.Sprintf("%s/%s", c.visibility, v)
				wantSee := c.sees[v]

				// /event
				ev, err := cli.GetEvent(ctx, roomID, secret)
				if wantSee {
					if err != nil || ev.ID != secret || ev.Content.Raw["body"] == nil {
						t.Fatalf("%s: /event: %+v %v", what, ev, err)
					}
				} else {
					rmWantErr(t, what+": /event", err, 404, "M_NOT_FOUND")
				}

				// /context
				cx, err := cli.Context(ctx, roomID, secret, nil, 4)
				if wantSee {
					if err != nil || cx.Event.ID != secret {
						t.Fatalf("%s: /context: %+v %v", what, cx, err)
					}
				} else {
					rmWantErr(t, what+": /context", err, 404, "M_NOT_FOUND")
				}

				// /messages: 403 for users who never had a membership (unless
				// world_readable); otherwise the event is present or absent.
				msgs, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
				if v == "never" && c.visibility != "world_readable" {
					rmWantErr(t, what+": /messages", err, 403, "M_FORBIDDEN")
					continue
				}
				if err != nil {
					t.Fatalf("%s: /messages: %v", what, err)
				}
				found := false
				for _, m := range msgs.Chunk {
					if m.ID == secret {
						found = true
					}
					if m.ID == "" {
						t.Fatalf("%s: event without ID", what)
					}
				}
				if found != wantSee {
					t.Fatalf("%s: /messages has the event: %v, want %v", what, found, wantSee)
				}
				// No context window leaks it either.
				if !wantSee && v != "never" {
					if cx, err := cli.Context(ctx, roomID, lastOwnEvent(t, cli, roomID), nil, 20); err == nil {
						for _, m := range append(cx.EventsBefore, cx.EventsAfter...) {
							if m.ID == secret {
								t.Fatalf("%s: /context window leaks the event", what)
							}
						}
					}
				}
			}
		}
	})
}

// lastOwnEvent returns the ID of the newest event of a room the client can see.
func lastOwnEvent(t *testing.T, cli *mautrix.Client, roomID id.RoomID) id.EventID {
	t.Helper()
	msgs, err := cli.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 1)
	if err != nil || len(msgs.Chunk) == 0 {
		return ""
	}
	return msgs.Chunk[0].ID
}
