package delayed

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// sender records the events sent and, while one is being sent, runs a hook (what a
// client might do at that moment).
type sender struct {
	mu     sync.Mutex
	sent   []roomserver.SendRequest
	during func(req roomserver.SendRequest)
}

func (f *sender) SendEvent(_ context.Context, req roomserver.SendRequest) (*roomserver.Event, error) {
	if f.during != nil {
		f.during(req)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, req)
	return nil, nil
}

func (f *sender) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

func schedule(t *testing.T, s *Service, delay time.Duration) string {
	t.Helper()
	id, err := s.Schedule(context.Background(), Request{
		UserID: "@alice:hs.test", DeviceID: "DEV", RoomID: "!r:hs.test", Type: "m.room.message",
		Content: json.RawMessage(`{"body":"later"}`), Delay: delay,
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A schedule whose event is being sent is no longer the client's to list, cancel,
// restart or send: otherwise a cancel could "succeed" for an event that goes out anyway.
func TestFiringScheduleLeavesPending(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := &sender{}
		s := New(db, f)
		defer s.Close()
		id := schedule(t, s, time.Hour)
		var listed []Event
		var cancelErr, restartErr, sendErr error
		f.during = func(roomserver.SendRequest) {
			f.during = nil
			listed, _ = s.List(ctx, "@alice:hs.test")
			cancelErr = s.Act(ctx, id, ActionCancel)
			restartErr = s.Act(ctx, id, ActionRestart)
			sendErr = s.Act(ctx, id, ActionSend)
		}
		if err := s.Act(ctx, id, ActionSend); err != nil {
			t.Fatal(err)
		}
		if len(listed) != 0 {
			t.Errorf("listed while being sent: %v", listed)
		}
		if !errors.Is(cancelErr, ErrNotFound) || !errors.Is(restartErr, ErrNotFound) || !errors.Is(sendErr, ErrNotFound) {
			t.Errorf("cancel / restart / send while being sent: %v / %v / %v, want ErrNotFound", cancelErr, restartErr, sendErr)
		}
		if err := s.Act(ctx, id, ActionSend); !errors.Is(err, ErrNotFound) {
			t.Errorf("second send: %v, want ErrNotFound", err)
		}
		if f.count() != 1 {
			t.Errorf("sent %d times", f.count())
		}
	})
}

// A firing that a stop interrupted (claimed, not recorded as sent) is sent again at
// start with the same transaction ID, so the roomserver sends it at most once.
func TestInterruptedFiringResumes(t *testing.T) {
	storagetest.ForEachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		first := New(db, &sender{})
		id := schedule(t, first, time.Hour)
		first.Close()
		if _, err := db.ExecContext(ctx, `UPDATE delayed_events SET status = $1 WHERE delay_id = $2`, statusSending, id); err != nil {
			t.Fatal(err)
		}
		f := &sender{}
		second := New(db, f)
		defer second.Close()
		if err := second.Start(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for f.count() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if f.count() != 1 || f.sent[0].TxnID != id {
			t.Fatalf("resumed firing sent %v, want one event with txn %s", f.sent, id)
		}
		var status string
		deadline = time.Now().Add(5 * time.Second)
		for status != statusSent && time.Now().Before(deadline) {
			if err := db.QueryRowContext(ctx, `SELECT status FROM delayed_events WHERE delay_id = $1`, id).Scan(&status); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if status != statusSent {
			t.Fatalf("status %q after the resumed firing", status)
		}
	})
}
