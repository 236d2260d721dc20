package push

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// glob is a compiled event_match pattern: '*' matches any run of characters, '?' one
// character, matched case-insensitively. Against content.body it matches any
// substring that starts and ends at word boundaries; elsewhere the whole value.
type glob struct {
	literal string // lowercased pattern when it has no wildcard
	isLit   bool
	words   bool
	re      *regexp.Regexp
}

var globCache sync.Map // string -> *glob

func compileGlob(pattern string, words bool) *glob {
	key := pattern
	if words {
		key = "w\x00" + pattern
	}
	if g, ok := globCache.Load(key); ok {
		return g.(*glob)
	}
	lower := strings.ToLower(pattern)
	g := &glob{words: words}
	if !strings.ContainsAny(lower, "*?") {
		g.literal, g.isLit = lower, true
	} else {
		var b strings.Builder
		b.WriteString("(?s)")
		if words {
			b.WriteString(`(?:^|[^A-Za-z0-9_])`)
		} else {
			b.WriteString("^")
		}
		for _, r := range lower {
			switch r {
			case '*':
				b.WriteString(".*?")
			case '?':
				b.WriteString(".")
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		if words {
			b.WriteString(`(?:[^A-Za-z0-9_]|$)`)
		} else {
			b.WriteString("$")
		}
		g.re = regexp.MustCompile(b.String())
	}
	globCache.Store(key, g)
	return g
}

// match tells whether the glob matches lowered, an already lowercased value.
func (g *glob) match(lowered string) bool {
	if g.isLit {
		if g.words {
			return containsWord(lowered, g.literal)
		}
		return lowered == g.literal
	}
	return g.re.MatchString(lowered)
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// containsWord reports whether word occurs in s starting and ending at word
// boundaries (start or end of s, or a character other than [A-Za-z0-9_]).
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for from := 0; from <= len(s)-len(word); {
		i := strings.Index(s[from:], word)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(word)
		if (i == 0 || !isWordByte(s[i-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		from = i + 1
	}
	return false
}

// escapeKeyPart escapes a JSON object key for a dotted push rule key path.
func escapeKeyPart(k string) string {
	if !strings.ContainsAny(k, `.\`) {
		return k
	}
	return strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(k)
}

// flatten maps every dotted key path of an event to its value: strings, json.Number,
// bools, nil and arrays ([]any) are leaves; objects are walked.
func flatten(prefix string, obj map[string]any, out map[string]any) {
	for k, v := range obj {
		key := escapeKeyPart(k)
		if prefix != "" {
			key = prefix + "." + key
		}
		if m, ok := v.(map[string]any); ok {
			flatten(key, m, out)
			continue
		}
		out[key] = v
	}
}

// Event is an event prepared for evaluation, shared by every user it is evaluated for.
type Event struct {
	flat        map[string]any
	lowered     map[string]string // lowercased string values, filled lazily
	body        string            // lowercased content.body
	hasBody     bool
	hasMentions bool
	sender      string
	// memo caches results of user-independent conditions: 0 unknown, 1 false, 2 true.
	memo []uint8

	// MemberCount is the number of joined members of the room.
	MemberCount int
	// SenderPower is the sender's power level; NotificationLevels are the power levels
	// content's notifications levels (e.g. "room": 50).
	SenderPower        int64
	NotificationLevels map[string]int64
	// DisplayName returns a user's display name in the room ("" when none).
	DisplayName func(userID string) string
}

// NewEvent prepares an event (its full JSON, as in /sync) for evaluation. The room
// context (member count, power levels, display names) is set by the caller.
func NewEvent(eventJSON []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(eventJSON))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, err
	}
	ev := &Event{flat: make(map[string]any, 16), lowered: map[string]string{}, NotificationLevels: map[string]int64{}}
	flatten("", obj, ev.flat)
	if b, ok := ev.flat["content.body"].(string); ok {
		ev.body, ev.hasBody = strings.ToLower(b), true
	}
	if c, ok := obj["content"].(map[string]any); ok {
		_, ev.hasMentions = c["m.mentions"]
	}
	ev.sender, _ = ev.flat["sender"].(string)
	ev.memo = make([]uint8, condCount.Load()+1)
	return ev, nil
}

// SetPowerLevels reads the sender's power level and the notification levels from a
// power levels event's content (nil content: no power levels event; creators, those
// with infinite power in room versions 12 and later, are given in creators).
func (ev *Event) SetPowerLevels(content []byte, creators []string) {
	ev.NotificationLevels = map[string]int64{"room": 50}
	ev.SenderPower = 0
	for _, c := range creators {
		if c == ev.sender {
			ev.SenderPower = math.MaxInt64
			return
		}
	}
	if content == nil {
		return
	}
	var pl struct {
		Users         map[string]json.Number `json:"users"`
		UsersDefault  json.Number            `json:"users_default"`
		Notifications map[string]json.Number `json:"notifications"`
	}
	if json.Unmarshal(content, &pl) != nil {
		return
	}
	num := func(n json.Number) (int64, bool) {
		if n == "" {
			return 0, false
		}
		if v, err := n.Int64(); err == nil {
			return v, true
		}
		if f, err := strconv.ParseFloat(string(n), 64); err == nil {
			return int64(f), true
		}
		return 0, false
	}
	if v, ok := num(pl.UsersDefault); ok {
		ev.SenderPower = v
	}
	if v, ok := num(pl.Users[ev.sender]); ok {
		ev.SenderPower = v
	}
	for k, n := range pl.Notifications {
		if v, ok := num(n); ok {
			ev.NotificationLevels[k] = v
		}
	}
}

func (ev *Event) lower(key string, s string) string {
	if key == "content.body" {
		return ev.body
	}
	if l, ok := ev.lowered[key]; ok {
		return l
	}
	l := strings.ToLower(s)
	ev.lowered[key] = l
	return l
}

// valueEqual compares two JSON scalars decoded with UseNumber.
func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return false
		}
		xi, err1 := x.Int64()
		yi, err2 := y.Int64()
		if err1 == nil && err2 == nil {
			return xi == yi
		}
		return x == y
	}
	return false
}

// User is who an event is evaluated for.
type User struct {
	UserID string
}

func (c *Condition) matches(ev *Event, u User) bool {
	if c.memo > 0 {
		if c.memo < len(ev.memo) {
			if m := ev.memo[c.memo]; m != 0 {
				return m == 2
			}
		} else {
			ev.memo = append(ev.memo, make([]uint8, c.memo+1-len(ev.memo))...)
		}
		r := c.eval(ev, u)
		ev.memo[c.memo] = 1
		if r {
			ev.memo[c.memo] = 2
		}
		return r
	}
	return c.eval(ev, u)
}

func (c *Condition) eval(ev *Event, u User) bool {
	if c.invalid {
		return false
	}
	switch c.Kind {
	case CondEventMatch:
		s, ok := ev.flat[c.Key].(string)
		if !ok {
			return false
		}
		return c.glob.match(ev.lower(c.Key, s))
	case CondEventPropertyIs:
		v, ok := ev.flat[c.Key]
		if !ok {
			return false
		}
		return valueEqual(v, c.value)
	case CondEventPropertyContains:
		arr, ok := ev.flat[c.Key].([]any)
		if !ok {
			return false
		}
		for _, v := range arr {
			if valueEqual(v, c.value) {
				return true
			}
		}
		return false
	case CondContainsDisplayName:
		if !ev.hasBody || ev.DisplayName == nil {
			return false
		}
		name := ev.DisplayName(u.UserID)
		if strings.TrimSpace(name) == "" {
			return false
		}
		return containsWord(ev.body, strings.ToLower(name))
	case CondRoomMemberCount:
		n := int64(ev.MemberCount)
		switch c.cmpOp {
		case "==":
			return n == c.cmpN
		case "<":
			return n < c.cmpN
		case ">":
			return n > c.cmpN
		case "<=":
			return n <= c.cmpN
		case ">=":
			return n >= c.cmpN
		}
		return false
	case CondSenderNotificationPerms:
		need, ok := ev.NotificationLevels[c.Key]
		if !ok {
			need = 50
		}
		return ev.SenderPower >= need
	}
	return false
}

func (r *Rule) matches(ev *Event, u User) bool {
	if !r.Enabled {
		return false
	}
	if r.legacy && ev.hasMentions {
		return false
	}
	switch r.kind {
	case KindOverride, KindUnderride:
		for i := range r.Conditions {
			if !r.Conditions[i].matches(ev, u) {
				return false
			}
		}
		return true
	case KindContent:
		return ev.hasBody && r.glob != nil && r.glob.match(ev.body)
	case KindRoom:
		room, _ := ev.flat["room_id"].(string)
		return room == r.RuleID
	case KindSender:
		return ev.sender == r.RuleID
	}
	return false
}

// Evaluate returns the first matching rule of the ruleset for an event and user (nil
// when none matches) and its actions.
func (rs *Ruleset) Evaluate(ev *Event, u User) (*Rule, Actions) {
	for _, k := range Kinds {
		for _, r := range rs.Of(k) {
			if r.matches(ev, u) {
				return r, r.parsed
			}
		}
	}
	return nil, Actions{}
}
