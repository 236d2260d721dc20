package test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// Push rules API, pushers validation, /notifications and unread counts end to end.

func prPath(rest string) string { return "/_matrix/client/v3/pushrules" + rest }

func prWant(t *testing.T, what string, status int, body map[string]any, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus || (wantCode != "" && body["errcode"] != wantCode) {
		t.Fatalf("%s: got %d %v, want %d %s", what, status, body, wantStatus, wantCode)
	}
}

// prRuleIDs lists the rule IDs of a kind in a ruleset object.
func prRuleIDs(t *testing.T, ruleset map[string]any, kind string) []string {
	t.Helper()
	rules, ok := ruleset[kind].([]any)
	if !ok {
		t.Fatalf("ruleset has no %s list: %v", kind, ruleset)
	}
	var out []string
	for _, r := range rules {
		out = append(out, r.(map[string]any)["rule_id"].(string))
	}
	return out
}

func TestPushRulesAPI(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		tok := alice.AccessToken

		st, body := s.Do(t, "GET", prPath("/"), tok, nil)
		prWant(t, "GET /pushrules/", st, body, 200, "")
		global := body["global"].(map[string]any)
		over := prRuleIDs(t, global, "override")
		// The spec's defaults, then MSC3930's poll response rule (defaults.go).
		if len(over) != 13 || over[0] != ".m.rule.master" || over[4] != ".m.rule.is_user_mention" || over[11] != ".m.rule.suppress_edits" ||
			over[12] != ".org.matrix.msc3930.rule.poll_response" {
			t.Fatalf("default override rules: %v", over)
		}
		under := prRuleIDs(t, global, "underride")
		if fmt.Sprint(under) != "[.m.rule.call .m.rule.encrypted_room_one_to_one .m.rule.room_one_to_one "+
			".org.matrix.msc3930.rule.poll_start_one_to_one .org.matrix.msc3930.rule.poll_end_one_to_one "+
			".m.rule.message .m.rule.encrypted .org.matrix.msc3930.rule.poll_start .org.matrix.msc3930.rule.poll_end]" {
			t.Fatalf("default underride rules: %v", under)
		}
		content := global["content"].([]any)[0].(map[string]any)
		if content["rule_id"] != ".m.rule.contains_user_name" || content["pattern"] != "alice" {
			t.Fatalf("content default: %v", content)
		}
		if len(prRuleIDs(t, global, "room")) != 0 || len(prRuleIDs(t, global, "sender")) != 0 {
			t.Fatal("room/sender rules not empty")
		}

		st, body = s.Do(t, "GET", prPath("/global/override/.m.rule.master"), tok, nil)
		prWant(t, "GET master", st, body, 200, "")
		if body["enabled"] != false || body["default"] != true {
			t.Fatalf("master: %v", body)
		}
		st, body = s.Do(t, "GET", prPath("/global/override/nope"), tok, nil)
		prWant(t, "GET unknown rule", st, body, 404, "M_NOT_FOUND")
		// A rule of a kind we do not have is not found (Complement probes MSC4306's
		// postcontent rules before disabling them); changing one is a bad request.
		st, body = s.Do(t, "GET", prPath("/global/postcontent/.io.element.msc4306.rule.subscribed_thread"), tok, nil)
		prWant(t, "GET unknown kind", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "PUT", prPath("/global/bogus/x/enabled"), tok, map[string]any{"enabled": false})
		prWant(t, "PUT to an unknown kind", st, body, 400, "M_INVALID_PARAM")

		// Creation, positions and errors.
		put := func(kind, id, query string, rule any) (int, map[string]any) {
			return s.Do(t, "PUT", prPath("/global/"+kind+"/"+esc(id)+query), tok, rule)
		}
		st, body = put("content", "cake", "", map[string]any{"pattern": "cake*", "actions": []any{"notify"}})
		prWant(t, "PUT cake", st, body, 200, "")
		st, body = put("content", "pie", "?before=cake", map[string]any{"pattern": "pie", "actions": []any{"notify"}})
		prWant(t, "PUT pie before cake", st, body, 200, "")
		st, body = put("content", "tart", "?after=pie", map[string]any{"pattern": "tart", "actions": []any{"notify"}})
		prWant(t, "PUT tart after pie", st, body, 200, "")
		st, body = put("content", "scone", "", map[string]any{"pattern": "scone", "actions": []any{}})
		prWant(t, "PUT scone", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/global/"), tok, nil)
		prWant(t, "GET /pushrules/global/", st, body, 200, "")
		if got := fmt.Sprint(prRuleIDs(t, body, "content")); got != "[scone pie tart cake .m.rule.contains_user_name]" {
			t.Fatalf("content order: %s", got)
		}
		st, body = s.Do(t, "GET", prPath("/global/content/cake"), tok, nil)
		prWant(t, "GET cake", st, body, 200, "")
		if body["pattern"] != "cake*" || body["enabled"] != true || body["default"] != false {
			t.Fatalf("cake: %v", body)
		}
		st, body = put("content", "x", "?before=nope", map[string]any{"pattern": "x", "actions": []any{"notify"}})
		prWant(t, "before unknown", st, body, 404, "M_NOT_FOUND")
		st, body = put("content", "x", "?after=.m.rule.contains_user_name", map[string]any{"pattern": "x", "actions": []any{"notify"}})
		prWant(t, "after a default rule", st, body, 400, "M_INVALID_PARAM")
		st, body = put("override", ".mine", "", map[string]any{"conditions": []any{}, "actions": []any{"notify"}})
		prWant(t, "reserved id", st, body, 400, "M_INVALID_PARAM")
		st, body = put("override", "x", "", map[string]any{"conditions": []any{}})
		prWant(t, "no actions", st, body, 400, "")
		st, body = put("override", "x", "", map[string]any{"conditions": []any{}, "actions": []any{"explode"}})
		prWant(t, "bad action", st, body, 400, "M_INVALID_PARAM")
		st, body = put("content", "x", "", map[string]any{"actions": []any{"notify"}})
		prWant(t, "content without pattern", st, body, 400, "M_INVALID_PARAM")
		st, body = put("room", "not-a-room", "", map[string]any{"actions": []any{}})
		prWant(t, "room rule with a bad id", st, body, 400, "M_INVALID_PARAM")
		st, body = put("override", "x", "", `{"actions": [`)
		prWant(t, "broken JSON", st, body, 400, "M_NOT_JSON")
		st, body = put("override", "cond", "", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "ping"}},
			"conditions": []any{map[string]any{"kind": "event_match", "key": "type", "pattern": "org.example.*"}}})
		prWant(t, "PUT override", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/"), tok, nil)
		prWant(t, "GET all", st, body, 200, "")
		over = prRuleIDs(t, body["global"].(map[string]any), "override")
		if over[0] != ".m.rule.master" || over[1] != "cond" || over[2] != ".m.rule.suppress_notices" {
			t.Fatalf("user override rule not after master and before the defaults: %v", over)
		}

		// enabled and actions, on default and user rules.
		st, body = s.Do(t, "PUT", prPath("/global/underride/.m.rule.message/enabled"), tok, map[string]any{"enabled": false})
		prWant(t, "disable .m.rule.message", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/global/underride/.m.rule.message/enabled"), tok, nil)
		if st != 200 || body["enabled"] != false {
			t.Fatalf("enabled after disabling: %d %v", st, body)
		}
		st, body = s.Do(t, "PUT", prPath("/global/content/cake/enabled"), tok, map[string]any{})
		prWant(t, "enabled missing", st, body, 400, "")
		st, body = s.Do(t, "PUT", prPath("/global/content/nope/enabled"), tok, map[string]any{"enabled": true})
		prWant(t, "enable unknown", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "PUT", prPath("/global/override/.m.rule.reaction/actions"), tok, map[string]any{"actions": []any{"notify"}})
		prWant(t, "set actions of a default rule", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/global/override/.m.rule.reaction/actions"), tok, nil)
		if st != 200 || fmt.Sprint(body["actions"]) != "[notify]" {
			t.Fatalf("actions: %d %v", st, body)
		}
		st, body = s.Do(t, "PUT", prPath("/global/content/cake/actions"), tok, map[string]any{"actions": []any{map[string]any{"set_tweak": "highlight", "value": "no"}}})
		prWant(t, "invalid tweak", st, body, 400, "M_INVALID_PARAM")
		// Updating a rule keeps its enabled flag and position.
		st, body = s.Do(t, "PUT", prPath("/global/content/pie/enabled"), tok, map[string]any{"enabled": false})
		prWant(t, "disable pie", st, body, 200, "")
		st, body = put("content", "pie", "", map[string]any{"pattern": "pies", "actions": []any{"notify"}})
		prWant(t, "update pie", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/global/content/pie"), tok, nil)
		if body["pattern"] != "pies" || body["enabled"] != false {
			t.Fatalf("updated pie: %v", body)
		}

		// Deletion.
		st, body = s.Do(t, "DELETE", prPath("/global/underride/.m.rule.message"), tok, nil)
		prWant(t, "delete a default rule", st, body, 400, "")
		st, body = s.Do(t, "DELETE", prPath("/global/content/cake"), tok, nil)
		prWant(t, "delete cake", st, body, 200, "")
		st, body = s.Do(t, "GET", prPath("/global/content/cake"), tok, nil)
		prWant(t, "GET deleted", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "DELETE", prPath("/global/content/cake"), tok, nil)
		prWant(t, "delete again", st, body, 404, "M_NOT_FOUND")

		// The rules are the m.push_rules account data; it cannot be written directly.
		adPath := "/_matrix/client/v3/user/" + esc(alice.UserID.String()) + "/account_data/m.push_rules"
		st, body = s.Do(t, "GET", adPath, tok, nil)
		prWant(t, "GET account data", st, body, 200, "")
		if got := fmt.Sprint(prRuleIDs(t, body["global"].(map[string]any), "content")); got != "[scone pie tart .m.rule.contains_user_name]" {
			t.Fatalf("m.push_rules content rules: %s", got)
		}
		st, body = s.Do(t, "PUT", adPath, tok, map[string]any{"global": map[string]any{}})
		prWant(t, "PUT m.push_rules account data", st, body, 405, "")
		// /sync shows m.push_rules in account_data.
		resp, err := alice.SyncRequest(context.Background(), 0, "", "", true, event.PresenceOffline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		found := false
		for _, ev := range resp.AccountData.Events {
			if ev.Type.Type == "m.push_rules" {
				found = true
			}
		}
		if !found {
			t.Fatal("m.push_rules missing from /sync account_data")
		}

		// Another user's rules are untouched; no token is 401. A new account's initial
		// /sync has the default rules in m.push_rules.
		bob := udRegister(t, s, "bob")
		resp, err = bob.SyncRequest(context.Background(), 0, "", "", true, event.PresenceOffline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		found = false
		for _, ev := range resp.AccountData.Events {
			if ev.Type.Type == "m.push_rules" {
				found = ev.Content.Raw["global"] != nil
			}
		}
		if !found {
			t.Fatal("m.push_rules missing from a new account's initial /sync")
		}
		st, body = s.Do(t, "GET", prPath("/global/content/pie"), bob.AccessToken, nil)
		prWant(t, "other user's rule", st, body, 404, "M_NOT_FOUND")
		st, body = s.Do(t, "GET", prPath("/"), "", nil)
		prWant(t, "no token", st, body, 401, "M_MISSING_TOKEN")

		// Pushers: validation (private addresses are refused by default).
		set := func(p map[string]any) (int, map[string]any) {
			return s.Do(t, "POST", "/_matrix/client/v3/pushers/set", tok, p)
		}
		pusher := func(url string) map[string]any {
			return map[string]any{"kind": "http", "app_id": "org.example.app", "pushkey": "k1", "app_display_name": "App",
				"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": url}}
		}
		st, body = set(pusher("http://127.0.0.1:9/_matrix/push/v1/notify"))
		prWant(t, "private gateway", st, body, 400, "M_INVALID_PARAM")
		st, body = set(pusher("https://push.example.com/notify"))
		prWant(t, "wrong path", st, body, 400, "M_INVALID_PARAM")
		p := pusher("https://push.example.com/_matrix/push/v1/notify")
		p["kind"] = "email"
		st, body = set(p)
		prWant(t, "unsupported kind", st, body, 400, "M_INVALID_PARAM")
		p = pusher("https://push.example.com/_matrix/push/v1/notify")
		delete(p, "lang")
		st, body = set(p)
		prWant(t, "missing lang", st, body, 400, "")
		p = pusher("https://push.example.com/_matrix/push/v1/notify")
		delete(p, "kind")
		st, body = set(p)
		prWant(t, "missing kind", st, body, 400, "")
		st, body = set(pusher("https://push.example.com/_matrix/push/v1/notify"))
		prWant(t, "valid pusher", st, body, 200, "")
		st, body = s.Do(t, "GET", "/_matrix/client/v3/pushers", tok, nil)
		if st != 200 || len(body["pushers"].([]any)) != 1 {
			t.Fatalf("pushers: %d %v", st, body)
		}
		// The same app ID and pushkey for bob removes alice's pusher (no append).
		st, body = s.Do(t, "POST", "/_matrix/client/v3/pushers/set", bob.AccessToken, pusher("https://push.example.com/_matrix/push/v1/notify"))
		prWant(t, "bob's pusher", st, body, 200, "")
		_, body = s.Do(t, "GET", "/_matrix/client/v3/pushers", tok, nil)
		if len(body["pushers"].([]any)) != 0 {
			t.Fatalf("alice's pusher not replaced by bob's: %v", body)
		}
		st, body = s.Do(t, "POST", "/_matrix/client/v3/pushers/set", bob.AccessToken, map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "k1"})
		prWant(t, "delete pusher", st, body, 200, "")
		_, body = s.Do(t, "GET", "/_matrix/client/v3/pushers", bob.AccessToken, nil)
		if len(body["pushers"].([]any)) != 0 {
			t.Fatalf("pusher not deleted: %v", body)
		}
	})
}

// pnCounts returns unread_notifications of a joined room from a full /sync.
func pnCounts(t *testing.T, s *harness.Server, tok string, roomID id.RoomID) (notif, highlight float64) {
	t.Helper()
	st, body := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", tok, nil)
	if st != 200 {
		t.Fatalf("sync: %d %v", st, body)
	}
	join, _ := body["rooms"].(map[string]any)["join"].(map[string]any)
	room, _ := join[roomID.String()].(map[string]any)
	if room == nil {
		t.Fatalf("room %s not in /sync", roomID)
	}
	un, _ := room["unread_notifications"].(map[string]any)
	n, _ := un["notification_count"].(float64)
	h, _ := un["highlight_count"].(float64)
	return n, h
}

// pnEventually retries fn until it returns true (10 s).
func pnEventually(t *testing.T, what string, fn func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !fn() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestNotificationsAndUnreadCounts(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		carol := udRegister(t, s, "carol")
		roomID := rmCreate(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		for _, c := range []*mautrix.Client{alice, carol} {
			if _, err := c.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatalf("join: %v", err)
			}
		}
		rmSend(t, bob, roomID, "first")
		mention, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "alice: look",
			"m.mentions": map[string]any{"user_ids": []string{alice.UserID.String()}}})
		if err != nil {
			t.Fatal(err)
		}
		threadMsg, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": mention.EventID.String()}})
		if err != nil {
			t.Fatal(err)
		}
		// A notice and alice's own message do not count.
		if _, err := bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.notice", "body": "beep"}); err != nil {
			t.Fatal(err)
		}
		own := rmSend(t, alice, roomID, "mine")

		var notifs []any
		pnEventually(t, "3 notifications", func() bool {
			_, body := s.Do(t, "GET", "/_matrix/client/v3/notifications", alice.AccessToken, nil)
			notifs, _ = body["notifications"].([]any)
			return len(notifs) >= 3
		})
		if len(notifs) != 3 {
			t.Fatalf("notifications: %v", notifs)
		}
		first := notifs[0].(map[string]any)
		ev := first["event"].(map[string]any)
		if ev["event_id"] != threadMsg.EventID.String() || first["read"] != false || first["room_id"] != roomID.String() {
			t.Fatalf("newest notification: %v", first)
		}
		for _, n := range notifs {
			if n.(map[string]any)["event"].(map[string]any)["event_id"] == own.String() {
				t.Fatal("own message notified")
			}
		}
		_, body := s.Do(t, "GET", "/_matrix/client/v3/notifications?only=highlight", alice.AccessToken, nil)
		hl := body["notifications"].([]any)
		if len(hl) != 1 || hl[0].(map[string]any)["event"].(map[string]any)["event_id"] != mention.EventID.String() {
			t.Fatalf("highlights: %v", hl)
		}
		_, body = s.Do(t, "GET", "/_matrix/client/v3/notifications?limit=2", alice.AccessToken, nil)
		next, _ := body["next_token"].(string)
		if len(body["notifications"].([]any)) != 2 || next == "" {
			t.Fatalf("first page: %v", body)
		}
		_, body = s.Do(t, "GET", "/_matrix/client/v3/notifications?limit=2&from="+next, alice.AccessToken, nil)
		if len(body["notifications"].([]any)) != 1 || body["next_token"] != nil {
			t.Fatalf("second page: %v", body)
		}
		st, body := s.Do(t, "GET", "/_matrix/client/v3/notifications?from=garbage", alice.AccessToken, nil)
		prWant(t, "bad from", st, body, 400, "")

		// Carol (not mentioned) is notified of every message but the notice, alice's included.
		// Push runs after the send returns (in batches), so alice's message may be counted
		// a little after bob's.
		var cn, ch float64
		pnEventually(t, "carol's counts 4/0", func() bool {
			cn, ch = pnCounts(t, s, carol.AccessToken, roomID)
			return cn >= 4
		})
		if cn != 4 || ch != 0 {
			t.Fatalf("carol's counts %v/%v, want 4/0", cn, ch)
		}
		if n, h := pnCounts(t, s, alice.AccessToken, roomID); n != 3 || h != 1 {
			t.Fatalf("alice's counts %v/%v, want 3/1", n, h)
		}
		// A threaded receipt clears the thread only; an unthreaded receipt clears the rest.
		if err := alice.SendReceipt(ctx, roomID, threadMsg.EventID, event.ReceiptTypeRead, map[string]any{"thread_id": mention.EventID.String()}); err != nil {
			t.Fatalf("threaded receipt: %v", err)
		}
		pnEventually(t, "thread read", func() bool { n, h := pnCounts(t, s, alice.AccessToken, roomID); return n == 2 && h == 1 })
		if err := alice.SendReceipt(ctx, roomID, mention.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatalf("receipt: %v", err)
		}
		pnEventually(t, "all read", func() bool { n, h := pnCounts(t, s, alice.AccessToken, roomID); return n == 0 && h == 0 })
		_, body = s.Do(t, "GET", "/_matrix/client/v3/notifications", alice.AccessToken, nil)
		for _, n := range body["notifications"].([]any) {
			if n.(map[string]any)["read"] != true {
				t.Fatalf("notification not read after receipt: %v", n)
			}
		}
		// New messages count again; carol's counts were never touched.
		rmSend(t, bob, roomID, "again")
		pnEventually(t, "new unread", func() bool { n, _ := pnCounts(t, s, alice.AccessToken, roomID); return n == 1 })
		if n, _ := pnCounts(t, s, carol.AccessToken, roomID); n != 5 {
			t.Fatalf("carol's count %v, want 5", n)
		}
		_ = http.StatusOK
	})
}
