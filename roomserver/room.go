package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/roomserver/internal/state"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/roomstore"
)

// room is the in-memory view of a room. Its head changes only under the room's lock,
// after the transaction that moved it committed; readers load it atomically.
type room struct {
	nid     int64
	id      string
	version gomatrixserverlib.RoomVersion
	verImpl gomatrixserverlib.IRoomVersion
	head    atomic.Pointer[roomHead]
	// allowed remembers which local messages the auth rules allowed.
	allowed allowCache
	// authStates remembers the auth events of local senders' messages.
	authStates authStateCache
}

// authState is the auth events a local event is built with.
type authState struct {
	pdus []gomatrixserverlib.PDU
	auth *gomatrixserverlib.AuthEvents
	// authIDs are the event's auth_events (nil until built once).
	authIDs []string
}

// authStateCache remembers, per sender, the auth events of ordinary events on one
// state of the room (a snapshot NID): looking them up costs a state lookup, event
// loads and JSON parsing per message, and they change only with the state. Entries
// are read-only once stored.
type authStateCache struct {
	mu       sync.Mutex
	stateNID int64
	bySender map[string]*authState
}

func (c *authStateCache) get(stateNID int64, sender string) *authState {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stateNID != stateNID {
		return nil
	}
	return c.bySender[sender]
}

func (c *authStateCache) put(stateNID int64, sender string, as *authState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stateNID != stateNID || len(c.bySender) >= maxAllowCache {
		c.stateNID, c.bySender = stateNID, make(map[string]*authState)
	}
	c.bySender[sender] = as
}

// allowCache remembers the auth rules' positive answers for ordinary (non-state,
// non-special) events of a room. For those the rules look only at the event's room,
// sender and type and at the auth events (create, power levels, the sender's
// membership): the same sender and type on the same auth events (by event ID, which
// fixes their content) get the same answer. Re-running the rules parses the power
// levels and membership JSON for every message, a tenth of the roomserver's CPU per
// message. A state change gives new auth event IDs, hence a new key.
type allowCache struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// maxAllowCache bounds the remembered answers of one room (cleared when full).
const maxAllowCache = 1024

// check runs gomatrixserverlib.Allowed on pdu with auth events authPDUs, or answers
// from the cache for an ordinary event it allowed before.
func (c *allowCache) check(pdu gomatrixserverlib.PDU, authPDUs []gomatrixserverlib.PDU) error {
	key := ""
	if pdu.StateKey() == nil && !specialAuthTypes[pdu.Type()] {
		ids := make([]string, 0, len(authPDUs)+2)
		ids = append(ids, string(pdu.SenderID()), pdu.Type())
		for _, a := range authPDUs {
			ids = append(ids, a.EventID())
		}
		slices.Sort(ids[2:])
		key = strings.Join(ids, "\x00")
		c.mu.Lock()
		_, ok := c.keys[key]
		c.mu.Unlock()
		if ok {
			return nil
		}
	}
	auth, err := gomatrixserverlib.NewAuthEvents(authPDUs)
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(pdu, auth, userIDForSender); err != nil {
		return err
	}
	if key != "" {
		c.mu.Lock()
		if c.keys == nil || len(c.keys) >= maxAllowCache {
			c.keys = make(map[string]struct{})
		}
		c.keys[key] = struct{}{}
		c.mu.Unlock()
	}
	return nil
}

// specialAuthTypes are the event types with their own auth rules (not the common
// checks every other event gets).
var specialAuthTypes = map[string]bool{
	spec.MRoomCreate: true, spec.MRoomAliases: true, spec.MRoomMember: true,
	spec.MRoomPowerLevels: true, spec.MRoomRedaction: true,
}

// roomHead is the writable end of a room: its forward extremities and current state.
type roomHead struct {
	// state is the current state, pinned in memory.
	state       *state.Snapshot
	extremities []extremity
	// lastEventNID is the NID of the last event that moved the head (rooms.last_event_nid).
	lastEventNID int64
	// create is the room's create event.
	create *Event
}

type extremity struct {
	NID   int64
	ID    string
	Depth int64
}

// roomCache maps room IDs and NIDs to rooms. Rooms stay cached; their heads point at
// pinned state, so memory grows with the state of the rooms in use.
type roomCache struct {
	mu    sync.RWMutex
	byID  map[string]*room
	byNID map[int64]*room
}

