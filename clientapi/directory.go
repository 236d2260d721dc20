package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Room aliases: PUT/GET/DELETE /directory/room/{roomAlias}, GET /rooms/{roomId}/aliases,
// the m.room.canonical_alias check and alias resolution for /join. Only aliases of this
// server are stored; aliases of other servers are not resolved over federation yet.

// maxAliasBytes is the spec's limit on the length of a room alias.
const maxAliasBytes = 255

// parseAlias checks the grammar of a room alias (#localpart:server) and reports
// whether it belongs to this server: 400 M_INVALID_PARAM when malformed.
func (s *Server) parseAlias(alias string) (local bool, err error) {
	bad := httputil.InvalidParam("%q is not a valid room alias", alias)
	if len(alias) > maxAliasBytes || !utf8.ValidString(alias) || !strings.HasPrefix(alias, "#") {
		return false, bad
	}
	localpart, server, ok := strings.Cut(alias[1:], ":")
	if !ok || localpart == "" || strings.ContainsRune(localpart, 0) {
		return false, bad
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return false, bad
	}
	return server == s.cfg.ServerName, nil
}

// resolveRoomIDOrAlias turns the {roomIdOrAlias} of /join (and friends) into a room
// ID: room IDs are returned as they are, local aliases are looked up. Unknown aliases
// are 404 M_NOT_FOUND; aliases of other servers too, until federation queries exist.
func (s *Server) resolveRoomIDOrAlias(ctx context.Context, idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		if _, err := spec.NewRoomID(idOrAlias); err != nil {
			return "", httputil.InvalidParam("%q is not a valid room ID", idOrAlias)
		}
		return idOrAlias, nil
	case strings.HasPrefix(idOrAlias, "#"):
		local, err := s.parseAlias(idOrAlias)
		if err != nil {
			return "", err
		}
		if !local {
			return "", httputil.NotFound("Room alias %s is not on this server and cannot be resolved", idOrAlias)
		}
		a, err := storage.GetRoomAlias(ctx, s.db, idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", httputil.NotFound("Room alias %s not found", idOrAlias)
		}
		if err != nil {
			return "", err
		}
		return a.RoomID, nil
	default:
		return "", httputil.InvalidParam("%q is neither a room ID nor a room alias", idOrAlias)
	}
}

