package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// dbshell opens psql on one node, as Django's
// `manage.py dbshell --database replica` does.
func (e environment) dbshell(ctx context.Context, args []string) error {
	fs := e.newFlags("dbshell", "dbshell --database NODE [--dir D] [-- psql arguments]")
	node := fs.String("database", "primary", "the node: primary (or leader), replica1, replica2, …")
	dir := fs.String("dir", e.defaultStateDir(), "local cluster state directory")
	var extra []string
	for i, a := range args {
		if a == "--" {
			args, extra = args[:i], args[i+1:]
			break
		}
	}
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("dbshell takes no arguments, got %q (pass psql's after --)", pos)
	}
	cfg, err := e.databaseConfig("", "", *dir)
	if err != nil {
		return err
	}
	url, err := nodeURL(cfg, *node)
	if err != nil {
		return err
	}
	psql, err := exec.LookPath("psql")
	if err != nil {
		return fmt.Errorf("psql is not installed: apt-get install postgresql-client")
	}
	cmd := exec.CommandContext(ctx, psql, append([]string{url}, extra...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, e.stdout, e.stderr
	return cmd.Run()
}

// nodeURL picks a node's URL from the configuration by name.
func nodeURL(cfg config, name string) (string, error) {
	switch {
	case name == "primary" || name == "leader":
		return cfg.DatabaseURL, nil
	case strings.HasPrefix(name, "replica"):
		var n int
		if _, err := fmt.Sscanf(name, "replica%d", &n); err == nil && n >= 1 && n <= len(cfg.ReplicaURLs) && name == fmt.Sprintf("replica%d", n) {
			return cfg.ReplicaURLs[n-1], nil
		}
	}
	names := []string{"primary"}
	for i := range cfg.ReplicaURLs {
		names = append(names, fmt.Sprintf("replica%d", i+1))
	}
	return "", fmt.Errorf("unknown node %q; choose one of %s", name, strings.Join(names, ", "))
}
