package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/server"
)

func (e environment) serve(ctx context.Context, args []string) error {
	fs := e.newFlags("serve", "serve [--addr :8080] [--dir D]")
	addr := fs.String("addr", firstNonEmpty(e.getenv("QUEST_ADDR"), ":8080"), "address to listen on ($QUEST_ADDR)")
	dbURL := fs.String("database-url", "", "the primary's URL (default $DATABASE_URL, else the local cluster's leader)")
	replicas := fs.String("replica-urls", "", "comma-separated replica URLs (default $REPLICA_URLS, else the local cluster's followers)")
	dir := fs.String("dir", e.defaultStateDir(), "local cluster state directory ($QUEST_DIR)")
	strategy := fs.String("strategy", firstNonEmpty(e.getenv("QUEST_STRATEGY"), "causal"),
		"read routing strategy at start: primary, random, pin-own, sticky, timed or causal ($QUEST_STRATEGY)")
	timedDelay := fs.Duration("timed-delay", 2*time.Second, "timed: how long after a write a session reads from the primary")
	poll := fs.Duration("poll-interval", 100*time.Millisecond, "how often the lag tracker polls each node")
	maxLag := fs.Duration("max-lag", 30*time.Second, "a replica further behind than this gets no reads")
	maxLagMB := fs.Int64("max-lag-mb", 64, "a replica further behind than this many MB gets no reads")
	loginLimit := fs.Int("login-limit", 30, "sign-in attempts per minute from one address")
	secure := fs.Bool("secure-cookies", e.getenv("QUEST_SECURE_COOKIES") == "true", "mark cookies Secure (behind TLS; $QUEST_SECURE_COOKIES=true)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	strat, err := dbrouter.ParseStrategy(*strategy)
	if err != nil {
		return err
	}
	if *timedDelay <= 0 || *poll <= 0 || *maxLag <= 0 || *maxLagMB <= 0 || *loginLimit <= 0 {
		return fmt.Errorf("--timed-delay, --poll-interval, --max-lag, --max-lag-mb and --login-limit must be positive")
	}
	cfg, err := e.databaseConfig(*dbURL, *replicas, *dir)
	if err != nil {
		return err
	}
	key, err := e.sessionKey(cfg.StateDir)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, nil))

	var levers server.Levers
	if cfg.FromCluster != "" {
		if c, err := cluster.Open(cfg.FromCluster); err == nil {
			levers = c // the app manages the local cluster: /lab gets its levers
		}
	}
	a, err := app.New(ctx, app.Config{
		Router: dbrouter.Config{
			PrimaryURL:   cfg.DatabaseURL,
			ReplicaURLs:  cfg.ReplicaURLs,
			Strategy:     strat,
			TimedDelay:   *timedDelay,
			PollInterval: *poll,
			MaxLag:       *maxLag,
			MaxLagBytes:  *maxLagMB << 20,
		},
		Levers:                 levers,
		Logger:                 logger,
		SessionKey:             key,
		Secure:                 *secure,
		LoginsPerMinutePerAddr: *loginLimit,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	if !a.Router.Serving() {
		logger.Warn("no database node answers yet: pages show an outage notice and /healthz answers 503 until one does; Quest keeps trying",
			"primary", redactURL(cfg.DatabaseURL))
	}
	if err := a.Listen(*addr); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Quest is serving on %s (%d replica(s), strategy %s); stop with Ctrl-C\n", browseURL(a.Addr()), len(cfg.ReplicaURLs), strat)

	errc := make(chan error, 1)
	go func() { errc <- a.Serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Finish in-flight requests, then close the pools (deferred above).
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	if err := a.Shutdown(shutdownCtx); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, "Quest stopped")
	return nil
}

// browseURL turns a listening address into a URL a person can open.
func browseURL(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || ip.IsLoopback() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// redactURL hides a connection URL's password, for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
