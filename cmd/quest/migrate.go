package main

import (
	"context"

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
	switch {
	case len(pos) == 0:
		return usagef("migrate needs an action: up (apply the migrations) or status (list them)")
	case pos[0] != "up" && pos[0] != "status":
		return usagef("unknown migrate action %q: up or status", pos[0])
	case len(pos) > 1:
		return usagef("migrate %s takes no more arguments, got %q", pos[0], pos[1:])
	}
	if err := e.resolve(&cfg); err != nil {
		return err
	}
	return store.MigrateURL(ctx, cfg.DatabaseURL, pos[0], e.stdout)
}
