package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"regexp"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// MRoomServerACL is the state event type of server access control lists.
const MRoomServerACL = "m.room.server_acl"

// ServerACL is the parsed content of an m.room.server_acl event.
type ServerACL struct {
	allowIPLiterals bool
	allow, deny     []*regexp.Regexp
}

// ParseServerACL parses m.room.server_acl content: allow and deny are lists of server
// names (without port) where * matches any run of characters and ? one character;
// allow_ip_literals defaults to true. Entries that are not strings are ignored.
func ParseServerACL(content []byte) *ServerACL {
	var c struct {
		Allow           []any `json:"allow"`
		Deny            []any `json:"deny"`
		AllowIPLiterals any   `json:"allow_ip_literals"`
	}
	_ = json.Unmarshal(content, &c)
	acl := &ServerACL{allowIPLiterals: true}
	if b, ok := c.AllowIPLiterals.(bool); ok {
		acl.allowIPLiterals = b
	}
	compile := func(globs []any) []*regexp.Regexp {
		var out []*regexp.Regexp
		for _, g := range globs {
			s, ok := g.(string)
			if !ok {
				continue
			}
			var b strings.Builder
			b.WriteString("(?i)^")
			for _, r := range s {
				switch r {
				case '*':
					b.WriteString(".*")
				case '?':
					b.WriteString(".")
				default:
					b.WriteString(regexp.QuoteMeta(string(r)))
				}
			}
			b.WriteString("$")
			if re, err := regexp.Compile(b.String()); err == nil {
				out = append(out, re)
			}
		}
		return out
	}
	acl.allow, acl.deny = compile(c.Allow), compile(c.Deny)
	return acl
}

// Allows applies the ACL to a server name (its port, if any, is not considered): an
// IP literal is refused unless allow_ip_literals; then a deny match refuses, an allow
// match admits, and anything else is refused.
func (a *ServerACL) Allows(server spec.ServerName) bool {
	host, _, ok := spec.ParseAndValidateServerName(server)
	if !ok {
		return false
	}
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(h) != nil && !a.allowIPLiterals {
		return false
	}
	for _, re := range a.deny {
		if re.MatchString(host) {
			return false
		}
	}
	for _, re := range a.allow {
		if re.MatchString(host) {
			return true
		}
	}
	return false
}

// aclCache keeps parsed ACLs by event NID (ACL events are immutable).
type aclCache struct {
	mu sync.Mutex
	m  map[int64]*ServerACL
}

func (c *aclCache) get(ev *Event) *ServerACL {
	c.mu.Lock()
	defer c.mu.Unlock()
	if acl, ok := c.m[ev.NID]; ok {
		return acl
	}
	if c.m == nil || len(c.m) > 10_000 {
		c.m = map[int64]*ServerACL{}
	}
	acl := ParseServerACL(ev.Content())
	c.m[ev.NID] = acl
	return acl
}

// ServerAllowed reports whether the room's current m.room.server_acl lets server take
// part in the room: the federation API refuses requests and PDUs of denied servers,
// and the outgoing federation sender must not send the room's events or EDUs to them.
// Rooms without an ACL, and rooms this server does not know, allow every server; an
// error reading the state denies (the caller retries later).
func (rs *Roomserver) ServerAllowed(ctx context.Context, roomID string, server spec.ServerName) bool {
	ev, err := rs.CurrentStateEvent(ctx, roomID, MRoomServerACL, "")
	if err != nil {
		var me spec.MatrixError
		return errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound
	}
	if ev == nil {
		return true
	}
	return rs.acls.get(ev).Allows(server)
}
