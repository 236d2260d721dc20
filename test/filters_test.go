package test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestFilters(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		base := "/_matrix/client/v3/user/" + esc(alice.UserID.String()) + "/filter"

		f := &mautrix.Filter{
			EventFormat: mautrix.EventFormatClient,
			EventFields: []string{"type", "content", "sender"},
			Presence:    &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}},
			Room: &mautrix.RoomFilter{
				IncludeLeave: true,
				NotRooms:     []id.RoomID{"!spam:hs1.test"},
				Timeline:     &mautrix.FilterPart{Limit: 20, LazyLoadMembers: true, Types: []event.Type{event.EventMessage}},
				State:        &mautrix.FilterPart{LazyLoadMembers: true, IncludeRedundantMembers: true},
			},
		}
		resp, err := alice.CreateFilter(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if resp.FilterID == "" || strings.HasPrefix(resp.FilterID, "{") {
			t.Fatalf("filter ID %q", resp.FilterID)
		}
		// Downloading gives the filter back.
		status, body := s.Do(t, "GET", base+"/"+esc(resp.FilterID), alice.AccessToken, nil)
		if status != 200 {
			t.Fatalf("get filter: %d %v", status, body)
		}
		var want map[string]any
		raw, _ := json.Marshal(f)
		_ = json.Unmarshal(raw, &want)
		if !reflect.DeepEqual(body, want) {
			t.Fatalf("downloaded filter differs:\n got %v\nwant %v", body, want)
		}
		// Uploading the same filter again gives the same ID; another gives another.
		if again, err := alice.CreateFilter(ctx, f); err != nil || again.FilterID != resp.FilterID {
			t.Fatalf("re-upload: %+v %v", again, err)
		}
		other, err := alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1}}})
		if err != nil || other.FilterID == resp.FilterID {
			t.Fatalf("second filter: %+v %v", other, err)
		}
		// Unknown fields (unstable extensions) are kept.
		status, body = s.Do(t, "POST", base, alice.AccessToken, `{"org.example.ext":{"a":1},"room":{"timeline":{"limit":0}}}`)
		if status != 200 {
			t.Fatalf("filter with an extension: %d %v", status, body)
		}
		extID, _ := body["filter_id"].(string)
		status, body = s.Do(t, "GET", base+"/"+esc(extID), alice.AccessToken, nil)
		if ext, _ := body["org.example.ext"].(map[string]any); status != 200 || ext["a"] != 1.0 {
			t.Fatalf("extension lost: %d %v", status, body)
		}

		// Other users cannot read or create alice's filters, nor reach them through their own path.
		status, body = s.Do(t, "GET", base+"/"+esc(resp.FilterID), bob.AccessToken, nil)
		udExpect(t, "bob reading alice's filter", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "POST", base, bob.AccessToken, `{}`)
		udExpect(t, "bob creating a filter for alice", status, body, 403, "M_FORBIDDEN")
		bobBase := "/_matrix/client/v3/user/" + esc(bob.UserID.String()) + "/filter"
		status, body = s.Do(t, "GET", bobBase+"/"+esc(resp.FilterID), bob.AccessToken, nil)
		udExpect(t, "alice's filter ID under bob", status, body, 404, "M_NOT_FOUND")

		// Unknown and malformed IDs.
		for _, fid := range []string{"999999", "abc", "-1", "1.5", "99999999999999999999999"} {
			status, body = s.Do(t, "GET", base+"/"+esc(fid), alice.AccessToken, nil)
			udExpect(t, "filter ID "+fid, status, body, 404, "M_NOT_FOUND")
		}

		// Invalid filters are refused with a message naming the field.
		bad := []struct {
			name, body, code, field string
		}{
			{"string limit", `{"room":{"timeline":{"limit":"10"}}}`, "M_BAD_JSON", "room.timeline.limit"},
			{"negative limit", `{"room":{"timeline":{"limit":-1}}}`, "M_BAD_JSON", "room.timeline.limit"},
			{"fractional limit", `{"presence":{"limit":2.5}}`, "M_BAD_JSON", "presence.limit"},
			{"bad event_format", `{"event_format":"xml"}`, "M_BAD_JSON", "event_format"},
			{"event_fields not a list", `{"event_fields":"type"}`, "M_BAD_JSON", "event_fields"},
			{"number in types", `{"account_data":{"types":[1]}}`, "M_BAD_JSON", "account_data.types"},
			{"string boolean", `{"room":{"state":{"lazy_load_members":"true"}}}`, "M_BAD_JSON", "room.state.lazy_load_members"},
			{"bad room ID", `{"room":{"rooms":["#alias:hs1.test"]}}`, "M_BAD_JSON", "room.rooms"},
			{"bad sender", `{"presence":{"senders":["alice"]}}`, "M_BAD_JSON", "presence.senders"},
			{"not JSON", `room=1`, "M_NOT_JSON", ""},
			{"array", `[]`, "M_NOT_JSON", ""},
		}
		for _, b := range bad {
			status, body := s.Do(t, "POST", base, alice.AccessToken, b.body)
			udExpect(t, b.name, status, body, 400, b.code)
			if msg, _ := body["error"].(string); !strings.Contains(msg, b.field) {
				t.Fatalf("%s: error %q does not name %q", b.name, msg, b.field)
			}
		}
		status, body = s.Do(t, "POST", base, alice.AccessToken, map[string]string{"x": strings.Repeat("x", 2<<20)})
		udExpect(t, "huge filter", status, body, 413, "M_TOO_LARGE")

		// Filters survive a restart.
		s.Restart()
		status, body = s.Do(t, "GET", base+"/"+esc(resp.FilterID), alice.AccessToken, nil)
		if status != 200 || !reflect.DeepEqual(body, want) {
			t.Fatalf("after restart: %d %v", status, body)
		}
	})
}
