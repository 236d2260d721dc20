package test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/test/harness"
)

// signedAs builds a message of roomID with the given sender, signed by the fake
// origin o only (whatever server the sender belongs to).
func (f *fedRoom) signedAs(t *testing.T, o *fakeOrigin, sender, body string, prev gomatrixserverlib.PDU, auth []string) gomatrixserverlib.PDU {
	t.Helper()
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersionV11)
	if err != nil {
		t.Fatal(err)
	}
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: f.roomID, Type: "m.room.message",
		PrevEvents: []string{prev.EventID()}, AuthEvents: auth, Depth: prev.Depth() + 1}
	if err := pe.SetContent(map[string]any{"msgtype": "m.text", "body": body}); err != nil {
		t.Fatal(err)
	}
	ev, err := ver.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), spec.ServerName(o.name), o.key.ID, o.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// rawPDU is a PDU whose JSON the test altered after signing.
type rawPDU struct {
	gomatrixserverlib.PDU
	raw json.RawMessage
}

func (p rawPDU) JSON() []byte { return p.raw }

// alterJSON returns ev's JSON changed by edit (signatures and hashes left as they were).
func alterJSON(t *testing.T, ev gomatrixserverlib.PDU, edit func(m map[string]any)) gomatrixserverlib.PDU {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return rawPDU{PDU: ev, raw: raw}
}

// TestFederationForgedEventsNeverShown: in one transaction from the room's remote
// member server, PDUs with a bad signature, a content that no longer matches its
// hash, a sender of another server (a local user of B, and a user of a third server)
// signed only by the origin, and a message of a non-member are refused (a tampered
// content is redacted, as the spec says); none of their contents ever reaches B's
// clients through /messages, /sync or /event, while the genuine message does. Then
// B denies the origin in its configuration: the origin's requests get 403 and B sends
// it nothing more.
func TestFederationForgedEventsNeverShown(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		f := newFedRoom(t, engine, nil)
		third := startFakeOrigin(t)
		var sends atomic.Int64
		f.o.mux.HandleFunc("/_matrix/federation/v1/send/", func(w http.ResponseWriter, r *http.Request) {
			sends.Add(1)
			writeJSON(w, 200, map[string]any{"pdus": map[string]any{}})
		})

		badSig := alterJSON(t, f.msg(t, "forged: bad signature", f.join), func(m map[string]any) {
			other := f.msg(t, "some other message", f.join)
			var om map[string]any
			_ = json.Unmarshal(other.JSON(), &om)
			m["signatures"] = om["signatures"]
		})
		badHash := alterJSON(t, f.msg(t, "the signed text", f.join), func(m map[string]any) {
			m["content"] = map[string]any{"msgtype": "m.text", "body": "forged: tampered after signing"}
		})
		asLocal := f.signedAs(t, f.o, f.cli.UserID.String(), "forged: speaking for B's own user", f.join, f.auth)
		asThird := f.signedAs(t, f.o, "@eve:"+third.name, "forged: speaking for a third server", f.join, f.auth)
		nonMember := f.signedAs(t, f.o, "@carl:"+f.o.name, "forged: from a non-member", f.join, f.auth)
		good := f.msg(t, "genuine after forgeries", f.join)

		res := f.send(t, f.o, badSig, badHash, asLocal, asThird, nonMember, good)
		// (The non-member's event is processed: stored rejected, which is no error of
		// the transaction; it must still never be shown.)
		for name, ev := range map[string]gomatrixserverlib.PDU{"bad signature": badSig, "other server's local user": asLocal,
			"third server's user": asThird} {
			if res[ev.EventID()] == "" {
				t.Errorf("%s accepted: %v", name, res)
			}
		}
		for name, ev := range map[string]gomatrixserverlib.PDU{"bad signature": badSig, "bad hash": badHash, "other server's local user": asLocal,
			"third server's user": asThird, "non-member": nonMember} {
			t.Logf("%s: %q", name, res[ev.EventID()])
		}
		if e, ok := res[good.EventID()]; !ok || e != "" {
			t.Fatalf("genuine message: %v", res)
		}

		forged := func(body string) bool { return strings.HasPrefix(body, "forged") || body == "the signed text" }
		// /messages.
		waitHistory(t, f.cli, f.roomID, []string{"before bob joined", "genuine after forgeries"})
		// /sync (initial, whole timeline).
		r, err := f.cli.FullSyncRequest(ctx, mautrix.ReqSync{})
		if err != nil {
			t.Fatal(err)
		}
		bodies := roomBodies(r, f.roomID)
		if !slices.Contains(bodies, "genuine after forgeries") || slices.ContainsFunc(bodies, forged) {
			t.Fatalf("sync timeline: %v", bodies)
		}
		// /event: refused events are not found; the tampered one, if kept, is redacted.
		for _, ev := range []gomatrixserverlib.PDU{badSig, asLocal, asThird, nonMember} {
			code, body := f.b.Do(t, "GET", "/_matrix/client/v3/rooms/"+f.roomID+"/event/"+ev.EventID(), f.cli.AccessToken, nil)
			if code != 404 || body["errcode"] != "M_NOT_FOUND" {
				t.Errorf("GET /event of a refused event %s: %d %v", ev.EventID(), code, body)
			}
		}
		code, body := f.b.Do(t, "GET", "/_matrix/client/v3/rooms/"+f.roomID+"/event/"+badHash.EventID(), f.cli.AccessToken, nil)
		if content, _ := body["content"].(map[string]any); code == 200 && len(content) != 0 {
			t.Errorf("tampered event shown with content: %v", body)
		} else if code != 200 && code != 404 {
			t.Errorf("GET /event of the tampered event: %d %v", code, body)
		}

		// Before the denial, B sends the origin its users' messages.
		sendText(t, f.cli, f.roomID, "while allowed")
		for deadline := time.Now().Add(60 * time.Second); sends.Load() == 0; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("B never sent the origin its message")
			}
		}

		// B denies the origin by configuration.
		cfg, err := config.Load(f.b.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Federation.DeniedServers = []string{f.o.name}
		data, err := config.Generate(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.b.ConfigPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		f.b.Restart()
		later := f.msg(t, "sent by a denied server", good)
		txn := map[string]any{"origin": f.o.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{later.JSON()}}
		if code, ecode, raw := f.o.send(t, f.b, f.o.name, f.b.ServerName, f.o.key, "PUT", "/_matrix/federation/v1/send/denied1", txn, nil); code != 403 || ecode != "M_FORBIDDEN" {
			t.Fatalf("send from a denied server: %d %s %s", code, ecode, raw)
		}
		before := sends.Load()
		sendText(t, f.cli, f.roomID, "after the denial")
		// Sending is asynchronous: give B's sender time to (wrongly) deliver.
		time.Sleep(3 * time.Second)
		if n := sends.Load(); n != before {
			t.Fatalf("B sent %d transactions to a denied server", n-before)
		}
		waitHistory(t, f.cli, f.roomID, []string{"before bob joined", "genuine after forgeries", "while allowed", "after the denial"})
	})
}
