package push

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestCountsBeforeCommitAndAfterRestart: the counts include an event as soon as it is
// evaluated (before its rows are written), receipts read notifications whose rows are
// not written yet, and a restarted service (a new one on the same database) counts
// the same from the database, threads and highlights included; GET /notifications
// pages and filters highlights.
func TestCountsBeforeCommitAndAfterRestart(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		carol := "@carol:test"
		rooms := newFakeRoomsOf(t, bob, alice, carol)
		s := newTestService(t, db, rooms)
		pos := int64(0)
		event := func(content map[string]any, relType, relatesTo string) roomserver.OutputEvent {
			pos++
			ev := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, content), RelType: relType, RelatesTo: relatesTo}
			ev.StreamPos = pos
			rooms.add(ev)
			return roomserver.OutputEvent{Event: ev, StreamPos: pos}
		}
		counts := func(s *Service, user string) Counts {
			t.Helper()
			m, err := s.UnreadCounts(ctx, user, nil)
			if err != nil {
				t.Fatal(err)
			}
			return m[testRoom]
		}
		// Alice's counts are loaded (she syncs) before the events; carol's after.
		if c := counts(s, alice); c.Notifications != 0 {
			t.Fatalf("alice before any event: %+v", c)
		}
		root := event(msg("root"), "", "")
		mention := event(withMentions("hi alice", []string{alice}, false), "", "")
		threadMsg := event(msg("in thread"), "m.thread", root.Event.EventID())
		threadMention := event(map[string]any{"msgtype": "m.text", "body": "x", "m.mentions": map[string]any{"user_ids": []string{alice, carol}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.Event.EventID()}}, "m.thread", root.Event.EventID())
		evals := s.evaluateBatch(ctx, []roomserver.OutputEvent{root, mention, threadMsg, threadMention})
		want := func(who string, c Counts, n, h, mainN, mainH, threadN, threadH int) {
			t.Helper()
			tc := c.Threads[root.Event.EventID()]
			if c.Notifications != n || c.Highlights != h || c.Main.Notifications != mainN || c.Main.Highlights != mainH ||
				tc.Notifications != threadN || tc.Highlights != threadH {
				t.Fatalf("%s: %+v, want %d/%d main %d/%d thread %d/%d", who, c, n, h, mainN, mainH, threadN, threadH)
			}
		}
		// Nothing is written yet, the counts have it all.
		if rows := countNotifications(t, db); rows != 0 {
			t.Fatalf("rows before the write: %d", rows)
		}
		want("alice (loaded before)", counts(s, alice), 4, 2, 2, 1, 2, 1)
		want("carol (loaded from pending)", counts(s, carol), 4, 1, 2, 0, 2, 1)
		// A main-timeline receipt on the mention, before the rows are written.
		if err := s.MarkRead(ctx, alice, testRoom, "main", mention.StreamPos); err != nil {
			t.Fatal(err)
		}
		want("alice after reading the main timeline", counts(s, alice), 2, 1, 0, 0, 2, 1)
		if err := s.writeEvaluations(ctx, evals, threadMention.StreamPos); err != nil {
			t.Fatal(err)
		}
		want("alice after the write", counts(s, alice), 2, 1, 0, 0, 2, 1)

		// Restart: a new service counts from the database.
		s2 := newTestService(t, db, rooms)
		want("alice after a restart", counts(s2, alice), 2, 1, 0, 0, 2, 1)
		want("carol after a restart", counts(s2, carol), 4, 1, 2, 0, 2, 1)
		// A thread receipt up to the first thread message reads it only.
		if err := s2.MarkRead(ctx, carol, testRoom, root.Event.EventID(), threadMsg.StreamPos); err != nil {
			t.Fatal(err)
		}
		want("carol after a thread receipt", counts(s2, carol), 3, 1, 2, 0, 1, 1)
		s3 := newTestService(t, db, rooms)
		want("carol after another restart", counts(s3, carol), 3, 1, 2, 0, 1, 1)

		// GET /notifications: newest first, pages, read flags, highlights only.
		page, err := s3.Notifications(ctx, alice, "", 3, false)
		if err != nil || len(page.Notifications) != 3 || page.Next == "" {
			t.Fatalf("first page: %+v %v", page, err)
		}
		if n := page.Notifications; n[0].EventID != threadMention.Event.EventID() || n[0].Read || !n[0].Highlight ||
			n[2].EventID != mention.Event.EventID() || !n[2].Read {
			t.Fatalf("first page: %+v", n)
		}
		page, err = s3.Notifications(ctx, alice, page.Next, 3, false)
		if err != nil || len(page.Notifications) != 1 || page.Notifications[0].EventID != root.Event.EventID() || page.Next != "" {
			t.Fatalf("second page: %+v %v", page, err)
		}
		page, err = s3.Notifications(ctx, alice, "", 10, true)
		if err != nil || len(page.Notifications) != 2 || page.Notifications[0].EventID != threadMention.Event.EventID() ||
			page.Notifications[1].EventID != mention.Event.EventID() {
			t.Fatalf("highlights: %+v %v", page, err)
		}
		// An unthreaded receipt reads everything, in memory and after a restart.
		if err := s3.MarkRead(ctx, alice, testRoom, "", threadMention.StreamPos); err != nil {
			t.Fatal(err)
		}
		want("alice after an unthreaded receipt", counts(s3, alice), 0, 0, 0, 0, 0, 0)
		want("alice after an unthreaded receipt and a restart", counts(newTestService(t, db, rooms), alice), 0, 0, 0, 0, 0, 0)
	})
}

