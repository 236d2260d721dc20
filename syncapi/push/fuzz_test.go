package push

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzConditions evaluates arbitrary push rule conditions against arbitrary event JSON,
// the way PUT /pushrules and the push sender do: NewRule refuses with *ErrInvalid or
// accepts, Build compiles, and evaluation never panics. Evaluation is deterministic
// (a second evaluation, served from the per-event memo, gives the same rule).
func FuzzConditions(f *testing.F) {
	f.Add([]byte(`[{"kind":"event_match","key":"content.body","pattern":"*hel?o*"}]`), []byte(`{"type":"m.room.message","sender":"@a:b","content":{"body":"Hello there","msgtype":"m.text"}}`), 3, int64(50), []byte(`{"users":{"@a:b":100},"notifications":{"room":20}}`))
	f.Add([]byte(`[{"kind":"event_property_is","key":"content.m\\.relates_to.is_falling","value":true},{"kind":"room_member_count","is":">=2"}]`), []byte(`{"type":"m.room.message","content":{"m.relates_to":{"is_falling":true}}}`), 2, int64(0), []byte(nil))
	f.Add([]byte(`[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"@u:test"},{"kind":"contains_display_name"}]`), []byte(`{"content":{"body":"hi Alice","m.mentions":{"user_ids":["@u:test"]}}}`), 5, int64(0), []byte(`{}`))
	f.Add([]byte(`[{"kind":"sender_notification_permission","key":"room"},{"kind":"room_member_count","is":"==9999999999999999999"}]`), []byte(`{"sender":"@a:b","content":{}}`), 1, int64(100), []byte(`{"users_default":"x","notifications":{"room":1e30}}`))
	f.Add([]byte(`[{"kind":"unknown"},{"kind":"event_match"},{"kind":"event_property_is","key":"a","value":{"x":1}},{"kind":"event_property_is","key":"a","value":1.5}]`), []byte(`{"a":1.5,"b":[1,"x",null]}`), 0, int64(-1), []byte(`[]`))
	f.Add([]byte(`[{"kind":"event_match","key":"content.body","pattern":"[a-z]\\*"}]`), []byte(`{"content":{"body":"\u00c9T\u00c9 \ud83d\ude00"}}`), -1, int64(0), []byte(`nonsense`))
	f.Fuzz(func(t *testing.T, condJSON, eventJSON []byte, members int, senderPower int64, powerLevels []byte) {
		var conds []Condition
		if err := json.Unmarshal(condJSON, &conds); err != nil {
			return
		}
		ev, err := NewEvent(eventJSON)
		if err != nil {
			return
		}
		ev.MemberCount = members
		ev.SetPowerLevels(powerLevels, []string{"@creator:test"})
		if ev.SenderPower == 0 {
			ev.SenderPower = senderPower
		}
		ev.DisplayName = func(userID string) string { return "Alice" }
		user := User{UserID: "@u:test"}
		actions := []json.RawMessage{json.RawMessage(`"notify"`), json.RawMessage(`{"set_tweak":"highlight"}`)}
		u := &UserRules{Rules: map[Kind][]*StoredRule{}, Defaults: map[string]*DefaultChange{}}
		for _, k := range []Kind{KindOverride, KindUnderride} {
			s, err := NewRule(k, "fuzz", actions, conds, nil)
			if err != nil {
				var inv *ErrInvalid
				if !errors.As(err, &inv) {
					t.Fatalf("NewRule: error %T %v is not an *ErrInvalid", err, err)
				}
				return
			}
			u.Rules[k] = append(u.Rules[k], s)
		}
		rs := Build("@u:test", u)
		r1, _ := rs.Evaluate(ev, user)
		r2, _ := rs.Evaluate(ev, user)
		if r1 != r2 {
			t.Fatalf("evaluation not deterministic: %v then %v", ruleID(r1), ruleID(r2))
		}
		if _, err := rs.MarshalJSON(); err != nil {
			t.Fatalf("ruleset does not marshal: %v", err)
		}
	})
}

func ruleID(r *Rule) string {
	if r == nil {
		return "<none>"
	}
	return r.RuleID
}
