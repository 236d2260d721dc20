package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

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
func (s *Server) readTags(r *http.Request, userID, roomID string) (map[string]json.RawMessage, error) {
	raw, err := storage.GetAccountData(r.Context(), s.db, userID, roomID, tagAccountDataType)
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

func (s *Server) writeTags(r *http.Request, userID, roomID string, tags map[string]json.RawMessage) error {
	content, err := json.Marshal(map[string]any{"tags": tags})
	if err != nil {
		return err
	}
	_, err = storage.SetAccountData(r.Context(), s.db, userID, roomID, tagAccountDataType, content)
	return err
}

// getRoomTags serves GET /user/{userId}/rooms/{roomId}/tags.
func (s *Server) getRoomTags(r *http.Request) (any, error) {
	userID, roomID, err := tagsTarget(r)
	if err != nil {
		return nil, err
	}
	tags, err := s.readTags(r, userID, roomID)
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
	tags, err := s.readTags(r, userID, roomID)
	if err != nil {
		return nil, err
	}
	tags[tag] = content
	if err := s.writeTags(r, userID, roomID, tags); err != nil {
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
	tags, err := s.readTags(r, userID, roomID)
	if err != nil {
		return nil, err
	}
	if _, ok := tags[tag]; !ok {
		return struct{}{}, nil
	}
	delete(tags, tag)
	if err := s.writeTags(r, userID, roomID, tags); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
