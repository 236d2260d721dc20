package sender

import (
	"context"
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/storage"
)

// EDU types not named by gomatrixserverlib/spec.
const (
	eduReceipt          = "m.receipt"
	eduPresence         = "m.presence"
	eduDeviceListUpdate = "m.device_list_update"
	eduSigningKeyUpdate = "m.signing_key_update"
	eduDirectToDevice   = "m.direct_to_device"
)

// maxEDUJobs bounds the EDUs waiting to be queued; beyond it typing and presence are
// dropped (they are ephemeral) rather than letting memory grow.
const maxEDUJobs = 10000

// addJob hands work to the EDU worker, which runs jobs one at a time in order (a stop of
// typing never overtakes its start).
func (s *Sender) addJob(job func(ctx context.Context)) {
	s.eduMu.Lock()
	if len(s.eduJobs) >= maxEDUJobs {
		s.eduMu.Unlock()
		logrus.Warn("federation sender: too many EDUs waiting, dropping one")
		return
	}
	s.eduJobs = append(s.eduJobs, job)
	s.eduMu.Unlock()
	signal(s.eduSig)
}

func (s *Sender) runEDUs(ctx context.Context) {
	for {
		s.eduMu.Lock()
		jobs := s.eduJobs
		s.eduJobs = nil
		s.eduMu.Unlock()
		for _, job := range jobs {
			if ctx.Err() != nil {
				return
			}
			job(ctx)
		}
		if len(jobs) > 0 {
			continue
		}
		select {
		case <-s.eduSig:
		case <-ctx.Done():
			return
		}
	}
}

// queueEDU queues one EDU for each destination.
func (s *Sender) queueEDU(ctx context.Context, dests []spec.ServerName, eduType string, content any) {
	if len(dests) == 0 {
		return
	}
	raw, err := json.Marshal(content)
	if err != nil {
		logrus.WithError(err).WithField("edu_type", eduType).Error("federation sender: cannot encode EDU")
		return
	}
	items := make([]storage.QueuedItem, 0, len(dests))
	for _, d := range dests {
		items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueueEDU, EDUType: eduType, Content: string(raw)})
	}
	if err := s.enqueue(ctx, items, nil); err != nil {
		logrus.WithError(err).WithField("edu_type", eduType).Warn("federation sender: cannot queue EDU")
	}
}

// roomDestinations returns the other servers with joined members in a room now.
func (s *Sender) roomDestinations(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	members, err := s.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	set := map[spec.ServerName]bool{}
	s.serversOf(members, set)
	return s.aclFilter(ctx, roomID, sortedServers(set)), nil
}

// userDestinations returns the other servers sharing a room with a user.
func (s *Sender) userDestinations(ctx context.Context, userID string) ([]spec.ServerName, error) {
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, err
	}
	set := map[spec.ServerName]bool{}
	for _, r := range rooms {
		members, err := s.rooms.JoinedMembers(ctx, r)
		if err != nil {
			return nil, err
		}
		s.serversOf(members, set)
	}
	return sortedServers(set), nil
}

// OnTyping sends a local user's typing notification (each client refresh as well, so the
// other servers' timers are renewed) to the servers in the room.
func (s *Sender) OnTyping(roomID, userID string, typing bool, _ time.Duration) {
	if !s.isLocal(userID) {
		return
	}
	s.addJob(func(ctx context.Context) {
		dests, err := s.roomDestinations(ctx, roomID)
		if err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Warn("federation sender: typing")
			return
		}
		s.queueEDU(ctx, dests, spec.MTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
	})
}

// OnReceipt sends a local user's public read receipt to the servers in the room.
func (s *Sender) OnReceipt(roomID, userID, receiptType, eventID, threadID string, ts int64) {
	if !s.isLocal(userID) || receiptType != "m.read" {
		return
	}
	s.addJob(func(ctx context.Context) {
		dests, err := s.roomDestinations(ctx, roomID)
		if err != nil {
			logrus.WithError(err).WithField("room_id", roomID).Warn("federation sender: receipt")
			return
		}
		data := map[string]any{"ts": ts}
		if threadID != "" {
			data["thread_id"] = threadID
		}
		s.queueEDU(ctx, dests, eduReceipt, map[string]any{
			roomID: map[string]any{receiptType: map[string]any{userID: map[string]any{"event_ids": []string{eventID}, "data": data}}},
		})
	})
}

// OnPresence sends a local user's stored presence to the servers sharing a room with it.
func (s *Sender) OnPresence(userID string) {
	if !s.isLocal(userID) {
		return
	}
	s.addJob(func(ctx context.Context) {
		p, err := storage.GetPresence(ctx, s.db, userID)
		if err != nil {
			return
		}
		dests, err := s.userDestinations(ctx, userID)
		if err != nil {
			logrus.WithError(err).WithField("user_id", userID).Warn("federation sender: presence")
			return
		}
		entry := map[string]any{"user_id": userID, "presence": p.State}
		if p.StatusMsg != "" {
			entry["status_msg"] = p.StatusMsg
		}
		var ago int64
		if p.LastActiveTS > 0 {
			ago = max(time.Now().UnixMilli()-p.LastActiveTS, 0)
			entry["last_active_ago"] = ago
		}
		entry["currently_active"] = p.State == "online" && p.LastActiveTS > 0 && ago < 2*time.Minute.Milliseconds()
		s.queueEDU(ctx, dests, eduPresence, map[string]any{"push": []any{entry}})
	})
}

// OnDeviceListChanged wakes the device list worker (a local user's devices or keys changed).
func (s *Sender) OnDeviceListChanged(userID string) {
	if s.isLocal(userID) {
		signal(s.devicesSig)
	}
}

// QueueToDevice queues send-to-device messages for users of other servers (user ID →
// device ID or "*" → content) in tx, one m.direct_to_device EDU per server, and returns
// the servers to Wake once tx committed. messageID must be unique per sender and message
// (the receiving server delivers each message ID once).
func (s *Sender) QueueToDevice(ctx context.Context, tx *storage.Tx, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) ([]string, error) {
	byServer := map[spec.ServerName]map[string]map[string]json.RawMessage{}
	for user, devs := range messages {
		d := domainOf(user)
		if !s.allowed(d) {
			continue
		}
		if byServer[d] == nil {
			byServer[d] = map[string]map[string]json.RawMessage{}
		}
		byServer[d][user] = devs
	}
	var items []storage.QueuedItem
	var servers []string
	for d, msgs := range byServer {
		raw, err := json.Marshal(map[string]any{"sender": sender, "type": eventType, "message_id": messageID, "messages": msgs})
		if err != nil {
			return nil, err
		}
		items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueueEDU, EDUType: eduDirectToDevice, Content: string(raw)})
		servers = append(servers, string(d))
	}
	return servers, storage.EnqueueFederation(ctx, tx, items)
}

// WakeServers tells the workers of servers that work was committed for them.
func (s *Sender) WakeServers(servers ...string) {
	for _, d := range servers {
		s.wakeup.Wake(spec.ServerName(d))
	}
}
