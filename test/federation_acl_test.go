package test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/test/harness"
)

// TestFederationResidentForwardsAndACL: B and C join A's room through A. A, the
// resident server that accepted their send_join, tells the other servers of each join
// (B learns of C without C sending its join itself, so B sends C its messages). An
// m.room.server_acl on A denying B still reaches B (a denied server must know it is
// denied); afterwards B's messages are refused by A and C, while C's still reach A.
func TestFederationResidentForwardsAndACL(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		// Three loopback hosts: an ACL names hosts, not ports.
		start := func(host string) *fedServer {
			return &fedServer{harness.Start(t, harness.Options{Engine: engine, Federation: true, NameFromFederationAddr: true, LoopbackHost: host})}
		}
		a, b, c := start("127.0.0.1"), start("127.0.0.2"), start("127.0.0.3")
		alice, bob, carol := fedUser(t, a, "aclalice"), fedUser(t, b, "aclbob"), fedUser(t, c, "aclcarol")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		joinRemote(t, bob, roomID, a)
		joinRemote(t, carol, roomID, a)
		// B hears of carol's join from A, and sends carol its messages directly.
		fmWaitMembership(t, bob, created.RoomID, carol.UserID, "join")
		sendText(t, bob, roomID, "bob before the ACL")
		waitHistory(t, carol, roomID, []string{"bob before the ACL"})

		_, err = alice.SendStateEvent(ctx, created.RoomID, event.StateServerACL, "", map[string]any{
			"allow": []string{"*"}, "deny": []string{hostOf(b.ServerName)}, "allow_ip_literals": true,
		})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, bob, roomID, func(st mautrix.RoomStateMap) bool { return st[event.StateServerACL][""] != nil })
		waitState(t, carol, roomID, func(st mautrix.RoomStateMap) bool { return st[event.StateServerACL][""] != nil })

		sendText(t, bob, roomID, "bob denied")
		sendText(t, carol, roomID, "carol after the ACL")
		waitHistory(t, alice, roomID, []string{"bob before the ACL", "carol after the ACL"})
		time.Sleep(time.Second) // bob's message had as long as carol's to arrive
		for _, cli := range []*mautrix.Client{alice, carol} {
			if got := historyBodies(t, cli, roomID); slices.Contains(got, "bob denied") {
				t.Fatalf("%s sees a message of a denied server: %v", cli.UserID, got)
			}
		}
	})
}

// hostOf returns a server name without its port (ACLs ignore ports).
func hostOf(server string) string {
	if i := strings.LastIndex(server, ":"); i > 0 && !strings.HasSuffix(server, "]") {
		return server[:i]
	}
	return server
}
