package push

import (
	"context"
	"encoding/json"
	"unicode/utf8"

	"github.com/myelin-chat/myelin/storage"
)

// PusherRequest is the body of POST /pushers/set.
type PusherRequest struct {
	PushKey string `json:"pushkey"`
	// Kind is "http", or null to delete the pusher (required: absent is an error).
	Kind              json.RawMessage `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            bool            `json:"append"`
}

// SetPusher creates, updates (kind "http") or deletes (kind null) a user's pusher.
func (s *Service) SetPusher(ctx context.Context, userID, deviceID string, req PusherRequest) error {
	if req.PushKey == "" || len(req.PushKey) > 512 {
		return invalid("pushkey must be 1 to 512 bytes long")
	}
	if req.AppID == "" || utf8.RuneCountInString(req.AppID) > 64 {
		return invalid("app_id must be 1 to 64 characters long")
	}
	if len(req.Kind) == 0 {
		return invalid("kind is required")
	}
	if string(req.Kind) == "null" {
		_, err := storage.DeletePusher(ctx, s.db, userID, req.AppID, req.PushKey)
		return err
	}
	var kind string
	if json.Unmarshal(req.Kind, &kind) != nil || kind != "http" {
		return invalid("unsupported pusher kind %s (only http is supported)", req.Kind)
	}
	if req.AppDisplayName == "" || req.DeviceDisplayName == "" || req.Lang == "" {
		return invalid("app_display_name, device_display_name and lang are required")
	}
	var data map[string]json.RawMessage
	if len(req.Data) == 0 || json.Unmarshal(req.Data, &data) != nil || data == nil {
		return invalid("data must be an object")
	}
	var gw string
	if json.Unmarshal(data["url"], &gw) != nil || gw == "" {
		return invalid("data.url is required for http pushers")
	}
	if err := CheckGatewayURL(gw, s.cfg.AllowPrivateAddresses); err != nil {
		return err
	}
	if f, ok := data["format"]; ok {
		var format string
		if json.Unmarshal(f, &format) != nil || format != "event_id_only" {
			return invalid("data.format must be event_id_only when given")
		}
	}
	p := storage.Pusher{UserID: userID, DeviceID: deviceID, Kind: kind, AppID: req.AppID, PushKey: req.PushKey,
		AppDisplayName: req.AppDisplayName, DeviceDisplayName: req.DeviceDisplayName, ProfileTag: req.ProfileTag,
		Lang: req.Lang, Data: req.Data}
	return s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.UpsertPusher(ctx, tx, p, req.Append) })
}

// Pusher is a pusher as GET /pushers shows it.
type Pusher struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// Pushers returns a user's pushers.
func (s *Service) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	if err := storage.DeleteOrphanPushers(ctx, s.db, userID); err != nil {
		return nil, err
	}
	ps, err := storage.PushersOfUser(ctx, s.db, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Pusher, 0, len(ps))
	for _, p := range ps {
		out = append(out, Pusher{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data})
	}
	return out, nil
}
