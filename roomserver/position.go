package roomserver

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/storage/roomstore"
)

// Position is a gap in a room's topological order, just after the event at (Depth,
// Stream): events are ordered by depth, then by stream position. Pagination tokens are
// positions: paginating backwards from p returns the events at or before p (newest
// first), forwards the events after p (oldest first).
type Position struct {
	Depth  int64
	Stream int64
	// Bounded positions (the start of a /sync timeline, see PrevBatch) also carry
	// MaxStream: paginating backwards from them returns the events that reached the
	// room at or before stream position MaxStream, whatever their depth, newest first
	// by depth; forwards they are (Depth, Stream).
	Bounded   bool
	MaxStream int64
	// SyncStream, on the start of a /sync timeline that begins with the room's create
	// event (see SyncPrevBatch), is the stream position of that /sync answer. No member
	// state exists before a room's first event, so /members?at= reads the members at
	// the answer's point instead (what the client was shown with the token); pagination
	// ignores it.
	SyncStream int64
}

// syncStart reports whether a bounded position is the start of a /sync timeline
// (PrevBatch: Stream equals MaxStream), which backwards has no topological bound;
// pages after it continue from their last event (Stream below MaxStream).
func (p Position) syncStart() bool { return p.Bounded && p.Stream == p.MaxStream }

// PrevBatch returns the token before a /sync timeline whose first event is first.
// Backwards, it gives every event that reached the room before first, in topological
// order: an event received late with a low depth (another server's, after a network
// partition) is not skipped, which a purely topological position would do with the
// events of ours that came before it but are deeper.
func PrevBatch(first *Event) Position {
	return Position{Depth: first.Depth(), Stream: first.StreamPos - 1, Bounded: true, MaxStream: first.StreamPos - 1}
}

// SyncPrevBatch is PrevBatch for a /sync answer at stream position syncStream: when the
// timeline starts with the room's create event, the token also carries syncStream (see
// Position.SyncStream).
func SyncPrevBatch(first *Event, syncStream int64) Position {
	p := PrevBatch(first)
	if first.Type() == spec.MRoomCreate && first.StateKey() != nil && *first.StateKey() == "" {
		p.SyncStream = syncStream
	}
	return p
}

// Start is the gap before every event of a room.
var Start = Position{}

// End is the gap after every event of a room.
var End = Position{Depth: math.MaxInt64, Stream: math.MaxInt64}

// String renders the position as a pagination token: "t<depth>_<stream>", with
// "_<max stream>" when bounded, and "_<sync stream>" after that when set.
func (p Position) String() string {
	if p.Bounded && p.SyncStream > 0 {
		return fmt.Sprintf("t%d_%d_%d_%d", p.Depth, p.Stream, p.MaxStream, p.SyncStream)
	}
	if p.Bounded {
		return fmt.Sprintf("t%d_%d_%d", p.Depth, p.Stream, p.MaxStream)
	}
	return fmt.Sprintf("t%d_%d", p.Depth, p.Stream)
}

// ParsePosition parses a token made by Position.String.
func ParsePosition(s string) (Position, error) {
	rest, ok := strings.CutPrefix(s, "t")
	if !ok {
		return Position{}, fmt.Errorf("invalid position %q", s)
	}
	d, st, ok := strings.Cut(rest, "_")
	if !ok {
		return Position{}, fmt.Errorf("invalid position %q", s)
	}
	st, maxSt, bounded := strings.Cut(st, "_")
	depth, err1 := strconv.ParseInt(d, 10, 64)
	stream, err2 := strconv.ParseInt(st, 10, 64)
	// Streams are negative for backfilled events.
	if err1 != nil || err2 != nil || depth < 0 {
		return Position{}, fmt.Errorf("invalid position %q", s)
	}
	p := Position{Depth: depth, Stream: stream}
	if bounded {
		maxSt, syncSt, hasSync := strings.Cut(maxSt, "_")
		m, err := strconv.ParseInt(maxSt, 10, 64)
		if err != nil {
			return Position{}, fmt.Errorf("invalid position %q", s)
		}
		p.Bounded, p.MaxStream = true, m
		if hasSync {
			n, err := strconv.ParseInt(syncSt, 10, 64)
			if err != nil || n <= 0 {
				return Position{}, fmt.Errorf("invalid position %q", s)
			}
			p.SyncStream = n
		}
	}
	return p, nil
}

// before returns the gap just before the event at p (keeping p's bound).
func (p Position) before() Position {
	return Position{Depth: p.Depth, Stream: p.Stream - 1, Bounded: p.Bounded, MaxStream: p.MaxStream}
}

// Before returns the gap just before the event at p: paginating backwards from it
// continues with the events older than that event.
func (p Position) Before() Position { return p.before() }

// Direction is the direction of a page.
type Direction int

// Directions.
const (
	Backward Direction = iota
	Forward
)

// order is the storage ordering of a page in direction d.
func (d Direction) order() roomstore.Order {
	if d == Backward {
		return roomstore.Backward
	}
	return roomstore.Forward
}
