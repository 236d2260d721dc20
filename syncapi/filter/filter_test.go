package filter

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// The example filter of the spec's POST /user/{userId}/filter.
const specExample = `{
  "room": {
    "state": {"types": ["m.room.*"], "not_rooms": ["!726s6s6q:example.com"]},
    "timeline": {"limit": 10, "types": ["m.room.message"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]},
    "ephemeral": {"types": ["m.receipt", "m.typing"], "not_rooms": ["!726s6s6q:example.com"], "not_senders": ["@spam:example.com"]}
  },
  "presence": {"types": ["m.presence"], "not_senders": ["@alice:example.com"]},
  "event_format": "client",
  "event_fields": ["type", "content", "sender"]
}`

func TestParseSpecExample(t *testing.T) {
	f, err := Parse([]byte(specExample))
	if err != nil {
		t.Fatal(err)
	}
	tl := f.GetRoom().GetTimeline()
	if tl.LimitOr(99) != 10 || !reflect.DeepEqual(tl.Types, []string{"m.room.message"}) ||
		!reflect.DeepEqual(tl.NotSenders, []string{"@spam:example.com"}) {
		t.Fatalf("timeline: %+v", tl)
	}
	if f.GetRoom().GetState().LimitOr(7) != 7 {
		t.Fatal("state limit default not applied")
	}
	if f.Format() != FormatClient || len(f.EventFields) != 3 {
		t.Fatalf("format/fields: %+v", f)
	}
	// JSON round trip: marshal and parse again gives the same filter.
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f, g) {
		t.Fatalf("round trip changed the filter:\n%+v\n%+v\n%s", f, g, b)
	}
	var a, c any
	_ = json.Unmarshal([]byte(specExample), &a)
	_ = json.Unmarshal(b, &c)
	if !reflect.DeepEqual(a, c) {
		t.Fatalf("marshalled filter differs from the input:\n%s", b)
	}
}

func TestRoundTripKeepsEmptyListsAndFlags(t *testing.T) {
	in := `{"account_data":{"limit":0,"types":[]},"event_format":"federation","room":{"include_leave":true,"rooms":[],` +
		`"timeline":{"contains_url":false,"include_redundant_members":true,"lazy_load_members":true,"limit":0,"unread_thread_notifications":true}}}`
	f, err := Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if f.AccountData.Types == nil || len(f.AccountData.Types) != 0 {
		t.Fatal("empty types list became absent")
	}
	if f.GetAccountData().Matches("m.direct", "") {
		t.Fatal("an empty types list must match nothing")
	}
	tl := f.GetRoom().GetTimeline()
	if !tl.LazyLoad() || !tl.RedundantMembers() || !tl.ThreadNotifications() || tl.ContainsURL == nil || *tl.ContainsURL ||
		tl.LimitOr(10) != 0 || !f.GetRoom().IncludesLeave() || f.Format() != FormatFederation {
		t.Fatalf("flags lost: %+v", tl)
	}
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	_ = json.Unmarshal([]byte(in), &a)
	_ = json.Unmarshal(out, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("round trip:\n got %s\nwant %s", out, in)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		in      string
		notJSON bool
		msg     string // substring of the message
	}{
		{`not json`, true, "not a JSON object"},
		{`[1,2]`, true, "not a JSON object"},
		{`{"room":`, true, "not a JSON object"},
		{`{"event_format":"xml"}`, false, `"event_format"`},
		{`{"event_format":5}`, false, `"event_format" must be a string`},
		{`{"event_fields":"type"}`, false, `"event_fields" must be a list of strings`},
		{`{"event_fields":[1]}`, false, `"event_fields" must be a list of strings`},
		{`{"room":{"timeline":{"limit":"10"}}}`, false, `"room.timeline.limit" must be an integer, not string`},
		{`{"room":{"timeline":{"limit":1.5}}}`, false, `"room.timeline.limit" must be an integer`},
		{`{"room":{"timeline":{"limit":-1}}}`, false, `"room.timeline.limit" must not be negative`},
		{`{"presence":{"limit":-5}}`, false, `"presence.limit" must not be negative`},
		{`{"room":{"state":{"lazy_load_members":"yes"}}}`, false, `"room.state.lazy_load_members" must be a boolean`},
		{`{"room":{"timeline":{"contains_url":1}}}`, false, `"room.timeline.contains_url" must be a boolean`},
		{`{"room":{"include_leave":"true"}}`, false, `"room.include_leave" must be a boolean`},
		{`{"room":{"state":{"include_redundant_members":0}}}`, false, `include_redundant_members" must be a boolean`},
		{`{"room":{"ephemeral":{"unread_thread_notifications":[]}}}`, false, `unread_thread_notifications" must be a boolean`},
		{`{"room":{"rooms":"!a:b"}}`, false, `"room.rooms" must be a list of strings`},
		{`{"room":{"rooms":["#alias:b"]}}`, false, `"room.rooms" must hold room IDs`},
		{`{"room":{"timeline":{"not_rooms":["x"]}}}`, false, `"room.timeline.not_rooms" must hold room IDs`},
		{`{"presence":{"senders":["alice"]}}`, false, `"presence.senders" must hold user IDs`},
		{`{"room":5}`, false, `"room" must be an object`},
		{`{"room":{"timeline":[]}}`, false, `"room.timeline" must be an object`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.in))
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("%s: want *Error, got %v", c.in, err)
			continue
		}
		if fe.NotJSON != c.notJSON || !strings.Contains(fe.Msg, c.msg) {
			t.Errorf("%s: got NotJSON=%v %q, want NotJSON=%v containing %q", c.in, fe.NotJSON, fe.Msg, c.notJSON, c.msg)
		}
	}
}

