package federation

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/storage"
)

// EDUReceiver applies the EDUs other servers send (the sync component, wired in
// cmd/myelin/app).
type EDUReceiver interface {
	// SetTyping marks a (remote) user typing or not; the user must be joined.
	SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	// PutRemoteReceipt stores a remote user's receipt; the user must be joined.
	PutRemoteReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) error
	// PutRemotePresence stores a remote user's presence.
	PutRemotePresence(ctx context.Context, userID, presence, statusMsg string, lastActiveAgo int64) error
	// OnToDevice wakes users who received to-device messages.
	OnToDevice(userIDs ...string)
	// OnKeysChanged wakes the room-mates of a user whose device list changed.
	OnKeysChanged(userID string, deviceListChanged bool)
}

// PeerTracker hears of every authenticated request from another server (the sender
// retries a backed-off destination at once when it talks to us).
type PeerTracker interface {
	PeerSeen(origin spec.ServerName)
}

// EDU types.
const (
	eduTyping           = "m.typing"
	eduReceipt          = "m.receipt"
	eduPresence         = "m.presence"
	eduDeviceListUpdate = "m.device_list_update"
	eduSigningKeyUpdate = "m.signing_key_update"
	eduDirectToDevice   = "m.direct_to_device"
)

// txnScopeFederationToDevice scopes the message IDs of incoming to-device EDUs in the
// transaction_ids table (keyed by the sending user), so each is delivered once.
const txnScopeFederationToDevice = "federation_to_device"

// fromOrigin reports whether userID belongs to the origin server (a server may only
// speak for its own users).
func fromOrigin(userID string, origin spec.ServerName) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == origin
}

// receiveEDUs applies the EDUs of a transaction. EDUs are best effort: a bad one is
// logged and skipped; it never fails the transaction. Typing and receipts of a room
// whose server ACL denies the origin are dropped.
func (s *Server) receiveEDUs(ctx context.Context, origin spec.ServerName, edus []json.RawMessage) {
	if s.edus == nil {
		return
	}
	for _, raw := range edus {
		var edu struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &edu); err != nil {
			continue
		}
		var err error
		switch edu.Type {
		case eduTyping:
			err = s.onTyping(ctx, origin, edu.Content)
		case eduReceipt:
			err = s.onReceipt(ctx, origin, edu.Content)
		case eduPresence:
			err = s.onPresence(ctx, origin, edu.Content)
		case eduDirectToDevice:
			err = s.onDirectToDevice(ctx, origin, edu.Content)
		case eduDeviceListUpdate:
			err = s.onDeviceListUpdate(ctx, origin, edu.Content)
		case eduSigningKeyUpdate:
			err = s.onSigningKeyUpdate(ctx, origin, edu.Content)
		default:
			continue
		}
		if err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"origin": origin, "edu_type": edu.Type}).Info("EDU not applied")
		}
	}
}

func (s *Server) onTyping(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var t struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &t); err != nil {
		return err
	}
	if !fromOrigin(t.UserID, origin) {
		return errNotFromOrigin
	}
	if !s.rooms.ServerAllowed(ctx, t.RoomID, origin) {
		return errDeniedByACL
	}
	return s.edus.SetTyping(ctx, t.RoomID, t.UserID, t.Typing, 0)
}

var (
	errNotFromOrigin = spec.Forbidden("user is not of the origin server")
	errDeniedByACL   = spec.Forbidden("the origin is denied by the room's server ACL")
)

func (s *Server) onReceipt(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var rooms map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(content, &rooms); err != nil {
		return err
	}
	for roomID, types := range rooms {
		if !s.rooms.ServerAllowed(ctx, roomID, origin) {
			continue
		}
		for typ, users := range types {
			if typ != "m.read" {
				continue
			}
			for userID, rc := range users {
				if !fromOrigin(userID, origin) || len(rc.EventIDs) == 0 {
					continue
				}
				eventID := rc.EventIDs[len(rc.EventIDs)-1]
				if err := s.edus.PutRemoteReceipt(ctx, roomID, userID, typ, eventID, rc.Data.ThreadID, rc.Data.TS); err != nil {
					logrus.WithError(err).WithFields(logrus.Fields{"origin": origin, "room_id": roomID}).Info("receipt not applied")
				}
			}
		}
	}
	return nil
}

