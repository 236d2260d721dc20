package roomserver

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// MembershipsAt returns, for each event, userID's membership in the event's room just
// after it (the event's own change included), "leave" when the user had none then: the
// unsigned.membership the client-server API gives each event (MSC4115, spec v1.11).
// An outlier has no state: "" (unknown) unless it is the user's own membership event.
func (rs *Roomserver) MembershipsAt(ctx context.Context, userID string, events []*Event) ([]string, error) {
	out := make([]string, len(events))
	memberKey, haveMemberKey, err := rs.stateKey(ctx, spec.MRoomMember, userID, false)
	if err != nil {
		return nil, err
	}
	cache := map[int64]string{} // state snapshot after an event → membership
	for i, ev := range events {
		if ev == nil {
			continue
		}
		if ev.Type() == spec.MRoomMember && ev.StateKeyEquals(userID) && !ev.Rejected {
			out[i] = ev.Membership
			continue
		}
		if ev.Outlier {
			continue
		}
		m, ok := cache[ev.stateAfter]
		if !ok {
			m = spec.Leave
			if haveMemberKey && ev.stateAfter != 0 {
				snap, err := rs.states.Snapshot(ctx, ev.stateAfter)
				if err != nil {
					return nil, err
				}
				nid, found, err := rs.states.Lookup(ctx, snap, memberKey)
				if err != nil {
					return nil, err
				}
				if found {
					member, err := rs.eventByNID(ctx, nid)
					if err != nil {
						return nil, err
					}
					if member != nil && member.Membership != "" {
						m = member.Membership
					}
				}
			}
			cache[ev.stateAfter] = m
		}
		out[i] = m
	}
	return out, nil
}

// GapsBefore reports, for each event, whether the room's history has a hole just before
// it on this server: one of its prev events is unknown here, or known only out of
// context (an outlier). Such an event came with its state from another server (a gap
// /get_missing_events did not close, or the first event after a join); the events
// before it are missing from the timeline until backfill fetches them.
func (rs *Roomserver) GapsBefore(ctx context.Context, events []*Event) ([]bool, error) {
	out := make([]bool, len(events))
	var ids []string
	for _, ev := range events {
		if ev != nil && !ev.Outlier {
			ids = append(ids, ev.PrevEventIDs()...)
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	known, err := rs.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	for i, ev := range events {
		if ev == nil || ev.Outlier {
			continue
		}
		for _, id := range ev.PrevEventIDs() {
			if p := known[id]; p == nil || p.Outlier {
				out[i] = true
				break
			}
		}
	}
	return out, nil
}
