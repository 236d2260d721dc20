package test

import (
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// benchUsers registers n users and returns their access tokens.
func benchUsers(b *testing.B, c *http.Client, base string, prefix string, n int) []string {
	b.Helper()
	tokens := make([]string, n)
	for i := range tokens {
		reg := benchDo(b, c, "POST", base+"/_matrix/client/v3/register", "", map[string]any{
			"username": fmt.Sprintf("%s%d", prefix, i), "password": "bench-password", "auth": map[string]any{"type": "m.login.dummy"},
		})
		tokens[i] = reg["access_token"].(string)
	}
	return tokens
}

func benchClient(hs interface{ Client() *http.Client }) *http.Client {
	c := hs.Client()
	if tr, ok := c.Transport.(*http.Transport); ok {
		tr = tr.Clone()
		tr.MaxIdleConnsPerHost = 128
		c = &http.Client{Transport: tr}
	}
	return c
}

func benchRoomPath(base, roomID, rest string) string {
	return base + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + rest
}

// benchSendParallel sends b.N messages from 16 concurrent clients, each message into
// rooms[i % len(rooms)] by the i-th message's user, and reports messages per second.
func benchSendParallel(b *testing.B, c *http.Client, base string, tokens []string, roomOf func(user, i int) string) {
	var next, seq atomic.Int64
	b.SetParallelism(8) // 8 x GOMAXPROCS goroutines
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		user := int(next.Add(1)-1) % len(tokens)
		for pb.Next() {
			i := seq.Add(1)
			benchDo(b, c, "PUT", benchRoomPath(base, roomOf(user, int(i)), fmt.Sprintf("/send/m.room.message/b%d", i)), tokens[user],
				map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)})
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRoomsSendOneRoom: concurrent clients sending messages into one room over HTTP
// (SQLite, in-process server).
func BenchmarkRoomsSendOneRoom(b *testing.B) {
	hs := benchServer(b)
	c := benchClient(hs)
	tokens := benchUsers(b, c, hs.URL, "one", 16)
	room := benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/createRoom", tokens[0], map[string]any{"preset": "public_chat"})["room_id"].(string)
	for _, tok := range tokens[1:] {
		benchDo(b, c, "POST", benchRoomPath(hs.URL, room, "/join"), tok, map[string]any{})
	}
	benchSendParallel(b, c, hs.URL, tokens, func(int, int) string { return room })
}

// BenchmarkRoomsSend100Rooms: concurrent clients sending messages spread over 100 rooms.
func BenchmarkRoomsSend100Rooms(b *testing.B) {
	hs := benchServer(b)
	c := benchClient(hs)
	tokens := benchUsers(b, c, hs.URL, "many", 16)
	rooms := make([]string, 100)
	for i := range rooms {
		rooms[i] = benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/createRoom", tokens[0], map[string]any{"preset": "public_chat"})["room_id"].(string)
		for _, tok := range tokens[1:] {
			benchDo(b, c, "POST", benchRoomPath(hs.URL, rooms[i], "/join"), tok, map[string]any{})
		}
	}
	benchSendParallel(b, c, hs.URL, tokens, func(_, i int) string { return rooms[i%len(rooms)] })
}

// BenchmarkRoomsMessagesPage: GET /messages?dir=b&limit=100 in a room of 1,000 messages.
func BenchmarkRoomsMessagesPage(b *testing.B) {
	hs := benchServer(b)
	c := benchClient(hs)
	tokens := benchUsers(b, c, hs.URL, "page", 1)
	room := benchDo(b, c, "POST", hs.URL+"/_matrix/client/v3/createRoom", tokens[0], map[string]any{"preset": "public_chat"})["room_id"].(string)
	for i := 0; i < 1000; i++ {
		benchDo(b, c, "PUT", benchRoomPath(hs.URL, room, fmt.Sprintf("/send/m.room.message/p%d", i)), tokens[0],
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)})
	}
	u := benchRoomPath(hs.URL, room, "/messages?dir=b&limit=100")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp := benchDo(b, c, "GET", u, tokens[0], nil)
		if n := len(resp["chunk"].([]any)); n != 100 {
			b.Fatalf("page of %d events", n)
		}
	}
}
