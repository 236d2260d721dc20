package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestFederationLongAuthChain: a PDU whose auth chain holds 120 events B lacks (bob's
// display name changed 120 times, each change authorised by the one before; none ever
// sent to B) makes B fetch the whole chain with one /event_auth request (no /event one
// by one, which gives up after 50). A chain with one forged signature, and a chain
// over the 10,000 events bound, are refused with a clear error: nothing of them is
// stored, nor is the PDU. The genuine chain is then verified, stored, and the PDU shown.
func TestFederationLongAuthChain(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		f := newFedRoom(t, engine, nil)
		createID, plID, jrID := f.stateIDs(t)
		bob := "@bob:" + f.o.name

		// The auth chain of bob's join, as B serves it, and bob's join.
		code, ecode, out := f.call(t, f.o, "GET", "/_matrix/federation/v1/event_auth/"+url.PathEscape(f.roomID)+"/"+url.PathEscape(f.join.EventID()), nil)
		var base []json.RawMessage
		if err := json.Unmarshal(out["auth_chain"], &base); code != 200 || err != nil || len(base) < 3 {
			t.Fatalf("event_auth of the join: %d %s %v", code, ecode, err)
		}
		base = append(base, f.join.JSON())
		var chain []gomatrixserverlib.PDU
		prev := f.join
		for i := 1; i <= 120; i++ {
			m := f.o.event(t, f.roomID, "bob", "m.room.member", &bob, map[string]any{"membership": "join", "displayname": fmt.Sprintf("bob %d", i)},
				[]string{f.join.EventID()}, []string{createID, jrID, plID, prev.EventID()}, f.join.Depth()+int64(i))
			chain = append(chain, m)
			prev = m
		}
		x := f.o.event(t, f.roomID, "bob", "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after 120 name changes"},
			[]string{f.join.EventID()}, []string{createID, plID, prev.EventID()}, f.join.Depth()+1)

		var mu sync.Mutex
		var answer []json.RawMessage
		calls := 0
		f.o.mux.HandleFunc("/_matrix/federation/v1/event_auth/", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			calls++
			a := answer
			mu.Unlock()
			writeJSON(w, 200, map[string]any{"auth_chain": a})
		})
		serve := func(evs []json.RawMessage) {
			mu.Lock()
			answer, calls = evs, 0
			mu.Unlock()
		}
		genuine := append(append([]json.RawMessage{}, base...), pduJSON(chain)...)
		stored := func(eventID string) bool {
			code, _, _ := f.call(t, f.o, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(eventID), nil)
			return code == 200
		}
		nothingStored := func(what string) {
			t.Helper()
			for _, ev := range []gomatrixserverlib.PDU{chain[0], chain[58], chain[59], chain[119], x} {
				if stored(ev.EventID()) {
					t.Fatalf("%s: %s was stored", what, ev.EventID())
				}
			}
			for _, b := range f.bodies(t) {
				if b == "after 120 name changes" {
					t.Fatalf("%s: the PDU is in the timeline", what)
				}
			}
		}

		// 1. One event of the chain carries another event's signatures.
		var forged map[string]any
		_ = json.Unmarshal(chain[59].JSON(), &forged)
		var donor map[string]any
		_ = json.Unmarshal(chain[58].JSON(), &donor)
		forged["signatures"] = donor["signatures"]
		forgedJSON, _ := json.Marshal(forged)
		bad := append([]json.RawMessage{}, genuine...)
		bad[len(base)+59] = forgedJSON
		serve(bad)
		res := f.send(t, f.o, x)
		if e := res[x.EventID()]; !strings.Contains(e, "bad signature") || !strings.Contains(e, chain[59].EventID()) {
			t.Fatalf("PDU with a forged event in its auth chain: %q", e)
		}
		nothingStored("forged auth chain")

		// 2. More events than the bound.
		huge := make([]json.RawMessage, 0, 10001)
		for len(huge) < 10001 {
			huge = append(huge, genuine[len(huge)%len(genuine)])
		}
		serve(huge)
		if e := f.send(t, f.o, x)[x.EventID()]; !strings.Contains(e, "more than the 10000") {
			t.Fatalf("PDU with an auth chain of 10,001 events: %q", e)
		}
		nothingStored("auth chain over the bound")

		// 3. The genuine chain: one /event_auth request, no /event, the PDU shown.
		serve(genuine)
		if e := f.send(t, f.o, x)[x.EventID()]; e != "" {
			t.Fatalf("PDU with its genuine auth chain: %q", e)
		}
		mu.Lock()
		n := calls
		mu.Unlock()
		if n != 1 {
			t.Fatalf("%d /event_auth requests, want 1", n)
		}
		f.mu.Lock()
		for _, ev := range chain {
			if f.fetched[ev.EventID()] != 0 {
				t.Fatalf("%s fetched with /event", ev.EventID())
			}
		}
		f.mu.Unlock()
		if got := f.bodies(t); len(got) == 0 || got[0] != "after 120 name changes" {
			t.Fatalf("timeline: %v", got)
		}
		for _, ev := range []gomatrixserverlib.PDU{chain[0], chain[59], chain[119]} {
			if !stored(ev.EventID()) {
				t.Fatalf("auth chain event %s not stored", ev.EventID())
			}
		}
		// The chain stays out of the timeline (outliers), and bob's display name on B
		// is still the one of his join.
		var profile struct {
			DisplayName string `json:"displayname"`
		}
		if err := f.cli.StateEvent(t.Context(), id.RoomID(f.roomID), event.StateMember, bob, &profile); err != nil || profile.DisplayName != "" {
			t.Fatalf("bob's member event on B: %q %v", profile.DisplayName, err)
		}
	})
}
