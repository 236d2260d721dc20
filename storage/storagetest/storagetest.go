// Package storagetest runs storage tests against every supported database:
// a temporary SQLite file and a fresh schema in a PostgreSQL server.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver

	"github.com/myelin-chat/myelin/config"
	"github.com/myelin-chat/myelin/storage"
)

// DefaultPostgresURL is used when MYELIN_TEST_POSTGRES is unset.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// PostgresURL returns the base URL of the test PostgreSQL server.
func PostgresURL() string {
	if v := os.Getenv("MYELIN_TEST_POSTGRES"); v != "" {
		return v
	}
	return DefaultPostgresURL
}

var (
	pgOnce      sync.Once
	pgAvailable error
)

// PostgresAvailable reports nil when the test PostgreSQL server answers.
func PostgresAvailable() error {
	pgOnce.Do(func() {
		db, err := sql.Open("pgx", PostgresURL())
		if err != nil {
			pgAvailable = err
			return
		}
		defer db.Close()
		pgAvailable = db.Ping()
	})
	return pgAvailable
}

// RequirePostgres skips the test (loudly) when PostgreSQL is unreachable, unless
// MYELIN_REQUIRE_POSTGRES is set, in which case it fails.
func RequirePostgres(t testing.TB) {
	t.Helper()
	if err := PostgresAvailable(); err != nil {
		if os.Getenv("MYELIN_REQUIRE_POSTGRES") != "" {
			t.Fatalf("PostgreSQL required but unreachable at %s: %v", PostgresURL(), err)
		}
		t.Skipf("SKIPPING POSTGRESQL: no server reachable at %s (%v)", PostgresURL(), err)
	}
}

// NewPostgresDSN creates an empty schema in the test PostgreSQL server and returns a
// DSN whose search_path points at it. The schema is dropped when the test ends.
func NewPostgresDSN(t testing.TB) string {
	t.Helper()
	RequirePostgres(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "myelin_test_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", PostgresURL())
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		_, _ = admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	u, err := url.Parse(PostgresURL())
	if err != nil {
		t.Fatalf("parse postgres url: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Engines lists the database engines tests run on.
var Engines = []string{"sqlite", "postgres"}

// DSN returns a fresh, empty database for the engine: a SQLite file in a temp dir or a PostgreSQL schema.
func DSN(t testing.TB, engine string) string {
	t.Helper()
	switch engine {
	case "sqlite":
		return t.TempDir() + "/myelin.db"
	case "postgres":
		return NewPostgresDSN(t)
	}
	panic(fmt.Sprintf("unknown engine %q", engine))
}

// ForEachDB runs fn as a subtest once per engine with a freshly migrated database.
func ForEachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	for _, engine := range Engines {
		t.Run(engine, func(t *testing.T) {
			fn(t, Open(t, engine))
		})
	}
}

// Open returns a freshly migrated database for the engine, closed at the end of the test.
func Open(t testing.TB, engine string) *storage.DB {
	t.Helper()
	cfg := config.Default().Database
	cfg.DSN = DSN(t, engine)
	cfg.SQLiteSynchronous = "normal"
	db, err := storage.Open(context.Background(), cfg, t.TempDir())
	if err != nil {
		t.Fatalf("open %s database: %v", engine, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
