package roomserver

import (
	"context"
	"reflect"
	"sort"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// reopenable is a database that a test can close and open again.
type reopenable struct {
	t   *testing.T
	cfg config.Database
	dir string
}

func newReopenable(t *testing.T, engine string) *reopenable {
	cfg := config.Default().Database
	cfg.DSN = storagetest.DSN(t, engine)
	cfg.SQLiteSynchronous = "normal"
	return &reopenable{t: t, cfg: cfg, dir: t.TempDir()}
}

func (r *reopenable) open() *storage.DB {
	db, err := storage.Open(context.Background(), r.cfg, r.dir)
	if err != nil {
		r.t.Fatalf("open database: %v", err)
	}
	return db
}

func forEachEngine(t *testing.T, fn func(t *testing.T, engine string)) {
	for _, engine := range storagetest.Engines {
		t.Run(engine, func(t *testing.T) {
			if engine == "postgres" {
				storagetest.RequirePostgres(t)
			}
			fn(t, engine)
		})
	}
}

// roomView is everything about a room that must survive a restart.
type roomView struct {
	Extremities []string
	State       map[string]string
	Timeline    []string
	Members     []string
	Joined      []string
}

func viewRoom(t *testing.T, rs *Roomserver, roomID string) roomView {
	t.Helper()
	ctx := context.Background()
	info, err := rs.RoomInfo(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	v := roomView{Extremities: info.Extremities, State: map[string]string{}}
	sort.Strings(v.Extremities)
	st, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range st {
		v.State[ev.Type()+"|"+*ev.StateKey()] = ev.EventID() + " " + string(ev.Content())
	}
	page, err := rs.Messages(ctx, MessagesRequest{RoomID: roomID, From: Start, Dir: Forward, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range page.Events {
		v.Timeline = append(v.Timeline, ev.EventID()+" "+string(ev.Content()))
	}
	ms, _ := rs.Members(ctx, MembersRequest{RoomID: roomID})
	for _, m := range ms {
		v.Members = append(v.Members, *m.StateKey()+"="+m.Membership)
	}
	v.Joined, _ = rs.JoinedMembers(ctx, roomID)
	return v
}

func TestRestartKeepsState(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dbs := newReopenable(t, engine)
		db := dbs.open()
		rs, err := New(ctx, db, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		alice, bob := user("alice"), user("bob")
		var rooms []string
		for _, ver := range []string{"1", "11", "12"} {
			roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: ver, Preset: spec.PresetPublicChat, Name: "r" + ver})
			if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				mustSend(t, rs, roomID, bob, "m.room.message", nil, msg("m"))
				if i%5 == 0 {
					mustSend(t, rs, roomID, alice, spec.MRoomTopic, strp(""), map[string]any{"topic": "t"})
				}
			}
			rooms = append(rooms, roomID)
		}
		before := map[string]roomView{}
		for _, r := range rooms {
			before[r] = viewRoom(t, rs, r)
		}
		pos := rs.StreamPosition()
		rs.Close()
		db.Close()

		db = dbs.open()
		defer db.Close()
		rs2, err := New(ctx, db, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		defer rs2.Close()
		if rs2.StreamPosition() != pos {
			t.Fatalf("stream position %d after restart, was %d", rs2.StreamPosition(), pos)
		}
		for _, r := range rooms {
			if after := viewRoom(t, rs2, r); !reflect.DeepEqual(before[r], after) {
				t.Fatalf("room %s changed across restart:\nbefore %+v\nafter  %+v", r, before[r], after)
			}
		}
		// Writing continues on top of the reloaded head.
		ev := mustSend(t, rs2, rooms[1], alice, "m.room.message", nil, msg("after restart"))
		if ev.StreamPos <= pos {
			t.Fatalf("new event at %d, not after %d", ev.StreamPos, pos)
		}
		if prev := ev.PrevEventIDs(); len(prev) != 1 || prev[0] != before[rooms[1]].Extremities[0] {
			t.Fatalf("prev events %v, want %v", prev, before[rooms[1]].Extremities)
		}
	})
}

func TestRedaction(t *testing.T) {
	forEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		dbs := newReopenable(t, engine)
		db := dbs.open()
		rs, err := New(ctx, db, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		alice, bob := user("alice"), user("bob")
		type target struct{ room, event string }
		var redacted []target
		var kept []target
		for _, ver := range []string{"1", "3", "10", "11", "12"} {
			roomID := mustCreate(t, rs, CreateRoomRequest{Creator: alice, RoomVersion: ver, Preset: spec.PresetPublicChat})
			if _, err := rs.Join(ctx, MembershipRequest{RoomID: roomID, Sender: bob}); err != nil {
				t.Fatal(err)
			}
			a := mustSend(t, rs, roomID, alice, "m.room.message", nil, msg("secret from alice"))
			b := mustSend(t, rs, roomID, bob, "m.room.message", nil, msg("secret from bob"))
			reaction := mustSend(t, rs, roomID, bob, "m.reaction", nil, map[string]any{
				"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": a.EventID(), "key": "👍"}})
			other := mustSend(t, rs, roomID, alice, "m.room.message", nil, msg("stays"))
			topic := mustSend(t, rs, roomID, alice, spec.MRoomTopic, strp(""), map[string]any{"topic": "secret topic"})
			rels, err := rs.Relations(ctx, RelationsRequest{RoomID: roomID, EventID: a.EventID(), RelType: "m.annotation"})
			if err != nil || len(rels.Events) != 1 {
				t.Fatalf("relations before redaction: %v %v", rels, err)
			}
			redact := func(sender string, ev *Event) error {
				_, err := rs.SendEvent(ctx, SendRequest{RoomID: roomID, Sender: sender, Type: spec.MRoomRedaction,
					Redacts: ev.EventID(), Content: map[string]any{"reason": "oops", "redacts": ev.EventID()}})
				return err
			}
			// Bob may not redact alice's message.
			wantErrCode(t, redact(bob, a), spec.ErrorForbidden)
			for _, c := range []struct {
				sender string
				ev     *Event
			}{{bob, reaction}, {alice, b}, {alice, a}, {alice, topic}} {
				if err := redact(c.sender, c.ev); err != nil {
					t.Fatalf("v%s: redact %s: %v", ver, c.ev.Type(), err)
				}
				redacted = append(redacted, target{roomID, c.ev.EventID()})
			}
			kept = append(kept, target{roomID, other.EventID()})
			rels, err = rs.Relations(ctx, RelationsRequest{RoomID: roomID, EventID: a.EventID()})
			if err != nil || len(rels.Events) != 0 {
				t.Fatalf("relations after redaction: %v %v", rels, err)
			}
			cur, _ := rs.CurrentStateEvent(ctx, roomID, spec.MRoomTopic, "")
			if cur.EventID() != topic.EventID() || cur.RedactedBy == "" || string(cur.Content()) != "{}" {
				t.Fatalf("redacted topic in current state: %s %s", cur.EventID(), cur.Content())
			}
		}
		check := func(rs *Roomserver) {
			t.Helper()
			for _, tg := range redacted {
				ev, err := rs.Event(ctx, tg.event)
				if err != nil {
					t.Fatal(err)
				}
				if !ev.Redacted() || ev.RedactedBy == "" || string(ev.Content()) != "{}" {
					t.Fatalf("%s not stripped: redacted=%v by=%q content=%s", tg.event, ev.Redacted(), ev.RedactedBy, ev.Content())
				}
				page, _ := rs.Messages(ctx, MessagesRequest{RoomID: tg.room, From: End, Dir: Backward, Limit: 100})
				for _, p := range page.Events {
					if p.EventID() == tg.event && string(p.Content()) != "{}" {
						t.Fatalf("timeline serves %s unredacted", tg.event)
					}
				}
			}
			for _, tg := range kept {
				ev, _ := rs.Event(ctx, tg.event)
				if ev.Redacted() || contentField(t, ev, "body") != "stays" {
					t.Fatalf("%s was redacted", tg.event)
				}
			}
		}
		check(rs)
		rs.Close()
		db.Close()
		db = dbs.open()
		defer db.Close()
		rs2, err := New(ctx, db, testConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		defer rs2.Close()
		check(rs2)
	})
}
