package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/clientapi/keys"
)

// Server-side key backup: /room_keys/version[/{version}] and /room_keys/keys[/{roomId}[/{sessionId}]].

func (s *Server) postRoomKeysVersion(r *http.Request) (any, error) {
	var req keys.BackupVersionRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	v, err := s.e2ee().CreateBackupVersion(r.Context(), requestDevice(r).UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

func (s *Server) getRoomKeysVersion(r *http.Request) (any, error) {
	return s.e2ee().GetBackupVersion(r.Context(), requestDevice(r).UserID, pathVar(r, "version"))
}

func (s *Server) putRoomKeysVersion(r *http.Request) (any, error) {
	var req keys.BackupVersionRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if err := s.e2ee().UpdateBackupVersion(r.Context(), requestDevice(r).UserID, pathVar(r, "version"), req); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (s *Server) deleteRoomKeysVersion(r *http.Request) (any, error) {
	if err := s.e2ee().DeleteBackupVersion(r.Context(), requestDevice(r).UserID, pathVar(r, "version")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// putRoomKeys serves PUT /room_keys/keys, /room_keys/keys/{roomId} and /room_keys/keys/{roomId}/{sessionId}.
func (s *Server) putRoomKeys(r *http.Request) (any, error) {
	roomID, sessionID := pathVar(r, "roomId"), pathVar(r, "sessionId")
	rooms := map[string]map[string]keys.BackupKeyData{}
	switch {
	case sessionID != "":
		var d keys.BackupKeyData
		if err := httputil.DecodeJSON(r, &d); err != nil {
			return nil, err
		}
		rooms[roomID] = map[string]keys.BackupKeyData{sessionID: d}
	case roomID != "":
		var b keys.RoomKeyBackup
		if err := httputil.DecodeJSON(r, &b); err != nil {
			return nil, err
		}
		if b.Sessions == nil {
			return nil, httputil.MissingParam("sessions is required")
		}
		rooms[roomID] = b.Sessions
	default:
		var b keys.AllKeysBackup
		if err := httputil.DecodeJSON(r, &b); err != nil {
			return nil, err
		}
		if b.Rooms == nil {
			return nil, httputil.MissingParam("rooms is required")
		}
		for id, rb := range b.Rooms {
			rooms[id] = rb.Sessions
		}
	}
	for id := range rooms {
		if _, err := spec.NewRoomID(id); err != nil {
			return nil, httputil.InvalidParam("%q is not a valid room ID", id)
		}
	}
	return s.e2ee().PutBackupKeys(r.Context(), requestDevice(r).UserID, r.URL.Query().Get("version"), rooms)
}

// getRoomKeys serves GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Server) getRoomKeys(r *http.Request) (any, error) {
	return s.e2ee().GetBackupKeys(r.Context(), requestDevice(r).UserID, r.URL.Query().Get("version"), pathVar(r, "roomId"), pathVar(r, "sessionId"))
}

// deleteRoomKeys serves DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Server) deleteRoomKeys(r *http.Request) (any, error) {
	return s.e2ee().DeleteBackupKeys(r.Context(), requestDevice(r).UserID, r.URL.Query().Get("version"), pathVar(r, "roomId"), pathVar(r, "sessionId"))
}