// putDirectoryRoom serves PUT /directory/room/{roomAlias} {room_id}.
func (s *Server) putDirectoryRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	alias := pathVar(r, "roomAlias")
	local, err := s.parseAlias(alias)
	if err != nil {
		return nil, err
	}
	if !local {
		return nil, httputil.InvalidParam("Room alias %s is not on this server (%s)", alias, s.cfg.ServerName)
	}
	var body struct {
		RoomID *string `json:"room_id"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomID == nil || *body.RoomID == "" {
		return nil, httputil.MissingParam("room_id is required")
	}
	roomID := *body.RoomID
	if _, err := spec.NewRoomID(roomID); err != nil {
		return nil, httputil.InvalidParam("%q is not a valid room ID", roomID)
	}
	if _, err := s.rooms.RoomInfo(ctx, roomID); err != nil {
		return nil, err
	}
	if !d.IsAdmin {
		membership, _, err := s.rooms.Membership(ctx, roomID, d.UserID)
		if err != nil {
			return nil, err
		}
		if membership != spec.Join {
			return nil, httputil.Forbidden("You must be in the room to give it an alias")
		}
	}
	if err := storage.CreateRoomAlias(ctx, s.db, alias, roomID, d.UserID); err != nil {
		if errors.Is(err, storage.ErrAliasExists) {
			return nil, httputil.NewError(http.StatusConflict, "M_UNKNOWN", "Room alias %s already exists", alias)
		}
		return nil, err
	}
	return struct{}{}, nil
}

// getDirectoryRoom serves GET /directory/room/{roomAlias}.
func (s *Server) getDirectoryRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	alias := pathVar(r, "roomAlias")
	local, err := s.parseAlias(alias)
	if err != nil {
		return nil, err
	}
	if !local {
		// The alias's server answers (/query/directory) when federation is on.
		roomID, servers, err := s.members.ResolveAlias(ctx, alias)
		if err != nil {
			return nil, err
		}
		return map[string]any{"room_id": roomID, "servers": servers}, nil
	}
	a, err := storage.GetRoomAlias(ctx, s.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": a.RoomID, "servers": s.dir.RoomServers(ctx, a.RoomID)}, nil
}

func splitUserID(userID string) (localpart, domain string, err error) {
	u, err := spec.NewUserID(userID, false)
	if err != nil {
		return "", "", err
	}
	return u.Local(), string(u.Domain()), nil
}

// deleteDirectoryRoom serves DELETE /directory/room/{roomAlias}: the alias's creator,
// users allowed to send m.room.canonical_alias in the room and server admins may.
func (s *Server) deleteDirectoryRoom(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	alias := pathVar(r, "roomAlias")
	local, err := s.parseAlias(alias)
	if err != nil {
		return nil, err
	}
	if !local {
		return nil, httputil.NotFound("Room alias %s is not on this server", alias)
	}
	a, err := storage.GetRoomAlias(ctx, s.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, httputil.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	allowed := d.IsAdmin || a.Creator == d.UserID
	if !allowed {
		if ok, _, err := s.rooms.PowerToSend(ctx, a.RoomID, d.UserID, spec.MRoomCanonicalAlias, true); err == nil && ok {
			membership, _, _ := s.rooms.Membership(ctx, a.RoomID, d.UserID)
			allowed = membership == spec.Join
		}
	}
	if !allowed {
		return nil, httputil.Forbidden("You may not delete the room alias %s", alias)
	}
	if err := storage.DeleteRoomAlias(ctx, s.db, alias); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return nil, httputil.NotFound("Room alias %s not found", alias)
		}
		return nil, err
	}
	s.dropCanonicalAlias(ctx, a.RoomID, alias, d.UserID)
	return struct{}{}, nil
}

// dropCanonicalAlias takes a deleted alias out of the room's m.room.canonical_alias
// event, sent as the user who deleted it. This is best effort: a user without the
// power to send the event (a server admin outside the room) leaves it as it is.
func (s *Server) dropCanonicalAlias(ctx context.Context, roomID, alias, userID string) {
	ev, err := s.rooms.CurrentStateEvent(ctx, roomID, spec.MRoomCanonicalAlias, "")
	if err != nil || ev == nil {
		return
	}
	var c map[string]any
	if json.Unmarshal(ev.Content(), &c) != nil {
		return
	}
	changed := false
	if c["alias"] == alias {
		delete(c, "alias")
		changed = true
	}
	if alt, ok := c["alt_aliases"].([]any); ok {
		kept := make([]any, 0, len(alt))
		for _, a := range alt {
			if a == alias {
				changed = true
				continue
			}
			kept = append(kept, a)
		}
		c["alt_aliases"] = kept
		if len(kept) == 0 {
			delete(c, "alt_aliases")
		}
	}
	if !changed {
		return
	}
	sk := ""
	if _, err := s.rooms.SendEvent(ctx, roomserver.SendRequest{RoomID: roomID, Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: &sk, Content: c}); err != nil {
		logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "user_id": userID}).Debug("could not update the canonical alias after deleting an alias")
	}
}

// getRoomAliases serves GET /rooms/{roomId}/aliases: for members of the room, or
// anyone when its history is world readable.
func (s *Server) getRoomAliases(r *http.Request) (any, error) {
	ctx := r.Context()
	d := requestDevice(r)
	roomID, err := roomIDVar(r)
	if err != nil {
		return nil, err
	}
	ok, err := s.canPeekRoom(ctx, roomID, d.UserID)
	if err != nil {
		return nil, err
	}
	if !ok && !d.IsAdmin {
		return nil, httputil.Forbidden("You are not in this room")
	}
	aliases, err := storage.RoomAliases(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"aliases": aliases}, nil
}

// canPeekRoom reports whether a user is joined to a room or its history is world
// readable. An unknown room is false.
func (s *Server) canPeekRoom(ctx context.Context, roomID, userID string) (bool, error) {
	membership, _, err := s.rooms.Membership(ctx, roomID, userID)
	if err != nil {
		var me spec.MatrixError
		if errors.As(err, &me) && me.ErrCode == spec.ErrorNotFound {
			return false, nil
		}
		return false, err
	}
	if membership == spec.Join {
		return true, nil
	}
	return s.dirWorldReadable(ctx, roomID)
}

// dirWorldReadable reports whether a room's history visibility is world_readable.
func (s *Server) dirWorldReadable(ctx context.Context, roomID string) (bool, error) {
	ev, err := s.rooms.CurrentStateEvent(ctx, roomID, spec.MRoomHistoryVisibility, "")
	if err != nil || ev == nil {
		return false, err
	}
	var c struct {
		V string `json:"history_visibility"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.V == "world_readable", nil
}