func TestParseAcceptsUnknownFieldsNullsAndEmpty(t *testing.T) {
	for _, in := range []string{``, `{}`, `{"room":null,"presence":{"limit":null,"types":null}}`,
		`{"org.matrix.msc3773.unread_thread_notifications":true,"room":{"timeline":{"io.element.relation_senders":["@a:b"]}}}`} {
		f, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !f.GetPresence().Matches("m.presence", "@a:b") || f.GetPresence().LimitOr(3) != 3 {
			t.Fatalf("%q: presence should be unrestricted", in)
		}
	}
}

func TestMatching(t *testing.T) {
	f, err := Parse([]byte(`{"room":{"not_rooms":["!bad:x"],"timeline":{"types":["m.room.*","org.*.ping"],"not_types":["m.room.member"],` +
		`"senders":["@a:x","@spam:x"],"not_senders":["@spam:x"],"rooms":["!r1:x","!bad:x"],"contains_url":true}}}`))
	if err != nil {
		t.Fatal(err)
	}
	room := f.GetRoom()
	if room.MatchesRoom("!bad:x") || !room.MatchesRoom("!r1:x") {
		t.Fatal("room-level not_rooms")
	}
	tl := room.GetTimeline()
	cases := []struct {
		room, typ, sender string
		url, want         bool
	}{
		{"!r1:x", "m.room.message", "@a:x", true, true},
		{"!r1:x", "m.room.message", "@a:x", false, false}, // contains_url
		{"!r1:x", "m.room.member", "@a:x", true, false},   // not_types wins over types
		{"!r1:x", "m.reaction", "@a:x", true, false},      // not in types
		{"!r1:x", "org.example.ping", "@a:x", true, true}, // wildcard in the middle
		{"!r1:x", "org.ping", "@a:x", true, false},        // the wildcard does not swallow the dots around it
		{"!r1:x", "m.room.message", "@spam:x", true, false},
		{"!r1:x", "m.room.message", "@b:x", true, false},
		{"!r2:x", "m.room.message", "@a:x", true, false},
	}
	for _, c := range cases {
		if got := tl.Matches(c.room, c.typ, c.sender, c.url); got != c.want {
			t.Errorf("Matches(%s, %s, %s, url=%v) = %v, want %v", c.room, c.typ, c.sender, c.url, got, c.want)
		}
	}
	// A nil filter matches everything and takes the defaults.
	var none *Filter
	if !none.GetRoom().GetTimeline().Matches("!x:y", "m.room.message", "@a:b", false) || none.GetRoom().GetState().LimitOr(5) != 5 ||
		none.Format() != FormatClient || !none.GetRoom().MatchesRoom("!x:y") || none.GetRoom().IncludesLeave() {
		t.Fatal("nil filter is not all-inclusive")
	}
	for _, g := range []struct {
		pattern, value string
		want           bool
	}{{"*", "", true}, {"*", "anything", true}, {"m.*", "m.", true}, {"m.*", "n.x", false}, {"*.typing", "m.typing", true},
		{"a*b*c", "abc", true}, {"a*b*c", "axxbyyc", true}, {"a*b*c", "acb", false}, {"ab*ba", "aba", false}} {
		if glob(g.pattern, g.value) != g.want {
			t.Errorf("glob(%q, %q) != %v", g.pattern, g.value, g.want)
		}
	}
}
