package syncapi

import (
	"context"
	"time"
)

// RoomUnreadCounter is an UnreadCounter that can tell when the notifications of new
// events are counted. The fast path uses it so that an answer woken by a new event
// has counts that include that event.
type RoomUnreadCounter interface {
	UnreadCounter
	// WaitCounted blocks until the events up to stream position pos are counted, for
	// at most within, or until ctx ends. Counting is evaluating the event's push rules
	// (counts are kept in memory), not writing its notifications: it normally returns
	// within a millisecond, and at once when the events are already counted.
	WaitCounted(ctx context.Context, pos int64, within time.Duration) error
}

// countWait bounds how long an answer waits for the counts of the events it carries:
// past it, the counts are read as they are (as the database path does).
const countWait = 250 * time.Millisecond

// roomUnread returns a user's counts in a room for an answer whose last event in the
// room is at upTo, once the push service has counted that event.
func (s *Service) roomUnread(ctx context.Context, rc RoomUnreadCounter, userID, roomID string, upTo int64,
	threads bool) (UnreadCounts, error) {
	_ = rc.WaitCounted(ctx, upTo, countWait) // past the bound, counts are read as they are
	return rc.UnreadCounts(ctx, userID, roomID, threads)
}
