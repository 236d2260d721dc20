package clientapi

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/roomserver/directory"
)

// Remote is what the client API asks other servers, through federation (implemented
// by federation.Remote and wired in cmd/myelin/app). Errors of the remote server come
// back as Matrix errors where it gave one.
type Remote interface {
	// Profile returns a remote user's profile (field "" for all of it), with a short cache.
	Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// PublicRooms asks server for a page of its public room directory.
	PublicRooms(ctx context.Context, server string, req directory.PublicRoomsRequest) (*directory.PublicRoomsPage, error)
	// Hierarchy asks the servers in via, in order, for a room of a space tree and its
	// direct children.
	Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (*directory.RemoteHierarchy, error)
	// Backfill fetches up to limit events older than the room's earliest known events
	// from servers in the room and stores them; it returns how many were stored.
	Backfill(ctx context.Context, roomID string, limit int) (int, error)
	// TimestampToEvent asks other servers of the room for the event closest to ts in
	// the direction given, and stores it as history; "" when none had one.
	TimestampToEvent(ctx context.Context, roomID string, ts int64, backward bool) (eventID string, originServerTS int64, err error)
}
