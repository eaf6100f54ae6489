package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"quest/internal/dbrouter"
)

// dbshell opens psql on one node, as Django's
// `manage.py dbshell --database replica` does.
func (e environment) dbshell(ctx context.Context, args []string) error {
	fs := e.newFlags("dbshell", "dbshell --database NODE [--dir D] [-- psql arguments]")
	node := fs.String("database", "primary", "the node: primary (or leader), replica1, replica2, …")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag|replicasFlag)
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
	if err := e.resolve(&cfg); err != nil {
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

// nodeURL picks a node's URL from the configuration by the name the
// router gives it (dbrouter.NodeName): "primary" (or "leader"), and each
// replica's application_name or host:port/dbname.
func nodeURL(cfg config, name string) (string, error) {
	if name == "primary" || name == "leader" {
		return cfg.DatabaseURL, nil
	}
	names := []string{"primary"}
	for _, u := range cfg.ReplicaURLs {
		n, err := dbrouter.NodeName(u)
		if err != nil {
			return "", err
		}
		if n == name {
			return u, nil
		}
		names = append(names, n)
	}
	return "", fmt.Errorf("unknown node %q; choose one of %s", name, strings.Join(names, ", "))
}
