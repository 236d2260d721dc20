package app

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/clientapi/keys"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/federation/sender"
	"github.com/myelin-chat/myelin/storage"
)

// localKeys gives federation the keys of local users (answers to /user/keys/query,
// /user/keys/claim and /user/devices, content of device list updates).
type localKeys struct{ e2ee *keys.Service }

func (l localKeys) QueryKeys(ctx context.Context, users map[string][]string) (*federation.UserKeys, error) {
	resp, err := l.e2ee.Query(ctx, "", keys.QueryRequest{DeviceKeys: users})
	if err != nil {
		return nil, err
	}
	return &federation.UserKeys{DeviceKeys: resp.DeviceKeys, MasterKeys: resp.MasterKeys, SelfSigningKeys: resp.SelfSigningKeys}, nil
}

func (l localKeys) ClaimKeys(ctx context.Context, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	resp, err := l.e2ee.Claim(ctx, keys.ClaimRequest{OneTimeKeys: want})
	if err != nil {
		return nil, err
	}
	return resp.OneTimeKeys, nil
}

// remoteKeys gives the E2EE component other servers' keys and to-device delivery
// through the federation sender.
type remoteKeys struct{ s *sender.Sender }

func (r remoteKeys) QueryKeys(ctx context.Context, server string, users map[string][]string) (*keys.RemoteKeys, error) {
	got, err := r.s.QueryRemoteKeys(ctx, server, users)
	if err != nil {
		return nil, err
	}
	return &keys.RemoteKeys{DeviceKeys: got.DeviceKeys, MasterKeys: got.MasterKeys, SelfSigningKeys: got.SelfSigningKeys}, nil
}

func (r remoteKeys) ClaimKeys(ctx context.Context, server string, want map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	return r.s.ClaimRemoteKeys(ctx, server, want)
}

func (r remoteKeys) QueueToDevice(ctx context.Context, tx *storage.Tx, from, eventType, messageID string, messages map[string]map[string]json.RawMessage) ([]string, error) {
	return r.s.QueueToDevice(ctx, tx, from, eventType, messageID, messages)
}

func (r remoteKeys) Wake(servers ...string) { r.s.WakeServers(servers...) }

// lateSender forwards sync's EDU output and federation's peer sightings to the sender,
// which is built after both (it needs the federation client).
type lateSender struct{ s atomic.Pointer[sender.Sender] }

func (l *lateSender) set(s *sender.Sender) { l.s.Store(s) }

func (l *lateSender) OnTyping(roomID, userID string, typing bool, timeout time.Duration) {
	if s := l.s.Load(); s != nil {
		s.OnTyping(roomID, userID, typing, timeout)
	}
}

func (l *lateSender) OnReceipt(roomID, userID, receiptType, eventID, threadID string, ts int64) {
	if s := l.s.Load(); s != nil {
		s.OnReceipt(roomID, userID, receiptType, eventID, threadID, ts)
	}
}

func (l *lateSender) OnPresence(userID string) {
	if s := l.s.Load(); s != nil {
		s.OnPresence(userID)
	}
}

func (l *lateSender) OnDeviceListChanged(userID string) {
	if s := l.s.Load(); s != nil {
		s.OnDeviceListChanged(userID)
	}
}

func (l *lateSender) PeerSeen(origin spec.ServerName) {
	if s := l.s.Load(); s != nil {
		s.PeerSeen(origin)
	}
}
