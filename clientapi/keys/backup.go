package keys

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/storage"
)

// BackupVersionRequest is the body of POST /room_keys/version and PUT /room_keys/version/{version}.
type BackupVersionRequest struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	// Version, when given in a PUT, must be the version of the path.
	Version *string `json:"version,omitempty"`
}

// BackupVersionInfo is the answer of GET /room_keys/version[/{version}].
type BackupVersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	Etag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// BackupUpdate is the answer of the PUT and DELETE /room_keys/keys endpoints.
type BackupUpdate struct {
	Etag  string `json:"etag"`
	Count int64  `json:"count"`
}

// BackupKeyData is one backed-up session key (KeyBackupData).
type BackupKeyData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// RoomKeyBackup is the keys of one room: {"sessions": {session ID: key data}}.
type RoomKeyBackup struct {
	Sessions map[string]BackupKeyData `json:"sessions"`
}

// AllKeysBackup is the keys of a version: {"rooms": {room ID: {"sessions": ...}}}.
type AllKeysBackup struct {
	Rooms map[string]RoomKeyBackup `json:"rooms"`
}

var errUnknownVersion = httputil.NotFound("Unknown backup version")

func isJSONObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return len(raw) > 0 && raw[0] == '{' && json.Unmarshal(raw, &m) == nil
}

// parseVersion parses a version string; ok is false for strings that cannot name a version.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// CreateBackupVersion creates a new backup version, which becomes the current one.
func (s *Service) CreateBackupVersion(ctx context.Context, userID string, req BackupVersionRequest) (string, error) {
	if req.Algorithm == "" {
		return "", httputil.MissingParam("algorithm is required")
	}
	if !isJSONObject(req.AuthData) {
		return "", httputil.BadJSON("auth_data must be a JSON object")
	}
	for attempt := 0; ; attempt++ {
		var v int64
		err := s.db.WithTx(ctx, func(tx *storage.Tx) (err error) {
			v, err = storage.CreateBackupVersion(ctx, tx, userID, req.Algorithm, req.AuthData)
			return err
		})
		// Two concurrent creations can pick the same number on PostgreSQL: try again.
		if storage.IsUniqueViolation(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(v, 10), nil
	}
}

// GetBackupVersion describes a version, or the current one when version is "".
func (s *Service) GetBackupVersion(ctx context.Context, userID, version string) (*BackupVersionInfo, error) {
	var b storage.BackupVersion
	var err error
	if version == "" {
		b, err = storage.LatestBackupVersion(ctx, s.db, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httputil.NotFound("No current backup version")
		}
	} else {
		n, ok := parseVersion(version)
		if !ok {
			return nil, errUnknownVersion
		}
		b, err = storage.GetBackupVersion(ctx, s.db, userID, n)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errUnknownVersion
		}
	}
	if err != nil {
		return nil, err
	}
	count, err := storage.CountBackupSessions(ctx, s.db, userID, b.Version)
	if err != nil {
		return nil, err
	}
	return &BackupVersionInfo{Algorithm: b.Algorithm, AuthData: b.AuthData, Count: count,
		Etag: strconv.FormatInt(b.Etag, 10), Version: strconv.FormatInt(b.Version, 10)}, nil
}

// UpdateBackupVersion replaces the auth_data of a version; its algorithm cannot change.
func (s *Service) UpdateBackupVersion(ctx context.Context, userID, version string, req BackupVersionRequest) error {
	n, ok := parseVersion(version)
	if !ok {
		return errUnknownVersion
	}
	if req.Version != nil && *req.Version != version {
		return httputil.InvalidParam("version in the body does not match the version in the path")
	}
	if !isJSONObject(req.AuthData) {
		return httputil.BadJSON("auth_data must be a JSON object")
	}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error {
		b, err := storage.GetBackupVersion(ctx, tx, userID, n)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownVersion
		}
		if err != nil {
			return err
		}
		if req.Algorithm != b.Algorithm {
			return httputil.InvalidParam("Algorithm does not match")
		}
		return storage.UpdateBackupAuthData(ctx, tx, userID, n, req.AuthData)
	})
}

// DeleteBackupVersion deletes a version with its keys. Deleting a deleted version succeeds.
func (s *Service) DeleteBackupVersion(ctx context.Context, userID, version string) error {
	n, ok := parseVersion(version)
	if !ok {
		return errUnknownVersion
	}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.DeleteBackupVersion(ctx, tx, userID, n) })
	if errors.Is(err, storage.ErrNotFound) {
		return errUnknownVersion
	}
	return err
}