func (s *Server) onPresence(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var p struct {
		Push []struct {
			UserID        string `json:"user_id"`
			Presence      string `json:"presence"`
			StatusMsg     string `json:"status_msg"`
			LastActiveAgo int64  `json:"last_active_ago"`
		} `json:"push"`
	}
	if err := json.Unmarshal(content, &p); err != nil {
		return err
	}
	for _, e := range p.Push {
		if !fromOrigin(e.UserID, origin) {
			continue
		}
		switch e.Presence {
		case "online", "unavailable", "offline":
		default:
			continue
		}
		if err := s.edus.PutRemotePresence(ctx, e.UserID, e.Presence, e.StatusMsg, e.LastActiveAgo); err != nil {
			return err
		}
	}
	return nil
}

// onDirectToDevice delivers to-device messages to local devices ("*": every device),
// each message ID of a sender once.
func (s *Server) onDirectToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var m struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &m); err != nil {
		return err
	}
	if !fromOrigin(m.Sender, origin) || m.Type == "" || m.MessageID == "" {
		return errNotFromOrigin
	}
	var users []string
	for u := range m.Messages {
		if s.isLocalUser(u) {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	known, err := storage.DeviceIDsOfUsers(ctx, s.db, users)
	if err != nil {
		return err
	}
	var deliveries []storage.ToDeviceDelivery
	for _, u := range users {
		for _, dev := range known[u] {
			c, ok := m.Messages[u][dev]
			if !ok {
				c, ok = m.Messages[u]["*"]
			}
			if ok && len(c) > 0 && c[0] == '{' {
				deliveries = append(deliveries, storage.ToDeviceDelivery{UserID: u, DeviceID: dev, Content: c})
			}
		}
	}
	delivered := false
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		fresh, err := storage.ClaimTransactionID(ctx, tx, m.Sender, "", txnScopeFederationToDevice, m.MessageID)
		if err != nil || !fresh {
			return err
		}
		delivered = true
		_, err = storage.InsertToDevice(ctx, tx, m.Sender, m.Type, deliveries)
		return err
	})
	if err != nil {
		return err
	}
	if delivered && len(deliveries) > 0 {
		s.edus.OnToDevice(users...)
	}
	return nil
}

// deviceListUpdate is the content of m.device_list_update.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted"`
	Keys        json.RawMessage `json:"keys"`
}

// onDeviceListUpdate applies a remote user's device change to our cached device list
// when it follows the update we have; after a gap (prev_id does not name the position
// we have) the whole list is fetched again with /user/devices. Either way local users
// sharing a room with the user see it in device_lists.changed.
func (s *Server) onDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var u deviceListUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return err
	}
	if !fromOrigin(u.UserID, origin) || u.DeviceID == "" {
		return errNotFromOrigin
	}
	cached, err := storage.GetRemoteDeviceList(ctx, s.db, u.UserID)
	if err != nil && err != storage.ErrNotFound {
		return err
	}
	// A device without keys is invisible to /keys/query: an update that neither gives
	// keys nor deletes a device changes nothing local clients could see (servers announce
	// every device of a user who joins a room, keys or not), so it is not a change for
	// device_lists.changed.
	visible := (len(u.Keys) > 0 && string(u.Keys) != "null") || u.Deleted
	resync := false
	recorded := false
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if cached != nil {
			switch {
			case u.StreamID != 0 && u.StreamID <= cached.StreamID:
				return nil // already applied
			case len(u.PrevID) > 0 && !slices.Contains(u.PrevID, cached.StreamID):
				resync = true
				if err := storage.DeleteRemoteDeviceList(ctx, tx, u.UserID); err != nil {
					return err
				}
			case u.Deleted:
				if err := storage.DeleteRemoteDevice(ctx, tx, u.UserID, u.DeviceID); err != nil {
					return err
				}
			default:
				if len(u.Keys) > 0 && string(u.Keys) != "null" {
					if err := storage.PutRemoteDevice(ctx, tx, u.UserID, storage.RemoteDevice{DeviceID: u.DeviceID, KeyJSON: string(u.Keys), DisplayName: u.DisplayName}); err != nil {
						return err
					}
				}
			}
			if !resync && u.StreamID > cached.StreamID {
				if err := storage.SetRemoteDeviceListStream(ctx, tx, u.UserID, u.StreamID); err != nil {
					return err
				}
			}
		}
		if !visible && !resync {
			return nil
		}
		recorded = true
		_, err := storage.RecordDeviceListChange(ctx, tx, u.UserID, u.DeviceID, "")
		return err
	})
	if err != nil {
		return err
	}
	if resync {
		go s.resyncDeviceList(origin, u.UserID, cached.TrackedFrom)
	}
	if recorded {
		s.edus.OnKeysChanged(u.UserID, true)
	}
	return nil
}

