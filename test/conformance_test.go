package test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/test/harness"
)

// Client-server behaviours that Complement (the ecosystem's conformance suite) checks,
// kept here so they do not regress between Complement runs.
func TestConformanceRoomEdgeCases(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		sec := &acctSecrets{}
		alice := acctRegister(t, s, sec, "alice", "secret")
		bob := acctRegister(t, s, sec, "bob", "hunter2")
		const v3 = "/_matrix/client/v3"
		roomID := dirCreate(t, s, alice, map[string]any{"preset": "public_chat"})
		room := v3 + "/rooms/" + url.PathEscape(roomID)

		// Setting a state event to what it already is returns the existing event.
		ids := map[string]bool{}
		for _, topic := range []string{"a", "a", "b"} {
			st, body := s.Do(t, "PUT", room+"/state/m.room.topic", alice, map[string]any{"topic": topic})
			if st != 200 {
				t.Fatalf("set topic: %d %v", st, body)
			}
			ids[body["event_id"].(string)] = true
		}
		if len(ids) != 2 {
			t.Fatalf("topics a, a, b gave %d distinct events, want 2", len(ids))
		}

		// Content that cannot fit in a 64 KiB event: 413 M_TOO_LARGE, message or state.
		big := strings.Repeat("and they dont stop coming ", 2700)
		st, body := s.Do(t, "PUT", room+"/send/m.room.message/big", alice, map[string]any{"msgtype": "m.text", "body": big})
		if st != 413 || body["errcode"] != "M_TOO_LARGE" {
			t.Fatalf("large message: %d %v", st, body)
		}
		st, body = s.Do(t, "PUT", room+"/state/marvel.universe.fate", alice, map[string]any{"body": big})
		if st != 413 || body["errcode"] != "M_TOO_LARGE" {
			t.Fatalf("large state event: %d %v", st, body)
		}

		// A body that is JSON but not an object is M_BAD_JSON; one that is not JSON, M_NOT_JSON.
		st, body = s.Do(t, "PUT", room+"/send/complement.dummy/j1", alice, `"eyJib2R5IjogMS4xfQ=="`)
		if st != 400 || body["errcode"] != "M_BAD_JSON" {
			t.Fatalf("JSON string body: %d %v", st, body)
		}
		st, body = s.Do(t, "PUT", room+"/send/complement.dummy/j2", alice, `{"body": `)
		if st != 400 || body["errcode"] != "M_NOT_JSON" {
			t.Fatalf("truncated JSON body: %d %v", st, body)
		}

		// Extra keys of a join body land in the member event; reserved ones do not.
		st, body = s.Do(t, "POST", v3+"/join/"+url.PathEscape(roomID), bob, map[string]any{
			"foo": "bar", "reason": "hi", "join_authorised_via_users_server": "@alice:hs1.test"})
		if st != 200 {
			t.Fatalf("join with content: %d %v", st, body)
		}
		st, member := s.Do(t, "GET", room+"/state/m.room.member/"+url.PathEscape("@bob:hs1.test"), bob, nil)
		if st != 200 || member["foo"] != "bar" || member["reason"] != "hi" || member["membership"] != "join" ||
			member["join_authorised_via_users_server"] != nil {
			t.Fatalf("member content after a join with custom content: %d %v", st, member)
		}

		// A room bob left and forgot cannot be paginated, whatever the parameters.
		if st, body = s.Do(t, "GET", room+"/messages?dir=b", bob, nil); st != 200 {
			t.Fatalf("messages while joined: %d %v", st, body)
		}
		if st, body = s.Do(t, "POST", room+"/leave", bob, map[string]any{}); st != 200 {
			t.Fatalf("leave: %d %v", st, body)
		}
		if st, body = s.Do(t, "GET", room+"/messages?dir=b", bob, nil); st != 200 {
			t.Fatalf("messages after leaving (history up to the leave): %d %v", st, body)
		}
		if st, body = s.Do(t, "POST", room+"/forget", bob, map[string]any{}); st != 200 {
			t.Fatalf("forget: %d %v", st, body)
		}
		for _, q := range []string{"", "?dir=b"} {
			if st, body = s.Do(t, "GET", room+"/messages"+q, bob, nil); st != 403 || body["errcode"] != "M_FORBIDDEN" {
				t.Fatalf("messages%s of a forgotten room: %d %v", q, st, body)
			}
		}
		// avatar_url takes any string (Complement's TestAvatarUrlUpdate sets "LemurLover").
		st, body = s.Do(t, "PUT", v3+"/profile/"+url.PathEscape("@alice:hs1.test")+"/avatar_url", alice, map[string]any{"avatar_url": "LemurLover"})
		if st != 200 {
			t.Fatalf("non-mxc avatar_url: %d %v", st, body)
		}
		if st, body = s.Do(t, "GET", v3+"/profile/"+url.PathEscape("@alice:hs1.test")+"/avatar_url", alice, nil); body["avatar_url"] != "LemurLover" {
			t.Fatalf("avatar_url after setting it: %d %v", st, body)
		}

		// Alice still reads; and without dir she is told it is missing.
		if st, body = s.Do(t, "GET", room+"/messages", alice, nil); st != 400 || body["errcode"] != "M_MISSING_PARAM" {
			t.Fatalf("messages without dir: %d %v", st, body)
		}
	})
}

