package push

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

const (
	testRoom  = "!room:test"
	alice     = "@alice:test"
	bob       = "@bob:test"
	aliceName = "Alice Liddell"
)

var testKey = func() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(nil)
	return k
}()

// buildPDU signs a real room event with gomatrixserverlib (room version 11).
func buildPDU(t testing.TB, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	return buildPDUIn(t, testRoom, sender, typ, stateKey, content)
}

// buildPDUIn builds a signed event in a room.
func buildPDUIn(t testing.TB, roomID, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	c, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey,
		Content: c, PrevEvents: []string{"$prev"}, AuthEvents: []string{"$auth"}, Depth: 5}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), "test", "ed25519:1", testKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

type evalCase struct {
	sender   string
	typ      string
	stateKey *string
	content  any
	members  int
	power    int64 // sender's power level
	notifPL  int64 // power_levels.notifications.room (0: absent)
}

func prepare(t testing.TB, c evalCase) *Event {
	t.Helper()
	if c.sender == "" {
		c.sender = bob
	}
	if c.members == 0 {
		c.members = 5
	}
	ev, err := NewEvent(buildPDU(t, c.sender, c.typ, c.stateKey, c.content).JSON())
	if err != nil {
		t.Fatal(err)
	}
	ev.MemberCount = c.members
	pl := map[string]any{"users": map[string]any{c.sender: c.power}, "users_default": 0}
	if c.notifPL != 0 {
		pl["notifications"] = map[string]any{"room": c.notifPL}
	}
	plJSON, _ := json.Marshal(pl)
	ev.SetPowerLevels(plJSON, nil)
	ev.DisplayName = func(u string) string {
		if u == alice {
			return aliceName
		}
		return ""
	}
	return ev
}

func sk(s string) *string { return &s }

