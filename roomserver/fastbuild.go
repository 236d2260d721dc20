package roomserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// The fast builder makes the same bytes as gomatrixserverlib's EventBuilder.Build for
// the common case of a plain message: a non-state event without unsigned data in a
// room version with event IDs that are hashes (v3 and later). Build marshals,
// unmarshals, redacts and re-canonicalises the whole event five times; for a message
// the redacted form is known in advance (content {}), so the fast builder writes the
// three forms it needs (for the content hash, for the signature and reference hash,
// and the final event) directly, with keys in canonical order. gomatrixserverlib
// still canonicalises the content and strings, enforces the room version's JSON
// rules, parses the result and checks its fields.
//
// Before a room version is served by the fast builder, one sample event is built both
// ways and must come out byte for byte the same (fastBuildOK); otherwise that version
// keeps using Build.

// contentKeptOnRedaction lists the event types whose content (or part of it) survives
// redaction in some room version: their redacted form is not simply content {}.
var contentKeptOnRedaction = map[string]bool{
	spec.MRoomMember: true, spec.MRoomCreate: true, spec.MRoomJoinRules: true,
	spec.MRoomPowerLevels: true, spec.MRoomHistoryVisibility: true, spec.MRoomRedaction: true,
	"m.room.aliases": true,
}

// fastBuildable reports whether p can take the fast path in verImpl (before the
// per-version self-check).
func fastBuildable(verImpl gomatrixserverlib.IRoomVersion, p *protoEvent) bool {
	return verImpl.EventFormat() == gomatrixserverlib.EventFormatV2 &&
		p.stateKey == nil && p.redacts == "" && len(p.unsigned) == 0 &&
		!contentKeptOnRedaction[p.typ] &&
		utf8.ValidString(p.typ) && utf8.ValidString(p.sender)
}

// fastEvent is what the fast builder needs to know about an event.
type fastEvent struct {
	verImpl    gomatrixserverlib.IRoomVersion
	roomID     string
	sender     string
	typ        string
	content    []byte // as sent; canonicalised by fastBuild
	prevEvents []string
	authEvents []string
	depth      int64
	ts         time.Time
	origin     spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
}

// fastBuild builds and signs e. Errors for bad content are the same kind Build
// returns (gomatrixserverlib.BadJSONError).
func fastBuild(e *fastEvent) (gomatrixserverlib.PDU, error) {
	content, err := gomatrixserverlib.EnforcedCanonicalJSON(e.content, e.verImpl.Version())
	if err != nil {
		return nil, err
	}
	keepOrigin, err := redactionKeepsOrigin(e.verImpl)
	if err != nil {
		return nil, err
	}
	w := eventWriter{e: e}
	// 1. The content hash covers the event without hashes, signatures and unsigned.
	hashable := w.write(content, nil, true, nil)
	sum := sha256.Sum256(hashable)
	hashes := []byte(`{"sha256":"` + base64.RawStdEncoding.EncodeToString(sum[:]) + `"}`)
	// 2. The redacted event (content {} for these types) is both what is signed and
	// what the reference hash (the event ID) covers.
	redacted := w.write([]byte("{}"), hashes, keepOrigin, nil)
	sig := ed25519.Sign(e.key, redacted)
	ref := sha256.Sum256(redacted)
	var eventID string
	switch e.verImpl.EventIDFormat() {
	case gomatrixserverlib.EventIDFormatV2:
		eventID = "$" + base64.RawStdEncoding.EncodeToString(ref[:])
	case gomatrixserverlib.EventIDFormatV3:
		eventID = "$" + base64.RawURLEncoding.EncodeToString(ref[:])
	default:
		return nil, fmt.Errorf("fast build: unexpected event ID format %d", e.verImpl.EventIDFormat())
	}
	sigs := make([]byte, 0, 160)
	sigs = append(sigs, '{')
	sigs = appendJSONString(sigs, string(e.origin))
	sigs = append(sigs, ":{"...)
	sigs = appendJSONString(sigs, string(e.keyID))
	sigs = append(sigs, ':', '"')
	sigs = base64.RawStdEncoding.AppendEncode(sigs, sig)
	sigs = append(sigs, "\"}}"...)
	// 3. The event as stored and sent.
	full := w.write(content, hashes, true, sigs)
	pdu, err := e.verImpl.NewEventFromTrustedJSONWithEventID(eventID, full, false)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.CheckFields(pdu); err != nil {
		return nil, err
	}
	return pdu, nil
}

// eventWriter writes the canonical JSON of a fastEvent with a given content, hashes
// and signatures.
type eventWriter struct {
	e   *fastEvent
	buf []byte
}

// str appends the canonical JSON of s.
func (w *eventWriter) str(b []byte, s string) []byte { return appendJSONString(b, s) }

