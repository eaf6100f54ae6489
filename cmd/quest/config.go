package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

// config is everything the subcommands read from flags and the
// environment, declared and resolved here and nowhere else. A subcommand
// registers the groups of flags it takes (addFlags), parses, and calls
// resolve. Flags win over the environment, which wins over the local
// cluster's defaults.
type config struct {
	StateDir string // the local cluster's state directory (--dir, $QUEST_DIR)

	// The database: the primary and its replicas (--database-url,
	// --replica-urls, $DATABASE_URL, $REPLICA_URLS), else the local
	// cluster's nodes.
	DatabaseURL string
	ReplicaURLs []string
	FromCluster string // the local cluster's state dir, when the URLs came from it
	// PatroniURLs are Patroni REST APIs the router discovers the nodes
	// from (--patroni-url, $QUEST_PATRONI_URL; a local Patroni cluster's
	// own when the URLs came from it).
	PatroniURLs []string
	// LeverURL is the lever role's URL for the replicas (--lever-url,
	// $QUEST_LEVER_URL): /lab's pause, resume and apply delay on a
	// cluster serve does not manage. Ignored when it manages one.
	LeverURL string

	// PGBin is the PostgreSQL bin directory to use (--pg-bin, $QUEST_PG_BIN);
	// empty means search the machine (cluster.FindBinDir).
	PGBin string

	// serve.
	Addr         string
	MetricsAddr  string // /metrics on a listener of its own; empty: on Addr, to loopback only
	Strategy     dbrouter.Strategy
	TimedDelay   time.Duration
	PollInterval time.Duration
	MaxLag       time.Duration
	NodeTimeout  time.Duration
	MaxLagMB     int64
	LoginLimit   int
	SignupLimit  int
	Secure       bool

	groups                                           flagGroup
	flagURL, flagReplicas, flagPatroni, strategyName string
}

// flagGroup names a group of flags a subcommand takes.
type flagGroup uint8

const (
	dirFlag      flagGroup = 1 << iota // --dir
	databaseFlag                       // --database-url
	replicasFlag                       // --replica-urls
	serveFlags                         // --addr, --strategy and the router's and server's tuning
	pgBinFlag                          // --pg-bin
)

// defaultAddr is where serve listens unless told otherwise: this machine
// only, since a workshop runs on a shared network.
const defaultAddr = "127.0.0.1:8080"

// addFlags registers the groups' flags on fs, with their defaults from the
// environment.
func (e environment) addFlags(fs *flag.FlagSet, cfg *config, groups flagGroup) {
	cfg.groups = groups
	if groups&dirFlag != 0 {
		fs.StringVar(&cfg.StateDir, "dir", e.defaultStateDir(), "local cluster state directory ($QUEST_DIR)")
	}
	if groups&databaseFlag != 0 {
		fs.StringVar(&cfg.flagURL, "database-url", "", "the primary's URL (default $DATABASE_URL, else the local cluster's leader)")
	}
	if groups&replicasFlag != 0 {
		fs.StringVar(&cfg.flagReplicas, "replica-urls", "", "comma-separated replica URLs (default $REPLICA_URLS, else the local cluster's followers)")
	}
	if groups&pgBinFlag != 0 {
		fs.StringVar(&cfg.PGBin, "pg-bin", e.getenv("QUEST_PG_BIN"), "PostgreSQL bin directory (holding initdb, postgres, psql); default $QUEST_PG_BIN, else searched:\nPATH, pg_config --bindir, Debian's, Homebrew's and Postgres.app's directories")
	}
	if groups&serveFlags != 0 {
		fs.StringVar(&cfg.Addr, "addr", firstNonEmpty(e.getenv("QUEST_ADDR"), defaultAddr),
			"address to listen on ($QUEST_ADDR); the default serves this machine only,\n:8080 (or 0.0.0.0:8080) shares Quest with the network")
		fs.StringVar(&cfg.MetricsAddr, "metrics-addr", e.getenv("QUEST_METRICS_ADDR"),
			"serve /metrics on a listener of its own at this address ($QUEST_METRICS_ADDR), and not on --addr;\nunset, /metrics is on --addr and answers requests from this machine only")
		fs.StringVar(&cfg.strategyName, "strategy", firstNonEmpty(e.getenv("QUEST_STRATEGY"), "causal"),
			"read routing strategy at start: primary, random, pin-own, sticky, timed or causal ($QUEST_STRATEGY)")
		fs.DurationVar(&cfg.TimedDelay, "timed-delay", 2*time.Second, "timed: how long after a write a session reads from the primary")
		fs.DurationVar(&cfg.PollInterval, "poll-interval", 100*time.Millisecond, "how often the lag tracker polls each node")
		fs.DurationVar(&cfg.MaxLag, "max-lag", 30*time.Second, "a replica further behind than this gets no reads")
		fs.Int64Var(&cfg.MaxLagMB, "max-lag-mb", 64, "a replica further behind than this many MB gets no reads")
		fs.DurationVar(&cfg.NodeTimeout, "node-timeout", 5*time.Second, "how long one read or write waits for a node that stopped answering\nbefore the read moves to another node and the write gives up")
		fs.StringVar(&cfg.LeverURL, "lever-url", e.getenv("QUEST_LEVER_URL"),
			"the lever role's URL, postgres://quest_lever:PASSWORD@host:port/quest ($QUEST_LEVER_URL): /lab pauses,\nresumes and delays replay through it on a cluster serve does not manage; each replica's host and port\nreplace the URL's own")
		fs.StringVar(&cfg.flagPatroni, "patroni-url", "", "comma-separated Patroni REST API URLs, any member's (default $QUEST_PATRONI_URL):\nthe nodes are then Patroni's members, followed as they come and go")
		fs.IntVar(&cfg.LoginLimit, "login-limit", 30, "failed sign-in attempts per minute from one address")
		fs.IntVar(&cfg.SignupLimit, "signup-limit", 20, "new accounts per hour from one address")
		fs.BoolVar(&cfg.Secure, "secure-cookies", e.getenv("QUEST_SECURE_COOKIES") == "true", "mark cookies Secure (behind TLS; $QUEST_SECURE_COOKIES=true)")
	}
}