func msg(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

func withMentions(body string, users []string, room bool) map[string]any {
	m := msg(body)
	mentions := map[string]any{"user_ids": users}
	if room {
		mentions["room"] = true
	}
	m["m.mentions"] = mentions
	return m
}

func TestDefaultRules(t *testing.T) {
	rs := Build(alice, nil)
	cases := []struct {
		name      string
		c         evalCase
		rule      string
		notify    bool
		highlight bool
		sound     string
	}{
		{"plain message", evalCase{typ: "m.room.message", content: msg("hello")}, ".m.rule.message", true, false, ""},
		{"notice suppressed", evalCase{typ: "m.room.message", content: map[string]any{"msgtype": "m.notice", "body": "beep"}}, ".m.rule.suppress_notices", false, false, ""},
		{"invite for me", evalCase{typ: "m.room.member", stateKey: sk(alice), content: map[string]any{"membership": "invite"}}, ".m.rule.invite_for_me", true, false, "default"},
		{"invite for someone else", evalCase{typ: "m.room.member", stateKey: sk("@carol:test"), content: map[string]any{"membership": "invite"}}, ".m.rule.member_event", false, false, ""},
		{"join", evalCase{typ: "m.room.member", stateKey: sk(bob), content: map[string]any{"membership": "join"}}, ".m.rule.member_event", false, false, ""},
		{"user mention", evalCase{typ: "m.room.message", content: withMentions("hi", []string{alice}, false)}, ".m.rule.is_user_mention", true, true, "default"},
		{"mention of someone else", evalCase{typ: "m.room.message", content: withMentions("hi", []string{"@carol:test"}, false)}, ".m.rule.message", true, false, ""},
		{"display name (legacy)", evalCase{typ: "m.room.message", content: msg("hey alice liddell!")}, ".m.rule.contains_display_name", true, true, "default"},
		{"display name inside a word", evalCase{typ: "m.room.message", content: msg("hey xAlice Liddellish")}, ".m.rule.message", true, false, ""},
		{"display name ignored with m.mentions", evalCase{typ: "m.room.message", content: withMentions("hey Alice Liddell", nil, false)}, ".m.rule.message", true, false, ""},
		{"room mention by moderator", evalCase{typ: "m.room.message", content: withMentions("all", nil, true), power: 50}, ".m.rule.is_room_mention", true, true, ""},
		{"room mention without permission", evalCase{typ: "m.room.message", content: withMentions("all", nil, true), power: 49}, ".m.rule.message", true, false, ""},
		{"room mention with custom level", evalCase{typ: "m.room.message", content: withMentions("all", nil, true), power: 50, notifPL: 100}, ".m.rule.message", true, false, ""},
		{"@room legacy", evalCase{typ: "m.room.message", content: msg("@room wake up"), power: 100}, ".m.rule.roomnotif", true, true, ""},
		{"@room legacy without permission", evalCase{typ: "m.room.message", content: msg("@room wake up")}, ".m.rule.message", true, false, ""},
		{"@room legacy ignored with m.mentions", evalCase{typ: "m.room.message", content: withMentions("@room", nil, false), power: 100}, ".m.rule.message", true, false, ""},
		{"tombstone", evalCase{typ: "m.room.tombstone", stateKey: sk(""), content: map[string]any{"body": "moved", "replacement_room": "!new:test"}, power: 100}, ".m.rule.tombstone", true, true, ""},
		{"reaction", evalCase{typ: "m.reaction", content: map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}}, ".m.rule.reaction", false, false, ""},
		{"server acl", evalCase{typ: "m.room.server_acl", stateKey: sk(""), content: map[string]any{"allow": []string{"*"}}, power: 100}, ".m.rule.room.server_acl", false, false, ""},
		{"edit", evalCase{typ: "m.room.message", content: map[string]any{"msgtype": "m.text", "body": "* fixed", "m.new_content": msg("fixed"), "m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}}, ".m.rule.suppress_edits", false, false, ""},
		{"user name (legacy)", evalCase{typ: "m.room.message", content: msg("ping ALICE: are you there")}, ".m.rule.contains_user_name", true, true, "default"},
		{"user name inside a word", evalCase{typ: "m.room.message", content: msg("malice")}, ".m.rule.message", true, false, ""},
		{"user name ignored with m.mentions", evalCase{typ: "m.room.message", content: withMentions("alice", nil, false)}, ".m.rule.message", true, false, ""},
		{"call", evalCase{typ: "m.call.invite", content: map[string]any{"call_id": "1", "version": "1", "lifetime": 60000}}, ".m.rule.call", true, false, "ring"},
		{"one to one", evalCase{typ: "m.room.message", content: msg("psst"), members: 2}, ".m.rule.room_one_to_one", true, false, "default"},
		{"encrypted one to one", evalCase{typ: "m.room.encrypted", content: map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, members: 2}, ".m.rule.encrypted_room_one_to_one", true, false, "default"},
		{"encrypted group", evalCase{typ: "m.room.encrypted", content: map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}}, ".m.rule.encrypted", true, false, ""},
		{"poll vote", evalCase{typ: "org.matrix.msc3381.poll.response", content: map[string]any{"org.matrix.msc3381.poll.response": map[string]any{"answers": []string{"a"}}}}, ".org.matrix.msc3930.rule.poll_response", false, false, ""},
		{"poll start one to one", evalCase{typ: "org.matrix.msc3381.poll.start", content: map[string]any{}, members: 2}, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, false, "default"},
		{"poll start in a group", evalCase{typ: "org.matrix.msc3381.poll.start", content: map[string]any{}}, ".org.matrix.msc3930.rule.poll_start", true, false, ""},
		{"poll end one to one", evalCase{typ: "org.matrix.msc3381.poll.end", content: map[string]any{}, members: 2}, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, false, "default"},
		{"poll end in a group", evalCase{typ: "org.matrix.msc3381.poll.end", content: map[string]any{}}, ".org.matrix.msc3930.rule.poll_end", true, false, ""},
		{"other state event", evalCase{typ: "m.room.topic", stateKey: sk(""), content: map[string]any{"topic": "t"}}, "", false, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := prepare(t, tc.c)
			r, a := rs.Evaluate(ev, User{UserID: alice})
			got := ""
			if r != nil {
				got = r.RuleID
			}
			if got != tc.rule {
				t.Fatalf("matched rule %q, want %q", got, tc.rule)
			}
			if a.Notify != tc.notify || a.Highlight != tc.highlight || a.Sound != tc.sound {
				t.Fatalf("actions notify=%v highlight=%v sound=%q, want %v %v %q", a.Notify, a.Highlight, a.Sound, tc.notify, tc.highlight, tc.sound)
			}
		})
	}
}

func TestDefaultRuleListMatchesSpec(t *testing.T) {
	rs := Build(alice, nil)
	want := map[Kind][]string{
		KindOverride: {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".m.rule.suppress_edits",
			".org.matrix.msc3930.rule.poll_response"},
		KindContent: {".m.rule.contains_user_name"},
		KindUnderride: {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
			".org.matrix.msc3930.rule.poll_start_one_to_one", ".org.matrix.msc3930.rule.poll_end_one_to_one",
			".m.rule.message", ".m.rule.encrypted", ".org.matrix.msc3930.rule.poll_start", ".org.matrix.msc3930.rule.poll_end"},
	}
	for _, k := range Kinds {
		var got []string
		for _, r := range rs.Of(k) {
			got = append(got, r.RuleID)
			if !r.Default {
				t.Errorf("%s not marked default", r.RuleID)
			}
		}
		if len(got) != len(want[k]) {
			t.Fatalf("%s rules %v, want %v", k, got, want[k])
		}
		for i := range got {
			if got[i] != want[k][i] {
				t.Fatalf("%s rules %v, want %v", k, got, want[k])
			}
		}
	}
	if rs.Find(KindOverride, ".m.rule.master").Enabled {
		t.Fatal("master rule enabled by default")
	}
	// The JSON shape: conditions on override/underride, pattern on content.
	b, _ := json.Marshal(rs)
	var back map[string][]map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, ok := back["override"][0]["conditions"]; !ok {
		t.Fatalf("master has no conditions key: %v", back["override"][0])
	}
	if back["content"][0]["pattern"] != "alice" {
		t.Fatalf("contains_user_name pattern: %v", back["content"][0])
	}
	if _, ok := back["content"][0]["conditions"]; ok {
		t.Fatal("content rule has conditions")
	}
}

func evalWith(t *testing.T, rs *Ruleset, c evalCase) string {
	t.Helper()
	r, _ := rs.Evaluate(prepare(t, c), User{UserID: alice})
	if r == nil {
		return ""
	}
	return r.RuleID
}

func cond(t *testing.T, js string) Condition {
	t.Helper()
	var c Condition
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func customRule(t *testing.T, kind Kind, id string, actions string, conds []Condition, pattern *string) *StoredRule {
	t.Helper()
	var a []json.RawMessage
	if err := json.Unmarshal([]byte(actions), &a); err != nil {
		t.Fatal(err)
	}
	s, err := NewRule(kind, id, a, conds, pattern)
	if err != nil {
		t.Fatalf("NewRule %s: %v", id, err)
	}
	return s
}

func TestConditionKinds(t *testing.T) {
	ev := func(content any) evalCase { return evalCase{typ: "m.room.message", content: content} }
	cases := []struct {
		name  string
		cond  string
		c     evalCase
		match bool
	}{
		{"glob star", `{"kind":"event_match","key":"content.msgtype","pattern":"m.*"}`, ev(msg("x")), true},
		{"glob question", `{"kind":"event_match","key":"content.msgtype","pattern":"m.tex?"}`, ev(msg("x")), true},
		{"glob question needs one char", `{"kind":"event_match","key":"content.msgtype","pattern":"m.text?"}`, ev(msg("x")), false},
		{"glob whole value", `{"kind":"event_match","key":"content.msgtype","pattern":"text"}`, ev(msg("x")), false},
		{"glob case-insensitive", `{"kind":"event_match","key":"content.msgtype","pattern":"M.TEXT"}`, ev(msg("x")), true},
		{"glob regexp chars are literal", `{"kind":"event_match","key":"content.msgtype","pattern":"m.t(e)xt"}`, ev(msg("x")), false},
		{"body word", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, ev(msg("I like cake!")), true},
		{"body inside word", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, ev(msg("cupcakes")), false},
		{"body glob words", `{"kind":"event_match","key":"content.body","pattern":"cake*lie"}`, ev(msg("the Cake is a LIE.")), true},
		{"body glob not at boundary", `{"kind":"event_match","key":"content.body","pattern":"cake*lie"}`, ev(msg("the cake is a lier")), false},
		{"non-string value", `{"kind":"event_match","key":"content.n","pattern":"*"}`, ev(map[string]any{"n": 1}), false},
		{"missing key", `{"kind":"event_match","key":"content.nope","pattern":"*"}`, ev(msg("x")), false},
		{"escaped dot key", `{"kind":"event_match","key":"content.m\\.foo.bar","pattern":"baz"}`, ev(map[string]any{"m.foo": map[string]any{"bar": "baz"}}), true},
		{"unescaped dot does not reach dotted key", `{"kind":"event_match","key":"content.m.foo.bar","pattern":"baz"}`, ev(map[string]any{"m.foo": map[string]any{"bar": "baz"}}), false},
		{"property is string", `{"kind":"event_property_is","key":"content.msgtype","value":"m.text"}`, ev(msg("x")), true},
		{"property is case-sensitive", `{"kind":"event_property_is","key":"content.msgtype","value":"M.TEXT"}`, ev(msg("x")), false},
		{"property is int", `{"kind":"event_property_is","key":"content.n","value":42}`, ev(map[string]any{"n": 42}), true},
		{"property is int mismatch", `{"kind":"event_property_is","key":"content.n","value":43}`, ev(map[string]any{"n": 42}), false},
		{"property is null", `{"kind":"event_property_is","key":"content.x","value":null}`, ev(map[string]any{"x": nil}), true},
		{"property is null absent", `{"kind":"event_property_is","key":"content.y","value":null}`, ev(map[string]any{"x": nil}), false},
		{"property is bool vs string", `{"kind":"event_property_is","key":"content.b","value":true}`, ev(map[string]any{"b": "true"}), false},
		{"property contains", `{"kind":"event_property_contains","key":"content.tags","value":"b"}`, ev(map[string]any{"tags": []any{"a", "b"}}), true},
		{"property contains missing", `{"kind":"event_property_contains","key":"content.tags","value":"c"}`, ev(map[string]any{"tags": []any{"a", "b"}}), false},
		{"property contains not array", `{"kind":"event_property_contains","key":"content.tags","value":"a"}`, ev(map[string]any{"tags": "a"}), false},
		{"member count ==", `{"kind":"room_member_count","is":"==5"}`, ev(msg("x")), true},
		{"member count bare", `{"kind":"room_member_count","is":"5"}`, ev(msg("x")), true},
		{"member count <", `{"kind":"room_member_count","is":"<5"}`, ev(msg("x")), false},
		{"member count <=", `{"kind":"room_member_count","is":"<=5"}`, ev(msg("x")), true},
		{"member count >", `{"kind":"room_member_count","is":">4"}`, ev(msg("x")), true},
		{"member count >=", `{"kind":"room_member_count","is":">=6"}`, ev(msg("x")), false},
		{"sender permission ok", `{"kind":"sender_notification_permission","key":"room"}`, evalCase{typ: "m.room.message", content: msg("x"), power: 50}, true},
		{"sender permission low", `{"kind":"sender_notification_permission","key":"room"}`, evalCase{typ: "m.room.message", content: msg("x"), power: 10}, false},
		{"display name", `{"kind":"contains_display_name"}`, ev(msg("Alice Liddell, hi")), true},
		{"display name partial", `{"kind":"contains_display_name"}`, ev(msg("Alice, hi")), false},
		{"unknown kind never matches", `{"kind":"org.example.future"}`, ev(msg("x")), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs := Build(alice, &UserRules{Rules: map[Kind][]*StoredRule{
				KindOverride: {customRule(t, KindOverride, "probe", `["notify"]`, []Condition{cond(t, tc.cond)}, nil)},
			}})
			got := evalWith(t, rs, tc.c) == "probe"
			if got != tc.match {
				t.Fatalf("condition %s matched=%v, want %v", tc.cond, got, tc.match)
			}
		})
	}
}

func TestUserRulesAndDisabledRules(t *testing.T) {
	m := evalCase{typ: "m.room.message", content: msg("hello"), members: 2}
	// Disabled default rule: the one-to-one rule off falls through to .m.rule.message.
	off := false
	rs := Build(alice, &UserRules{Defaults: map[string]*DefaultChange{".m.rule.room_one_to_one": {Enabled: &off}}})
	if got := evalWith(t, rs, m); got != ".m.rule.message" {
		t.Fatalf("disabled one-to-one: %s", got)
	}
	// Changed actions of a default rule.
	rs = Build(alice, &UserRules{Defaults: map[string]*DefaultChange{".m.rule.message": {Actions: []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}}}})
	if _, a := rs.Evaluate(prepare(t, evalCase{typ: "m.room.message", content: msg("x")}), User{UserID: alice}); !a.Highlight {
		t.Fatal("changed actions of .m.rule.message not applied")
	}
	// Master rule enabled: nothing notifies, not even mentions.
	on := true
	rs = Build(alice, &UserRules{Defaults: map[string]*DefaultChange{".m.rule.master": {Enabled: &on}}})
	if _, a := rs.Evaluate(prepare(t, evalCase{typ: "m.room.message", content: withMentions("x", []string{alice}, false)}), User{UserID: alice}); a.Notify {
		t.Fatal("master rule does not silence")
	}
	// A muted room (room rule without actions) beats underride rules, not overrides.
	rs = Build(alice, &UserRules{Rules: map[Kind][]*StoredRule{KindRoom: {customRule(t, KindRoom, testRoom, `[]`, nil, nil)}}})
	if got := evalWith(t, rs, m); got != testRoom {
		t.Fatalf("room rule: %s", got)
	}
	if got := evalWith(t, rs, evalCase{typ: "m.room.message", content: withMentions("x", []string{alice}, false)}); got != ".m.rule.is_user_mention" {
		t.Fatalf("mention in muted room: %s", got)
	}
	// An override "mute" rule with a room_id condition beats mentions.
	rs = Build(alice, &UserRules{Rules: map[Kind][]*StoredRule{KindOverride: {customRule(t, KindOverride, testRoom, `[]`,
		[]Condition{cond(t, `{"kind":"event_match","key":"room_id","pattern":"`+testRoom+`"}`)}, nil)}}})
	if _, a := rs.Evaluate(prepare(t, evalCase{typ: "m.room.message", content: withMentions("x", []string{alice}, false)}), User{UserID: alice}); a.Notify {
		t.Fatal("override mute rule lost to the mention rule")
	}
	// Sender rule, content rule with a pattern and disabled user rule.
	rs = Build(alice, &UserRules{Rules: map[Kind][]*StoredRule{
		KindSender:  {customRule(t, KindSender, bob, `["notify",{"set_tweak":"sound","value":"bobsound"}]`, nil, nil)},
		KindContent: {customRule(t, KindContent, "cake", `["notify",{"set_tweak":"highlight"}]`, nil, sk("cake*"))},
	}})
	if _, a := rs.Evaluate(prepare(t, evalCase{typ: "m.room.message", content: msg("hello")}), User{UserID: alice}); a.Sound != "bobsound" {
		t.Fatalf("sender rule: %+v", a)
	}
	if got := evalWith(t, rs, evalCase{typ: "m.room.message", content: msg("cakes!")}); got != "cake" {
		t.Fatalf("content rule: %s", got)
	}
	rs.Find(KindContent, "cake").Enabled = false
	if got := evalWith(t, rs, evalCase{typ: "m.room.message", content: msg("cakes!")}); got != bob {
		t.Fatalf("disabled content rule still matches: %s", got)
	}
}

