package roomserver

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/myelin-chat/myelin/storage/roomstore"
)

// Position is a gap in a room's topological order, just after the event at (Depth,
// Stream): events are ordered by depth, then by stream position. Pagination tokens are
// positions: paginating backwards from p returns the events at or before p (newest
// first), forwards the events after p (oldest first).
type Position struct {
	Depth  int64
	Stream int64
}

// Start is the gap before every event of a room.
var Start = Position{}

// End is the gap after every event of a room.
var End = Position{Depth: math.MaxInt64, Stream: math.MaxInt64}

// String renders the position as a pagination token: "t<depth>_<stream>".
func (p Position) String() string { return fmt.Sprintf("t%d_%d", p.Depth, p.Stream) }

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
	depth, err1 := strconv.ParseInt(d, 10, 64)
	stream, err2 := strconv.ParseInt(st, 10, 64)
	// Streams are negative for backfilled events.
	if err1 != nil || err2 != nil || depth < 0 {
		return Position{}, fmt.Errorf("invalid position %q", s)
	}
	return Position{Depth: depth, Stream: stream}, nil
}

// before returns the gap just before the event at p.
func (p Position) before() Position { return Position{Depth: p.Depth, Stream: p.Stream - 1} }

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
