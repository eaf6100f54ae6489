package main

import (
	"context"
	"errors"
	"fmt"
	neturl "net/url"
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
	// The password goes to psql in its environment, never on its command
	// line: every user of the machine can read a process's arguments
	// (ps), only its owner its environment — where DATABASE_URL, and so
	// the password, already is.
	conninfo, password, err := withoutPassword(url)
	if err != nil {
		return fmt.Errorf("the %s's connection string: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, psql, append([]string{conninfo}, extra...)...)
	if password != "" {
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, e.stdout, e.stderr
	return cmd.Run()
}

// withoutPassword takes the password out of a libpq connection string —
// a URL (postgres://user:pw@host/db, or ?password=pw) or key=value pairs
// (host=h password='p w') — and returns the rest and the password.
func withoutPassword(conninfo string) (rest, password string, err error) {
	if strings.HasPrefix(conninfo, "postgres://") || strings.HasPrefix(conninfo, "postgresql://") {
		u, err := neturl.Parse(conninfo)
		if err != nil {
			return "", "", errors.New("not a valid URL")
		}
		if u.User != nil {
			name := u.User.Username()
			password, _ = u.User.Password()
			u.User = nil
			if name != "" {
				u.User = neturl.User(name)
			}
		}
		if q := u.Query(); q.Has("password") {
			password = q.Get("password") // libpq: the parameter wins over the userinfo
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		return u.String(), password, nil
	}
	pairs, err := parseConninfo(conninfo)
	if err != nil {
		return "", "", err
	}
	var kept []string
	for _, kv := range pairs {
		if kv[0] == "password" {
			password = kv[1]
			continue
		}
		kept = append(kept, kv[0]+"='"+strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(kv[1])+"'")
	}
	return strings.Join(kept, " "), password, nil
}

// parseConninfo splits libpq's key=value connection string into its
// pairs, as libpq reads it: spaces around = are allowed; a value is
// single-quoted or runs to the next space; a backslash takes the next
// character as it is, in both.
func parseConninfo(s string) ([][2]string, error) {
	const space = " \t\n\r\f\v"
	var pairs [][2]string
	for {
		s = strings.TrimLeft(s, space)
		if s == "" {
			return pairs, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("expected key=value")
		}
		key := strings.TrimRight(s[:eq], space)
		if key == "" || strings.ContainsAny(key, space+"'\\") {
			return nil, fmt.Errorf("bad key %q", key)
		}
		s = strings.TrimLeft(s[eq+1:], space)
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		var value strings.Builder
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			if quoted && c == '\'' || !quoted && strings.IndexByte(space, c) >= 0 {
				break
			}
			if c == '\\' && i+1 < len(s) {
				i++
				c = s[i]
			}
			value.WriteByte(c)
		}
		if quoted {
			if i == len(s) {
				return nil, fmt.Errorf("unterminated quoted value for %s", key)
			}
			i++ // the closing quote
		}
		s = s[i:]
		pairs = append(pairs, [2]string{key, value.String()})
	}
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