func TestNewRuleValidation(t *testing.T) {
	bad := []struct {
		kind    Kind
		id      string
		actions string
		conds   []Condition
		pattern *string
	}{
		{KindOverride, ".reserved", `["notify"]`, nil, nil},
		{KindOverride, "a/b", `["notify"]`, nil, nil},
		{KindOverride, `a\b`, `["notify"]`, nil, nil},
		{KindOverride, "x", `["explode"]`, nil, nil},
		{KindOverride, "x", `[{"set_tweak":"highlight","value":"yes"}]`, nil, nil},
		{KindOverride, "x", `[{"value":1}]`, nil, nil},
		{KindContent, "x", `["notify"]`, nil, nil},
		{KindRoom, "not-a-room", `[]`, nil, nil},
		{KindSender, "not-a-user", `[]`, nil, nil},
		{KindOverride, "x", `[]`, []Condition{{Kind: CondRoomMemberCount, Is: "lots"}}, nil},
		{KindOverride, "x", `[]`, []Condition{{Kind: CondEventMatch, Key: "type"}}, nil},
		{KindOverride, "x", `[]`, []Condition{{Kind: CondEventPropertyIs, Key: "type", Value: json.RawMessage(`{"a":1}`)}}, nil},
	}
	for _, b := range bad {
		var a []json.RawMessage
		_ = json.Unmarshal([]byte(b.actions), &a)
		if _, err := NewRule(b.kind, b.id, a, b.conds, b.pattern); err == nil {
			t.Errorf("NewRule(%s, %q, %s, %v) accepted", b.kind, b.id, b.actions, b.conds)
		}
	}
}

