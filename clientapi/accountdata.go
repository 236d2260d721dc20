package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// maxEventTypeBytes bounds account data types, which are event types (255 bytes in the spec).
const maxEventTypeBytes = 255

// accountDataTarget reads and checks the path of the account data endpoints:
// the user (must be the requester), the room ("" for global data) and the type.
func accountDataTarget(r *http.Request) (userID, roomID, dataType string, err error) {
	userID, dataType = pathVar(r, "userId"), pathVar(r, "type")
	if err := requireSelf(r, userID, "access the account data"); err != nil {
		return "", "", "", err
	}
	if _, isRoom := mux.Vars(r)["roomId"]; isRoom {
		roomID = pathVar(r, "roomId")
		if len(roomID) > 255 {
			return "", "", "", httputil.InvalidParam("%q is not a valid room ID", roomID)
		}
		if _, err := spec.NewRoomID(roomID); err != nil {
			return "", "", "", httputil.InvalidParam("%q is not a valid room ID", roomID)
		}
	}
	if dataType == "" || len(dataType) > maxEventTypeBytes {
		return "", "", "", httputil.InvalidParam("Account data type must be 1 to %d bytes long", maxEventTypeBytes)
	}
	return userID, roomID, dataType, nil
}

// getAccountData serves GET /user/{userId}/account_data/{type} and its per-room form.
func (s *Server) getAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if roomID == "" && dataType == "m.push_rules" && s.push != nil {
		// Push rules are the server defaults merged with the user's changes (syncapi/push).
		rs, err := s.push.Rules(r.Context(), userID)
		if err != nil {
			return nil, err
		}
		return rs.AccountData()
	}
	content, err := storage.GetAccountData(r.Context(), s.db, userID, roomID, dataType)
	if errors.Is(err, storage.ErrNotFound) {
		if roomID != "" {
			return nil, httputil.NotFound("Room account data not found")
		}
		return nil, httputil.NotFound("Account data not found")
	}
	if err != nil {
		return nil, err
	}
	return content, nil
}

// putAccountData serves PUT /user/{userId}/account_data/{type} and its per-room form.
// Every write takes a new position in the account_data stream, for /sync.
func (s *Server) putAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if err := serverManagedAccountData(roomID, dataType); err != nil {
		return nil, err
	}
	content, err := readJSONObject(r)
	if err != nil {
		return nil, err
	}
	if _, err := storage.SetAccountData(r.Context(), s.db, userID, roomID, dataType, content); err != nil {
		return nil, err
	}
	s.sync.OnAccountData(userID) // wakes the user's /sync long-polls
	return struct{}{}, nil
}

// deleteAccountData serves DELETE /user/{userId}/account_data/{type} and its per-room
// form (MSC3391, unstable prefix). Deleting what is not there succeeds.
func (s *Server) deleteAccountData(r *http.Request) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r)
	if err != nil {
		return nil, err
	}
	if err := serverManagedAccountData(roomID, dataType); err != nil {
		return nil, err
	}
	var pos int64
	err = s.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		pos, err = storage.DeleteAccountData(r.Context(), tx, userID, roomID, dataType)
		return err
	})
	if err != nil {
		return nil, err
	}
	if pos > 0 {
		s.sync.OnAccountData(userID)
	}
	return struct{}{}, nil
}

// serverManagedAccountData refuses writes to the types the server manages through their
// own APIs (405 M_BAD_JSON, as the spec says).
func serverManagedAccountData(roomID, dataType string) error {
	if roomID != "" && dataType == "m.fully_read" {
		return httputil.NewError(http.StatusMethodNotAllowed, "M_BAD_JSON", "Cannot set m.fully_read through this API, use /read_markers")
	}
	if roomID == "" && dataType == "m.push_rules" {
		return httputil.NewError(http.StatusMethodNotAllowed, "M_BAD_JSON", "Cannot set m.push_rules through this API, use /pushrules")
	}
	return nil
}

// readJSONObject reads a body that must be a JSON object and returns it compacted:
// M_NOT_JSON when it is empty or not JSON, M_BAD_JSON when it is JSON but not an object,
// M_TOO_LARGE when over the request size limit.
func readJSONObject(r *http.Request) (json.RawMessage, error) {
	body, err := httputil.ReadBody(r)
	if err != nil {
		return nil, err
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 || !utf8.Valid(body) || !json.Valid(body) {
		return nil, httputil.NotJSON("Content must be a JSON object")
	}
	if body[0] != '{' {
		return nil, httputil.BadJSON("Content must be a JSON object")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, body); err != nil {
		return nil, httputil.NotJSON("Content must be a JSON object")
	}
	return buf.Bytes(), nil
}
