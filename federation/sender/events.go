package sender

import (
	"context"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// posRoomEvents names the sender's position in the room event stream.
const posRoomEvents = storage.FederationSenderEvents

// eventBatch is how many events the events worker reads at once.
const eventBatch = 100

func sortServers(s []spec.ServerName) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }

// runEvents turns new events of local users into queue rows for every other server in
// the room, in stream order. Its position is stored with the rows it wrote, so after a
// restart it continues exactly where it stopped.
func (s *Sender) runEvents(ctx context.Context) {
	// First start: older events were never meant for federation.
	start := func(context.Context) (int64, error) { return s.rooms.StreamPosition(), nil }
	s.follow(ctx, posRoomEvents, "event", start, s.eventsSig, s.queueEvents)
}

// queueEvents queues the events after pos (one batch) and returns the new position:
// events of local users, and membership events of other servers' users that joined,
// left or knocked through us (the resident server sends those on).
func (s *Sender) queueEvents(ctx context.Context, pos int64) (int64, error) {
	to := s.rooms.StreamPosition()
	if to <= pos {
		return pos, nil
	}
	evs, next, err := s.rooms.EventsInStream(ctx, pos, to, eventBatch)
	if err != nil {
		return pos, err
	}
	var items []storage.QueuedItem
	var onBehalf []string
	for _, ev := range evs {
		if ev.Rejected || ev.SoftFailed || ev.Outlier {
			continue
		}
		var origin spec.ServerName
		sendPDU := true
		if !s.isLocal(string(ev.SenderID())) {
			// Another server's event: ours to send only when its user's membership
			// reached the room through us (send_join, send_leave, send_knock).
			if ev.Type() != spec.MRoomMember {
				continue
			}
			o, err := storage.SendOnBehalfOrigin(ctx, s.db, ev.EventID())
			if err != nil {
				return pos, err
			}
			if o == "" {
				continue
			}
			origin = spec.ServerName(o)
			onBehalf = append(onBehalf, ev.EventID())
		} else if elsewhere, err := s.joinedThroughOtherServer(ctx, ev); err != nil {
			return pos, err
		} else if elsewhere {
			// The resident server sends the join on; the user's devices are ours to
			// announce all the same.
			sendPDU = false
		}
		dests, err := s.eventDestinations(ctx, ev)
		if err != nil {
			return pos, err
		}
		for _, d := range dests {
			if d == origin || !sendPDU {
				continue // the origin has its own event
			}
			items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueuePDU, EventID: ev.EventID()})
		}
		// After the join itself, so that the servers know the user is in the room.
		edus, err := s.joinDeviceEDUs(ctx, ev, dests)
		if err != nil {
			return pos, err
		}
		items = append(items, edus...)
	}
	err = s.enqueue(ctx, items, func(tx *storage.Tx) error {
		if len(onBehalf) > 0 {
			// Marks of events that never entered the room go after a day.
			if err := storage.ForgetSendOnBehalf(ctx, tx, onBehalf, storage.NowMS()-24*3600*1000); err != nil {
				return err
			}
		}
		return storage.SetFederationSenderPosition(ctx, tx, posRoomEvents, next)
	})
	if err != nil {
		return pos, err
	}
	return next, nil
}

// eventDestinations returns the other servers with a joined member in the room in the
// state after ev, plus the server of a member that ev makes leave (kick, ban, leave),
// which must hear of it too.
func (s *Sender) eventDestinations(ctx context.Context, ev *roomserver.Event) ([]spec.ServerName, error) {
	roomID := ev.RoomID().String()
	var servers []spec.ServerName
	cached, ok := s.roomServers[roomID]
	if prev := ev.PrevEventIDs(); ok && !ev.IsState() && len(prev) == 1 && prev[0] == cached.eventID {
		servers = cached.servers
	} else {
		state, err := s.rooms.StateAtEvent(ctx, ev.EventID(), true)
		if err != nil {
			return nil, err
		}
		set := map[spec.ServerName]bool{}
		for _, st := range state {
			if st.Type() == spec.MRoomMember && st.StateKey() != nil && st.Membership == spec.Join {
				if d := domainOf(*st.StateKey()); s.allowed(d) {
					set[d] = true
				}
			}
		}
		servers = sortedServers(set)
	}
	if len(s.roomServers) > 10000 {
		s.roomServers = map[string]roomServers{}
	}
	s.roomServers[roomID] = roomServers{eventID: ev.EventID(), servers: servers}
	if ev.Type() == spec.MRoomMember && ev.StateKey() != nil && (ev.Membership == spec.Leave || ev.Membership == spec.Ban) {
		if d := domainOf(*ev.StateKey()); s.allowed(d) && !slices.Contains(servers, d) {
			servers = append(slices.Clone(servers), d)
		}
	}
	if ev.Type() == "m.room.server_acl" && ev.StateKeyEquals("") {
		// A server the new ACL denies must still learn of it (the spec expects denied
		// servers to uphold the ACL too), and one it readmits must learn that it may
		// talk again: ACL changes go to every server in the room.
		return servers, nil
	}
	return s.aclFilter(ctx, roomID, servers), nil
}

// joinedThroughOtherServer reports whether ev is a local user's join that another
// server built and sent into the room for us (make_join/send_join): none of its prev
// events are in our timeline, since we did not know the room's latest events when it
// was made. The resident server that accepted the send_join sends it to the rest of
// the room; sending it again would only repeat it, and the resident server may not
// expect its own join answer back as a new PDU.
func (s *Sender) joinedThroughOtherServer(ctx context.Context, ev *roomserver.Event) (bool, error) {
	prev := ev.PrevEventIDs()
	if ev.Type() != spec.MRoomMember || ev.Membership != spec.Join || len(prev) == 0 {
		return false, nil
	}
	known, err := s.rooms.Events(ctx, prev)
	if err != nil {
		return false, err
	}
	for _, id := range prev {
		if k := known[id]; k != nil && !k.Outlier && !k.Rejected {
			return false, nil
		}
	}
	return true, nil
}

// aclFilter drops the servers the room's server ACL denies.
func (s *Sender) aclFilter(ctx context.Context, roomID string, servers []spec.ServerName) []spec.ServerName {
	var out []spec.ServerName
	for _, d := range servers {
		if s.rooms.ServerAllowed(ctx, roomID, d) {
			out = append(out, d)
		}
	}
	return out
}