// Numbers in event content: room versions 6 and later take only integers (M_BAD_JSON
// otherwise); older ones take fractions and keep them exactly, except negative ones
// written with a leading zero (-0.5), which are refused rather than stored without their
// sign. Negative zero is
// refused in 6 and later (canonical JSON has no -0) and stored as 0 before. Object keys
// that hold a quote, a backslash or a control character are refused in every version.
func TestEventContentCanonicalJSON(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := acctRegister(t, s, &acctSecrets{}, "alice", "secret")
		const v3 = "/_matrix/client/v3"
		for _, version := range []string{"5", "11"} {
			room := v3 + "/rooms/" + url.PathEscape(dirCreate(t, s, alice, map[string]any{"room_version": version}))
			send := func(txn, content string) (int, map[string]any) {
				return s.Do(t, "PUT", room+"/send/org.example.numbers/"+txn, alice, content)
			}
			readBack := func(body map[string]any) map[string]any {
				st, ev := s.Do(t, "GET", room+"/event/"+url.PathEscape(body["event_id"].(string)), alice, nil)
				if st != 200 {
					t.Fatalf("v%s: read back: %d %v", version, st, ev)
				}
				return ev["content"].(map[string]any)
			}
			for i, c := range []string{`{"n":-0.5}`, `{"a":[1,{"n":-0.25e1}]}`, `{"n":-0e-3,"m":-0.001}`} {
				if st, body := send("neg"+string(rune('a'+i)), c); st != 400 || body["errcode"] != "M_BAD_JSON" {
					t.Errorf("v%s: %s: %d %v, want 400 M_BAD_JSON", version, c, st, body)
				}
			}
			// Integers and "-0.5" inside a string go through unchanged.
			st, body := send("ints", `{"body":"x = -0.5","n":-1,"big":9007199254740991}`)
			if st != 200 {
				t.Fatalf("v%s: integers: %d %v", version, st, body)
			}
			if got := readBack(body); got["body"] != "x = -0.5" || got["n"] != -1.0 || got["big"] != 9007199254740991.0 {
				t.Errorf("v%s: integers came back as %v", version, got)
			}
			// Keys that would need escaping again: the library writes keys raw, so
			// they are refused instead of stored broken or as another key.
			for i, c := range []string{`{"a\\b":1}`, `{"x":{"q\"":1}}`, `{"k\n":1}`} {
				if st, body := send("key"+string(rune('a'+i)), c); st != 400 || body["errcode"] != "M_BAD_JSON" {
					t.Errorf("v%s: %s: %d %v, want 400 M_BAD_JSON", version, c, st, body)
				}
			}
			st, body = send("keyok", `{"\u00e9\/":1,"s":"a\\b \"q\""}`)
			if st != 200 {
				t.Fatalf("v%s: escaped key that needs no escaping: %d %v", version, st, body)
			}
			if got := readBack(body); got["é/"] != 1.0 || got["s"] != `a\b "q"` {
				t.Errorf("v%s: escapes came back as %v", version, got)
			}
			st, body = send("frac", `{"n":0.5,"m":-1.5}`)
			if version == "11" {
				if st != 400 || body["errcode"] != "M_BAD_JSON" {
					t.Errorf("v11: fraction: %d %v, want 400 M_BAD_JSON", st, body)
				}
				if st, body := send("negzero", `{"z":-0}`); st != 400 || body["errcode"] != "M_BAD_JSON" {
					t.Errorf("v11: negative zero: %d %v, want 400 M_BAD_JSON", st, body)
				}
				continue
			}
			if st, body := send("negzero", `{"z":-0}`); st != 200 || readBack(body)["z"] != 0.0 {
				t.Errorf("v5: negative zero: %d %v", st, body)
			}
			if st != 200 {
				t.Fatalf("v5: fraction: %d %v", st, body)
			}
			if got := readBack(body); got["n"] != 0.5 || got["m"] != -1.5 {
				t.Errorf("v5: fractions came back as %v", got)
			}
		}
	})
}
