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

