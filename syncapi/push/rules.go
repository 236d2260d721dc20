// Package push implements push notifications: push rules (the spec's server-default
// rule set and users' own rules), their evaluation for every new event, the per-user
// notification records behind unread counts and GET /notifications, and the pusher
// sender that POSTs notifications to push gateways.
package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Kind is a push rule kind. Rules are evaluated kind by kind in the order of Kinds.
type Kind string

// The push rule kinds.
const (
	KindOverride  Kind = "override"
	KindContent   Kind = "content"
	KindRoom      Kind = "room"
	KindSender    Kind = "sender"
	KindUnderride Kind = "underride"
)

// Kinds lists the kinds in evaluation order.
var Kinds = []Kind{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// ParseKind returns the kind named s.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Condition kinds.
const (
	CondEventMatch              = "event_match"
	CondEventPropertyIs         = "event_property_is"
	CondEventPropertyContains   = "event_property_contains"
	CondContainsDisplayName     = "contains_display_name"
	CondRoomMemberCount         = "room_member_count"
	CondSenderNotificationPerms = "sender_notification_permission"
)

// Condition is one condition of an override or underride rule.
type Condition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Is      string          `json:"is,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`

	// parsed forms, filled by compile
	value   any    // event_property_is / contains
	cmpOp   string // room_member_count
	cmpN    int64
	invalid bool // never matches (malformed or unknown kind)
	glob    *glob
	// memo indexes the per-event cache of results of conditions that do not depend on
	// the user (0: not cached).
	memo int
}

// Rule is a push rule as the client-server API shows it.
type Rule struct {
	RuleID     string
	Default    bool
	Enabled    bool
	Actions    []json.RawMessage
	Conditions []Condition
	Pattern    *string

	kind    Kind
	parsed  Actions
	glob    *glob // content rules
	literal string
	legacy  bool // a legacy mention rule, skipped when the event has m.mentions
}

// Kind returns the rule's kind.
func (r *Rule) Kind() Kind { return r.kind }

