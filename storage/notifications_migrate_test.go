package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/storage/storagetest"
)

// TestNotificationsKeyMigration upgrades a database whose push_notifications still has
// the shape of migration 0050 (unique per user and event ID): the rows, their order and
// read flags survive 0110-0131 (read flags become receipts, rows become sets of one),
// and a replayed notification is still counted once.
func TestNotificationsKeyMigration(t *testing.T) {
	for _, engine := range storagetest.Engines {
		t.Run(engine, func(t *testing.T) {
			if engine == "postgres" {
				storagetest.RequirePostgres(t)
			}
			ctx := context.Background()
			cfg := config.Default().Database
			cfg.DSN = storagetest.DSN(t, engine)
			dir := t.TempDir()
			open := func() *storage.DB {
				t.Helper()
				db, err := storage.Open(ctx, cfg, dir)
				if err != nil {
					t.Fatal(err)
				}
				return db
			}
			db := open()
			// Back to the table of 0050, with rows written by that version.
			for _, q := range []string{
				`DROP TABLE push_notification_sets`,
				`CREATE TABLE push_notifications (id ` + map[string]string{"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgres": "BIGSERIAL PRIMARY KEY"}[engine] + `,
					user_id TEXT NOT NULL, room_id TEXT NOT NULL, event_id TEXT NOT NULL, stream_pos BIGINT NOT NULL,
					thread_id TEXT NOT NULL DEFAULT '', actions TEXT NOT NULL, highlight BOOLEAN NOT NULL,
					is_read BOOLEAN NOT NULL DEFAULT FALSE, ts BIGINT NOT NULL, UNIQUE (user_id, event_id))`,
				`CREATE INDEX push_notifications_unread ON push_notifications (user_id, is_read, room_id)`,
				`INSERT INTO push_notifications (user_id, room_id, event_id, stream_pos, thread_id, actions, highlight, is_read, ts) VALUES
					('@a:t', '!r:t', '$1', 10, '', '["notify"]', FALSE, TRUE, 1),
					('@a:t', '!r:t', '$2', 11, '$1', '["notify"]', TRUE, FALSE, 2),
					('@a:t', '!s:t', '$3', 12, '', '["notify"]', FALSE, FALSE, 3),
					('@b:t', '!r:t', '$2', 11, '', '["notify"]', FALSE, FALSE, 2)`,
				// The push notification migrations (0110 to 0130) are replayed; later
				// migrations of other areas are not written to run twice.
				`DELETE FROM schema_migrations WHERE version >= 110 AND version < 140`,
			} {
				if _, err := db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			db.Close()
			db = open()
			defer db.Close()
			page, err := storage.NotificationsPage(ctx, db, "@a:t", 0, 10, false)
			if err != nil || len(page) != 3 {
				t.Fatalf("alice's notifications after the upgrade: %+v %v", page, err)
			}
			if page[0].EventID != "$3" || page[1].EventID != "$2" || !page[1].Highlight || page[1].ThreadID != "$1" || !page[2].Read {
				t.Fatalf("rows changed by the upgrade: %+v", page)
			}
			counts, err := storage.UnreadNotificationCounts(ctx, db, "@a:t", nil)
			if err != nil || len(counts) != 2 {
				t.Fatalf("unread counts: %+v %v", counts, err)
			}
			err = db.WithTx(ctx, func(tx *storage.Tx) error {
				return storage.InsertNotifications(ctx, tx, []storage.Notification{
					{UserID: "@a:t", RoomID: "!s:t", EventID: "$3", StreamPos: 12, Actions: []byte(`["notify"]`), TS: 4},
					{UserID: "@a:t", RoomID: "!s:t", EventID: "$4", StreamPos: 13, Actions: []byte(`["notify"]`), TS: 4},
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := storage.TotalUnreadNotifications(ctx, db, "@a:t"); err != nil || n != 3 {
				t.Fatalf("unread after a replayed and a new row: %d %v", n, err)
			}
		})
	}
}
