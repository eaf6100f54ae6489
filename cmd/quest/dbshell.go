package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

// dbshell opens psql on one node, as Django's
// `manage.py dbshell --database replica` does.
func (e environment) dbshell(ctx context.Context, args []string) error {
	fs := e.newFlags("dbshell", "dbshell [--database NODE] [--dir D] [-- psql arguments]")
	node := fs.String("database", "primary", "the node: primary (or leader), replica (the first replica), replica1, replica2, …")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag|replicasFlag|pgBinFlag)
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
		return usagef("dbshell takes no arguments, got %q (pass psql's after --)", pos)
	}
	if err := e.resolve(&cfg); err != nil {
		return err
	}
	name, url, err := nodeURL(cfg, *node)
	if err != nil {
		return err
	}
	if name != *node {
		fmt.Fprintf(e.stderr, "dbshell: %s is %s\n", *node, name)
	}
	psql, err := findPsql(cfg.PGBin)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, psql, append([]string{url}, extra...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, e.stdout, e.stderr
	return cmd.Run()
}

// nodeURL picks a node's URL from the configuration by the name the
// router gives it (dbrouter.NodeName): "primary" (or "leader"), and each
// replica's application_name or host:port/dbname. "replica", the name the
// article's Django settings give the replica, is the first replica unless
// one is called that: always the same one, so that "pause replica1, then
// look with dbshell --database replica" works as written. It returns the
// node's own name with its URL.
func nodeURL(cfg config, name string) (string, string, error) {
	if name == "primary" || name == "leader" {
		return "primary", cfg.DatabaseURL, nil
	}
	names := []string{"primary"}
	for _, u := range cfg.ReplicaURLs {
		n, err := dbrouter.NodeName(u)
		if err != nil {
			return "", "", err
		}
		if n == name {
			return n, u, nil
		}
		names = append(names, n)
	}
	if name == "replica" {
		if len(cfg.ReplicaURLs) == 0 {
			return "", "", errors.New("there is no replica: set REPLICA_URLS, or use the local cluster (quest cluster up)")
		}
		return names[1], cfg.ReplicaURLs[0], nil
	}
	return "", "", fmt.Errorf("unknown node %q; choose one of %s (or replica, the first replica)", name, strings.Join(names, ", "))
}

// findPsql finds psql: in the PostgreSQL bin directory when one is given,
// else on PATH, else beside the server programs (Homebrew's postgresql@15
// is not linked onto PATH).
func findPsql(pgBin string) (string, error) {
	dir := pgBin
	if dir == "" {
		if p, err := exec.LookPath("psql"); err == nil {
			return p, nil
		}
		dir, _ = cluster.FindBinDir(cluster.Search{})
	}
	if dir != "" {
		if p := filepath.Join(dir, "psql"); isFile(p) {
			return p, nil
		}
	}
	if pgBin != "" {
		return "", fmt.Errorf("no psql in %s (--pg-bin or QUEST_PG_BIN)", pgBin)
	}
	return "", errors.New("psql is not installed: on Debian/Ubuntu apt-get install postgresql-client; on macOS brew install postgresql@15 (or Postgres.app)")
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
