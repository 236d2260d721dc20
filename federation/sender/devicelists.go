package sender

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/roomserver"
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
		if name := federation.DeviceDisplayName(js); name != "" && s.fed.ShareDeviceNames {
			content["device_display_name"] = name
		}
	} else if _, err := storage.GetDevice(ctx, s.db, c.UserID, c.DeviceID); errors.Is(err, storage.ErrNotFound) {
		content["deleted"] = true
	} else if err != nil {
		return "", nil, err
	}
	// A device without keys (yet) is still a device: no keys, not deleted.
	return eduDeviceListUpdate, content, nil
}

// joinDeviceEDUs returns the queue rows that tell the servers a local user's join brings
// into contact with the user (servers of the room after ev that share no other room
// with the user, and none here before ev when the user was already joined) about each of
// the user's devices: the spec asks for m.device_list_update EDUs "when that user joins
// a room which contains servers which are not already receiving updates for that user's
// device list". stream_id is the user's latest device change, prev_id is empty (the
// first update of a sequence for these servers).
func (s *Sender) joinDeviceEDUs(ctx context.Context, ev *roomserver.Event, roomDests []spec.ServerName) ([]storage.QueuedItem, error) {
	if s.keys == nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil || ev.Membership != spec.Join ||
		*ev.StateKey() != string(ev.SenderID()) || !s.isLocal(*ev.StateKey()) || len(roomDests) == 0 {
		return nil, nil
	}
	userID := *ev.StateKey()
	roomID := ev.RoomID().String()
	if ev.ReplacesState != "" {
		prev, err := s.rooms.Events(ctx, []string{ev.ReplacesState})
		if err != nil {
			return nil, err
		}
		if p, ok := prev[ev.ReplacesState]; ok && p.Membership == spec.Join {
			return nil, nil // a profile change: these servers already follow the user
		}
	}
	known := map[spec.ServerName]bool{}
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	for _, r := range rooms {
		if r == roomID {
			continue
		}
		members, err := s.rooms.JoinedMembers(ctx, r)
		if err != nil {
			return nil, err
		}
		s.serversOf(members, known)
	}
	var dests []spec.ServerName
	for _, d := range roomDests {
		if !known[d] {
			dests = append(dests, d)
		}
	}
	if len(dests) == 0 {
		return nil, nil
	}
	devices, err := storage.DeviceIDs(ctx, s.db, userID)
	if err != nil {
		return nil, err
	}
	latest, err := storage.PreviousDeviceChange(ctx, s.db, userID, 1<<62)
	if err != nil {
		return nil, err
	}
	keys, err := s.keys.QueryKeys(ctx, map[string][]string{userID: {}})
	if err != nil {
		return nil, err
	}
	var items []storage.QueuedItem
	for _, dev := range devices {
		content := map[string]any{"user_id": userID, "device_id": dev, "stream_id": latest, "prev_id": []int64{}}
		if js, ok := keys.DeviceKeys[userID][dev]; ok {
			content["keys"] = federation.StripUnsigned(js)
			if name := federation.DeviceDisplayName(js); name != "" && s.fed.ShareDeviceNames {
				content["device_display_name"] = name
			}
		}
		raw, err := json.Marshal(content)
		if err != nil {
			return nil, err
		}
		for _, d := range dests {
			items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueueEDU, EDUType: eduDeviceListUpdate, Content: string(raw)})
		}
	}
	return items, nil
}

// serverOfUser is the server name of a user ID.
func serverOfUser(userID string) spec.ServerName { return domainOf(userID) }
