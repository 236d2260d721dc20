// Package syncapi assembles /sync: stream tokens over every stream, the notifier that
// wakes long-polls, typing notifications (in memory), receipts, read markers and
// presence. The client API renders its responses; events are formatted by the one
// client-event formatter of clientapi, handed in as Request.Format.
package syncapi

import (
	"fmt"
	"strconv"
	"strings"
)

// Token is a position in every stream /sync follows. Its string form is opaque to
// clients and used as since/next_batch.
type Token struct {
	// Events is the room event stream (timelines, state, invites, knocks, leaves).
	Events      int64
	AccountData int64
	Receipts    int64
	// Typing is in memory; it starts from the clock at start-up so that it keeps
	// growing across restarts.
	Typing      int64
	Presence    int64
	ToDevice    int64
	DeviceLists int64
}

// String renders the token: "s" and the positions separated by '_'.
func (t Token) String() string {
	// By hand rather than fmt: every /sync answer makes one.
	b := make([]byte, 0, 64)
	b = append(b, 's')
	for i, v := range [...]int64{t.Events, t.AccountData, t.Receipts, t.Typing, t.Presence, t.ToDevice, t.DeviceLists} {
		if i > 0 {
			b = append(b, '_')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return string(b)
}

func (t *Token) fields() []*int64 {
	return []*int64{&t.Events, &t.AccountData, &t.Receipts, &t.Typing, &t.Presence, &t.ToDevice, &t.DeviceLists}
}

// ParseToken parses a token made by Token.String.
func ParseToken(s string) (Token, error) {
	var t Token
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return t, fmt.Errorf("invalid sync token %q", s)
	}
	parts := strings.Split(rest, "_")
	fs := t.fields()
	if len(parts) != len(fs) {
		return t, fmt.Errorf("invalid sync token %q", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil || v < 0 {
			return t, fmt.Errorf("invalid sync token %q", s)
		}
		*fs[i] = v
	}
	return t, nil
}

// atLeast returns t with every position raised to at least o's.
func (t Token) atLeast(o Token) Token {
	tf, of := t.fields(), o.fields()
	for i := range tf {
		*tf[i] = max(*tf[i], *of[i])
	}
	return t
}
