package roomserver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// TestCrashSafety kills a process that is writing events (SIGKILL, no shutdown) and
// checks that every event it acknowledged is there after a restart, and that the room
// is consistent enough to keep writing. The sends carry client transaction IDs: after
// the restart every one that was started is sent again, and each must be stored
// exactly once, acknowledged ones with the event first acknowledged (no crash window
// where the event is stored but its transaction ID is not).
func TestCrashSafety(t *testing.T) {
	if os.Getenv("MYELIN_CRASH_CHILD") != "" {
		t.Skip("child process")
	}
	forEachEngine(t, func(t *testing.T, engine string) {
		dbs := newReopenable(t, engine)
		key, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		keyPath := t.TempDir() + "/key.pem"
		if err := config.WriteSigningKey(keyPath, key); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), "MYELIN_CRASH_CHILD=1", "MYELIN_CRASH_DSN="+dbs.cfg.DSN,
			"MYELIN_CRASH_DIR="+dbs.dir, "MYELIN_CRASH_KEY="+keyPath)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var roomID string
		acked := map[string]string{} // event ID -> txn ID
		tried := map[string]bool{}   // txn IDs sent, acknowledged or not
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if r, ok := strings.CutPrefix(line, "ROOM "); ok {
				roomID = r
			} else if txn, ok := strings.CutPrefix(line, "TRY "); ok {
				tried[txn] = true
			} else if rest, ok := strings.CutPrefix(line, "ACK "); ok {
				id, txn, _ := strings.Cut(rest, " ")
				acked[id] = txn
				if len(acked) == 300 {
					_ = cmd.Process.Signal(syscall.SIGKILL)
					break
				}
			}
		}
		_ = cmd.Wait()
		if roomID == "" || len(acked) < 300 {
			t.Fatalf("child wrote room %q and %d events", roomID, len(acked))
		}

		db := dbs.open()
		defer db.Close()
		cfg := testConfig(t)
		cfg.KeyID, cfg.PrivateKey = key.ID, key.Private
		rs, err := New(context.Background(), db, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		ctx := context.Background()
		for id := range acked {
			if _, err := rs.Event(ctx, id); err != nil {
				t.Fatalf("acknowledged event %s lost: %v", id, err)
			}
		}
		ackedTxn := map[string]string{}
		for id, txn := range acked {
			ackedTxn[txn] = id
		}
		for txn := range tried {
			ev, err := rs.SendEvent(ctx, crashSend(roomID, txn))
			if err != nil {
				t.Fatalf("replay of %s: %v", txn, err)
			}
			if id, ok := ackedTxn[txn]; ok && ev.EventID() != id {
				t.Fatalf("replay of %s made %s, first acknowledged as %s", txn, ev.EventID(), id)
			}
		}
		all, err := rs.StreamEvents(ctx, roomID, 0, rs.StreamPosition(), 100000, false)
		if err != nil {
			t.Fatal(err)
		}
		perTxn := map[string]int{}
		for _, ev := range all {
			if ev.TxnID != "" {
				perTxn[ev.TxnID]++
			}
		}
		for txn := range tried {
			if perTxn[txn] != 1 {
				t.Fatalf("transaction %s stored %d times", txn, perTxn[txn])
			}
		}
		info, err := rs.RoomInfo(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		ev := mustSend(t, rs, roomID, user("alice"), "m.room.message", nil, msg("after the crash"))
		if len(ev.PrevEventIDs()) != len(info.Extremities) {
			t.Fatalf("prev events %v, extremities %v", ev.PrevEventIDs(), info.Extremities)
		}
		evs, err := rs.StreamEvents(ctx, roomID, 0, rs.StreamPosition(), 100000, false)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Depth() <= evs[i-1].Depth() {
				t.Fatalf("timeline not linear after the crash at %d", i)
			}
		}
	})
}

// TestCrashChild is the process TestCrashSafety kills.
func TestCrashChild(t *testing.T) {
	if os.Getenv("MYELIN_CRASH_CHILD") == "" {
		t.Skip("run by TestCrashSafety")
	}
	cfg := config.Default().Database
	cfg.DSN = os.Getenv("MYELIN_CRASH_DSN")
	cfg.SQLiteSynchronous = "normal"
	db, err := storage.Open(context.Background(), cfg, os.Getenv("MYELIN_CRASH_DIR"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := config.LoadSigningKey(os.Getenv("MYELIN_CRASH_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	rcfg := testConfig(t)
	rcfg.KeyID, rcfg.PrivateKey = key.ID, key.Private
	rs, err := New(context.Background(), db, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	roomID := mustCreate(t, rs, CreateRoomRequest{Creator: user("alice")})
	var mu sync.Mutex
	print := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(os.Stdout, s)
		_ = os.Stdout.Sync()
	}
	print("ROOM " + roomID)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				txn := fmt.Sprint(w, "-", i)
				print("TRY " + txn)
				ev, err := rs.SendEvent(context.Background(), crashSend(roomID, txn))
				if err != nil {
					print("ERR " + err.Error())
					return
				}
				print("ACK " + ev.EventID() + " " + txn)
			}
		}()
	}
	wg.Wait()
	time.Sleep(time.Minute) // killed before this ends
}

// crashSend is the idempotent send of TestCrashChild and its replay after the crash.
func crashSend(roomID, txn string) SendRequest {
	return SendRequest{RoomID: roomID, Sender: user("alice"), Type: "m.room.message", Content: msg(txn),
		TxnID: txn, DeviceID: "DEV", TxnScope: "send:" + roomID}
}
