// Package store holds Quest's repositories and domain types, and applies
// the schema migrations.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"quest/migrations"
)

// ErrReplica is returned when migrations are pointed at a standby.
var ErrReplica = errors.New("is a replica (in recovery); migrations run on the primary only — point DATABASE_URL at the leader")

// MigrateURL runs Migrate on the database at url, on a pool of its own.
func MigrateURL(ctx context.Context, url, action string, out io.Writer) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer pool.Close()
	return Migrate(ctx, pool, action, out)
}

// Migrate applies the pending migrations ("up") or lists them ("status")
// on the database behind pool, which must be the primary. It writes one
// line per migration to out.
func Migrate(ctx context.Context, pool *pgxpool.Pool, action string, out io.Writer) error {
	var inRecovery bool
	if err := pool.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	cfg := pool.Config().ConnConfig
	if inRecovery {
		return fmt.Errorf("migrate: %s:%d %w", cfg.Host, cfg.Port, ErrReplica)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	switch action {
	case "up":
		results, err := p.Up(ctx)
		for _, r := range results {
			fmt.Fprintln(out, r)
		}
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		v, err := p.GetDBVersion(ctx)
		if err != nil {
			return fmt.Errorf("migrate up: %w", err)
		}
		fmt.Fprintf(out, "schema at version %d (%d applied now)\n", v, len(results))
		return nil
	case "status":
		statuses, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("migrate status: %w", err)
		}
		for _, s := range statuses {
			applied := "pending"
			if s.State == goose.StateApplied {
				applied = "applied " + s.AppliedAt.Local().Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(out, "%-28s %s\n", s.Source.Path, applied)
		}
		return nil
	default:
		return fmt.Errorf("migrate: unknown action %q; use up or status", action)
	}
}
