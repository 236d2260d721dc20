package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Server notices (spec: Client-Server API, Server Notices): a system user sends
// notices into one room per user, tagged m.server_notice. The user cannot reject the
// invite to it, may join and leave, and is invited back into the same room by the next
// notice. Sent by admins with Synapse's admin API.

// serverNoticeTag marks the notice room in the user's m.tag account data.
const serverNoticeTag = "m.server_notice"

// serverNoticeRequest is the body of send_server_notice.
type serverNoticeRequest struct {
	UserID   string          `json:"user_id"`
	Content  json.RawMessage `json:"content"`
	Type     string          `json:"type"`
	StateKey *string         `json:"state_key"`
}

// postServerNotice serves POST /_synapse/admin/v1/send_server_notice.
func (s *Server) postServerNotice(r *http.Request) (any, error) {
	return s.sendServerNotice(r, "")
}

// putServerNotice serves PUT /_synapse/admin/v1/send_server_notice/{txnId}: the same,
// idempotent per transaction ID of the admin's device.
func (s *Server) putServerNotice(r *http.Request) (any, error) {
	return s.sendServerNotice(r, pathVar(r, "txnId"))
}

func (s *Server) sendServerNotice(r *http.Request, txnID string) (any, error) {
	if !s.cfg.ServerNotices.Enabled {
		return nil, httputil.Unrecognized("Server notices are not enabled on this server")
	}
	if err := requireAdmin(r); err != nil {
		return nil, err
	}
	var req serverNoticeRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, httputil.MissingParam("user_id is required")
	}
	if c := strings.TrimSpace(string(req.Content)); !strings.HasPrefix(c, "{") {
		return nil, httputil.BadJSON("content must be a JSON object")
	}
	if req.Type == "" {
		req.Type = "m.room.message"
	}
	u, err := spec.NewUserID(req.UserID, true)
	if err != nil || string(u.Domain()) != s.cfg.ServerName {
		return nil, httputil.InvalidParam("Server notices can only be sent to local users")
	}
	ctx := r.Context()
	if ok, err := storage.AccountExists(ctx, s.db, req.UserID); err != nil {
		return nil, err
	} else if !ok {
		return nil, httputil.NotFound("Unknown user %s", req.UserID)
	}
	system := s.serverNoticeUser()
	if req.UserID == system {
		return nil, httputil.InvalidParam("Server notices cannot be sent to the system user")
	}
	roomID, err := s.serverNoticeRoom(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	send := roomserver.SendRequest{RoomID: roomID, Sender: system, Type: req.Type, StateKey: req.StateKey, Content: req.Content}
	if txnID != "" {
		// The admin's device scopes the transaction (the system user has no device).
		d := requestDevice(r)
		send.TxnID, send.TxnScope = txnID, "send_server_notice:"+d.UserID+"/"+d.DeviceID
	}
	ev, err := s.rooms.SendEvent(ctx, send)
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": ev.EventID()}, nil
}

// serverNoticeUser returns the system user's ID.
func (s *Server) serverNoticeUser() string {
	return "@" + s.cfg.ServerNotices.SystemUserLocalpart + ":" + s.cfg.ServerName
}

// isServerNoticeInvite reports whether the user is invited to their server notice room
// (an invite they may not reject).
func (s *Server) isServerNoticeInvite(ctx context.Context, userID, roomID string) (bool, error) {
	if !s.cfg.ServerNotices.Enabled {
		return false, nil
	}
	ok, err := storage.IsServerNoticeRoom(ctx, s.db, userID, roomID)
	if err != nil || !ok {
		return false, err
	}
	m, _, err := s.rooms.Membership(ctx, roomID, userID)
	return m == spec.Invite, err
}

// serverNoticeRoom returns the user's notice room, with the user joined or invited:
// created (and tagged) on the first notice, the user invited again after leaving.
func (s *Server) serverNoticeRoom(ctx context.Context, userID string) (string, error) {
	s.noticeMu.Lock()
	defer s.noticeMu.Unlock()
	system, err := s.ensureServerNoticeUser(ctx)
	if err != nil {
		return "", err
	}
	roomID, err := storage.ServerNoticeRoom(ctx, s.db, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	if roomID != "" {
		// The room is reused while the system user is still in it.
		if m, _, err := s.rooms.Membership(ctx, roomID, system); err != nil {
			return "", err
		} else if m == spec.Join {
			um, _, err := s.rooms.Membership(ctx, roomID, userID)
			if err != nil {
				return "", err
			}
			if um != spec.Join && um != spec.Invite {
				if _, err := s.rooms.Invite(ctx, roomserver.MembershipRequest{RoomID: roomID, Sender: system, Target: userID}); err != nil {
					return "", fmt.Errorf("invite %s to their server notice room: %w", userID, err)
				}
			}
			return roomID, nil
		}
	}
	roomID, err = s.rooms.CreateRoom(ctx, roomserver.CreateRoomRequest{
		Creator: system, Preset: "private_chat", Name: s.cfg.ServerNotices.RoomName, Invite: []string{userID},
		// The user reads notices; only the system user writes.
		PowerLevelContentOverride: map[string]any{"users_default": -10},
	})
	if err != nil {
		return "", fmt.Errorf("create the server notice room of %s: %w", userID, err)
	}
	if err := storage.SetServerNoticeRoom(ctx, s.db, userID, roomID); err != nil {
		return "", err
	}
	err = s.updateTags(ctx, userID, roomID, func(tags map[string]json.RawMessage) bool {
		tags[serverNoticeTag] = json.RawMessage(`{"order":0.1}`)
		return true
	})
	return roomID, err
}

// ensureServerNoticeUser creates the system user's account (no password: nobody logs
// in as it) on the first notice.
func (s *Server) ensureServerNoticeUser(ctx context.Context) (string, error) {
	system := s.serverNoticeUser()
	ok, err := storage.AccountExists(ctx, s.db, system)
	if err != nil || ok {
		return system, err
	}
	name := s.cfg.ServerNotices.SystemUserDisplayName
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.InsertAccount(ctx, tx, storage.Account{UserID: system, CreatedTS: storage.NowMS()}); err != nil {
			return err
		}
		return storage.InitProfile(ctx, tx, system, &name)
	})
	if err != nil && !errors.Is(err, storage.ErrExists) {
		return "", fmt.Errorf("create the server notice user: %w", err)
	}
	return system, nil
}