func TestContainsWord(t *testing.T) {
	for _, c := range []struct {
		s, w string
		want bool
	}{
		{"alice", "alice", true}, {"malice", "alice", false}, {"alice_", "alice", false}, {"alice-bob", "alice", true},
		{"x alice1 alice", "alice", true}, {"@room!", "@room", true}, {"x@room", "@room", false}, {"hi @room", "@room", true},
		{"", "a", false}, {"abc", "", false},
	} {
		if got := containsWord(c.s, c.w); got != c.want {
			t.Errorf("containsWord(%q, %q) = %v", c.s, c.w, got)
		}
	}
}

func TestDefaultRuleJSON(t *testing.T) {
	rs := Build(alice, nil)
	for _, c := range []struct {
		kind Kind
		id   string
		want string
	}{
		{KindOverride, ".m.rule.is_user_mention", `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}],"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@alice:test"}]}`},
		{KindOverride, ".m.rule.roomnotif", `{"rule_id":".m.rule.roomnotif","default":true,"enabled":true,"actions":["notify",{"set_tweak":"highlight"}],"conditions":[{"kind":"event_match","key":"content.body","pattern":"@room"},{"kind":"sender_notification_permission","key":"room"}]}`},
		{KindOverride, ".m.rule.is_room_mention", `{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,"actions":["notify",{"set_tweak":"highlight"}],"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},{"kind":"sender_notification_permission","key":"room"}]}`},
		{KindOverride, ".m.rule.master", `{"rule_id":".m.rule.master","default":true,"enabled":false,"actions":[],"conditions":[]}`},
		{KindContent, ".m.rule.contains_user_name", `{"rule_id":".m.rule.contains_user_name","default":true,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}],"pattern":"alice"}`},
		{KindUnderride, ".m.rule.room_one_to_one", `{"rule_id":".m.rule.room_one_to_one","default":true,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"default"}],"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.message"}]}`},
	} {
		b, err := json.Marshal(rs.Find(c.kind, c.id))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.id, b, c.want)
		}
	}
}
