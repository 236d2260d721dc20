//go:build goolm

package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestGoolmAcrossServers: a mautrix goolm user on one server invites a goolm bot of
// another server to an encrypted room; the bot joins over federation, and both decrypt
// each other's messages: device keys are queried and one-time keys claimed across
// servers, and the room keys travel as to-device messages over federation.
func TestGoolmAcrossServers(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b := startFedServer(t, engine), startFedServer(t, engine)
		alice := e2eStartBot(t, e2eRegister(t, a.Server, "alice"), false)
		bot := e2eStartBot(t, e2eRegister(t, b.Server, "bot"), false)

		resp, err := alice.dev.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat",
			InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: new(""),
				Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		if _, err := alice.dev.cli.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: id.UserID(bot.dev.userID)}); err != nil {
			t.Fatal(err)
		}
		// The bot accepts once the invite is in the room on alice's server.
		joinRemote(t, bot.dev.cli, room.String(), a)
		e2eEventually(t, "the remote bot joins", 30*time.Second, func() bool {
			m, err := alice.dev.cli.JoinedMembers(ctx, room)
			if err != nil {
				return false
			}
			_, joined := m.Joined[id.UserID(bot.dev.userID)]
			return joined
		})
		e2eEventually(t, "the bot knows the room is encrypted", 30*time.Second, func() bool {
			enc, _ := bot.mach.StateStore.IsEncrypted(ctx, room)
			return enc
		})

		for _, body := range []string{"hello remote bot", "second message"} {
			alice.sendEncrypted(t, room, body)
		}
		e2eEventually(t, "the bot decrypts alice's messages", 60*time.Second, func() bool {
			got, failed := bot.bodies(room)
			if len(failed) > 0 {
				t.Fatalf("bot failed to decrypt: %v", failed)
			}
			return len(got) == 2 && slices.Contains(got, "hello remote bot") && slices.Contains(got, "second message")
		})

		bot.sendEncrypted(t, room, "hello alice, from the other server")
		e2eEventually(t, "alice decrypts the bot's reply", 60*time.Second, func() bool {
			got, failed := alice.bodies(room)
			if len(failed) > 0 {
				t.Fatalf("alice failed to decrypt: %v", failed)
			}
			return slices.Contains(got, "hello alice, from the other server")
		})
	})
}
