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
	"github.com/myelin-chat/myelin/storage"
)

// Profile limits. The spec caps the whole profile at 64 KiB and key names at 255 bytes;
// the display name and avatar URL limits are Synapse's, so profiles move between servers.
const (
	maxProfileBytes       = 64 * 1024
	maxProfileKeyBytes    = 255
	maxDisplayNameChars   = 256
	maxAvatarURLBytes     = 1000
	errcodeProfileTooBig  = "M_PROFILE_TOO_LARGE"
	errcodeProfileKeySize = "M_KEY_TOO_LARGE"
)

// requireSelf refuses requests about another user's data (403).
func requireSelf(r *http.Request, userID, what string) error {
	if d := requestDevice(r); d == nil || d.UserID != userID {
		return httputil.Forbidden("Cannot %s of other users", what)
	}
	return nil
}

// localUser parses a user ID from a path and checks that it is a user of this server
// that exists: 400 M_INVALID_PARAM when malformed, 404 M_NOT_FOUND otherwise.
func (s *Server) localUser(ctx context.Context, userID string) error {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return httputil.InvalidParam("%q is not a valid user ID", userID)
	}
	if string(uid.Domain()) != s.cfg.ServerName {
		// Profiles of remote users come over federation (remoteProfile).
		return httputil.NotFound("Profile not found")
	}
	ok, err := storage.AccountExists(ctx, s.db, userID)
	if err != nil {
		return err
	}
	if !ok {
		return httputil.NotFound("Profile not found")
	}
	return nil
}

func checkProfileKey(key string) error {
	if key == "" {
		return httputil.InvalidParam("Profile key must not be empty")
	}
	if len(key) > maxProfileKeyBytes {
		return httputil.NewError(http.StatusBadRequest, errcodeProfileKeySize, "Profile key is longer than %d bytes", maxProfileKeyBytes)
	}
	return nil
}

// remoteProfile answers profile reads of users of other servers through federation
// (ok false for local users).
func (s *Server) remoteProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, bool, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil || string(uid.Domain()) == s.cfg.ServerName || s.remote == nil {
		return nil, false, nil
	}
	p, err := s.remote.Profile(ctx, userID, field)
	return p, true, err
}

// getProfile serves GET /profile/{userId}: every field that is set.
func (s *Server) getProfile(r *http.Request) (any, error) {
	userID := pathVar(r, "userId")
	if p, remote, err := s.remoteProfile(r.Context(), userID, ""); remote {
		return p, err
	}
	if err := s.localUser(r.Context(), userID); err != nil {
		return nil, err
	}
	p, err := storage.GetProfile(r.Context(), s.db, userID)
	if err != nil {
		return nil, err
	}
	return p.Map(), nil
}

// getProfileField serves GET /profile/{userId}/{field}: {"<field>": value}, 404 when unset.
func (s *Server) getProfileField(r *http.Request) (any, error) {
	userID, field := pathVar(r, "userId"), pathVar(r, "field")
	if err := checkProfileKey(field); err != nil {
		return nil, err
	}
	if p, remote, err := s.remoteProfile(r.Context(), userID, field); remote {
		return p, err
	}
	if err := s.localUser(r.Context(), userID); err != nil {
		return nil, err
	}
	p, err := storage.GetProfile(r.Context(), s.db, userID)
	if err != nil {
		return nil, err
	}
	v, ok := p.Field(field)
	if !ok {
		return nil, httputil.NotFound("Profile field %q is not set", field)
	}
	return map[string]json.RawMessage{field: v}, nil
}

// putProfileField serves PUT /profile/{userId}/{field} with the body {"<field>": value}.
func (s *Server) putProfileField(r *http.Request) (any, error) {
	userID, field := pathVar(r, "userId"), pathVar(r, "field")
	if err := requireSelf(r, userID, "change the profile"); err != nil {
		return nil, err
	}
	if err := checkProfileKey(field); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return nil, err
	}
	value, ok := body[field]
	if !ok {
		return nil, httputil.MissingParam("Missing key %q in the request body", field)
	}
	value, err := validateProfileValue(field, value)
	if err != nil {
		return nil, err
	}
	if err := s.changeProfile(r.Context(), userID, field, value); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// deleteProfileField serves DELETE /profile/{userId}/{field}; removing an unset field succeeds.
func (s *Server) deleteProfileField(r *http.Request) (any, error) {
	userID, field := pathVar(r, "userId"), pathVar(r, "field")
	if err := requireSelf(r, userID, "change the profile"); err != nil {
		return nil, err
	}
	if err := checkProfileKey(field); err != nil {
		return nil, err
	}
	if err := s.changeProfile(r.Context(), userID, field, nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// validateProfileValue checks the value of a PUT: displayname and avatar_url must be
// strings (M_BAD_JSON), "" removing them; avatar_url is any string, as Synapse allows
// (clients show only mxc:// ones); m.tz must be a string; custom fields take any JSON value, null
// included (stored as null, as the spec asks). It returns the value to store, nil to remove.
func validateProfileValue(field string, value json.RawMessage) (json.RawMessage, error) {
	switch field {
	case storage.ProfileDisplayName, storage.ProfileAvatarURL, "m.tz":
		var str string
		if err := json.Unmarshal(value, &str); err != nil || strings.TrimSpace(string(value)) == "null" {
			return nil, httputil.BadJSON("%q must be a string", field)
		}
		switch field {
		case storage.ProfileDisplayName:
			if utf8.RuneCountInString(str) > maxDisplayNameChars {
				return nil, httputil.NewError(http.StatusBadRequest, "M_TOO_LARGE", "displayname is longer than %d characters", maxDisplayNameChars)
			}
		case storage.ProfileAvatarURL:
			if len(str) > maxAvatarURLBytes {
				return nil, httputil.NewError(http.StatusBadRequest, "M_TOO_LARGE", "avatar_url is longer than %d bytes", maxAvatarURLBytes)
			}
		}
		if str == "" && field != "m.tz" {
			return nil, nil
		}
		b, _ := json.Marshal(str)
		return b, nil
	}
	return value, nil
}

// changeProfile is the one path by which a user's profile changes: it sets a field
// (value nil removes it), enforcing the 64 KiB profile limit, then calls profileChanged.
func (s *Server) changeProfile(ctx context.Context, userID, field string, value json.RawMessage) error {
	var before, after storage.Profile
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		before, after, err = storage.UpdateProfileField(ctx, tx, userID, field, value, maxProfileBytes)
		return err
	})
	if errors.Is(err, storage.ErrProfileTooLarge) {
		return httputil.NewError(http.StatusBadRequest, errcodeProfileTooBig, "The profile would be larger than %d bytes", maxProfileBytes)
	}
	if err != nil {
		return err
	}
	s.profileChanged(ctx, userID, field, before, after)
	return nil
}

// profileChanged is called after every profile change. This is where the user's
// m.room.member events will be updated with the new displayname/avatar_url in their
// joined rooms, and where the user directory and presence will hear of it, once those
// components exist.
func (s *Server) profileChanged(ctx context.Context, userID, field string, before, after storage.Profile) {
	logrus.WithFields(logrus.Fields{"user_id": userID, "field": field, "request_id": httputil.RequestID(ctx)}).Debug("profile changed")
	if (field == "displayname" || field == "avatar_url") && s.rooms != nil {
		s.updateMemberProfiles(ctx, userID)
	}
}
