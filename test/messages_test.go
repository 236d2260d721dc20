package test

import (
	"context"
	"fmt"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestMessagesPagination(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		var ids []id.EventID
		for i := 0; i < 25; i++ {
			cli := alice
			if i%5 == 4 {
				cli = bob
			}
			ids = append(ids, rmSend(t, cli, roomID, fmt.Sprintf("m%02d", i)))
		}
		if _, err := alice.SendMessageEvent(ctx, roomID, event.Type{Type: "org.example.other", Class: event.MessageEventType}, map[string]any{"x": 1}); err != nil {
			t.Fatal(err)
		}

		// Backwards from the end (no from, v1.3), in pages of 10.
		var got []string
		from := ""
		for page := 0; ; page++ {
			resp, err := alice.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.EventMessage}}, 10)
			if err != nil {
				t.Fatal(err)
			}
			if page == 0 && resp.Start == "" {
				t.Fatalf("no start token")
			}
			got = append(got, rmBodies(resp.Chunk)...)
			if resp.End == "" || page > 5 {
				break
			}
			from = resp.End
		}
		want := ""
		for i := 24; i >= 0; i-- {
			want += fmt.Sprintf("m%02d ", i)
		}
		if fmt.Sprint(got) != "["+want[:len(want)-1]+"]" {
			t.Fatalf("backward pagination: %v", got)
		}
		// A non-empty page reaching the start of the room still has an end token (Complement's
		// TestRoomImageRoundtrip); from there the chunk is empty and has no end.
		resp, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{event.StateCreate}}, 10)
		if err != nil || len(resp.Chunk) != 1 || resp.End == "" {
			t.Fatalf("backward page reaching the start: %+v %v", resp, err)
		}
		if resp, err = alice.Messages(ctx, roomID, resp.End, "", mautrix.DirectionBackward, nil, 10); err != nil || len(resp.Chunk) != 0 || resp.End != "" {
			t.Fatalf("backward from the start: %+v %v", resp, err)
		}
		// Forwards from the start.
		resp, err = alice.Messages(ctx, roomID, "", "", mautrix.DirectionForward, nil, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Chunk[0].Type != event.StateCreate || resp.End != "" {
			t.Fatalf("forward from the start: first %s, end %q", resp.Chunk[0].Type, resp.End)
		}
		if b := rmBodies(resp.Chunk); len(b) != 25 || b[0] != "m00" || b[24] != "m24" {
			t.Fatalf("forward bodies: %v", b)
		}
		// to stops the page; a filter on senders and not_types.
		first, err := alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 5)
		if err != nil {
			t.Fatal(err)
		}
		resp, err = alice.Messages(ctx, roomID, "", first.End, mautrix.DirectionBackward, nil, 50)
		if err != nil || len(resp.Chunk) != 5 {
			t.Fatalf("to: %d events, %v", len(resp.Chunk), err)
		}
		resp, err = alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Senders: []id.UserID{bob.UserID}, NotTypes: []event.Type{event.StateMember}}, 50)
		if err != nil {
			t.Fatal(err)
		}
		if b := rmBodies(resp.Chunk); fmt.Sprint(b) != "[m24 m19 m14 m09 m04]" || len(resp.Chunk) != 5 {
			t.Fatalf("senders filter: %v (%d events)", b, len(resp.Chunk))
		}
		// lazy_load_members: state holds the member events of the senders.
		resp, err = alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{LazyLoadMembers: true, Types: []event.Type{event.EventMessage}}, 3)
		if err != nil {
			t.Fatal(err)
		}
		senders := map[string]bool{}
		for _, ev := range resp.State {
			if ev.Type != event.StateMember {
				t.Fatalf("lazy state has %s", ev.Type)
			}
			senders[*ev.StateKey] = true
		}
		if len(senders) != 2 || !senders[alice.UserID.String()] || !senders[bob.UserID.String()] {
			t.Fatalf("lazy-loaded members: %v", senders)
		}

		// A /sync next_batch token is a valid from.
		sync, err := alice.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0})
		if err != nil {
			t.Fatal(err)
		}
		resp, err = alice.Messages(ctx, roomID, sync.NextBatch, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(resp.Chunk) != 1 || resp.Chunk[0].Type.Type != "org.example.other" {
			t.Fatalf("from a sync token: %+v %v", resp, err)
		}

		// Bad parameters.
		for _, c := range []struct {
			name, query string
			status      int
			code        string
		}{
			{"no dir", "", 400, "M_MISSING_PARAM"},
			{"bad dir", "dir=up", 400, "M_INVALID_PARAM"},
			{"bad from", "dir=b&from=garbage", 400, "M_INVALID_PARAM"},
			{"bad limit", "dir=b&limit=ten", 400, "M_INVALID_PARAM"},
			{"filter not JSON", "dir=b&filter=" + url.QueryEscape("{nope"), 400, "M_NOT_JSON"},
			{"filter with a wrong type", "dir=b&filter=" + url.QueryEscape(`{"types": "m.room.message"}`), 400, "M_BAD_JSON"},
		} {
			status, body := s.Do(t, "GET", roomPath(roomID, "/messages?"+c.query), alice.AccessToken, nil)
			udExpect(t, c.name, status, body, c.status, c.code)
		}
		_, err = carol.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 10)
		rmWantErr(t, "non-member /messages", err, 403, "M_FORBIDDEN")
		_, err = carol.Messages(ctx, "!unknown:hs1.test", "", "", mautrix.DirectionBackward, nil, 10)
		rmWantErr(t, "unknown room /messages", err, 403, "M_FORBIDDEN")

		// /event and /context.
		ev, err := bob.GetEvent(ctx, roomID, ids[10])
		if err != nil || ev.Content.Raw["body"] != "m10" || ev.Sender != alice.UserID || ev.RoomID != roomID {
			t.Fatalf("event: %+v %v", ev, err)
		}
		if ev.Unsigned.Age <= 0 && ev.Timestamp == 0 {
			t.Fatalf("event without age/timestamp: %+v", ev)
		}
		_, err = bob.GetEvent(ctx, roomID, "$unknown")
		rmWantErr(t, "unknown event", err, 404, "M_NOT_FOUND")
		other := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		_, err = alice.GetEvent(ctx, other, ids[10])
		rmWantErr(t, "event of another room", err, 404, "M_NOT_FOUND")
		_, err = carol.GetEvent(ctx, roomID, ids[10])
		rmWantErr(t, "non-member /event", err, 404, "M_NOT_FOUND")

		cx, err := bob.Context(ctx, roomID, ids[10], nil, 4)
		if err != nil {
			t.Fatal(err)
		}
		if cx.Event.ID != ids[10] || len(cx.EventsBefore) != 2 || len(cx.EventsAfter) != 2 ||
			cx.EventsBefore[0].ID != ids[9] || cx.EventsBefore[1].ID != ids[8] || cx.EventsAfter[0].ID != ids[11] || cx.EventsAfter[1].ID != ids[12] {
			t.Fatalf("context: event %s before %d after %d", cx.Event.ID, len(cx.EventsBefore), len(cx.EventsAfter))
		}
		if cx.Start == "" || cx.End == "" || len(cx.State) < 4 {
			t.Fatalf("context tokens/state: %q %q %d", cx.Start, cx.End, len(cx.State))
		}
		// The tokens continue the context.
		more, err := bob.Messages(ctx, roomID, cx.End, "", mautrix.DirectionForward, nil, 1)
		if err != nil || len(more.Chunk) != 1 || more.Chunk[0].ID != ids[13] {
			t.Fatalf("after context end: %+v %v", more, err)
		}
		more, err = bob.Messages(ctx, roomID, cx.Start, "", mautrix.DirectionBackward, nil, 1)
		if err != nil || len(more.Chunk) != 1 || more.Chunk[0].ID != ids[7] {
			t.Fatalf("before context start: %+v %v", more, err)
		}
		cx, err = bob.Context(ctx, roomID, ids[10], &mautrix.FilterPart{LazyLoadMembers: true}, 2)
		if err != nil || len(cx.State) != 2 {
			t.Fatalf("lazy context state: %+v %v", cx, err)
		}
		_, err = carol.Context(ctx, roomID, ids[10], nil, 4)
		rmWantErr(t, "non-member /context", err, 404, "M_NOT_FOUND")
	})
}

