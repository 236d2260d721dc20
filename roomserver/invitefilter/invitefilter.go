// Package invitefilter decides whether a user accepts an invite from another user, from
// the user's account data: the spec's m.invite_permission_config (v1.18, "block every
// invite") and MSC4155's finer org.matrix.msc4155.invite_permission_config (allow, ignore
// or block by user and by server, with globs).
package invitefilter

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Account data types holding a user's invite permissions.
const (
	SpecType    = "m.invite_permission_config"
	MSC4155Type = "org.matrix.msc4155.invite_permission_config"
)

// Decision is what happens to an invite.
type Decision int

const (
	// Allow: the invite is accepted and shown.
	Allow Decision = iota
	// Ignore: the invite is accepted but never shown to the invitee (MSC4155).
	Ignore
	// Block: the invite is refused with 403 M_INVITE_BLOCKED.
	Block
)

// Config is a user's invite permissions.
type Config struct {
	// BlockAll is the spec's default_action "block".
	BlockAll bool
	// MSC4155 lists: glob patterns (* and ?) of user IDs and server names.
	AllowedUsers, IgnoredUsers, BlockedUsers       []string
	AllowedServers, IgnoredServers, BlockedServers []string
}

// Load reads a user's invite permissions; the zero Config (allow all) when they set none.
func Load(ctx context.Context, q storage.Querier, userID string) (Config, error) {
	var c Config
	raw, err := storage.GetAccountData(ctx, q, userID, "", SpecType)
	switch {
	case err == nil:
		var sc struct {
			DefaultAction any `json:"default_action"`
		}
		// An invalid or unknown value means invites as normal (the spec says so).
		if json.Unmarshal(raw, &sc) == nil && sc.DefaultAction == "block" {
			c.BlockAll = true
		}
	case !errors.Is(err, storage.ErrNotFound):
		return c, err
	}
	raw, err = storage.GetAccountData(ctx, q, userID, "", MSC4155Type)
	switch {
	case err == nil:
		var m map[string]any
		if json.Unmarshal(raw, &m) == nil {
			c.AllowedUsers, c.IgnoredUsers, c.BlockedUsers = globs(m["allowed_users"]), globs(m["ignored_users"]), globs(m["blocked_users"])
			c.AllowedServers, c.IgnoredServers, c.BlockedServers = globs(m["allowed_servers"]), globs(m["ignored_servers"]), globs(m["blocked_servers"])
		}
	case !errors.Is(err, storage.ErrNotFound):
		return c, err
	}
	return c, nil
}

// globs keeps the strings of a JSON list; anything else (null, wrong types) is no list.
func globs(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// Decide says what happens to an invite sent by inviter. A user rule beats a server rule
// and, within each, allow beats ignore beats block (MSC4155); blocking every invite (the
// spec's module) applies to whatever MSC4155 does not explicitly allow.
func (c Config) Decide(inviter string) Decision {
	if d, ok := decideLists(inviter, c.AllowedUsers, c.IgnoredUsers, c.BlockedUsers); ok {
		return d
	}
	server := inviter
	if i := strings.IndexByte(inviter, ':'); i >= 0 {
		server = inviter[i+1:]
	}
	if d, ok := decideLists(server, c.AllowedServers, c.IgnoredServers, c.BlockedServers); ok {
		return d
	}
	if c.BlockAll {
		return Block
	}
	return Allow
}

func decideLists(s string, allowed, ignored, blocked []string) (Decision, bool) {
	switch {
	case matchAny(s, allowed):
		return Allow, true
	case matchAny(s, ignored):
		return Ignore, true
	case matchAny(s, blocked):
		return Block, true
	}
	return Allow, false
}

func matchAny(s string, patterns []string) bool {
	for _, p := range patterns {
		if Glob(p, s) {
			return true
		}
	}
	return false
}

// Glob reports whether s matches pattern, where * matches any run of characters
// (also none) and ? exactly one; every other character matches itself.
func Glob(pattern, s string) bool {
	// Iterative matching with backtracking to the last star: linear in practice and
	// never exponential, whatever the pattern.
	p, i, star, mark := 0, 0, -1, 0
	pr, sr := []rune(pattern), []rune(s)
	for i < len(sr) {
		switch {
		case p < len(pr) && (pr[p] == '?' || pr[p] == sr[i]):
			p++
			i++
		case p < len(pr) && pr[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pr) && pr[p] == '*' {
		p++
	}
	return p == len(pr)
}

// Blocked is the error for an invite the invitee refuses (403 M_INVITE_BLOCKED).
func Blocked(invitee string) error {
	return httputil.NewError(http.StatusForbidden, "M_INVITE_BLOCKED", "%s does not accept invites from you", invitee)
}

// Check returns Blocked when invitee refuses invites from inviter, nil otherwise.
func Check(ctx context.Context, q storage.Querier, invitee, inviter string) error {
	c, err := Load(ctx, q, invitee)
	if err != nil {
		return err
	}
	if c.Decide(inviter) == Block {
		return Blocked(invitee)
	}
	return nil
}