// resyncDeviceList fetches a remote user's whole device list (after a missed update).
// On failure the cache stays empty, so the next key query asks the server directly.
// The new cache keeps trackedFrom, the position since which the dropped one was
// followed: updates kept coming since then, the gap is filled by this fetch.
func (s *Server) resyncDeviceList(origin spec.ServerName, userID string, trackedFrom int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := FetchDeviceList(ctx, s.client, origin, userID)
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Info("device list resync failed")
		return
	}
	l.TrackedFrom = trackedFrom
	if err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.PutRemoteDeviceList(ctx, tx, *l) }); err != nil {
		logrus.WithError(err).WithField("user_id", userID).Warn("cannot cache resynced device list")
	}
}

// FetchDeviceList asks a user's server for their devices and cross-signing keys
// (GET /_matrix/federation/v1/user/devices/{userId}).
func FetchDeviceList(ctx context.Context, c *Client, server spec.ServerName, userID string) (*storage.RemoteDeviceList, error) {
	var resp struct {
		StreamID int64 `json:"stream_id"`
		Devices  []struct {
			DeviceID    string          `json:"device_id"`
			Keys        json.RawMessage `json:"keys"`
			DisplayName string          `json:"device_display_name"`
		} `json:"devices"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	if err := c.DoSigned(ctx, "GET", server, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &resp); err != nil {
		return nil, err
	}
	l := &storage.RemoteDeviceList{UserID: userID, StreamID: resp.StreamID, CrossSigning: map[string]string{}}
	for _, d := range resp.Devices {
		if d.DeviceID != "" && len(d.Keys) > 0 && string(d.Keys) != "null" {
			l.Devices = append(l.Devices, storage.RemoteDevice{DeviceID: d.DeviceID, KeyJSON: string(d.Keys), DisplayName: d.DisplayName})
		}
	}
	if len(resp.MasterKey) > 0 && string(resp.MasterKey) != "null" {
		l.CrossSigning[storage.CrossSigningMaster] = string(resp.MasterKey)
	}
	if len(resp.SelfSigningKey) > 0 && string(resp.SelfSigningKey) != "null" {
		l.CrossSigning[storage.CrossSigningSelfSigning] = string(resp.SelfSigningKey)
	}
	return l, nil
}

// onSigningKeyUpdate applies a remote user's new cross-signing keys.
func (s *Server) onSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var u struct {
		UserID         string          `json:"user_id"`
		MasterKey      json.RawMessage `json:"master_key"`
		SelfSigningKey json.RawMessage `json:"self_signing_key"`
	}
	if err := json.Unmarshal(content, &u); err != nil {
		return err
	}
	if !fromOrigin(u.UserID, origin) {
		return errNotFromOrigin
	}
	cached, err := storage.GetRemoteDeviceList(ctx, s.db, u.UserID)
	if err != nil && err != storage.ErrNotFound {
		return err
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if cached != nil {
			for typ, js := range map[string]json.RawMessage{storage.CrossSigningMaster: u.MasterKey, storage.CrossSigningSelfSigning: u.SelfSigningKey} {
				if len(js) > 0 && string(js) != "null" {
					if err := storage.PutRemoteCrossSigningKey(ctx, tx, u.UserID, typ, string(js)); err != nil {
						return err
					}
				}
			}
		}
		_, err := storage.RecordDeviceListChange(ctx, tx, u.UserID, "", "")
		return err
	})
	if err != nil {
		return err
	}
	s.edus.OnKeysChanged(u.UserID, true)
	return nil
}
