package test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/test/harness"
)

func TestRelations(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		room := dirCreate(t, s, at, map[string]any{"preset": "private_chat"})
		msg := func(body string, rel map[string]any) string {
			c := map[string]any{"msgtype": "m.text", "body": body}
			if rel != nil {
				c["m.relates_to"] = rel
			}
			return dirSend(t, s, at, room, "m.room.message", c)
		}
		react := func(target, key string) string {
			return dirSend(t, s, at, room, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": target, "key": key}})
		}
		root := msg("root", nil)
		r1 := react(root, "👍")
		t1 := msg("thread 1", map[string]any{"rel_type": "m.thread", "event_id": root})
		r2 := react(root, "🎉")
		t2 := msg("thread 2", map[string]any{"rel_type": "m.thread", "event_id": root})
		edit := msg("* root", map[string]any{"rel_type": "m.replace", "event_id": root})
		nested := react(t1, "👀") // relates to root only through t1
		unrelated := msg("other", nil)

		rel := func(token, path, query string) (int, map[string]any) {
			return s.Do(t, "GET", dirV1+"/rooms/"+esc(room)+"/relations/"+esc(root)+path+query, token, nil)
		}
		ids := func(body map[string]any) string {
			return strings.Join(dirField(dirChunk(t, body, "chunk"), "event_id"), ",")
		}
		join := func(ids ...string) string { return strings.Join(ids, ",") }

		// All relations, newest first by default; chronological with dir=f.
		status, body := rel(at, "", "")
		if status != 200 || ids(body) != join(edit, t2, r2, t1, r1) || body["next_batch"] != nil || body["recursion_depth"] != nil {
			t.Fatalf("all relations: %d %v", status, body)
		}
		status, body = rel(at, "", "?dir=f")
		if status != 200 || ids(body) != join(r1, t1, r2, t2, edit) {
			t.Fatalf("dir=f: %d %v", status, body)
		}
		first := dirChunk(t, body, "chunk")[0]
		if first["type"] != "m.reaction" || first["sender"] != "@alice:hs1.test" || first["room_id"] != room || first["content"] == nil {
			t.Fatalf("event format: %v", first)
		}
		// Filtered by relation type and event type.
		status, body = rel(at, "/m.annotation", "")
		if status != 200 || ids(body) != join(r2, r1) {
			t.Fatalf("m.annotation: %d %v", status, body)
		}
		status, body = rel(at, "/m.annotation/m.reaction", "")
		if status != 200 || ids(body) != join(r2, r1) {
			t.Fatalf("m.annotation/m.reaction: %d %v", status, body)
		}
		status, body = rel(at, "/m.annotation/m.room.message", "")
		if status != 200 || ids(body) != "" {
			t.Fatalf("m.annotation/m.room.message: %d %v", status, body)
		}
		status, body = rel(at, "/m.thread", "")
		if status != 200 || ids(body) != join(t2, t1) {
			t.Fatalf("m.thread: %d %v", status, body)
		}

		// Pagination in pages of 2, both ways.
		var got []string
		from := ""
		for page := 0; page < 5; page++ {
			status, body = rel(at, "", "?limit=2"+from)
			if status != 200 {
				t.Fatalf("page %d: %d %v", page, status, body)
			}
			got = append(got, dirField(dirChunk(t, body, "chunk"), "event_id")...)
			if page > 0 && body["prev_batch"] == nil {
				t.Fatalf("page %d without prev_batch: %v", page, body)
			}
			next, _ := body["next_batch"].(string)
			if next == "" {
				break
			}
			from = "&from=" + url.QueryEscape(next)
		}
		if strings.Join(got, ",") != join(edit, t2, r2, t1, r1) {
			t.Fatalf("paginated: %v", got)
		}
		status, body = rel(at, "", "?limit=2&dir=f")
		next, _ := body["next_batch"].(string)
		status, body = rel(at, "", "?limit=2&dir=f&from="+url.QueryEscape(next))
		if status != 200 || ids(body) != join(r2, t2) {
			t.Fatalf("dir=f page 2: %d %v", status, body)
		}
		// /sync tokens are accepted too: from now backwards everything, forwards nothing.
		status, body = s.Do(t, "GET", dirV3+"/sync?timeout=0", at, nil)
		syncTok, _ := body["next_batch"].(string)
		if status != 200 || syncTok == "" {
			t.Fatalf("sync: %d %v", status, body)
		}
		status, body = rel(at, "", "?from="+url.QueryEscape(syncTok))
		if status != 200 || ids(body) != join(edit, t2, r2, t1, r1) {
			t.Fatalf("from a sync token: %d %v", status, body)
		}
		status, body = rel(at, "", "?dir=f&from="+url.QueryEscape(syncTok))
		if status != 200 || ids(body) != "" {
			t.Fatalf("forward from a sync token: %d %v", status, body)
		}
		status, body = rel(at, "", "?from=nonsense")
		udExpect(t, "bad from token", status, body, 400, "M_INVALID_PARAM")
		status, body = rel(at, "", "?dir=sideways")
		udExpect(t, "bad dir", status, body, 400, "M_INVALID_PARAM")

		// recurse follows relations of relations.
		status, body = rel(at, "", "?recurse=true")
		if status != 200 || ids(body) != join(nested, edit, t2, r2, t1, r1) || body["recursion_depth"] != 2.0 {
			t.Fatalf("recurse: %d %v", status, body)
		}
		status, body = rel(at, "/m.annotation", "?recurse=true")
		if status != 200 || ids(body) != join(nested, r2, r1) {
			t.Fatalf("recurse m.annotation: %d %v", status, body)
		}

		// Bob is not in the room: the parent is not found for him.
		status, body = rel(bt, "", "")
		udExpect(t, "relations by a non-member", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(room)+"/relations/"+esc("$unknown"), at, nil)
		udExpect(t, "unknown parent", status, body, 404, "M_NOT_FOUND")
		// An event of another room is not found through this room.
		other := dirCreate(t, s, at, nil)
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(other)+"/relations/"+esc(root), at, nil)
		udExpect(t, "parent in another room", status, body, 404, "M_NOT_FOUND")

		// Threads: one thread, with its summary.
		threads := func(token, query string) (int, map[string]any) {
			return s.Do(t, "GET", dirV1+"/rooms/"+esc(room)+"/threads"+query, token, nil)
		}
		status, body = threads(at, "")
		if status != 200 || ids(body) != root {
			t.Fatalf("threads: %d %v", status, body)
		}
		summary, _ := dirChunk(t, body, "chunk")[0]["unsigned"].(map[string]any)["m.relations"].(map[string]any)["m.thread"].(map[string]any)
		latest, _ := summary["latest_event"].(map[string]any)
		if summary["count"] != 2.0 || summary["current_user_participated"] != true || latest["event_id"] != t2 {
			t.Fatalf("thread summary: %v", summary)
		}
		status, body = threads(bt, "")
		udExpect(t, "threads by a non-member", status, body, 403, "M_FORBIDDEN")

		// Bob joins and starts a second thread; the latest thread comes first.
		if status, body := s.Do(t, "POST", dirV3+"/rooms/"+esc(room)+"/invite", at, map[string]any{"user_id": "@bob:hs1.test"}); status != 200 {
			t.Fatalf("invite: %d %v", status, body)
		}
		dirJoin(t, s, bt, room)
		root2 := dirSend(t, s, bt, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob's root"})
		dirSend(t, s, bt, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob's reply",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root2}})
		status, body = threads(at, "")
		if status != 200 || ids(body) != join(root2, root) {
			t.Fatalf("two threads: %d %v", status, body)
		}
		status, body = threads(at, "?include=participated")
		if status != 200 || ids(body) != root {
			t.Fatalf("participated: %d %v", status, body)
		}
		status, body = threads(at, "?limit=1")
		next, _ = body["next_batch"].(string)
		if status != 200 || ids(body) != root2 || next == "" {
			t.Fatalf("threads page 1: %d %v", status, body)
		}
		status, body = threads(at, "?limit=1&from="+url.QueryEscape(next))
		if status != 200 || ids(body) != root {
			t.Fatalf("threads page 2: %d %v", status, body)
		}
		status, body = threads(at, "?include=mine")
		udExpect(t, "bad include", status, body, 400, "M_INVALID_PARAM")

		// timestamp_to_event.
		ts := func(token string, at int64, dir string) (int, map[string]any) {
			return s.Do(t, "GET", fmt.Sprintf("%s/rooms/%s/timestamp_to_event?ts=%d&dir=%s", dirV1, esc(room), at, dir), token, nil)
		}
		status, body = ts(at, 0, "f")
		if status != 200 || body["event_id"] == nil || body["origin_server_ts"] == nil {
			t.Fatalf("timestamp forward from 0: %d %v", status, body)
		}
		future := time.Now().Add(time.Hour).UnixMilli()
		status, body = ts(at, future, "b")
		if status != 200 || body["event_id"] == nil {
			t.Fatalf("timestamp backward from the future: %d %v", status, body)
		}
		status, body = ts(at, future, "f")
		udExpect(t, "nothing after the future", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(room)+"/timestamp_to_event?ts=1", at, nil)
		udExpect(t, "missing dir", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(room)+"/timestamp_to_event?dir=f", at, nil)
		udExpect(t, "missing ts", status, body, 400, "M_MISSING_PARAM")
		carol := udRegister(t, s, "carol")
		status, body = ts(carol.AccessToken, 0, "f")
		udExpect(t, "timestamp by a non-member", status, body, 403, "M_FORBIDDEN")
		_ = unrelated

		// History visibility applies: with "joined", bob does not see what came before his join.
		hidden := dirCreate(t, s, at, map[string]any{"preset": "private_chat", "invite": []string{"@bob:hs1.test"},
			"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}}})
		early := dirSend(t, s, at, hidden, "m.room.message", map[string]any{"msgtype": "m.text", "body": "early"})
		dirSend(t, s, at, hidden, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": early, "key": "x"}})
		dirJoin(t, s, bt, hidden)
		late := dirSend(t, s, at, hidden, "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": early, "key": "y"}})
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(hidden)+"/relations/"+esc(early), bt, nil)
		udExpect(t, "relations of an event from before the join", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", dirV1+"/rooms/"+esc(hidden)+"/relations/"+esc(early), at, nil)
		if status != 200 || len(dirChunk(t, body, "chunk")) != 2 {
			t.Fatalf("alice's relations in the joined-only room: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", fmt.Sprintf("%s/rooms/%s/timestamp_to_event?ts=0&dir=f", dirV1, esc(hidden)), bt, nil)
		if status != 200 || body["event_id"] == early {
			t.Fatalf("bob's timestamp_to_event: %d %v", status, body)
		}
		_ = late
	})
}