// validateCanonicalAliases validates the content of an m.room.canonical_alias event about
// to be sent in roomID: alias and alt_aliases must be valid aliases that point to this
// room (400 M_BAD_ALIAS otherwise; 400 M_INVALID_PARAM when malformed). The state
// event handler calls it before sending the event.
func (s *Server) validateCanonicalAliases(ctx context.Context, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *json.RawMessage `json:"alias"`
		AltAliases *json.RawMessage `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httputil.BadJSON("m.room.canonical_alias content must be a JSON object")
	}
	var aliases []string
	if c.Alias != nil && string(*c.Alias) != "null" {
		var a string
		if err := json.Unmarshal(*c.Alias, &a); err != nil {
			return httputil.InvalidParam("alias must be a string")
		}
		if a != "" {
			aliases = append(aliases, a)
		}
	}
	if c.AltAliases != nil && string(*c.AltAliases) != "null" {
		var alt []string
		if err := json.Unmarshal(*c.AltAliases, &alt); err != nil {
			return httputil.InvalidParam("alt_aliases must be a list of strings")
		}
		aliases = append(aliases, alt...)
	}
	for _, a := range aliases {
		local, err := s.parseAlias(a)
		if err != nil {
			return err
		}
		if !local {
			return httputil.NewError(http.StatusBadRequest, "M_BAD_ALIAS", "Room alias %s is on another server and cannot be checked", a)
		}
		got, err := storage.GetRoomAlias(ctx, s.db, a)
		if errors.Is(err, storage.ErrNotFound) {
			return httputil.NewError(http.StatusBadRequest, "M_BAD_ALIAS", "Room alias %s does not exist", a)
		}
		if err != nil {
			return err
		}
		if got.RoomID != roomID {
			return httputil.NewError(http.StatusBadRequest, "M_BAD_ALIAS", "Room alias %s points to another room", a)
		}
	}
	return nil
}

// reserveRoomAlias checks room_alias_name of createRoom before the room exists: the
// full alias (#localpart:server) when it is valid (400 M_INVALID_PARAM otherwise) and
// free (400 M_ROOM_IN_USE otherwise, as createRoom's spec says). bindRoomAlias then
// records it once the room is created.
func (s *Server) reserveRoomAlias(ctx context.Context, localpart string) (string, error) {
	alias := "#" + localpart + ":" + s.cfg.ServerName
	if strings.ContainsAny(localpart, ":#\x00 ") {
		return "", httputil.InvalidParam("Invalid room_alias_name %q", localpart)
	}
	if _, err := s.parseAlias(alias); err != nil {
		return "", err
	}
	if _, err := storage.GetRoomAlias(ctx, s.db, alias); err == nil {
		return "", httputil.NewError(http.StatusBadRequest, string(spec.ErrorRoomInUse), "Room alias %s already taken", alias)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	return alias, nil
}

// bindRoomAlias maps alias to a newly created room (400 M_ROOM_IN_USE if another
// request took it in the meantime).
func (s *Server) bindRoomAlias(ctx context.Context, alias, roomID, creator string) error {
	err := storage.CreateRoomAlias(ctx, s.db, alias, roomID, creator)
	if errors.Is(err, storage.ErrAliasExists) {
		return httputil.NewError(http.StatusBadRequest, string(spec.ErrorRoomInUse), "Room alias %s already taken", alias)
	}
	return err
}

// publishRoom puts a room created with visibility "public" in the room directory.
func (s *Server) publishRoom(ctx context.Context, roomID string) error {
	return storage.SetRoomPublished(ctx, s.db, roomID, true)
}