// TestWaitEvaluated: the running service counts a new event without waiting for its
// rows to be written.
func TestWaitEvaluated(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rooms := newFakeRoomsOf(t, bob, alice)
		s := newTestService(t, db, rooms)
		s.Start(ctx)
		defer s.Close()
		if _, err := s.UnreadCounts(ctx, alice, nil); err != nil {
			t.Fatal(err)
		}
		for pos := int64(1); pos <= 3; pos++ {
			ev := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg("hello"))}
			ev.StreamPos = pos
			rooms.add(ev)
			s.OnNewEvent(roomserver.OutputEvent{Event: ev, StreamPos: pos})
			if err := s.WaitEvaluated(ctx, pos); err != nil {
				t.Fatal(err)
			}
			m, err := s.UnreadCounts(ctx, alice, []string{testRoom})
			if err != nil || m[testRoom].Notifications != int(pos) {
				t.Fatalf("after event %d: %+v %v", pos, m, err)
			}
		}
		if err := s.WaitFor(ctx, 3); err != nil {
			t.Fatal(err)
		}
		if n, err := storage.TotalUnreadNotifications(ctx, db, alice); err != nil || n != 3 {
			t.Fatalf("written: %d %v", n, err)
		}
	})
}

// TestReadMarksAtClose: at shutdown a loaded user who read everything gets a read mark
// past the evaluated events (the next load skips them), one with unread notifications
// keeps reading them; counts after the restart are right for both.
func TestReadMarksAtClose(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		carol := "@carol:test"
		rooms := newFakeRoomsOf(t, bob, alice, carol)
		pos := int64(0)
		send := func(s *Service) {
			t.Helper()
			pos++
			ev := &roomserver.Event{PDU: buildPDU(t, bob, "m.room.message", nil, msg("hello"))}
			ev.StreamPos = pos
			rooms.add(ev)
			s.OnNewEvent(roomserver.OutputEvent{Event: ev, StreamPos: pos})
			if err := s.WaitFor(ctx, pos); err != nil {
				t.Fatal(err)
			}
		}
		counts := func(s *Service, user string) int {
			t.Helper()
			m, err := s.UnreadCounts(ctx, user, nil)
			if err != nil {
				t.Fatal(err)
			}
			return m[testRoom].Notifications
		}
		mark := func(user string) int64 {
			t.Helper()
			var p int64
			if err := db.QueryRowContext(ctx, `SELECT first_pos FROM push_unread_from WHERE user_id = $1`, user).Scan(&p); err != nil && !errors.Is(err, sql.ErrNoRows) {
				t.Fatal(err)
			}
			return p
		}
		s := newTestService(t, db, rooms)
		s.Start(ctx)
		for range 3 {
			send(s)
		}
		if a, c := counts(s, alice), counts(s, carol); a != 3 || c != 3 {
			t.Fatalf("counts: alice %d, carol %d", a, c)
		}
		if err := s.MarkRead(ctx, alice, testRoom, "", 3); err != nil {
			t.Fatal(err)
		}
		s.Close()
		// Loads moved both marks to the first set (1); the close moved alice's past 3.
		if a, c := mark(alice), mark(carol); a != 4 || c != 1 {
			t.Fatalf("read marks after the close: alice %d, carol %d; want 4, 1", a, c)
		}
		s2 := newTestService(t, db, rooms)
		s2.Start(ctx)
		defer s2.Close()
		send(s2)
		if a, c := counts(s2, alice), counts(s2, carol); a != 1 || c != 4 {
			t.Fatalf("counts after the restart: alice %d, carol %d; want 1, 4", a, c)
		}
	})
}