func TestMessagesRedaction(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		bobs := rmSend(t, bob, roomID, "secret password")
		alices := rmSend(t, alice, roomID, "alice's message")

		// Bob cannot redact alice's event (no power), alice can redact bob's.
		_, err := bob.RedactEvent(ctx, roomID, alices)
		rmWantErr(t, "redact without power", err, 403, "M_FORBIDDEN")
		path := roomPath(roomID, "/redact/"+esc(bobs.String())+"/r1")
		status, body := s.Do(t, "PUT", path, alice.AccessToken, map[string]any{"reason": "leaked"})
		udExpect(t, "redact", status, body, 200, "")
		redaction := body["event_id"]
		status, body = s.Do(t, "PUT", path, alice.AccessToken, map[string]any{"reason": "leaked"})
		if status != 200 || body["event_id"] != redaction {
			t.Fatalf("redaction replay: %d %v", status, body)
		}
		status, body = s.Do(t, "PUT", roomPath(roomID, "/redact/"+esc(alices.String())+"/r2"), alice.AccessToken, `{"reason": 1}`)
		udExpect(t, "numeric reason", status, body, 400, "M_BAD_JSON")

		check := func(when string) {
			t.Helper()
			for _, cli := range []*mautrix.Client{alice, bob} {
				ev, err := cli.GetEvent(ctx, roomID, bobs)
				if err != nil {
					t.Fatal(err)
				}
				if len(ev.Content.Raw) != 0 {
					t.Fatalf("%s: %s sees redacted content %v", when, cli.UserID, ev.Content.Raw)
				}
				if ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID.String() != redaction {
					t.Fatalf("%s: redacted_because: %+v", when, ev.Unsigned.RedactedBecause)
				}
				if r := ev.Unsigned.RedactedBecause.Content.Raw["reason"]; r != "leaked" {
					t.Fatalf("%s: redaction reason %v", when, r)
				}
				msgs, err := cli.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs.Chunk {
					if m.ID == bobs && len(m.Content.Raw) != 0 {
						t.Fatalf("%s: /messages shows redacted content %v", when, m.Content.Raw)
					}
				}
				cx, err := cli.Context(ctx, roomID, alices, nil, 10)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range cx.EventsBefore {
					if m.ID == bobs && len(m.Content.Raw) != 0 {
						t.Fatalf("%s: /context shows redacted content %v", when, m.Content.Raw)
					}
				}
			}
		}
		check("before restart")
		s.Restart()
		check("after restart")
		// The other event is intact.
		if ev, err := bob.GetEvent(ctx, roomID, alices); err != nil || ev.Content.Raw["body"] != "alice's message" {
			t.Fatalf("unredacted event: %+v %v", ev, err)
		}
	})
}

