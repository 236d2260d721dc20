package filter

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzParse checks the filter parser on arbitrary bytes: it never panics, every
// refusal is an *Error, an accepted filter validates, and it survives a JSON round
// trip: Parse(json.Marshal(f)) gives the same filter.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `"x"`, `{`,
		`{"event_format":"client","event_fields":["content.body"],"presence":{"limit":3,"types":["m.presence"],"not_senders":["@a:b"]}}`,
		`{"room":{"rooms":["!a:b"],"not_rooms":["!c:d"],"include_leave":true,"timeline":{"limit":10,"lazy_load_members":true,"contains_url":false},"state":{"lazy_load_members":true,"include_redundant_members":true}}}`,
		`{"room":{"timeline":{"limit":-1}}}`,
		`{"room":{"timeline":{"limit":1e400}}}`,
		`{"room":{"rooms":[1]}}`,
		`{"room":{"rooms":"!a:b"}}`,
		`{"senders":["not-a-user"]}`,
		`{"event_format":"weird"}`,
		`{"account_data":{"types":["*"],"not_types":["m.*"]},"room":{"account_data":{},"ephemeral":{"unread_thread_notifications":true}}}`,
		"{\"room\":{\"rooms\":[\"\xff\"]}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		flt, err := Parse(data)
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("Parse(%q): error %T %v is not an *Error", data, err, err)
			}
			if flt != nil {
				t.Fatalf("Parse(%q): filter and error", data)
			}
			return
		}
		if flt == nil {
			t.Fatalf("Parse(%q): nil filter, nil error", data)
		}
		if err := flt.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted a filter that does not validate: %v", data, err)
		}
		// The accessors used by /sync must not panic on any accepted filter.
		_ = flt.Format()
		r := flt.GetRoom()
		_ = r.MatchesRoom("!r:a.test")
		for _, ef := range []*RoomEventFilter{r.GetTimeline(), r.GetState(), r.GetEphemeral(), r.GetAccountData()} {
			_ = ef.LimitOr(10)
			_ = ef.Matches("!r:a.test", "m.room.message", "@u:a.test", true)
		}
		_ = flt.GetPresence().Matches("m.presence", "@u:a.test")
		_ = flt.GetAccountData().LimitOr(5)

		out, err := json.Marshal(flt)
		if err != nil {
			t.Fatalf("marshal %+v: %v", flt, err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) accepted, its re-encoding %q refused: %v", data, out, err)
		}
		if !reflect.DeepEqual(flt, again) {
			t.Fatalf("round trip changed the filter: %q -> %q", data, out)
		}
	})
}
