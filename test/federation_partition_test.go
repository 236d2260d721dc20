package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// stateIDs returns the room's current state as seen by cli: event ID by "type|state_key".
func stateIDs(t *testing.T, cli *mautrix.Client, roomID string) map[string]string {
	t.Helper()
	st, err := cli.State(context.Background(), id.RoomID(roomID))
	if err != nil {
		t.Fatalf("state seen by %s: %v", cli.UserID, err)
	}
	out := map[string]string{}
	for typ, byKey := range st {
		for key, ev := range byKey {
			out[typ.Type+"|"+key] = ev.ID.String()
		}
	}
	return out
}

// waitBodies waits until the room's history seen by cli holds every body of want.
func waitBodies(t *testing.T, cli *mautrix.Client, roomID string, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := historyBodies(t, cli, roomID)
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return slices.Contains(got, w) })
		if len(missing) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("history of %s lacks %v: %v", cli.UserID, missing, got)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestFederationPartitionConverges: three servers share a room; C is cut off from
// federation in both directions (harness Partition) while users of A and C make
// conflicting changes to the power levels, join rules and topic and send messages
// (alice on A also demotes carol on C). After healing, every server holds every message
// once, reports the same current state (GET /rooms/{roomId}/state, event IDs compared),
// the one state resolution v2 gives (alice's changes win), and keeps making progress: a
// new message from each server reaches all three.
func TestFederationPartitionConverges(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		a, b, c := startFedServer(t, engine), startFedServer(t, engine), startFedServer(t, engine)
		alice, bob, carol := fedUser(t, a, "alice"), fedUser(t, b, "bob"), fedUser(t, c, "carol")
		clients := []*mautrix.Client{alice, bob, carol}
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11", Topic: "first topic"})
		if err != nil {
			t.Fatal(err)
		}
		roomID := created.RoomID.String()
		joinRemote(t, bob, roomID, a)
		joinRemote(t, carol, roomID, a)
		// Carol may change power levels, join rules and topic, with less power than alice.
		var plc map[string]any
		if err := alice.StateEvent(ctx, created.RoomID, event.StatePowerLevels, "", &plc); err != nil {
			t.Fatal(err)
		}
		plc["users"].(map[string]any)[carol.UserID.String()] = 90
		plc["events"].(map[string]any)[event.StatePowerLevels.Type] = 90
		if _, err := alice.SendStateEvent(ctx, created.RoomID, event.StatePowerLevels, "", plc); err != nil {
			t.Fatal(err)
		}
		waitState(t, carol, roomID, func(st mautrix.RoomStateMap) bool {
			pl := st[event.StatePowerLevels][""]
			return pl != nil && pl.Content.AsPowerLevels().GetUserLevel(carol.UserID) == 90
		})
		sendText(t, carol, roomID, "before the partition")
		for _, cli := range clients {
			waitBodies(t, cli, roomID, "before the partition")
		}

		c.Partition()
		// Conflicting changes on both sides of the partition: alice raises bob and
		// demotes carol; carol, not knowing, sets bob's level otherwise.
		setUserPower(t, alice, roomID, bob.UserID, 50)
		setUserPower(t, alice, roomID, carol.UserID, 0)
		setUserPower(t, carol, roomID, bob.UserID, 10)
		for _, side := range []struct {
			cli   *mautrix.Client
			where string
			rule  event.JoinRule
		}{{alice, "A", event.JoinRuleInvite}, {carol, "C", event.JoinRuleKnock}} {
			if _, err := side.cli.SendStateEvent(ctx, created.RoomID, event.StateJoinRules, "", map[string]any{"join_rule": side.rule}); err != nil {
				t.Fatal(err)
			}
			if _, err := side.cli.SendStateEvent(ctx, created.RoomID, event.StateTopic, "", map[string]any{"topic": "topic from " + side.where}); err != nil {
				t.Fatal(err)
			}
			sendText(t, side.cli, roomID, "during the partition on "+side.where)
		}
		// B, still connected to A, has A's changes but not C's.
		waitBodies(t, bob, roomID, "during the partition on A")
		if slices.Contains(historyBodies(t, bob, roomID), "during the partition on C") {
			t.Fatal("C's message crossed the partition")
		}
		c.Heal()

		// Forward progress: a new message from each server reaches all three.
		for i, cli := range clients {
			sendText(t, cli, roomID, fmt.Sprintf("after healing from %c", 'A'+i))
		}
		want := []string{"before the partition", "during the partition on A", "during the partition on C",
			"after healing from A", "after healing from B", "after healing from C"}
		for _, cli := range clients {
			got := waitBodies(t, cli, roomID, want...)
			seen := map[string]int{}
			for _, b := range got {
				seen[b]++
			}
			for _, w := range want {
				if seen[w] != 1 {
					t.Fatalf("%s sees %q %d times: %v", cli.UserID, w, seen[w], got)
				}
			}
		}

		// The same current state everywhere.
		var states []map[string]string
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			states = states[:0]
			for _, cli := range clients {
				states = append(states, stateIDs(t, cli, roomID))
			}
			if equalMaps(states[0], states[1]) && equalMaps(states[0], states[2]) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("current state differs:\n%s", stateDiff(states))
			}
		}
		// State resolution (v2) applies the power events of the more powerful sender
		// first: alice's demotion of carol stands, and with it carol's changes made
		// during the partition lose (she no longer had the power for them).
		st, err := alice.State(ctx, created.RoomID)
		if err != nil {
			t.Fatal(err)
		}
		pl := st[event.StatePowerLevels][""].Content.AsPowerLevels()
		topic, rule := st[event.StateTopic][""].Content.Raw["topic"], st[event.StateJoinRules][""].Content.Raw["join_rule"]
		t.Logf("converged: topic %q, join rule %q, bob's level %d, carol's %d", topic, rule, pl.GetUserLevel(bob.UserID), pl.GetUserLevel(carol.UserID))
		if topic != "topic from A" || rule != string(event.JoinRuleInvite) || pl.GetUserLevel(bob.UserID) != 50 || pl.GetUserLevel(carol.UserID) != 0 {
			t.Fatalf("resolved state: topic %q, join rule %q, bob %d, carol %d; want A's changes", topic, rule, pl.GetUserLevel(bob.UserID), pl.GetUserLevel(carol.UserID))
		}
	})
}

func equalMaps(x, y map[string]string) bool {
	if len(x) != len(y) {
		return false
	}
	for k, v := range x {
		if y[k] != v {
			return false
		}
	}
	return true
}

// stateDiff lists the state keys whose event differs between the servers' views.
func stateDiff(states []map[string]string) string {
	keys := map[string]bool{}
	for _, s := range states {
		for k := range s {
			keys[k] = true
		}
	}
	var out []string
	for k := range keys {
		var ids []string
		for _, s := range states {
			ids = append(ids, s[k])
		}
		if ids[0] != ids[1] || ids[0] != ids[2] {
			out = append(out, fmt.Sprintf("%s: A=%s B=%s C=%s", k, ids[0], ids[1], ids[2]))
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