// TestMessagesRelationFilter covers MSC3874: /messages filtered by relation type.
func TestMessagesRelationFilter(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		roomID := rmCreate(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		root := rmSend(t, alice, roomID, "root")
		send := func(body, rel string) id.EventID {
			t.Helper()
			resp, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{
				"msgtype": "m.text", "body": body, "m.relates_to": map[string]any{"rel_type": rel, "event_id": root},
			})
			if err != nil {
				t.Fatal(err)
			}
			return resp.EventID
		}
		thread := send("in thread", "m.thread")
		ref := send("reference", "m.reference")
		page := func(filterJSON string) []id.EventID {
			t.Helper()
			st, body := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+esc(roomID.String())+"/messages?dir=b&limit=50&filter="+url.QueryEscape(filterJSON), alice.AccessToken, nil)
			if st != 200 {
				t.Fatalf("filter %s: %d %v", filterJSON, st, body)
			}
			var out []id.EventID
			chunk, _ := body["chunk"].([]any)
			for _, e := range chunk {
				ev, _ := e.(map[string]any)
				if ev["type"] == "m.room.message" {
					out = append(out, id.EventID(ev["event_id"].(string)))
				}
			}
			return out
		}
		cases := []struct {
			filter string
			want   []id.EventID
		}{
			{`{"org.matrix.msc3874.rel_types":["m.thread"]}`, []id.EventID{thread}},
			{`{"org.matrix.msc3874.rel_types":["m.reference"]}`, []id.EventID{ref}},
			{`{"org.matrix.msc3874.rel_types":["m.thread","m.reference"]}`, []id.EventID{ref, thread}},
			{`{"org.matrix.msc3874.not_rel_types":["m.thread"]}`, []id.EventID{ref, root}},
			{`{}`, []id.EventID{ref, thread, root}},
		}
		for _, c := range cases {
			if got := page(c.filter); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("filter %s: got %v, want %v", c.filter, got, c.want)
			}
		}
		st, body := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+esc(roomID.String())+"/messages?dir=b&filter="+url.QueryEscape(`{"org.matrix.msc3874.rel_types":"m.thread"}`), alice.AccessToken, nil)
		udExpect(t, "rel_types not a list", st, body, 400, "M_BAD_JSON")
	})
}
