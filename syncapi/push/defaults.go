package push

import (
	"encoding/json"
	"strings"
)

// Actions shared by the default rules.
var (
	actNotify    = json.RawMessage(`"notify"`)
	actSoundDef  = json.RawMessage(`{"set_tweak":"sound","value":"default"}`)
	actSoundRing = json.RawMessage(`{"set_tweak":"sound","value":"ring"}`)
	actHighlight = json.RawMessage(`{"set_tweak":"highlight"}`)
)

func match(key, pattern string) Condition {
	return Condition{Kind: CondEventMatch, Key: key, Pattern: &pattern}
}

func propIs(key string, value string) Condition {
	return Condition{Kind: CondEventPropertyIs, Key: key, Value: json.RawMessage(value)}
}

func acts(a ...json.RawMessage) []json.RawMessage {
	if a == nil {
		return []json.RawMessage{}
	}
	return a
}

// legacyMentionRules are skipped for events whose content has m.mentions (spec 1.7).
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.contains_user_name":    true,
	".m.rule.roomnotif":             true,
}

// DefaultRules returns the spec's server-default rules for a user, uncompiled.
func DefaultRules(userID string) *Ruleset {
	userJSON, _ := json.Marshal(userID)
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	rule := func(k Kind, id string, enabled bool, actions []json.RawMessage, conds ...Condition) *Rule {
		if conds == nil && (k == KindOverride || k == KindUnderride) {
			conds = []Condition{}
		}
		return &Rule{RuleID: id, Default: true, Enabled: enabled, Actions: actions, Conditions: conds, kind: k, legacy: legacyMentionRules[id]}
	}
	rs := &Ruleset{
		Override: []*Rule{
			rule(KindOverride, ".m.rule.master", false, acts()),
			rule(KindOverride, ".m.rule.suppress_notices", true, acts(),
				match("content.msgtype", "m.notice")),
			rule(KindOverride, ".m.rule.invite_for_me", true, acts(actNotify, actSoundDef),
				match("type", "m.room.member"),
				match("content.membership", "invite"),
				match("state_key", userID)),
			rule(KindOverride, ".m.rule.member_event", true, acts(),
				match("type", "m.room.member")),
			rule(KindOverride, ".m.rule.is_user_mention", true, acts(actNotify, actSoundDef, actHighlight),
				Condition{Kind: CondEventPropertyContains, Key: `content.m\.mentions.user_ids`, Value: userJSON}),
			rule(KindOverride, ".m.rule.contains_display_name", true, acts(actNotify, actSoundDef, actHighlight),
				Condition{Kind: CondContainsDisplayName}),
			rule(KindOverride, ".m.rule.is_room_mention", true, acts(actNotify, actHighlight),
				propIs(`content.m\.mentions.room`, "true"),
				Condition{Kind: CondSenderNotificationPerms, Key: "room"}),
			rule(KindOverride, ".m.rule.roomnotif", true, acts(actNotify, actHighlight),
				match("content.body", "@room"),
				Condition{Kind: CondSenderNotificationPerms, Key: "room"}),
			rule(KindOverride, ".m.rule.tombstone", true, acts(actNotify, actHighlight),
				match("type", "m.room.tombstone"),
				match("state_key", "")),
			rule(KindOverride, ".m.rule.reaction", true, acts(),
				match("type", "m.reaction")),
			rule(KindOverride, ".m.rule.room.server_acl", true, acts(),
				match("type", "m.room.server_acl"),
				match("state_key", "")),
			rule(KindOverride, ".m.rule.suppress_edits", true, acts(),
				propIs(`content.m\.relates_to.rel_type`, `"m.replace"`)),
			// Poll votes never notify (MSC3930, as Element expects).
			rule(KindOverride, ".org.matrix.msc3930.rule.poll_response", true, acts(),
				match("type", "org.matrix.msc3381.poll.response")),
		},
		Content: []*Rule{
			func() *Rule {
				r := rule(KindContent, ".m.rule.contains_user_name", true, acts(actNotify, actSoundDef, actHighlight))
				r.Pattern = &localpart
				return r
			}(),
		},
		Underride: []*Rule{
			rule(KindUnderride, ".m.rule.call", true, acts(actNotify, actSoundRing),
				match("type", "m.call.invite")),
			// The spec's order (clients such as matrix-js-sdk check it).
			rule(KindUnderride, ".m.rule.encrypted_room_one_to_one", true, acts(actNotify, actSoundDef),
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				match("type", "m.room.encrypted")),
			rule(KindUnderride, ".m.rule.room_one_to_one", true, acts(actNotify, actSoundDef),
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				match("type", "m.room.message")),
			// Polls started and ended notify like messages (MSC3930).
			rule(KindUnderride, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, acts(actNotify, actSoundDef),
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				match("type", "org.matrix.msc3381.poll.start")),
			rule(KindUnderride, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, acts(actNotify, actSoundDef),
				Condition{Kind: CondRoomMemberCount, Is: "2"},
				match("type", "org.matrix.msc3381.poll.end")),
			rule(KindUnderride, ".m.rule.message", true, acts(actNotify),
				match("type", "m.room.message")),
			rule(KindUnderride, ".m.rule.encrypted", true, acts(actNotify),
				match("type", "m.room.encrypted")),
			rule(KindUnderride, ".org.matrix.msc3930.rule.poll_start", true, acts(actNotify),
				match("type", "org.matrix.msc3381.poll.start")),
			rule(KindUnderride, ".org.matrix.msc3930.rule.poll_end", true, acts(actNotify),
				match("type", "org.matrix.msc3381.poll.end")),
		},
	}
	return rs
}
