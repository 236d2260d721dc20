package roomserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// The fast builder must make exactly the event gomatrixserverlib's Build makes (same
// bytes, same event ID, same signature) for every room version it serves, or refuse
// the same content Build refuses.
func TestFastBuildSameAsBuild(t *testing.T) {
	k := signingKey(t)
	contents := []string{
		`{"msgtype":"m.text","body":"hello"}`,
		`{}`,
		`  { "b" : 1 , "a" : [ 3, 2, {"z":null,"y":true} ] }  `,
		`{"body":"<b>&amp;</b> \u003c \/ \" \\ \n\t\u0001 \u00e9 é \u2028 \ud83d\ude00 😀"}`,
		`{"nested":{"deep":{"deeper":{"k":"v","a":-1}}},"list":[],"obj":{}}`,
		`{"big":9007199254740991,"neg":-9007199254740991,"zero":0}`,
		`{"float":1.5}`,
		`{"huge":9007199254740992}`,
		`{"exp":1e3}`,
		`{"m.relates_to":{"rel_type":"m.thread","event_id":"$abc"},"body":"reply"}`,
	}
	types := []string{"m.room.message", "m.reaction", "com.example.<custom>&\"type\"", "m.room.encrypted", "ü.type", "ctl\x01\x08\t\n\x0b\x0c\r\x1f\x7f\\/\u2028"}
	senders := []string{"@alice:" + testServer, "@bob\"<x>:" + testServer}
	n := 0
	for _, v := range gomatrixserverlib.RoomVersions() {
		verImpl := v
		if verImpl.EventFormat() != gomatrixserverlib.EventFormatV2 {
			continue
		}
		if !fastBuildOK(verImpl, testServer, k.ID, k.Private) {
			t.Errorf("room version %s: the fast builder's self-check failed", verImpl.Version())
			continue
		}
		for ci, c := range contents {
			for ti, typ := range types {
				for si, sender := range senders {
					e := &fastEvent{
						verImpl: verImpl, roomID: "!room:" + testServer, sender: sender, typ: typ, content: []byte(c),
						prevEvents: []string{"$p1", "$p2"}, authEvents: []string{"$a1", "$a2", "$a3"}[:1+(ci+ti+si)%3],
						depth: int64(ci*100 + ti), ts: time.UnixMilli(1700000000000 + int64(ci)),
						origin: testServer, keyID: k.ID, key: k.Private,
					}
					name := fmt.Sprintf("v%s/content%d/type%d/sender%d", verImpl.Version(), ci, ti, si)
					fast, ferr := fastBuild(e)
					slow, serr := slowBuild(e)
					if (ferr == nil) != (serr == nil) {
						t.Errorf("%s: fast error %v, Build error %v", name, ferr, serr)
						continue
					}
					if ferr != nil {
						continue
					}
					n++
					if !bytes.Equal(fast.JSON(), slow.JSON()) {
						t.Errorf("%s:\nfast  %s\nBuild %s", name, fast.JSON(), slow.JSON())
					}
					if fast.EventID() != slow.EventID() {
						t.Errorf("%s: event ID %s, Build %s", name, fast.EventID(), slow.EventID())
					}
					// The event checks out like any event received over federation.
					// The signature verifies over the redacted event, as a remote server checks it.
					redacted, err := verImpl.RedactEventJSON(fast.JSON())
					if err != nil {
						t.Fatal(err)
					}
					if err := gomatrixserverlib.VerifyJSON(testServer, k.ID, k.Private.Public().(ed25519.PublicKey), redacted); err != nil {
						t.Errorf("%s: signature: %v", name, err)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no event compared")
	}
}

// appendJSONString writes strings exactly as encoding/json followed by
// gomatrixserverlib's canonicalisation does.
func TestAppendJSONString(t *testing.T) {
	var all []byte
	for c := 0; c < 0x80; c++ {
		all = append(all, byte(c))
	}
	for _, s := range []string{"", "plain", string(all), "é ü 😀 \u2028\u2029 <>&", "\xff\xfe invalid", "a\"b\\c", "\x00"} {
		enc, _ := json.Marshal(s)
		want := gomatrixserverlib.CompactJSON(enc, nil)
		if got := appendJSONString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("%q: got %s, want %s", s, got[1:], want)
		}
	}
}

// Sends through the roomserver take the fast path for plain messages and produce
// events that pass the same checks as ever.
func TestFastBuildUsedForMessages(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		rs := newRS(t, db)
		alice := user("alice")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice})
		r, err := rs.room(context.Background(), roomID)
		if err != nil {
			t.Fatal(err)
		}
		p := protoEvent{sender: alice, typ: "m.room.message", content: []byte(`{"body":"hi"}`)}
		if !fastBuildable(r.verImpl, &p) || !fastBuildOK(r.verImpl, rs.cfg.ServerName, rs.cfg.KeyID, rs.cfg.PrivateKey) {
			t.Fatalf("room version %s: a plain message does not take the fast path", r.version)
		}
		ev, err := rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message", Content: msg("hi")})
		if err != nil {
			t.Fatal(err)
		}
		// Re-parse as an untrusted event (hash and size checks) and verify the signature.
		pdu, err := r.verImpl.NewEventFromUntrustedJSON(ev.JSON())
		if err != nil {
			t.Fatalf("stored event does not parse as untrusted JSON: %v", err)
		}
		if pdu.EventID() != ev.EventID() {
			t.Fatalf("event ID %s, recomputed %s", ev.EventID(), pdu.EventID())
		}
		if ev.Depth() < 2 || len(ev.PrevEventIDs()) != 1 || len(ev.AuthEventIDs()) == 0 {
			t.Fatalf("unexpected DAG fields: depth %d prev %v auth %v", ev.Depth(), ev.PrevEventIDs(), ev.AuthEventIDs())
		}
		// A float is refused in room versions with enforced canonical JSON, as before.
		_, err = rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: alice, Type: "m.room.message",
			Content: []byte(`{"body":"x","n":1.5}`)})
		wantErrCode(t, err, spec.ErrorBadJSON)
	})
}