// resolve checks the parsed flags and fills in what comes from the
// environment and the local cluster.
func (e environment) resolve(cfg *config) error {
	if cfg.groups&serveFlags != 0 {
		s, err := dbrouter.ParseStrategy(cfg.strategyName)
		if err != nil {
			return err
		}
		cfg.Strategy = s
		if cfg.TimedDelay <= 0 || cfg.PollInterval <= 0 || cfg.MaxLag <= 0 || cfg.NodeTimeout <= 0 || cfg.MaxLagMB <= 0 || cfg.LoginLimit <= 0 || cfg.SignupLimit <= 0 {
			return fmt.Errorf("--timed-delay, --poll-interval, --max-lag, --max-lag-mb, --node-timeout, --login-limit and --signup-limit must be positive")
		}
	}
	if cfg.groups&serveFlags != 0 {
		cfg.PatroniURLs = splitList(firstNonEmpty(cfg.flagPatroni, e.getenv("QUEST_PATRONI_URL")))
	}
	if cfg.groups&databaseFlag == 0 {
		return nil
	}
	cfg.DatabaseURL = firstNonEmpty(cfg.flagURL, e.getenv("DATABASE_URL"))
	replicas := ""
	if cfg.groups&replicasFlag != 0 {
		replicas = firstNonEmpty(cfg.flagReplicas, e.getenv("REPLICA_URLS"))
	}
	if cfg.DatabaseURL == "" {
		c, err := cluster.Open(cfg.StateDir)
		if err != nil {
			if errors.Is(err, cluster.ErrNotCluster) {
				return fmt.Errorf("no database: set DATABASE_URL (and REPLICA_URLS), or start the local cluster with: quest cluster up")
			}
			return err
		}
		cfg.DatabaseURL = c.PrimaryURL()
		cfg.FromCluster = c.Dir()
		if replicas == "" && cfg.groups&replicasFlag != 0 {
			cfg.ReplicaURLs = c.ReplicaURLs()
		}
		if len(cfg.PatroniURLs) == 0 && cfg.groups&serveFlags != 0 {
			cfg.PatroniURLs = c.PatroniURLs() // nil for a plain cluster
		}
	}
	cfg.ReplicaURLs = append(cfg.ReplicaURLs, splitList(replicas)...)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// sessionKey returns the key that signs cookies: QUEST_SESSION_KEY when
// set, else a key generated once and kept in the state directory, so
// restarts and several instances on one machine share it.
func (e environment) sessionKey(stateDir string) ([]byte, error) {
	if k := e.getenv("QUEST_SESSION_KEY"); k != "" {
		if len(k) < 32 {
			return nil, errors.New("QUEST_SESSION_KEY is too short: use at least 32 characters (e.g. openssl rand -hex 32)")
		}
		return []byte(k), nil
	}
	path := filepath.Join(stateDir, "session.key")
	if b, err := os.ReadFile(path); err == nil {
		return decodeKey(path, b)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	// Written aside and linked into place: link fails if another instance
	// got there first, and then both use that one's key.
	tmp, err := os.CreateTemp(stateDir, "session.key.*")
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("session key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("session key: %w", err)
		}
		return decodeKey(path, b)
	} else if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	return raw, nil
}

func decodeKey(path string, b []byte) ([]byte, error) {
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("session key file %s is damaged; delete it to generate a new one (signed-in users will be signed out)", path)
	}
	return key, nil
}
