package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/myelin-chat/myelin/clientapi/httputil"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomserver/directory"
)

// Remote asks other servers on behalf of the client API: profiles, public room
// directories, space hierarchies and room history (backfill). It implements
// clientapi.Remote.
type Remote struct {
	s *Server

	mu       sync.Mutex
	profiles map[string]profileEntry
	// noHistory remembers where (room and backward extremities) backfill found
	// nothing, to not ask again at every /messages that reaches the start of the room.
	noHistory map[string]time.Time
}

type profileEntry struct {
	profile map[string]json.RawMessage
	err     error
	expires time.Time
}

const (
	profileCacheTTL     = time.Minute
	profileCacheMax     = 10_000
	noHistoryTTL        = 30 * time.Second
	maxBackfillServers  = 5
	maxBackwardEvents   = 20
	backfillScanEvents  = 50
	maxRemoteRequestDur = 30 * time.Second
)

// Remote returns the client API's view of other servers.
func (s *Server) Remote() *Remote {
	return &Remote{s: s, profiles: map[string]profileEntry{}, noHistory: map[string]time.Time{}}
}

// Profile returns a remote user's profile (or one field of it), from a cache of one
// minute (answers and 404s alike) or from the user's server (/query/profile).
func (rm *Remote) Profile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, httputil.InvalidParam("%q is not a valid user ID", userID)
	}
	now := time.Now()
	rm.mu.Lock()
	e, ok := rm.profiles[userID]
	rm.mu.Unlock()
	if !ok || now.After(e.expires) {
		var p map[string]json.RawMessage
		err := rm.s.client.DoSigned(ctx, "GET", uid.Domain(), "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(userID), nil, &p)
		if err != nil {
			err = remoteError(uid.Domain(), err)
			var he *httputil.Error
			if !errors.As(err, &he) || he.Code != string(spec.ErrorNotFound) {
				return nil, err // not cached: the server may be back soon
			}
		}
		e = profileEntry{profile: p, err: err, expires: now.Add(profileCacheTTL)}
		rm.mu.Lock()
		if len(rm.profiles) >= profileCacheMax {
			rm.profiles = map[string]profileEntry{}
		}
		rm.profiles[userID] = e
		rm.mu.Unlock()
	}
	if e.err != nil {
		return nil, e.err
	}
	if field == "" {
		return e.profile, nil
	}
	v, ok := e.profile[field]
	if !ok {
		return nil, httputil.NotFound("Profile field %q is not set", field)
	}
	return map[string]json.RawMessage{field: v}, nil
}

// PublicRooms asks server for a page of its public room directory.
func (rm *Remote) PublicRooms(ctx context.Context, server string, req directory.PublicRoomsRequest) (*directory.PublicRoomsPage, error) {
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return nil, httputil.InvalidParam("Invalid server name %q", server)
	}
	var page directory.PublicRoomsPage
	if err := rm.s.client.DoSigned(ctx, "POST", spec.ServerName(server), "/_matrix/federation/v1/publicRooms", req, &page); err != nil {
		return nil, remoteError(spec.ServerName(server), err)
	}
	if page.Chunk == nil {
		page.Chunk = []*directory.Summary{}
	}
	return &page, nil
}

// Hierarchy asks the servers in via, in order, for a room of a space tree and its
// direct children (/v1/hierarchy); the first answer wins.
func (rm *Remote) Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (*directory.RemoteHierarchy, error) {
	uri := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID) + "?suggested_only=" + strconv.FormatBool(suggestedOnly)
	var lastErr error = httputil.NotFound("Room not found")
	for _, server := range via {
		if server == rm.s.cfg.ServerName {
			continue
		}
		var h directory.RemoteHierarchy
		err := rm.s.client.DoSigned(ctx, "GET", spec.ServerName(server), uri, nil, &h)
		if err == nil && h.Room.Summary != nil && h.Room.RoomID == roomID {
			return &h, nil
		}
		if err != nil {
			lastErr = remoteError(spec.ServerName(server), err)
		}
	}
	return nil, lastErr
}

// Backfill fetches up to limit events older than the room's earliest known events
// from the servers of its joined members (allowed by its ACL, at most
// maxBackfillServers tried) with /backfill, and stores them as history: the oldest
// event of the batch whose prev events are unknown gets its state with /state_ids.
// It returns how many events were stored.
func (rm *Remote) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	from, err := rm.backwardExtremities(ctx, roomID)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	key := roomID + "\x00" + strings.Join(from, "\x00")
	rm.mu.Lock()
	until, recent := rm.noHistory[key]
	rm.mu.Unlock()
	if recent && time.Now().Before(until) {
		return 0, nil // the same place gave nothing a moment ago
	}
	n, err := rm.backfill(ctx, roomID, from, limit)
	if err == nil && n == 0 {
		rm.mu.Lock()
		if len(rm.noHistory) > 10_000 {
			rm.noHistory = map[string]time.Time{}
		}
		rm.noHistory[key] = time.Now().Add(noHistoryTTL)
		rm.mu.Unlock()
	}
	return n, err
}