// The auth answers remembered for messages follow the room's state: a sender whose
// power drops below the message's level, or who left, is refused at once.
func TestAllowCacheFollowsState(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		rs := newRS(t, db)
		alice, bob := user("alice"), user("bob")
		roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, Preset: spec.PresetPublicChat})
		mustSend(t, rs, roomID, bob, spec.MRoomMember, strp(bob), map[string]any{"membership": "join"})
		send := func(sender, typ string) error {
			_, err := rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: sender, Type: typ, Content: msg("x")})
			return err
		}
		for range 3 {
			if err := send(bob, "m.room.message"); err != nil {
				t.Fatal(err)
			}
			if err := send(bob, "com.example.game"); err != nil {
				t.Fatal(err)
			}
		}
		// Only users at 50 may send com.example.game now; bob is at 0.
		mustSend(t, rs, roomID, alice, spec.MRoomPowerLevels, strp(""), map[string]any{
			"users": map[string]any{alice: 100}, "events": map[string]any{"com.example.game": 50},
		})
		wantErrCode(t, send(bob, "com.example.game"), spec.ErrorForbidden)
		if err := send(bob, "m.room.message"); err != nil {
			t.Fatalf("other types still allowed: %v", err)
		}
		mustSend(t, rs, roomID, bob, spec.MRoomMember, strp(bob), map[string]any{"membership": "leave"})
		wantErrCode(t, send(bob, "m.room.message"), spec.ErrorForbidden)
	})
}

func TestNegativeFraction(t *testing.T) {
	for in, want := range map[string]string{
		`{"n":-0.5}`:                 "-0.5",
		`[1,{"a":[-0.25e1]}]`:        "-0.25e1",
		`{"n":-0e-3,"m":-0.001}`:     "-0.001",
		`{"n":-0,"m":-0.0,"k":-0e5}`: "",
		`{"s":"-0.5","t":"\"-0.5"}`:  "",
		`{"n":-1.5,"m":0.5}`:         "",
		`{"s":"a\\","n":-0.1}`:       "-0.1",
	} {
		if got := negativeFraction([]byte(in)); got != want {
			t.Errorf("negativeFraction(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestEscapedKey(t *testing.T) {
	for in, want := range map[string]string{
		`{"a\"b":1}`:                  `a"b`,
		`{"x":{"a\\b":1}}`:            `a\b`,
		`{"x":[{"k\n":1}]}`:           "k\n",
		`{"k\u0001" : 1}`:             "k\x01",
		`{"body":"a\"b","s":"\\"}`:    "",
		`{"\u00e9\/":1,"a":"\"x\":"}`: "",
		`{"plain":1}`:                 "",
	} {
		if got := escapedKey([]byte(in)); got != want {
			t.Errorf("escapedKey(%s) = %q, want %q", in, got, want)
		}
	}
}
