package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// Room tags: GET /user/{userId}/rooms/{roomId}/tags and PUT/DELETE .../tags/{tag}.
// Tags are the room account data of type m.tag: {"tags": {tag: {order?}}}.

const tagAccountDataType = "m.tag"

// maxTagBytes bounds a tag name (the spec gives none; event types get 255 bytes).
const maxTagBytes = 255

// tagsTarget checks the path: the requester's own user ID and a valid room ID.
func tagsTarget(r *http.Request) (userID, roomID string, err error) {
	userID, roomID = pathVar(r, "userId"), pathVar(r, "roomId")
	if err := requireSelf(r, userID, "access the room tags"); err != nil {
		return "", "", err
	}
	if _, err := spec.NewRoomID(roomID); err != nil || len(roomID) > 255 {
		return "", "", httputil.InvalidParam("%q is not a valid room ID", roomID)
	}
	return userID, roomID, nil
}

// readTags returns a user's tags of a room (empty when none were set).
func readTags(ctx context.Context, q storage.Querier, userID, roomID string) (map[string]json.RawMessage, error) {
	raw, err := storage.GetAccountData(ctx, q, userID, roomID, tagAccountDataType)
	if errors.Is(err, storage.ErrNotFound) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, err
	}
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Tags == nil {
		return map[string]json.RawMessage{}, nil
	}
	return c.Tags, nil
}

var tagLocks [32]sync.Mutex

// updateTags changes a user's tags of a room in one transaction, so that concurrent
// changes of different tags do not lose each other.
func (s *Server) updateTags(ctx context.Context, userID, roomID string, change func(tags map[string]json.RawMessage) bool) error {
	// The transaction alone does not serialise read-modify-write on PostgreSQL (read
	// committed): a lock per user does, within this process.
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	mu := &tagLocks[h.Sum32()%uint32(len(tagLocks))]
	mu.Lock()
	defer mu.Unlock()
	changed := false
	defer func() {
		if changed {
			s.sync.OnAccountData(userID) // wakes the user's /sync long-polls
		}
	}()
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		tags, err := readTags(ctx, tx, userID, roomID)
		if err != nil {
			return err
		}
		if !change(tags) {
			return nil
		}
		content, err := json.Marshal(map[string]any{"tags": tags})
		if err != nil {
			return err
		}
		if _, err = storage.PutAccountData(ctx, tx, userID, roomID, tagAccountDataType, content); err != nil {
			return err
		}
		changed = true
		return nil
	})
}

// getRoomTags serves GET /user/{userId}/rooms/{roomId}/tags.
func (s *Server) getRoomTags(r *http.Request) (any, error) {
	userID, roomID, err := tagsTarget(r)
	if err != nil {
		return nil, err
	}
	tags, err := readTags(r.Context(), s.db, userID, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"tags": tags}, nil
}

// putRoomTag serves PUT /user/{userId}/rooms/{roomId}/tags/{tag} {order?}.
func (s *Server) putRoomTag(r *http.Request) (any, error) {
	userID, roomID, err := tagsTarget(r)
	if err != nil {
		return nil, err
	}
	tag := pathVar(r, "tag")
	if tag == "" || len(tag) > maxTagBytes {
		return nil, httputil.InvalidParam("Tag names must be 1 to %d bytes long", maxTagBytes)
	}
	content, err := readJSONObject(r)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(content, &body); err != nil {
		return nil, httputil.BadJSON("Tag content must be a JSON object")
	}
	if o, ok := body["order"]; ok && !bytes.Equal(bytes.TrimSpace(o), []byte("null")) {
		var order float64
		if err := json.Unmarshal(o, &order); err != nil {
			return nil, httputil.BadJSON("order must be a number")
		}
		if order < 0 || order > 1 {
			return nil, httputil.InvalidParam("order must be between 0 and 1")
		}
	}
	err = s.updateTags(r.Context(), userID, roomID, func(tags map[string]json.RawMessage) bool {
		tags[tag] = content
		return true
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteRoomTag serves DELETE /user/{userId}/rooms/{roomId}/tags/{tag}. Deleting a
// tag that is not set succeeds.
func (s *Server) deleteRoomTag(r *http.Request) (any, error) {
	userID, roomID, err := tagsTarget(r)
	if err != nil {
		return nil, err
	}
	tag := pathVar(r, "tag")
	err = s.updateTags(r.Context(), userID, roomID, func(tags map[string]json.RawMessage) bool {
		if _, ok := tags[tag]; !ok {
			return false
		}
		delete(tags, tag)
		return true
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
