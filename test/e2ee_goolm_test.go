//go:build goolm

package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// e2eBot is a mautrix client with its pure-Go crypto machine running its sync loop: it
// joins the rooms it is invited to, keeps its one-time keys topped up, takes room keys
// from to-device messages and decrypts the encrypted room messages it receives.
type e2eBot struct {
	dev  *e2eDev
	mach *crypto.OlmMachine
	mu   sync.Mutex
	// got is the decrypted bodies by room; failed the errors of events it could not decrypt.
	got    map[id.RoomID][]string
	failed []string
}

func e2eStartBot(t *testing.T, d *e2eDev, autoJoin bool) *e2eBot {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cli := d.cli
	ss := mautrix.NewMemoryStateStore()
	cli.StateStore = ss
	var logger *zerolog.Logger
	if os.Getenv("E2EE_DEBUG") != "" {
		l := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Str("who", d.userID).Logger()
		logger = &l
		cli.Log = l
	}
	mach := crypto.NewOlmMachine(cli, logger, crypto.NewMemoryStore(nil), ss.(crypto.StateStore))
	if err := mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mach.ShareKeys(ctx, -1); err != nil {
		t.Fatalf("share keys: %v", err)
	}
	b := &e2eBot{dev: d, mach: mach, got: map[id.RoomID][]string{}}
	syncer := cli.Syncer.(*mautrix.DefaultSyncer)
	syncer.OnSync(mach.ProcessSyncResponse)
	syncer.OnEvent(cli.StateStoreSyncHandler)
	syncer.OnEventType(event.StateMember, func(ctx context.Context, evt *event.Event) {
		mach.HandleMemberEvent(ctx, evt)
		if autoJoin && evt.Mautrix.EventSource&event.SourceInvite != 0 && evt.GetStateKey() == cli.UserID.String() &&
			evt.Content.AsMember().Membership == event.MembershipInvite {
			go func() {
				if _, err := cli.JoinRoomByID(ctx, evt.RoomID); err != nil && ctx.Err() == nil {
					t.Errorf("bot join %s: %v", evt.RoomID, err)
				}
			}()
		}
	})
	syncer.OnEventType(event.EventEncrypted, func(ctx context.Context, evt *event.Event) {
		go b.decrypt(ctx, evt)
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cli.SyncWithContext(ctx); err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			t.Errorf("sync loop of %s: %v", cli.UserID, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		cli.StopSync()
		<-done
	})
	return b
}

// decrypt decrypts a room event, waiting a bounded time for its room key when the
// to-device message has not arrived yet.
func (b *e2eBot) decrypt(ctx context.Context, evt *event.Event) {
	dec, err := b.mach.DecryptMegolmEvent(ctx, evt)
	if errors.Is(err, crypto.ErrNoSessionFound) {
		c := evt.Content.AsEncrypted()
		if b.mach.WaitForSession(ctx, evt.RoomID, c.SenderKey, c.SessionID, 15*time.Second) {
			dec, err = b.mach.DecryptMegolmEvent(ctx, evt)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		b.failed = append(b.failed, evt.ID.String()+": "+err.Error())
		return
	}
	if body, _ := dec.Content.Raw["body"].(string); dec.Type == event.EventMessage {
		b.got[evt.RoomID] = append(b.got[evt.RoomID], body)
	} else {
		b.failed = append(b.failed, evt.ID.String()+": decrypted to "+dec.Type.Type)
	}
}

func (b *e2eBot) bodies(room id.RoomID) ([]string, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got[room]), slices.Clone(b.failed)
}

// sendEncrypted shares the room's Megolm session with the joined members and sends body.
func (b *e2eBot) sendEncrypted(t *testing.T, room id.RoomID, body string) {
	t.Helper()
	if err := b.trySendEncrypted(room, body); err != nil {
		t.Fatal(err)
	}
}

func (b *e2eBot) trySendEncrypted(room id.RoomID, body string) error {
	ctx := context.Background()
	members, err := b.dev.cli.JoinedMembers(ctx, room)
	if err != nil {
		return err
	}
	var users []id.UserID
	for u := range members.Joined {
		users = append(users, u)
	}
	if err := b.mach.ShareGroupSession(ctx, room, users); err != nil {
		return fmt.Errorf("share group session: %w", err)
	}
	enc, err := b.mach.EncryptMegolmEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	if _, err := b.dev.cli.SendMessageEvent(ctx, room, event.EventEncrypted, enc); err != nil {
		return fmt.Errorf("send encrypted: %w", err)
	}
	return nil
}

func e2eEventually(t *testing.T, what string, d time.Duration, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGoolmBotDecryptsRoomMessages: a mautrix bot (pure-Go Olm/Megolm, build tag goolm)
// invited to an encrypted room joins it by itself and decrypts the messages a mautrix
// user sends after it joined; the user decrypts the bot's reply.
func TestGoolmBotDecryptsRoomMessages(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		ctx := context.Background()
		alice := e2eStartBot(t, e2eRegister(t, s, "alice"), false)
		bot := e2eStartBot(t, e2eRegister(t, s, "bot"), true)

		resp, err := alice.dev.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat",
			Invite: []id.UserID{id.UserID(bot.dev.userID)},
			InitialState: []*event.Event{{Type: event.StateEncryption, StateKey: new(""),
				Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		room := resp.RoomID
		e2eEventually(t, "the bot joins", 20*time.Second, func() bool {
			m, err := alice.dev.cli.JoinedMembers(ctx, room)
			if err != nil {
				return false
			}
			_, joined := m.Joined[id.UserID(bot.dev.userID)]
			return joined
		})
		e2eEventually(t, "the bot knows the room is encrypted", 20*time.Second, func() bool {
			enc, _ := bot.mach.StateStore.IsEncrypted(ctx, room)
			return enc
		})

		for _, body := range []string{"hello bot", "second message"} {
			alice.sendEncrypted(t, room, body)
		}
		e2eEventually(t, "the bot decrypts alice's messages", 30*time.Second, func() bool {
			got, failed := bot.bodies(room)
			if len(failed) > 0 {
				t.Fatalf("bot failed to decrypt: %v", failed)
			}
			return len(got) == 2 && slices.Contains(got, "hello bot") && slices.Contains(got, "second message")
		})

		bot.sendEncrypted(t, room, "hello alice, from the bot")
		e2eEventually(t, "alice decrypts the bot's reply", 30*time.Second, func() bool {
			got, failed := alice.bodies(room)
			if len(failed) > 0 {
				t.Fatalf("alice failed to decrypt: %v", failed)
			}
			return slices.Contains(got, "hello alice, from the bot")
		})
	})
}

// TestGoolmBotWithJSClient: a matrix-js-sdk user (Rust crypto, test/js/e2ee_bot.mjs)
// invites the mautrix goolm bot to an encrypted room; the bot joins, decrypts the
// js-sdk's message and answers encrypted; the js-sdk decrypts the answer.
func TestGoolmBotWithJSClient(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		bot := e2eStartBot(t, e2eRegister(t, s, "bot"), true)
		replied := make(chan error, 1)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					replied <- errors.New("the bot never got the js-sdk's message")
					return
				case <-time.After(100 * time.Millisecond):
				}
				bot.mu.Lock()
				var room id.RoomID
				for r, bodies := range bot.got {
					if slices.Contains(bodies, "hello bot from js") {
						room = r
					}
				}
				failed := slices.Clone(bot.failed)
				bot.mu.Unlock()
				if len(failed) > 0 {
					replied <- fmt.Errorf("bot failed to decrypt: %v", failed)
					return
				}
				if room != "" {
					replied <- bot.trySendEncrypted(room, "hello js, from the bot")
					return
				}
			}
		}()
		runJS(t, "e2ee_bot.mjs", s.URL, bot.dev.userID)
		if err := <-replied; err != nil {
			t.Fatal(err)
		}
	})
}
