package sender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/storage"
)

// ErrServerNotAllowed is returned for key requests to a server federation may not reach.
var ErrServerNotAllowed = errors.New("federation with this server is not allowed")

// QueryRemoteKeys returns the device keys (a user mapped to no devices means all) and
// cross-signing keys of users of server: from the cached device list of users we have
// shared a room with, without a break, since the list was fetched (their server sent us
// every update since), else by asking the server (POST
// /_matrix/federation/v1/user/keys/query) and caching the answer when we share a room
// with the user now.
func (s *Sender) QueryRemoteKeys(ctx context.Context, server string, users map[string][]string) (*federation.UserKeys, error) {
	out := &federation.UserKeys{DeviceKeys: map[string]map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	ask := map[string][]string{}
	for user, devs := range users {
		if serverOfUser(user) != spec.ServerName(server) {
			continue
		}
		l, err := storage.GetRemoteDeviceList(ctx, s.db, user)
		if err == nil && s.sharesRoomSince(ctx, user, l.TrackedFrom) {
			fillFromCache(out, l, devs)
			continue
		}
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		ask[user] = []string{} // the whole list, to cache it
	}
	if len(ask) == 0 {
		return out, nil
	}
	if !s.allowed(spec.ServerName(server)) {
		return nil, ErrServerNotAllowed
	}
	// Updates sent after this point reach us while the answer is on its way; positions
	// are taken before asking so that a (re)join racing the request makes the cache stale.
	trackedFrom := s.rooms.StreamPosition()
	var resp federation.UserKeys
	if err := s.client.DoSigned(ctx, "POST", spec.ServerName(server), "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": ask}, &resp); err != nil {
		return nil, err
	}
	for user := range ask {
		l := storage.RemoteDeviceList{UserID: user, TrackedFrom: trackedFrom, CrossSigning: map[string]string{}}
		for dev, js := range resp.DeviceKeys[user] {
			if !validDeviceKeys(js, user, dev) {
				continue
			}
			l.Devices = append(l.Devices, storage.RemoteDevice{DeviceID: dev, KeyJSON: string(js)})
		}
		if k, ok := resp.MasterKeys[user]; ok {
			l.CrossSigning[storage.CrossSigningMaster] = string(k)
		}
		if k, ok := resp.SelfSigningKeys[user]; ok {
			l.CrossSigning[storage.CrossSigningSelfSigning] = string(k)
		}
		fillFromCache(out, &l, users[user])
		if s.sharesRoomSince(ctx, user, trackedFrom) {
			// stream_id 0: the next device list update from the server applies as it is.
			if err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.PutRemoteDeviceList(ctx, tx, l) }); err != nil {
				logrus.WithError(err).WithField("user_id", user).Warn("cannot cache a remote device list")
			}
		}
	}
	return out, nil
}

// validDeviceKeys checks that a device_keys object names the user and device it is
// listed under (a server cannot pass one device's keys off as another's).
func validDeviceKeys(js json.RawMessage, user, device string) bool {
	var k struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	return json.Unmarshal(js, &k) == nil && k.UserID == user && k.DeviceID == device
}

func fillFromCache(out *federation.UserKeys, l *storage.RemoteDeviceList, devs []string) {
	m := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if len(devs) == 0 || slices.Contains(devs, d.DeviceID) {
			// The name the user's server shared (in an update or /user/devices), if any.
			m[d.DeviceID] = federation.WithDeviceDisplayName(json.RawMessage(d.KeyJSON), d.DisplayName)
		}
	}
	out.DeviceKeys[l.UserID] = m
	if k, ok := l.CrossSigning[storage.CrossSigningMaster]; ok {
		out.MasterKeys[l.UserID] = json.RawMessage(k)
	}
	if k, ok := l.CrossSigning[storage.CrossSigningSelfSigning]; ok {
		out.SelfSigningKeys[l.UserID] = json.RawMessage(k)
	}
}

// sharesRoomSince reports whether a remote user has been joined, since room stream
// position pos, to a room in which a local user has also been joined since then (so
// its server has sent us every device list update since pos).
func (s *Sender) sharesRoomSince(ctx context.Context, userID string, pos int64) bool {
	ok, err := s.rooms.SharesRoomWithServerSince(ctx, userID, s.name, pos)
	if err != nil {
		logrus.WithError(err).WithField("user_id", userID).Warn("federation sender: cannot tell whether a room is shared")
	}
	return err == nil && ok
}

// ClaimRemoteKeys claims one-time keys of users of server (user → device → algorithm)
// with POST /_matrix/federation/v1/user/keys/claim.
func (s *Sender) ClaimRemoteKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	if !s.allowed(spec.ServerName(server)) {
		return nil, ErrServerNotAllowed
	}
	var resp struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	if err := s.client.DoSigned(ctx, "POST", spec.ServerName(server), "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": want}, &resp); err != nil {
		return nil, err
	}
	out := map[string]map[string]map[string]json.RawMessage{}
	for user, devs := range resp.OneTimeKeys {
		if _, asked := want[user]; !asked {
			return nil, fmt.Errorf("server %s answered for user %s, who was not asked for", server, user)
		}
		out[user] = devs
	}
	return out, nil
}