type ruleJSON struct {
	RuleID     string            `json:"rule_id"`
	Default    bool              `json:"default"`
	Enabled    bool              `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions *[]Condition      `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// MarshalJSON writes the rule in the client-server API's format: conditions for
// override and underride rules, pattern for content rules.
func (r *Rule) MarshalJSON() ([]byte, error) {
	out := ruleJSON{RuleID: r.RuleID, Default: r.Default, Enabled: r.Enabled, Actions: r.Actions}
	if out.Actions == nil {
		out.Actions = []json.RawMessage{}
	}
	switch r.kind {
	case KindOverride, KindUnderride:
		c := r.Conditions
		if c == nil {
			c = []Condition{}
		}
		out.Conditions = &c
	case KindContent:
		out.Pattern = r.Pattern
	}
	return json.Marshal(out)
}

// Actions is the effect of a matched rule's actions.
type Actions struct {
	Notify    bool
	Highlight bool
	// Sound is the sound tweak ("" when none).
	Sound string
	// Tweaks are the set_tweak actions, by name, as sent to push gateways.
	Tweaks map[string]json.RawMessage
}

// ErrInvalid describes a malformed rule or action (M_INVALID_PARAM / M_BAD_JSON).
type ErrInvalid struct{ Msg string }

func (e *ErrInvalid) Error() string { return e.Msg }

func invalid(format string, args ...any) error { return &ErrInvalid{Msg: fmt.Sprintf(format, args...)} }

// ParseActions validates actions and returns their effect. Known actions are
// notify, dont_notify and coalesce (both no-ops) and set_tweak objects.
func ParseActions(raw []json.RawMessage) (Actions, error) {
	var a Actions
	for _, r := range raw {
		r = bytes.TrimSpace(r)
		if len(r) == 0 {
			return a, invalid("empty action")
		}
		if r[0] == '"' {
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return a, invalid("invalid action: %v", err)
			}
			switch s {
			case "notify":
				a.Notify = true
			case "dont_notify", "coalesce":
			default:
				return a, invalid("unknown action %q", s)
			}
			continue
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(r, &obj); err != nil || obj == nil {
			return a, invalid("an action must be a string or a set_tweak object")
		}
		var tweak string
		if err := json.Unmarshal(obj["set_tweak"], &tweak); err != nil || tweak == "" {
			return a, invalid("an action object must have a string set_tweak")
		}
		val, hasVal := obj["value"]
		if a.Tweaks == nil {
			a.Tweaks = map[string]json.RawMessage{}
		}
		switch tweak {
		case "highlight":
			h := true
			if hasVal {
				if err := json.Unmarshal(val, &h); err != nil {
					return a, invalid("the highlight tweak's value must be a boolean")
				}
			}
			a.Highlight = h
			a.Tweaks[tweak] = json.RawMessage(strconv.FormatBool(h))
		case "sound":
			if err := json.Unmarshal(val, &a.Sound); err != nil {
				return a, invalid("the sound tweak's value must be a string")
			}
			a.Tweaks[tweak] = val
		default:
			if !hasVal {
				val = json.RawMessage("true")
			}
			a.Tweaks[tweak] = val
		}
	}
	return a, nil
}

// compile validates a rule and prepares it for evaluation.
func (r *Rule) compile() error {
	a, err := ParseActions(r.Actions)
	if err != nil {
		return err
	}
	r.parsed = a
	switch r.kind {
	case KindContent:
		if r.Pattern == nil {
			return invalid("content rules need a pattern")
		}
		r.glob = compileGlob(*r.Pattern, true)
	case KindOverride, KindUnderride:
		for i := range r.Conditions {
			if err := r.Conditions[i].compile(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Condition) compile() error {
	if err := c.compileKind(); err != nil {
		return err
	}
	if !c.invalid && c.Kind != CondContainsDisplayName {
		c.memo = internCondition(c.Kind + "\x00" + c.Key + "\x00" + derefOr(c.Pattern) + "\x00" + c.Is + "\x00" + string(c.Value))
	}
	return nil
}

func derefOr(p *string) string {
	if p == nil {
		return "\x01"
	}
	return *p
}

// Conditions are interned: equal conditions of different users' rules share one slot
// of an event's result cache, so the default rules are evaluated once per event, not
// once per user.
var (
	condMu    sync.Mutex
	condIDs   = map[string]int{}
	condCount atomic.Int64
)

const maxInternedConditions = 1 << 16

func internCondition(sig string) int {
	condMu.Lock()
	defer condMu.Unlock()
	if id, ok := condIDs[sig]; ok {
		return id
	}
	if len(condIDs) >= maxInternedConditions {
		return 0
	}
	id := len(condIDs) + 1
	condIDs[sig] = id
	condCount.Store(int64(id))
	return id
}

func (c *Condition) compileKind() error {
	switch c.Kind {
	case CondEventMatch:
		if c.Key == "" || c.Pattern == nil {
			return invalid("event_match conditions need a key and a pattern")
		}
		c.glob = compileGlob(*c.Pattern, c.Key == "content.body")
	case CondEventPropertyIs, CondEventPropertyContains:
		if c.Key == "" || len(c.Value) == 0 {
			return invalid("%s conditions need a key and a value", c.Kind)
		}
		v, err := decodeValue(c.Value)
		if err != nil {
			return invalid("%s: %v", c.Kind, err)
		}
		switch v.(type) {
		case string, bool, nil, json.Number:
		default:
			return invalid("%s: value must be a string, integer, boolean or null", c.Kind)
		}
		c.value = v
	case CondRoomMemberCount:
		op, n, ok := parseMemberCount(c.Is)
		if !ok {
			return invalid("room_member_count: invalid is %q", c.Is)
		}
		c.cmpOp, c.cmpN = op, n
	case CondSenderNotificationPerms:
		if c.Key == "" {
			return invalid("sender_notification_permission conditions need a key")
		}
	case CondContainsDisplayName:
	default:
		// Unknown condition kinds are accepted and never match, as the spec asks.
		c.invalid = true
	}
	return nil
}

func parseMemberCount(is string) (string, int64, bool) {
	op := "=="
	for _, p := range []string{"==", ">=", "<=", ">", "<"} {
		if rest, ok := strings.CutPrefix(is, p); ok {
			op, is = p, rest
			break
		}
	}
	n, err := strconv.ParseInt(is, 10, 64)
	if err != nil || n < 0 {
		return "", 0, false
	}
	return op, n, true
}

func decodeValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Ruleset is a user's whole rule set (the "global" ruleset), each kind in evaluation
// order: for override rules .m.rule.master first, then the user's rules, then the
// other server-default rules; for the other kinds the user's rules, then the defaults.
type Ruleset struct {
	Override  []*Rule
	Content   []*Rule
	Room      []*Rule
	Sender    []*Rule
	Underride []*Rule
}

// Of returns the rules of a kind.
func (rs *Ruleset) Of(k Kind) []*Rule {
	switch k {
	case KindOverride:
		return rs.Override
	case KindContent:
		return rs.Content
	case KindRoom:
		return rs.Room
	case KindSender:
		return rs.Sender
	case KindUnderride:
		return rs.Underride
	}
	return nil
}

// Find returns the rule of a kind with an ID, nil when there is none.
func (rs *Ruleset) Find(k Kind, ruleID string) *Rule {
	for _, r := range rs.Of(k) {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// MarshalJSON writes the ruleset as the API's push_ruleset object.
func (rs *Ruleset) MarshalJSON() ([]byte, error) {
	nn := func(r []*Rule) []*Rule {
		if r == nil {
			return []*Rule{}
		}
		return r
	}
	return json.Marshal(map[string][]*Rule{
		"override":  nn(rs.Override),
		"content":   nn(rs.Content),
		"room":      nn(rs.Room),
		"sender":    nn(rs.Sender),
		"underride": nn(rs.Underride),
	})
}

// AccountData returns the m.push_rules account data content: {"global": ruleset}.
func (rs *Ruleset) AccountData() (json.RawMessage, error) {
	return json.Marshal(map[string]*Ruleset{"global": rs})
}

// UserRules is what a user changed: their own rules per kind (most important first)
// and the enabled flag and actions they set on server-default rules. It is stored as
// JSON, one document per user.
type UserRules struct {
	Rules    map[Kind][]*StoredRule    `json:"rules,omitempty"`
	Defaults map[string]*DefaultChange `json:"defaults,omitempty"`
}

// StoredRule is a user-defined rule as stored.
type StoredRule struct {
	RuleID     string            `json:"rule_id"`
	Enabled    bool              `json:"enabled"`
	Actions    []json.RawMessage `json:"actions"`
	Conditions []Condition       `json:"conditions,omitempty"`
	Pattern    *string           `json:"pattern,omitempty"`
}

// DefaultChange is a user's change to a server-default rule.
type DefaultChange struct {
	Enabled *bool `json:"enabled,omitempty"`
	// Actions are the replaced actions (null: unchanged; [] is a valid change).
	Actions []json.RawMessage `json:"actions"`
}

// ErrNotFound is returned for unknown rules.
var ErrNotFound = errors.New("push rule not found")

// Build merges the server defaults for userID with the user's changes and compiles
// every rule. Stored rules that no longer compile are dropped.
func Build(userID string, u *UserRules) *Ruleset {
	defs := DefaultRules(userID)
	if u != nil {
		for _, k := range Kinds {
			for _, r := range defs.Of(k) {
				if ch := u.Defaults[r.RuleID]; ch != nil {
					if ch.Enabled != nil {
						r.Enabled = *ch.Enabled
					}
					if ch.Actions != nil {
						r.Actions = ch.Actions
					}
				}
			}
		}
	}
	out := &Ruleset{}
	for _, k := range Kinds {
		var custom []*Rule
		if u != nil {
			for _, s := range u.Rules[k] {
				r := &Rule{RuleID: s.RuleID, Enabled: s.Enabled, Actions: s.Actions, Conditions: append([]Condition(nil), s.Conditions...), Pattern: s.Pattern, kind: k}
				if r.compile() == nil {
					custom = append(custom, r)
				}
			}
		}
		d := defs.Of(k)
		for _, r := range d {
			if err := r.compile(); err != nil {
				// A user's actions on a default rule that do not compile: keep the default's.
				r.Actions = DefaultRules(userID).Find(k, r.RuleID).Actions
				_ = r.compile()
			}
		}
		var list []*Rule
		if k == KindOverride && len(d) > 0 && d[0].RuleID == ".m.rule.master" {
			list = append(list, d[0])
			d = d[1:]
		}
		list = append(list, custom...)
		list = append(list, d...)
		switch k {
		case KindOverride:
			out.Override = list
		case KindContent:
			out.Content = list
		case KindRoom:
			out.Room = list
		case KindSender:
			out.Sender = list
		case KindUnderride:
			out.Underride = list
		}
	}
	return out
}

// NewRule validates a user-defined rule (PUT /pushrules/global/{kind}/{ruleId}).
func NewRule(kind Kind, ruleID string, actions []json.RawMessage, conditions []Condition, pattern *string) (*StoredRule, error) {
	if ruleID == "" {
		return nil, invalid("rule ID must not be empty")
	}
	if strings.HasPrefix(ruleID, ".") {
		return nil, invalid("rule IDs starting with '.' are reserved for server-default rules")
	}
	if strings.ContainsAny(ruleID, "/\\") {
		return nil, invalid("rule IDs must not contain '/' or '\\'")
	}
	if actions == nil {
		return nil, invalid("actions are required")
	}
	s := &StoredRule{RuleID: ruleID, Enabled: true, Actions: actions}
	switch kind {
	case KindContent:
		if pattern == nil {
			return nil, invalid("content rules need a pattern")
		}
		s.Pattern = pattern
	case KindOverride, KindUnderride:
		s.Conditions = conditions
		if s.Conditions == nil {
			s.Conditions = []Condition{}
		}
	case KindRoom:
		if !strings.HasPrefix(ruleID, "!") {
			return nil, invalid("the rule ID of a room rule must be a room ID")
		}
	case KindSender:
		if !strings.HasPrefix(ruleID, "@") || !strings.Contains(ruleID, ":") {
			return nil, invalid("the rule ID of a sender rule must be a user ID")
		}
	}
	r := &Rule{RuleID: ruleID, Enabled: true, Actions: s.Actions, Conditions: append([]Condition(nil), s.Conditions...), Pattern: s.Pattern, kind: kind}
	if err := r.compile(); err != nil {
		return nil, err
	}
	return s, nil
}