func (d BackupKeyData) session(roomID, sessionID string) (storage.BackupSession, error) {
	if d.FirstMessageIndex == nil || d.ForwardedCount == nil || d.IsVerified == nil || d.SessionData == nil {
		return storage.BackupSession{}, httputil.BadJSON("key data of session %s needs first_message_index, forwarded_count, is_verified and session_data", sessionID)
	}
	if *d.FirstMessageIndex < 0 || *d.ForwardedCount < 0 {
		return storage.BackupSession{}, httputil.InvalidParam("key data of session %s: negative counts", sessionID)
	}
	if !isJSONObject(d.SessionData) {
		return storage.BackupSession{}, httputil.BadJSON("session_data of session %s must be a JSON object", sessionID)
	}
	return storage.BackupSession{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *d.FirstMessageIndex,
		ForwardedCount: *d.ForwardedCount, IsVerified: *d.IsVerified, SessionData: d.SessionData}, nil
}

func keyData(s storage.BackupSession) BackupKeyData {
	return BackupKeyData{FirstMessageIndex: &s.FirstMessageIndex, ForwardedCount: &s.ForwardedCount, IsVerified: &s.IsVerified, SessionData: s.SessionData}
}

// PutBackupKeys stores keys (room ID → session ID → key data) in the current version,
// keeping for each session the better of the stored and the new key. Writing to a version
// that is not the current one fails with 403 M_WRONG_ROOM_KEYS_VERSION.
func (s *Service) PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]map[string]BackupKeyData) (*BackupUpdate, error) {
	if version == "" {
		return nil, httputil.MissingParam("the version query parameter is required")
	}
	var sessions []storage.BackupSession
	for roomID, rs := range rooms {
		if roomID == "" {
			return nil, httputil.InvalidParam("empty room ID")
		}
		for sessionID, d := range rs {
			if sessionID == "" {
				return nil, httputil.InvalidParam("empty session ID")
			}
			sess, err := d.session(roomID, sessionID)
			if err != nil {
				return nil, err
			}
			sessions = append(sessions, sess)
		}
	}
	sort.Slice(sessions, func(i, j int) bool {
		if sessions[i].RoomID != sessions[j].RoomID {
			return sessions[i].RoomID < sessions[j].RoomID
		}
		return sessions[i].SessionID < sessions[j].SessionID
	})
	var upd BackupUpdate
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		latest, err := storage.LatestBackupVersion(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return errUnknownVersion
		}
		if err != nil {
			return err
		}
		if n, ok := parseVersion(version); !ok || n != latest.Version {
			return httputil.NewError(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.").
				With("current_version", strconv.FormatInt(latest.Version, 10))
		}
		etag, err := storage.PutBackupSessions(ctx, tx, userID, latest.Version, sessions)
		if err != nil {
			return err
		}
		count, err := storage.CountBackupSessions(ctx, tx, userID, latest.Version)
		upd = BackupUpdate{Etag: strconv.FormatInt(etag, 10), Count: count}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &upd, nil
}

// GetBackupKeys returns stored keys of a version: all (roomID ""), a room's (sessionID ""),
// or one session's. Room and all-keys answers are never 404 for a known version; one
// session that is not stored is 404 M_NOT_FOUND.
func (s *Service) GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (any, error) {
	if version == "" {
		return nil, httputil.MissingParam("the version query parameter is required")
	}
	n, ok := parseVersion(version)
	if !ok {
		return nil, errUnknownVersion
	}
	if _, err := storage.GetBackupVersion(ctx, s.db, userID, n); errors.Is(err, storage.ErrNotFound) {
		return nil, errUnknownVersion
	} else if err != nil {
		return nil, err
	}
	sessions, err := storage.GetBackupSessions(ctx, s.db, userID, n, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		if len(sessions) == 0 {
			return nil, httputil.NotFound("Key not found.")
		}
		return keyData(sessions[0]), nil
	case roomID != "":
		out := RoomKeyBackup{Sessions: map[string]BackupKeyData{}}
		for _, sess := range sessions {
			out.Sessions[sess.SessionID] = keyData(sess)
		}
		return out, nil
	default:
		out := AllKeysBackup{Rooms: map[string]RoomKeyBackup{}}
		for _, sess := range sessions {
			r, ok := out.Rooms[sess.RoomID]
			if !ok {
				r = RoomKeyBackup{Sessions: map[string]BackupKeyData{}}
				out.Rooms[sess.RoomID] = r
			}
			r.Sessions[sess.SessionID] = keyData(sess)
		}
		return out, nil
	}
}

// DeleteBackupKeys deletes stored keys of a version: all (roomID ""), a room's (sessionID ""),
// or one session's.
func (s *Service) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (*BackupUpdate, error) {
	if version == "" {
		return nil, httputil.MissingParam("the version query parameter is required")
	}
	n, ok := parseVersion(version)
	if !ok {
		return nil, errUnknownVersion
	}
	var upd BackupUpdate
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if _, err := storage.GetBackupVersion(ctx, tx, userID, n); errors.Is(err, storage.ErrNotFound) {
			return errUnknownVersion
		} else if err != nil {
			return err
		}
		etag, err := storage.DeleteBackupSessions(ctx, tx, userID, n, roomID, sessionID)
		if err != nil {
			return err
		}
		count, err := storage.CountBackupSessions(ctx, tx, userID, n)
		upd = BackupUpdate{Etag: strconv.FormatInt(etag, 10), Count: count}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &upd, nil
}