func (rm *Remote) backfill(ctx context.Context, roomID string, from []string, limit int) (int, error) {
	s := rm.s
	ver, err := s.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	limit = min(max(limit, 10), maxBackfillLimit)
	q := url.Values{"v": from, "limit": {strconv.Itoa(limit)}}
	uri := "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID) + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(ctx, maxRemoteRequestDur)
	defer cancel()
	for _, server := range rm.roomServers(ctx, roomID) {
		var txn struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := s.client.DoSigned(ctx, "GET", server, uri, nil, &txn); err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "server": server}).Info("backfill request failed")
			continue
		}
		evs := s.parseVerified(ctx, ver, roomID, txn.PDUs)
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].Depth() < evs[j].Depth() })
		stored := 0
		for _, ev := range evs {
			if err := s.fetchMissingAuth(ctx, server, ver, ev); err != nil {
				var refused *AuthChainError
				if !errors.As(err, &refused) {
					return stored, err
				}
				logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "event_id": ev.EventID()}).Info("backfilled event not stored")
				continue
			}
			res, err := s.inputWithState(ctx, server, ver, roomserver.InputBackfill, ev)
			if err != nil {
				return stored, err
			}
			if res.Err != nil {
				logrus.WithError(res.Err).WithFields(logrus.Fields{"room_id": roomID, "event_id": ev.EventID()}).Debug("backfilled event not stored")
				continue
			}
			if !res.AlreadyKnown {
				stored++
			}
		}
		if stored > 0 {
			return stored, nil
		}
	}
	return 0, nil
}

// TimestampToEvent asks the other servers of a room (most members first, ACL and
// config allowing) for the event closest to ts in the direction given
// (/timestamp_to_event). The first answer's event is fetched (/event) and stored as
// history, as backfill stores events, so that /context and /messages can start from
// it. It returns "" when no server had one.
func (rm *Remote) TimestampToEvent(ctx context.Context, roomID string, ts int64, backward bool) (string, int64, error) {
	s := rm.s
	ver, err := s.rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return "", 0, err
	}
	dir := "f"
	if backward {
		dir = "b"
	}
	uri := "/_matrix/federation/v1/timestamp_to_event/" + url.PathEscape(roomID) + "?ts=" + strconv.FormatInt(ts, 10) + "&dir=" + dir
	ctx, cancel := context.WithTimeout(ctx, maxRemoteRequestDur)
	defer cancel()
	for _, server := range rm.roomServers(ctx, roomID) {
		var resp struct {
			EventID        string `json:"event_id"`
			OriginServerTS int64  `json:"origin_server_ts"`
		}
		if err := s.client.DoSigned(ctx, "GET", server, uri, nil, &resp); err != nil || resp.EventID == "" {
			continue
		}
		known, err := s.rooms.Events(ctx, []string{resp.EventID})
		if err != nil {
			return "", 0, err
		}
		if k := known[resp.EventID]; k == nil || k.Outlier {
			evs := s.fetchEvents(ctx, server, ver, roomID, []string{resp.EventID})
			if len(evs) == 0 {
				continue
			}
			if err := s.fetchMissingAuth(ctx, server, ver, evs[0]); err != nil {
				var refused *AuthChainError
				if !errors.As(err, &refused) {
					return "", 0, err
				}
				continue
			}
			res, err := s.inputWithState(ctx, server, ver, roomserver.InputBackfill, evs[0])
			if err != nil {
				return "", 0, err
			}
			if res.Err != nil || res.Rejected || res.SoftFailed {
				logrus.WithError(res.Err).WithFields(logrus.Fields{"room_id": roomID, "event_id": resp.EventID, "server": server}).
					Info("timestamp_to_event: the remote event was not stored")
				continue
			}
		} else if k.Rejected || k.SoftFailed {
			continue
		}
		return resp.EventID, resp.OriginServerTS, nil
	}
	return "", 0, nil
}

// backwardExtremities returns the prev events of the room's earliest timeline events
// that are not in our timeline: where its history continues on other servers.
func (rm *Remote) backwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	page, err := rm.s.rooms.Messages(ctx, roomserver.MessagesRequest{RoomID: roomID, From: roomserver.Start, Dir: roomserver.Forward, Limit: backfillScanEvents})
	if err != nil {
		return nil, err
	}
	var prevs []string
	seen := map[string]bool{}
	for _, ev := range page.Events {
		for _, p := range ev.PrevEventIDs() {
			if !seen[p] {
				seen[p] = true
				prevs = append(prevs, p)
			}
		}
	}
	found, err := rm.s.rooms.Events(ctx, prevs)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range prevs {
		if ev := found[p]; ev == nil || ev.Outlier {
			out = append(out, p)
			if len(out) == maxBackwardEvents {
				break
			}
		}
	}
	return out, nil
}

// roomServers lists the other servers with joined members in a room that its ACL
// allows, most members first.
func (rm *Remote) roomServers(ctx context.Context, roomID string) []spec.ServerName {
	members, err := rm.s.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil
	}
	count := map[spec.ServerName]int{}
	for _, m := range members {
		if u, err := spec.NewUserID(m, true); err == nil && string(u.Domain()) != rm.s.cfg.ServerName {
			count[u.Domain()]++
		}
	}
	var out []spec.ServerName
	for srv := range count {
		if ServerAllowed(rm.s.cfg.Federation, string(srv)) && rm.s.rooms.ServerAllowed(ctx, roomID, srv) {
			out = append(out, srv)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if count[out[i]] != count[out[j]] {
			return count[out[i]] > count[out[j]]
		}
		return out[i] < out[j]
	})
	return out[:min(len(out), maxBackfillServers)]
}
