package sender

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/storage"
)

// posDeviceLists names the sender's position in the device list stream.
const posDeviceLists = "device_lists"

// deviceBatch is how many device list changes are turned into EDUs at once.
const deviceBatch = 100

// runDeviceLists turns changes of local users' devices and cross-signing keys into
// m.device_list_update and m.signing_key_update EDUs for every server sharing a room
// with the user, in stream order, resuming after a restart where it stopped.
func (s *Sender) runDeviceLists(ctx context.Context) {
	start := func(ctx context.Context) (int64, error) {
		return storage.CurrentStreamPosition(ctx, s.db, storage.StreamDeviceList)
	}
	s.follow(ctx, posDeviceLists, "device list", start, s.devicesSig, s.queueDeviceChanges)
}

func (s *Sender) queueDeviceChanges(ctx context.Context, pos int64) (int64, error) {
	changes, err := storage.DeviceListChangesSince(ctx, s.db, pos, 0)
	if err != nil || len(changes) == 0 {
		return pos, err
	}
	if len(changes) > deviceBatch {
		changes = changes[:deviceBatch]
	}
	var items []storage.QueuedItem
	for _, c := range changes {
		if !s.isLocal(c.UserID) || c.OnlyFor != "" || s.keys == nil {
			continue
		}
		dests, err := s.userDestinations(ctx, c.UserID)
		if err != nil {
			return pos, err
		}
		if len(dests) == 0 {
			continue
		}
		eduType, content, err := s.deviceEDU(ctx, c)
		if err != nil {
			return pos, err
		}
		raw, err := json.Marshal(content)
		if err != nil {
			return pos, err
		}
		for _, d := range dests {
			items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueueEDU, EDUType: eduType, Content: string(raw)})
		}
	}
	next := changes[len(changes)-1].Pos
	err = s.enqueue(ctx, items, func(tx *storage.Tx) error {
		return storage.SetFederationSenderPosition(ctx, tx, posDeviceLists, next)
	})
	if err != nil {
		return pos, err
	}
	return next, nil
}

// deviceEDU builds the EDU for one change: the device's current keys (or deleted) with
// stream_id and the previous change's position as prev_id, or the user's current
// cross-signing keys.
func (s *Sender) deviceEDU(ctx context.Context, c storage.DeviceListChange) (string, any, error) {
	if c.DeviceID == "" {
		keys, err := s.keys.QueryKeys(ctx, map[string][]string{c.UserID: {}})
		if err != nil {
			return "", nil, err
		}
		content := map[string]any{"user_id": c.UserID}
		if k, ok := keys.MasterKeys[c.UserID]; ok {
			content["master_key"] = k
		}
		if k, ok := keys.SelfSigningKeys[c.UserID]; ok {
			content["self_signing_key"] = k
		}
		return eduSigningKeyUpdate, content, nil
	}
	prev, err := storage.PreviousDeviceChange(ctx, s.db, c.UserID, c.Pos)
	if err != nil {
		return "", nil, err
	}
	prevIDs := []int64{}
	if prev > 0 {
		prevIDs = append(prevIDs, prev)
	}
	content := map[string]any{"user_id": c.UserID, "device_id": c.DeviceID, "stream_id": c.Pos, "prev_id": prevIDs}
	keys, err := s.keys.QueryKeys(ctx, map[string][]string{c.UserID: {c.DeviceID}})
	if err != nil {
		return "", nil, err
	}
	if js, ok := keys.DeviceKeys[c.UserID][c.DeviceID]; ok {
		content["keys"] = federation.StripUnsigned(js)
	} else {
		content["deleted"] = true
	}
	return eduDeviceListUpdate, content, nil
}

// serverOfUser is the server name of a user ID.
func serverOfUser(userID string) spec.ServerName { return domainOf(userID) }
