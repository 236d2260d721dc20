package test

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/test/harness"
)

// Helpers shared by the directory, upgrade, tags, hierarchy, relations and user
// directory tests (prefix dir).

const dirV3 = "/_matrix/client/v3"
const dirV1 = "/_matrix/client/v1"

// dirCreate creates a room with a raw createRoom body and returns its ID.
func dirCreate(t *testing.T, s *harness.Server, token string, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	status, resp := s.Do(t, "POST", dirV3+"/createRoom", token, body)
	if status != 200 {
		t.Fatalf("createRoom %v: %d %v", body, status, resp)
	}
	return resp["room_id"].(string)
}

// dirState sends a state event and returns the status and body.
func dirState(t *testing.T, s *harness.Server, token, roomID, evType, stateKey string, content any) (int, map[string]any) {
	t.Helper()
	return s.Do(t, "PUT", dirV3+"/rooms/"+esc(roomID)+"/state/"+esc(evType)+"/"+esc(stateKey), token, content)
}

// dirMustState sends a state event that must succeed and returns its ID.
func dirMustState(t *testing.T, s *harness.Server, token, roomID, evType, stateKey string, content any) string {
	t.Helper()
	status, body := dirState(t, s, token, roomID, evType, stateKey, content)
	if status != 200 {
		t.Fatalf("state %s/%s in %s: %d %v", evType, stateKey, roomID, status, body)
	}
	return body["event_id"].(string)
}

var dirTxn int

// dirSend sends a message event and returns its ID.
func dirSend(t *testing.T, s *harness.Server, token, roomID, evType string, content any) string {
	t.Helper()
	dirTxn++
	status, body := s.Do(t, "PUT", fmt.Sprintf("%s/rooms/%s/send/%s/dirtxn%d", dirV3, esc(roomID), esc(evType), dirTxn), token, content)
	if status != 200 {
		t.Fatalf("send %s in %s: %d %v", evType, roomID, status, body)
	}
	return body["event_id"].(string)
}

// dirJoin joins a room (by ID or alias) and fails the test on error.
func dirJoin(t *testing.T, s *harness.Server, token, roomIDOrAlias string) {
	t.Helper()
	if status, body := s.Do(t, "POST", dirV3+"/join/"+esc(roomIDOrAlias), token, map[string]any{}); status != 200 {
		t.Fatalf("join %s: %d %v", roomIDOrAlias, status, body)
	}
}

// dirAdmin creates a server admin with `myelin create-account --admin` and logs in.
func dirAdmin(t *testing.T, s *harness.Server, localpart string) *mautrix.Client {
	t.Helper()
	out, err := exec.Command(harness.Binary(t), "create-account", "--config", s.ConfigPath,
		"--user", localpart, "--password", udPassword, "--admin").CombinedOutput()
	if err != nil {
		t.Fatalf("create-account --admin: %v\n%s", err, out)
	}
	return udLogin(t, s, localpart, "admin device")
}

// dirStrings returns the string values of a JSON array field.
func dirStrings(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, x := range arr {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// dirChunk returns a JSON array field as objects.
func dirChunk(t *testing.T, body map[string]any, field string) []map[string]any {
	t.Helper()
	arr, ok := body[field].([]any)
	if !ok {
		t.Fatalf("%s is not an array: %v", field, body)
	}
	out := make([]map[string]any, 0, len(arr))
	for _, x := range arr {
		out = append(out, x.(map[string]any))
	}
	return out
}

func dirField(objs []map[string]any, field string) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		s, _ := o[field].(string)
		out = append(out, s)
	}
	return out
}

