package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

const testServer = "test.example"

var (
	testKeyOnce sync.Once
	testKey     config.SigningKey
)

func signingKey(t testing.TB) config.SigningKey {
	testKeyOnce.Do(func() {
		k, err := config.GenerateSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		testKey = k
	})
	return testKey
}

func testConfig(t testing.TB) Config {
	k := signingKey(t)
	return Config{ServerName: testServer, KeyID: k.ID, PrivateKey: k.Private, DefaultRoomVersion: "11"}
}

// newRS starts a roomserver on db, closed at the end of the test.
func newRS(t testing.TB, db *storage.DB, mod ...func(*Config)) *Roomserver {
	t.Helper()
	cfg := testConfig(t)
	for _, m := range mod {
		m(&cfg)
	}
	rs, err := New(context.Background(), db, cfg)
	if err != nil {
		t.Fatalf("new roomserver: %v", err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

func user(local string) string { return "@" + local + ":" + testServer }

func strp(s string) *string { return &s }

func mustCreate(t testing.TB, rs *Roomserver, req CreateRoomRequest) string {
	t.Helper()
	id, err := rs.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return id
}

func mustSend(t testing.TB, rs *Roomserver, roomID, sender, typ string, stateKey *string, content any) *Event {
	t.Helper()
	ev, err := rs.SendEvent(context.Background(), SendRequest{RoomID: roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: content})
	if err != nil {
		t.Fatalf("send %s from %s: %v", typ, sender, err)
	}
	return ev
}

func msg(body string) map[string]any { return map[string]any{"msgtype": "m.text", "body": body} }

// wantErrCode checks that err is a Matrix error with the code.
func wantErrCode(t testing.TB, err error, code spec.MatrixErrorCode) {
	t.Helper()
	var me spec.MatrixError
	if !errors.As(err, &me) {
		t.Fatalf("want %s, got %v", code, err)
	}
	if me.ErrCode != code {
		t.Fatalf("want %s, got %s: %s", code, me.ErrCode, me.Err)
	}
}

func contentField(t testing.TB, ev *Event, field string) any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.Content(), &m); err != nil {
		t.Fatal(err)
	}
	return m[field]
}
