package main

import (
	"context"
	"fmt"

	"quest/internal/store"
)

func (e environment) migrate(ctx context.Context, args []string) error {
	fs := e.newFlags("migrate", "migrate up|status [--database-url URL] [--dir D]")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "up" && pos[0] != "status") {
		return fmt.Errorf("usage: quest migrate up|status")
	}
	if err := e.resolve(&cfg); err != nil {
		return err
	}
	return store.MigrateURL(ctx, cfg.DatabaseURL, pos[0], e.stdout)
}