func TestDirectoryAliases(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		room := dirCreate(t, s, at, map[string]any{"preset": "public_chat"})
		other := dirCreate(t, s, at, map[string]any{"preset": "private_chat"})
		aliasPath := func(a string) string { return dirV3 + "/directory/room/" + url.PathEscape(a) }

		// Create, then the same alias again: 409 M_UNKNOWN.
		status, body := s.Do(t, "PUT", aliasPath("#general:hs1.test"), at, map[string]any{"room_id": room})
		udExpect(t, "create alias", status, body, 200, "")
		status, body = s.Do(t, "PUT", aliasPath("#general:hs1.test"), at, map[string]any{"room_id": other})
		udExpect(t, "duplicate alias", status, body, 409, "M_UNKNOWN")
		// Aliases of another server, bad grammar, missing room_id, unknown room.
		status, body = s.Do(t, "PUT", aliasPath("#general:other.test"), at, map[string]any{"room_id": room})
		udExpect(t, "alias of another server", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", aliasPath("general"), at, map[string]any{"room_id": room})
		udExpect(t, "alias without #", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", aliasPath("#nocolon"), at, map[string]any{"room_id": room})
		udExpect(t, "alias without server", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "PUT", aliasPath("#x:hs1.test"), at, map[string]any{})
		udExpect(t, "missing room_id", status, body, 400, "M_MISSING_PARAM")
		status, body = s.Do(t, "PUT", aliasPath("#x:hs1.test"), at, map[string]any{"room_id": "!unknown:hs1.test"})
		udExpect(t, "unknown room", status, body, 404, "M_NOT_FOUND")
		// Bob is not in the private room: he cannot name it.
		status, body = s.Do(t, "PUT", aliasPath("#bobs:hs1.test"), bt, map[string]any{"room_id": other})
		udExpect(t, "alias for a room the user is not in", status, body, 403, "M_FORBIDDEN")

		// Resolve with mautrix and raw: room ID and our server.
		res, err := bob.ResolveAlias(ctx, "#general:hs1.test")
		if err != nil || res.RoomID.String() != room || len(res.Servers) == 0 || res.Servers[0] != "hs1.test" {
			t.Fatalf("resolve: %+v %v", res, err)
		}
		status, body = s.Do(t, "GET", aliasPath("#missing:hs1.test"), bt, nil)
		udExpect(t, "unknown alias", status, body, 404, "M_NOT_FOUND")
		status, body = s.Do(t, "GET", aliasPath("bad"), bt, nil)
		udExpect(t, "resolve a malformed alias", status, body, 400, "M_INVALID_PARAM")

		// Local aliases of a room: members only.
		status, body = s.Do(t, "PUT", aliasPath("#second:hs1.test"), at, map[string]any{"room_id": room})
		udExpect(t, "second alias", status, body, 200, "")
		status, body = s.Do(t, "GET", dirV3+"/rooms/"+esc(room)+"/aliases", at, nil)
		if got := dirStrings(body["aliases"]); status != 200 || strings.Join(got, ",") != "#general:hs1.test,#second:hs1.test" {
			t.Fatalf("room aliases: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/rooms/"+esc(room)+"/aliases", bt, nil)
		udExpect(t, "aliases by a non-member", status, body, 403, "M_FORBIDDEN")

		// Bob joins; as a member with power 0 he still cannot delete aliases.
		dirJoin(t, s, bt, room)
		status, body = s.Do(t, "GET", dirV3+"/rooms/"+esc(room)+"/aliases", bt, nil)
		udExpect(t, "aliases by a member", status, body, 200, "")
		status, body = s.Do(t, "DELETE", aliasPath("#second:hs1.test"), bt, nil)
		udExpect(t, "delete by a non-admin", status, body, 403, "M_FORBIDDEN")
		// Bob's own alias he may delete; the room admin may delete any.
		status, body = s.Do(t, "PUT", aliasPath("#bobs:hs1.test"), bt, map[string]any{"room_id": room})
		udExpect(t, "bob's alias", status, body, 200, "")
		status, body = s.Do(t, "DELETE", aliasPath("#bobs:hs1.test"), bt, nil)
		udExpect(t, "creator deletes", status, body, 200, "")
		status, body = s.Do(t, "PUT", aliasPath("#bobs2:hs1.test"), bt, map[string]any{"room_id": room})
		udExpect(t, "bob's second alias", status, body, 200, "")
		status, body = s.Do(t, "DELETE", aliasPath("#bobs2:hs1.test"), at, nil)
		udExpect(t, "room admin deletes", status, body, 200, "")
		status, body = s.Do(t, "DELETE", aliasPath("#bobs2:hs1.test"), at, nil)
		udExpect(t, "delete twice", status, body, 404, "M_NOT_FOUND")
		// A server admin outside the room may delete.
		erin := dirAdmin(t, s, "erin")
		status, body = s.Do(t, "DELETE", aliasPath("#second:hs1.test"), erin.AccessToken, nil)
		udExpect(t, "server admin deletes", status, body, 200, "")
		status, body = s.Do(t, "GET", aliasPath("#second:hs1.test"), bt, nil)
		udExpect(t, "deleted alias", status, body, 404, "M_NOT_FOUND")

		// Aliases survive a restart.
		s.Restart()
		res, err = bob.ResolveAlias(ctx, "#general:hs1.test")
		if err != nil || res.RoomID.String() != room {
			t.Fatalf("resolve after restart: %+v %v", res, err)
		}
	})
}

// TestDirectoryCanonicalAlias: m.room.canonical_alias may only name aliases that point
// to the room.
func TestDirectoryCanonicalAlias(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		at := udRegister(t, s, "alice").AccessToken
		room := dirCreate(t, s, at, nil)
		other := dirCreate(t, s, at, nil)
		for a, r := range map[string]string{"#mine:hs1.test": room, "#alt:hs1.test": room, "#elsewhere:hs1.test": other} {
			if status, body := s.Do(t, "PUT", dirV3+"/directory/room/"+url.PathEscape(a), at, map[string]any{"room_id": r}); status != 200 {
				t.Fatalf("alias %s: %d %v", a, status, body)
			}
		}
		dirMustState(t, s, at, room, "m.room.canonical_alias", "", map[string]any{"alias": "#mine:hs1.test", "alt_aliases": []string{"#alt:hs1.test"}})
		for what, content := range map[string]map[string]any{
			"unknown alias":           {"alias": "#nope:hs1.test"},
			"alias of another room":   {"alias": "#elsewhere:hs1.test"},
			"unknown alt alias":       {"alias": "#mine:hs1.test", "alt_aliases": []string{"#nope:hs1.test"}},
			"alias on another server": {"alias": "#mine:other.test"},
		} {
			status, body := dirState(t, s, at, room, "m.room.canonical_alias", "", content)
			udExpect(t, what, status, body, 400, "M_BAD_ALIAS")
		}
		status, body := dirState(t, s, at, room, "m.room.canonical_alias", "", map[string]any{"alias": "not an alias"})
		if status != 400 {
			t.Fatalf("malformed alias: %d %v", status, body)
		}
		// Deleting an alias takes it out of the canonical alias event.
		if status, body := s.Do(t, "DELETE", dirV3+"/directory/room/"+url.PathEscape("#alt:hs1.test"), at, nil); status != 200 {
			t.Fatalf("delete alt alias: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/rooms/"+esc(room)+"/state/m.room.canonical_alias/", at, nil)
		if status != 200 || body["alias"] != "#mine:hs1.test" || body["alt_aliases"] != nil {
			t.Fatalf("canonical alias after deleting the alt alias: %d %v", status, body)
		}
		if status, body := s.Do(t, "DELETE", dirV3+"/directory/room/"+url.PathEscape("#mine:hs1.test"), at, nil); status != 200 {
			t.Fatalf("delete alias: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/rooms/"+esc(room)+"/state/m.room.canonical_alias/", at, nil)
		if status != 200 || body["alias"] != nil {
			t.Fatalf("canonical alias after deleting the alias: %d %v", status, body)
		}
		// Clearing the canonical alias is fine.
		dirMustState(t, s, at, room, "m.room.canonical_alias", "", map[string]any{})
	})
}

func TestDirectoryPublicRooms(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		bob := udRegister(t, s, "bob")
		at, bt := alice.AccessToken, bob.AccessToken
		listPath := func(r string) string { return dirV3 + "/directory/list/room/" + esc(r) }

		bravo := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "Bravo", "topic": "all about b"})
		charlie := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "Charlie"})
		space := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "Delta space", "creation_content": map[string]any{"type": "m.space"}})
		hidden := dirCreate(t, s, at, map[string]any{"preset": "public_chat", "name": "Hidden bravo"})
		dirJoin(t, s, bt, charlie)

		// Visibility: private by default; bob (not in the room) cannot publish it.
		status, body := s.Do(t, "GET", listPath(bravo), "", nil)
		if status != 200 || body["visibility"] != "private" {
			t.Fatalf("initial visibility: %d %v", status, body)
		}
		status, body = s.Do(t, "PUT", listPath(bravo), bt, map[string]any{"visibility": "public"})
		udExpect(t, "publish by a non-member", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", listPath(charlie), bt, map[string]any{"visibility": "public"})
		udExpect(t, "publish by a member without power", status, body, 403, "M_FORBIDDEN")
		status, body = s.Do(t, "PUT", listPath(bravo), at, map[string]any{"visibility": "secret"})
		udExpect(t, "bad visibility", status, body, 400, "M_INVALID_PARAM")
		status, body = s.Do(t, "GET", listPath("!unknown:hs1.test"), "", nil)
		udExpect(t, "visibility of an unknown room", status, body, 404, "M_NOT_FOUND")
		for _, r := range []string{bravo, charlie, space} {
			status, body = s.Do(t, "PUT", listPath(r), at, map[string]any{"visibility": "public"})
			udExpect(t, "publish", status, body, 200, "")
		}
		status, body = s.Do(t, "GET", listPath(bravo), "", nil)
		if status != 200 || body["visibility"] != "public" {
			t.Fatalf("visibility after publishing: %d %v", status, body)
		}
		_ = hidden

		// The whole list, unauthenticated: charlie (2 members) first.
		status, body = s.Do(t, "GET", dirV3+"/publicRooms", "", nil)
		if status != 200 || body["total_room_count_estimate"] != 3.0 {
			t.Fatalf("publicRooms: %d %v", status, body)
		}
		chunk := dirChunk(t, body, "chunk")
		if ids := dirField(chunk, "room_id"); len(ids) != 3 || ids[0] != charlie {
			t.Fatalf("order: %v", ids)
		}
		var b map[string]any
		for _, c := range chunk {
			if c["room_id"] == bravo {
				b = c
			}
		}
		if b == nil || b["name"] != "Bravo" || b["topic"] != "all about b" || b["num_joined_members"] != 1.0 ||
			b["join_rule"] != "public" || b["world_readable"] != false || b["guest_can_join"] != false {
			t.Fatalf("bravo entry: %v", b)
		}
		if chunk[0]["num_joined_members"] != 2.0 {
			t.Fatalf("charlie entry: %v", chunk[0])
		}

		// Pagination: one at a time, forward then back.
		status, body = s.Do(t, "GET", dirV3+"/publicRooms?limit=1", "", nil)
		next, _ := body["next_batch"].(string)
		if status != 200 || len(dirChunk(t, body, "chunk")) != 1 || next == "" || body["prev_batch"] != nil {
			t.Fatalf("page 1: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/publicRooms?limit=1&since="+url.QueryEscape(next), "", nil)
		page2 := dirChunk(t, body, "chunk")
		prev, _ := body["prev_batch"].(string)
		if status != 200 || len(page2) != 1 || page2[0]["room_id"] == charlie || prev == "" || body["next_batch"] == nil {
			t.Fatalf("page 2: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", dirV3+"/publicRooms", at, map[string]any{"limit": 1, "since": prev})
		if status != 200 || dirChunk(t, body, "chunk")[0]["room_id"] != charlie {
			t.Fatalf("back to page 1: %d %v", status, body)
		}
		status, body = s.Do(t, "GET", dirV3+"/publicRooms?since=garbage", "", nil)
		udExpect(t, "bad since token", status, body, 400, "M_INVALID_PARAM")

		// Search and room types.
		status, body = s.Do(t, "POST", dirV3+"/publicRooms", at, map[string]any{"filter": map[string]any{"generic_search_term": "BRAV"}})
		if ids := dirField(dirChunk(t, body, "chunk"), "room_id"); status != 200 || len(ids) != 1 || ids[0] != bravo || body["total_room_count_estimate"] != 1.0 {
			t.Fatalf("search: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", dirV3+"/publicRooms", at, map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})
		if ids := dirField(dirChunk(t, body, "chunk"), "room_id"); status != 200 || len(ids) != 1 || ids[0] != space || dirChunk(t, body, "chunk")[0]["room_type"] != "m.space" {
			t.Fatalf("room_types m.space: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", dirV3+"/publicRooms", at, map[string]any{"filter": map[string]any{"room_types": []any{nil}}})
		if ids := dirField(dirChunk(t, body, "chunk"), "room_id"); status != 200 || len(ids) != 2 {
			t.Fatalf("room_types null: %d %v", status, body)
		}
		status, body = s.Do(t, "POST", dirV3+"/publicRooms", "", map[string]any{})
		udExpect(t, "POST without a token", status, body, 401, "M_MISSING_TOKEN")

		// Unpublishing removes the room.
		status, body = s.Do(t, "PUT", listPath(bravo), at, map[string]any{"visibility": "private"})
		udExpect(t, "unpublish", status, body, 200, "")
		status, body = s.Do(t, "GET", dirV3+"/publicRooms", "", nil)
		if ids := dirField(dirChunk(t, body, "chunk"), "room_id"); status != 200 || len(ids) != 2 || strings.Contains(strings.Join(ids, ","), bravo) {
			t.Fatalf("after unpublishing: %d %v", status, body)
		}

		// A server admin may publish any room.
		erin := dirAdmin(t, s, "erin")
		status, body = s.Do(t, "PUT", listPath(hidden), erin.AccessToken, map[string]any{"visibility": "public"})
		udExpect(t, "admin publishes", status, body, 200, "")
	})
}

// TestDirectoryCreateRoomPublished: createRoom with visibility public lists the room,
// room_alias_name creates the alias (the createRoom handler calls the directory) and
// /join accepts the alias.
func TestDirectoryCreateRoomPublished(t *testing.T) {
	harness.ForEachEngine(t, func(t *testing.T, engine string) {
		ctx := context.Background()
		s := harness.Start(t, harness.Options{Engine: engine})
		alice := udRegister(t, s, "alice")
		room := dirCreate(t, s, alice.AccessToken, map[string]any{"visibility": "public", "name": "Town square", "room_alias_name": "town"})
		status, body := s.Do(t, "GET", dirV3+"/publicRooms", "", nil)
		chunk := dirChunk(t, body, "chunk")
		if status != 200 || len(chunk) != 1 || chunk[0]["room_id"] != room || chunk[0]["canonical_alias"] != "#town:hs1.test" {
			t.Fatalf("publicRooms: %d %v", status, body)
		}
		res, err := alice.ResolveAlias(ctx, id.RoomAlias("#town:hs1.test"))
		if err != nil || res.RoomID.String() != room {
			t.Fatalf("resolve room_alias_name: %+v %v", res, err)
		}
		status, body = s.Do(t, "POST", dirV3+"/createRoom", alice.AccessToken, map[string]any{"room_alias_name": "town"})
		udExpect(t, "room_alias_name taken", status, body, 400, "M_ROOM_IN_USE")
		bob := udRegister(t, s, "bob")
		dirJoin(t, s, bob.AccessToken, "#town:hs1.test")
		status, body = s.Do(t, "POST", dirV3+"/join/"+url.PathEscape("#nowhere:hs1.test"), bob.AccessToken, map[string]any{})
		udExpect(t, "join an unknown alias", status, body, 404, "M_NOT_FOUND")
	})
}
