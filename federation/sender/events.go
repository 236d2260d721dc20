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
const posRoomEvents = "room_events"

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

// queueEvents queues the events after pos (one batch) and returns the new position.
func (s *Sender) queueEvents(ctx context.Context, pos int64) (int64, error) {
	to := s.rooms.StreamPosition()
	if to <= pos {
		return pos, nil
	}
	evs, err := s.rooms.EventsInStream(ctx, pos, to, eventBatch)
	if err != nil {
		return pos, err
	}
	next := to
	if len(evs) == eventBatch {
		next = evs[len(evs)-1].StreamPos
	}
	var items []storage.QueuedItem
	for _, ev := range evs {
		if ev.Rejected || ev.SoftFailed || ev.Outlier || !s.isLocal(string(ev.SenderID())) {
			continue
		}
		dests, err := s.eventDestinations(ctx, ev)
		if err != nil {
			return pos, err
		}
		for _, d := range dests {
			items = append(items, storage.QueuedItem{Destination: string(d), Kind: storage.QueuePDU, EventID: ev.EventID()})
		}
	}
	err = s.enqueue(ctx, items, func(tx *storage.Tx) error {
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
	return s.aclFilter(ctx, roomID, servers), nil
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
