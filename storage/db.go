// Package storage holds Myelin's SQL schema, migrations and queries. One SQL
// implementation serves SQLite and PostgreSQL; the few differences live in Dialect.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/mattn/go-sqlite3"

	"github.com/myelin-chat/myelin/config"
)

// Dialect names the SQL engine behind a DB.
type Dialect int

// The supported engines.
const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// Querier is what both *DB and *Tx offer for running statements, so a query
// helper can be written once and used inside or outside a transaction.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// DB is the database handle shared by every component.
//
// With SQLite, writes go through a pool of exactly one connection so writers
// queue in Go instead of spinning on SQLITE_BUSY, while reads use a separate
// pool and never block the writer (WAL mode). With PostgreSQL both are one pool.
type DB struct {
	dialect Dialect
	read    *sql.DB
	write   *sql.DB
}

// Open connects to the configured database and runs pending migrations.
// A relative SQLite path is resolved against dataDir.
func Open(ctx context.Context, cfg config.Database, dataDir string) (*DB, error) {
	db, err := connect(cfg, dataDir)
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func connect(cfg config.Database, dataDir string) (*DB, error) {
	if cfg.IsPostgres() {
		pool, err := sql.Open("pgx", cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		pool.SetMaxOpenConns(cfg.MaxOpenConns)
		pool.SetMaxIdleConns(cfg.MaxOpenConns)
		pool.SetConnMaxIdleTime(5 * time.Minute)
		if err := pool.Ping(); err != nil {
			pool.Close()
			return nil, fmt.Errorf("connect to postgres: %w", err)
		}
		return &DB{dialect: Postgres, read: pool, write: pool}, nil
	}
	path := strings.TrimPrefix(cfg.DSN, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dataDir, path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	sync := "FULL"
	if cfg.SQLiteSynchronous == "normal" {
		sync = "NORMAL"
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_journal_mode=WAL&_busy_timeout=10000&_foreign_keys=on&_synchronous=" + sync +
		// Keep prepared statements per connection: preparing costs more than running
		// most of our small statements, and the same few run over and over.
		"&_stmt_cache_size=" + strconv.Itoa(sqliteStmtCache)
	write, err := sql.Open("sqlite3", base+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	if err := write.Ping(); err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	read, err := sql.Open("sqlite3", base)
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	read.SetMaxOpenConns(cfg.MaxOpenConns)
	read.SetMaxIdleConns(cfg.MaxOpenConns)
	return &DB{dialect: SQLite, read: read, write: write}, nil
}

// sqliteStmtCache is how many prepared statements each SQLite connection keeps.
const sqliteStmtCache = 256

// DialectOf returns the engine behind q when q can tell (a *DB, a *Tx, or a wrapper
// with a Dialect method); ok is false otherwise.
func DialectOf(q Querier) (d Dialect, ok bool) {
	if x, isD := q.(interface{ Dialect() Dialect }); isD {
		return x.Dialect(), true
	}
	return 0, false
}

// Dialect returns the engine behind the DB.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close closes every connection.
func (db *DB) Close() error {
	err := db.write.Close()
	if db.read != db.write {
		if rerr := db.read.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.read.PingContext(ctx) }

// ExecContext runs a single write statement outside a transaction.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.write.ExecContext(ctx, query, args...)
}

// QueryContext runs a read query.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a read query returning at most one row.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, query, args...)
}

// Tx is a write transaction.
type Tx struct {
	*sql.Tx
	dialect Dialect
}

// Dialect returns the engine behind the transaction.
func (tx *Tx) Dialect() Dialect { return tx.dialect }

// WithTx runs fn in a write transaction, committing when fn returns nil and
// rolling back otherwise, so a failed request leaves nothing half-written.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	sqlTx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{Tx: sqlTx, dialect: db.dialect}
	if err := fn(tx); err != nil {
		_ = sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique or primary key constraint failure.
func IsUniqueViolation(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.ExtendedCode == sqlite3.ErrConstraintUnique || se.ExtendedCode == sqlite3.ErrConstraintPrimaryKey
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

// NowMS returns the current time in milliseconds since the Unix epoch, as stored in *_ts columns.
func NowMS() int64 { return time.Now().UnixMilli() }
