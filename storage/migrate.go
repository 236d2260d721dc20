package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema change. Files are named NNNN_name.sql and
// written once for both engines; the few type differences are spelled as
// placeholders that the dialect fills in. A change that cannot be written once
// (full-text search: an FTS4 virtual table on SQLite, tsvector on PostgreSQL) comes
// as two files sharing the number, NNNN_name.sqlite.sql and NNNN_name.postgres.sql,
// each applied only on its engine.
type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(d Dialect) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		base := strings.TrimSuffix(name, ".sql")
		if eng, ok := strings.CutSuffix(base, ".sqlite"); ok {
			if d != SQLite {
				continue
			}
			base = eng
		} else if eng, ok := strings.CutSuffix(base, ".postgres"); ok {
			if d != Postgres {
				continue
			}
			base = eng
		}
		num, rest, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad number: %w", name, err)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share number %d", prev, name, v)
		}
		seen[v] = name
		body, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: rest, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// expand fills the dialect placeholders of a migration.
func (d Dialect) expand(sql string) string {
	var r *strings.Replacer
	if d == Postgres {
		r = strings.NewReplacer(
			"{{SERIAL_PK}}", "BIGSERIAL PRIMARY KEY",
			"{{BLOB}}", "BYTEA",
			"{{WITHOUT_ROWID}}", "",
		)
	} else {
		r = strings.NewReplacer(
			"{{SERIAL_PK}}", "INTEGER PRIMARY KEY AUTOINCREMENT",
			"{{BLOB}}", "BLOB",
			"{{WITHOUT_ROWID}}", "WITHOUT ROWID",
		)
	}
	return r.Replace(sql)
}

// migrationLockID is the PostgreSQL advisory lock that serialises migrations
// when several Myelin processes start against one database.
const migrationLockID = 0x6d79656c696e // "myelin"

func (db *DB) migrate(ctx context.Context) error {
	migs, err := loadMigrations(db.dialect)
	if err != nil {
		return err
	}
	if db.dialect == Postgres {
		conn, err := db.write.Conn(ctx)
		if err != nil {
			return fmt.Errorf("migrations: %w", err)
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockID); err != nil {
			return fmt.Errorf("migrations: take lock: %w", err)
		}
		defer conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLockID) //nolint:errcheck
	}
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrations: create table: %w", err)
	}
	applied := map[int]bool{}
	rows, err := db.write.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return fmt.Errorf("migrations: list applied: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range migs {
		if applied[m.version] {
			continue
		}
		err := db.WithTx(ctx, func(tx *Tx) error {
			if _, err := tx.ExecContext(ctx, db.dialect.expand(m.sql)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)", m.version, m.name, NowMS())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}
