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
	fs := e.newFlags("serve", "serve [--addr :8080] [--strategy S] [--dir D] [flags]")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag|replicasFlag|serveFlags)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("serve takes no arguments, got %q", pos)
	}
	if err := e.resolve(&cfg); err != nil {
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
			Strategy:     cfg.Strategy,
			TimedDelay:   cfg.TimedDelay,
			PollInterval: cfg.PollInterval,
			MaxLag:       cfg.MaxLag,
			MaxLagBytes:  cfg.MaxLagMB << 20,
		},
		Levers:                 levers,
		Logger:                 logger,
		SessionKey:             key,
		Secure:                 cfg.Secure,
		LoginsPerMinutePerAddr: cfg.LoginLimit,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	if !a.Router.Serving() {
		logger.Warn("no database node answers yet: pages show an outage notice and /healthz answers 503 until one does; Quest keeps trying",
			"primary", redactURL(cfg.DatabaseURL))
	}
	if err := a.Listen(cfg.Addr); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Quest is serving on %s (%d replica(s), strategy %s); stop with Ctrl-C\n", browseURL(a.Addr()), len(cfg.ReplicaURLs), cfg.Strategy)

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
