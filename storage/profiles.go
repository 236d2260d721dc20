package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// The profile fields kept in their own columns of profiles; every other field is a
// custom field (spec v1.16) in profile_fields.
const (
	ProfileDisplayName = "displayname"
	ProfileAvatarURL   = "avatar_url"
)

// ErrProfileTooLarge is returned when a change would make a profile larger than allowed.
var ErrProfileTooLarge = errors.New("profile too large")

// Profile is a user's public profile.
type Profile struct {
	DisplayName string // "" when unset
	AvatarURL   string // "" when unset
	// Fields are the custom fields (m.tz, namespaced keys) with their JSON values.
	Fields map[string]json.RawMessage
}

// Map returns the profile as the JSON object of GET /profile/{userId}: unset fields are absent.
func (p Profile) Map() map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(p.Fields)+2)
	for k, v := range p.Fields {
		m[k] = v
	}
	if p.DisplayName != "" {
		m[ProfileDisplayName] = jsonString(p.DisplayName)
	}
	if p.AvatarURL != "" {
		m[ProfileAvatarURL] = jsonString(p.AvatarURL)
	}
	return m
}

// Field returns the JSON value of one field; ok is false when it is unset.
func (p Profile) Field(name string) (value json.RawMessage, ok bool) {
	switch name {
	case ProfileDisplayName:
		return jsonString(p.DisplayName), p.DisplayName != ""
	case ProfileAvatarURL:
		return jsonString(p.AvatarURL), p.AvatarURL != ""
	}
	value, ok = p.Fields[name]
	return value, ok
}

// Size is the length in bytes of the profile's JSON object, which the spec caps at 64 KiB.
func (p Profile) Size() int {
	b, err := json.Marshal(p.Map())
	if err != nil {
		return 0
	}
	return len(b)
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// GetProfile loads a user's profile; a user who never set anything has an empty profile.
func GetProfile(ctx context.Context, q Querier, userID string) (Profile, error) {
	var p Profile
	var name, avatar sql.NullString
	err := q.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM profiles WHERE user_id = $1`, userID).Scan(&name, &avatar)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return p, fmt.Errorf("get profile %s: %w", userID, err)
	}
	p.DisplayName, p.AvatarURL = name.String, avatar.String
	rows, err := q.QueryContext(ctx, `SELECT field_name, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return p, fmt.Errorf("get profile fields %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return p, fmt.Errorf("get profile fields %s: %w", userID, err)
		}
		if p.Fields == nil {
			p.Fields = map[string]json.RawMessage{}
		}
		p.Fields[k] = json.RawMessage(v)
	}
	return p, rows.Err()
}

// UpdateProfileField sets one field of a user's profile to a JSON value, or removes it
// when value is nil, in tx. displayname and avatar_url take JSON strings ("" removes them).
// The change is refused with ErrProfileTooLarge (and nothing written) when the resulting
// profile would be larger than maxBytes (0: no limit). It returns the profile before and
// after the change, for callers that propagate it (room member events).
//
// Concurrent updates of one user's profile are serialised (the profiles row is locked
// first), so the size limit holds under concurrency.
func UpdateProfileField(ctx context.Context, tx *Tx, userID, field string, value json.RawMessage, maxBytes int) (before, after Profile, err error) {
	// Creates the row or locks it (PostgreSQL) until the transaction ends.
	if _, err := tx.ExecContext(ctx, `INSERT INTO profiles (user_id) VALUES ($1)
		ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id`, userID); err != nil {
		return before, after, fmt.Errorf("lock profile %s: %w", userID, err)
	}
	before, err = GetProfile(ctx, tx, userID)
	if err != nil {
		return before, after, err
	}
	after = before
	after.Fields = make(map[string]json.RawMessage, len(before.Fields)+1)
	for k, v := range before.Fields {
		after.Fields[k] = v
	}
	var str string
	if value != nil && (field == ProfileDisplayName || field == ProfileAvatarURL) {
		if err := json.Unmarshal(value, &str); err != nil {
			return before, after, fmt.Errorf("profile field %s must be a JSON string: %w", field, err)
		}
	}
	switch {
	case field == ProfileDisplayName:
		after.DisplayName = str
	case field == ProfileAvatarURL:
		after.AvatarURL = str
	case value == nil:
		delete(after.Fields, field)
	default:
		after.Fields[field] = value
	}
	if len(after.Fields) == 0 {
		after.Fields = nil
	}
	if maxBytes > 0 && value != nil && after.Size() > maxBytes {
		return before, before, ErrProfileTooLarge
	}
	switch {
	case field == ProfileDisplayName || field == ProfileAvatarURL:
		var v any
		if str != "" {
			v = str
		}
		// The column name is one of two constants, never user input.
		_, err = tx.ExecContext(ctx, `UPDATE profiles SET `+field+` = $1 WHERE user_id = $2`, v, userID)
	case value == nil:
		_, err = tx.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field_name = $2`, userID, field)
	default:
		_, err = tx.ExecContext(ctx, `INSERT INTO profile_fields (user_id, field_name, value) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, field_name) DO UPDATE SET value = excluded.value`, userID, field, string(value))
	}
	if err != nil {
		return before, after, fmt.Errorf("update profile field %s of %s: %w", field, userID, err)
	}
	return before, after, nil
}

// DeleteCustomProfileFields removes every custom profile field of a user (for
// deactivation with erasure; EraseProfile clears displayname and avatar_url).
func DeleteCustomProfileFields(ctx context.Context, q Querier, userID string) error {
	if _, err := q.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("delete profile fields of %s: %w", userID, err)
	}
	return nil
}