// write returns the event with the keys in canonical (sorted) order. hashes and sigs
// are left out when nil; origin when withOrigin is false.
func (w *eventWriter) write(content, hashes []byte, withOrigin bool, sigs []byte) []byte {
	e := w.e
	b := w.buf[:0]
	b = append(b, `{"auth_events":`...)
	b = w.list(b, e.authEvents)
	b = append(b, `,"content":`...)
	b = append(b, content...)
	b = append(b, `,"depth":`...)
	b = strconv.AppendInt(b, e.depth, 10)
	if hashes != nil {
		b = append(b, `,"hashes":`...)
		b = append(b, hashes...)
	}
	if withOrigin {
		b = append(b, `,"origin":`...)
		b = w.str(b, string(e.origin))
	}
	b = append(b, `,"origin_server_ts":`...)
	b = strconv.AppendInt(b, int64(spec.AsTimestamp(e.ts)), 10)
	b = append(b, `,"prev_events":`...)
	b = w.list(b, e.prevEvents)
	b = append(b, `,"room_id":`...)
	b = w.str(b, e.roomID)
	b = append(b, `,"sender":`...)
	b = w.str(b, e.sender)
	if sigs != nil {
		b = append(b, `,"signatures":`...)
		b = append(b, sigs...)
	}
	b = append(b, `,"type":`...)
	b = w.str(b, e.typ)
	b = append(b, '}')
	w.buf = b
	return bytes.Clone(b)
}

func (w *eventWriter) list(b []byte, ids []string) []byte {
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = w.str(b, id)
	}
	return append(b, ']')
}

// appendJSONString appends s as a canonical JSON string, the form
// gomatrixserverlib's canonicalisation gives a string encoding/json wrote: only '"',
// '\\' and control characters escaped (\b \t \n \f \r short, others \u00xx),
// everything else as UTF-8. Strings that are not valid UTF-8 (which encoding/json
// would alter) take the slow way.
func appendJSONString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		enc, _ := json.Marshal(s)
		return gomatrixserverlib.CompactJSON(enc, b)
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\f':
			b = append(b, '\\', 'f')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// redactionKeepsOrigin reports whether the version's redaction algorithm keeps the
// top-level "origin" key (room versions before 11 do).
func redactionKeepsOrigin(verImpl gomatrixserverlib.IRoomVersion) (bool, error) {
	v := verImpl.Version()
	if k, ok := keepsOrigin.Load(v); ok {
		return k.(bool), nil
	}
	out, err := verImpl.RedactEventJSON([]byte(`{"type":"m.room.message","content":{},"origin":"a"}`))
	if err != nil {
		return false, fmt.Errorf("fast build: probe redaction of %s: %w", v, err)
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(out, &probe); err != nil {
		return false, fmt.Errorf("fast build: probe redaction of %s: %w", v, err)
	}
	_, keep := probe["origin"]
	keepsOrigin.Store(v, keep)
	return keep, nil
}

var keepsOrigin sync.Map // gomatrixserverlib.RoomVersion → bool

// fastBuildChecked caches the self-check per room version (true: the fast builder
// makes the same event as Build).
var fastBuildChecked sync.Map // gomatrixserverlib.RoomVersion → bool

// fastBuildOK reports whether the fast builder may serve verImpl: the first call per
// version builds a sample message both ways and compares the bytes.
func fastBuildOK(verImpl gomatrixserverlib.IRoomVersion, origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) bool {
	v := verImpl.Version()
	if ok, found := fastBuildChecked.Load(v); found {
		return ok.(bool)
	}
	ok := fastBuildSame(verImpl, origin, keyID, key)
	fastBuildChecked.Store(v, ok)
	return ok
}

// fastBuildSame builds one sample event with both builders and compares them.
func fastBuildSame(verImpl gomatrixserverlib.IRoomVersion, origin spec.ServerName, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey) bool {
	roomID := "!sample:" + string(origin)
	e := &fastEvent{
		verImpl: verImpl, roomID: roomID, sender: "@sample:" + string(origin), typ: "m.room.message",
		content:    []byte(`{"msgtype":"m.text", "body":"<sample> \u00e9\u2028 \ud83d\ude00", "n":[1,{"b":2,"a":-3}]}`),
		prevEvents: []string{"$prevprevprevprevprevprevprevprevprevprevpre"},
		authEvents: []string{"$authauthauthauthauthauthauthauthauthauthaut", "$auth2auth2auth2auth2auth2auth2auth2auth2aut"},
		depth:      7, ts: time.UnixMilli(1700000000123), origin: origin, keyID: keyID, key: key,
	}
	fast, err := fastBuild(e)
	if err != nil {
		return false
	}
	slow, err := slowBuild(e)
	if err != nil {
		return false
	}
	return bytes.Equal(fast.JSON(), slow.JSON()) && fast.EventID() == slow.EventID()
}

// slowBuild builds e with gomatrixserverlib's EventBuilder (for the self-check and
// tests).
func slowBuild(e *fastEvent) (gomatrixserverlib.PDU, error) {
	b := e.verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: e.sender, RoomID: e.roomID, Type: e.typ, Content: e.content, Depth: e.depth,
		PrevEvents: e.prevEvents, AuthEvents: e.authEvents,
	})
	return b.Build(e.ts, e.origin, e.keyID, e.key)
}