func (c *roomCache) get(id string) *room {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[id]
}

func (c *roomCache) getNID(nid int64) *room {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byNID[nid]
}

// add caches r unless the room is cached already; it returns the cached room.
func (c *roomCache) add(r *room) *room {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.byID[r.id]; old != nil {
		return old
	}
	c.byID[r.id] = r
	c.byNID[r.nid] = r
	return r
}

// errRoomNotFound is returned for rooms this server does not know.
func errRoomNotFound(roomID string) error {
	return spec.NotFound(fmt.Sprintf("Room %s is not known to this server", roomID))
}

// room returns the room with its head loaded; M_NOT_FOUND if the room is unknown.
func (rs *Roomserver) room(ctx context.Context, roomID string) (*room, error) {
	r := rs.rooms.get(roomID)
	var row roomstore.Room
	if r == nil || r.head.Load() == nil {
		var err error
		row, err = roomstore.GetRoom(ctx, rs.db, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, errRoomNotFound(roomID)
		}
		if err != nil {
			return nil, err
		}
	}
	if r == nil {
		var err error
		if r, err = rs.cacheRoom(row); err != nil {
			return nil, err
		}
	}
	if r.head.Load() == nil {
		head, err := rs.loadHead(ctx, r, row)
		if err != nil {
			return nil, err
		}
		r.head.CompareAndSwap(nil, head)
	}
	return r, nil
}

// roomByNID returns a room by NID; its head may not be loaded yet (use it for the
// room's ID and version).
func (rs *Roomserver) roomByNID(ctx context.Context, nid int64) (*room, error) {
	if r := rs.rooms.getNID(nid); r != nil {
		return r, nil
	}
	row, err := roomstore.GetRoomByNID(ctx, rs.db, nid)
	if err != nil {
		return nil, fmt.Errorf("room %d: %w", nid, err)
	}
	return rs.cacheRoom(row)
}

func (rs *Roomserver) cacheRoom(row roomstore.Room) (*room, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(row.Version))
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", row.RoomID, err)
	}
	return rs.rooms.add(&room{nid: row.NID, id: row.RoomID, version: verImpl.Version(), verImpl: verImpl}), nil
}

// loadHead reads a room's head from its rooms row.
func (rs *Roomserver) loadHead(ctx context.Context, r *room, row roomstore.Room) (*roomHead, error) {
	snap, err := rs.states.Snapshot(ctx, row.SnapshotNID)
	if err != nil {
		return nil, fmt.Errorf("room %s: current state: %w", r.id, err)
	}
	if snap, err = rs.states.Pin(ctx, snap); err != nil {
		return nil, fmt.Errorf("room %s: current state: %w", r.id, err)
	}
	head := &roomHead{state: snap, lastEventNID: row.LastEventNID}
	evs, err := rs.eventsByNID(ctx, row.Extremities)
	if err != nil {
		return nil, err
	}
	for _, nid := range row.Extremities {
		ev := evs[nid]
		if ev == nil {
			return nil, fmt.Errorf("room %s: extremity %d is missing", r.id, nid)
		}
		head.extremities = append(head.extremities, extremity{NID: nid, ID: ev.EventID(), Depth: ev.Depth()})
	}
	if head.create, err = rs.stateEvent(ctx, snap, spec.MRoomCreate, ""); err != nil {
		return nil, err
	}
	return head, nil
}

// refreshHead re-reads the room's head when another process may have moved it. It is
// called with the room's lock held.
func (rs *Roomserver) refreshHead(ctx context.Context, r *room) error {
	if rs.locker.Exclusive() {
		return nil
	}
	v, err := roomstore.RoomHeadVersion(ctx, rs.db, r.nid)
	if err != nil {
		return err
	}
	if cur := r.head.Load(); cur != nil && cur.lastEventNID == v {
		return nil
	}
	row, err := roomstore.GetRoomByNID(ctx, rs.db, r.nid)
	if err != nil {
		return err
	}
	head, err := rs.loadHead(ctx, r, row)
	if err != nil {
		return err
	}
	r.head.Store(head)
	return nil
}

// lockRoom takes the room's write lock and makes sure its cached head is current.
func (rs *Roomserver) lockRoom(ctx context.Context, r *room) (func(), error) {
	unlock, err := rs.locker.Lock(ctx, r.id)
	if err != nil {
		return nil, err
	}
	if err := rs.refreshHead(ctx, r); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}
