package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

func (e environment) serve(ctx context.Context, args []string) error {
	fs := e.newFlags("serve", "serve [--addr 127.0.0.1:8080] [--strategy S] [--dir D] [flags]\n\n"+
		"Serves Quest on this machine only (127.0.0.1:8080) unless --addr says otherwise:\n"+
		"--addr :8080 (or 0.0.0.0:8080) shares it with everyone on the network.")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag|replicasFlag|serveFlags)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("serve takes no arguments, got %q", pos)
	}
	if err := e.resolve(&cfg); err != nil {
		return err
	}
	key, err := e.sessionKey(cfg.StateDir)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(e.stderr, nil))

	appCfg := app.Config{
		Router: dbrouter.Config{
			PrimaryURL:   cfg.DatabaseURL,
			ReplicaURLs:  cfg.ReplicaURLs,
			Strategy:     cfg.Strategy,
			TimedDelay:   cfg.TimedDelay,
			PollInterval: cfg.PollInterval,
			MaxLag:       cfg.MaxLag,
			NodeTimeout:  cfg.NodeTimeout,
			MaxLagBytes:  cfg.MaxLagMB << 20,
			PatroniURLs:  cfg.PatroniURLs,
		},
		Logger:                 logger,
		SessionKey:             key,
		Secure:                 cfg.Secure,
		LoginsPerMinutePerAddr: cfg.LoginLimit,
		SignupsPerHourPerAddr:  cfg.SignupLimit,
		MetricsAddr:            cfg.MetricsAddr,
	}
	managed := false
	if cfg.FromCluster != "" {
		if c, err := cluster.Open(cfg.FromCluster); err == nil {
			// The app manages the local cluster: /lab gets its levers, and
			// on a Patroni cluster the failover levers too.
			appCfg.ManageCluster(c)
			managed = true
		}
	}
	if cfg.LeverURL != "" && !managed {
		// Another cluster (the Docker stack's): the levers that are SQL.
		if err := appCfg.UseLeverURL(ctx, cfg.LeverURL); err != nil {
			return fmt.Errorf("--lever-url: %w", err)
		}
	}
	a, err := app.New(ctx, appCfg)
	if err != nil {
		return err
	}
	defer a.Close()
	if !a.Router.Serving() {
		logger.Warn("no database node answers yet: pages show an outage notice and /healthz answers 503 until one does; Quest keeps trying",
			"primary", redactURL(cfg.DatabaseURL))
	}
	if err := a.Listen(cfg.Addr); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) && cfg.MetricsAddr != "" && strings.HasPrefix(err.Error(), "listen on "+cfg.MetricsAddr+":") {
			return fmt.Errorf("%s is already in use: choose another port with --metrics-addr", cfg.MetricsAddr)
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s is already in use: choose another port with --addr (e.g. --addr 127.0.0.1:8081, or make run PORT=8081)", cfg.Addr)
		}
		return err
	}
	home := browseURL(a.Addr())
	nodes := plural(len(a.Router.Replicas()), "replica")
	if len(cfg.PatroniURLs) > 0 {
		nodes += " — the members Patroni lists, followed as they change"
	}
	fmt.Fprintf(e.stdout, "Quest is serving on %s — the lab: %s/lab (%s, strategy %s; stop with Ctrl-C)\n",
		home, home, nodes, cfg.Strategy)
	if others := sharedURLs(a.Addr()); len(others) > 0 {
		fmt.Fprintf(e.stdout, "shared with the network: others open %s\n", strings.Join(others, " or "))
	}
	if m := a.MetricsAddr(); m != nil {
		fmt.Fprintf(e.stdout, "metrics for Prometheus: %s/metrics (not on %s)\n", hostURL(m), home)
	}

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

// hostURL is the URL of a listening address as it is, for a scraper's
// configuration: 0.0.0.0 stays, since any address of the machine works.
func hostURL(a net.Addr) string { return "http://" + a.String() }

// sharedURLs returns the /lab URLs others on the network can open when
// addr listens on every interface: one per IPv4 address of this machine
// other than loopback (what people type); none otherwise.
func sharedURLs(addr net.Addr) []string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var urls []string
	for _, ia := range ifaddrs {
		ipnet, ok := ia.(*net.IPNet)
		if !ok || ipnet.IP.To4() == nil || ipnet.IP.IsLoopback() || ipnet.IP.IsLinkLocalUnicast() {
			continue
		}
		urls = append(urls, "http://"+net.JoinHostPort(ipnet.IP.String(), strconv.Itoa(tcp.Port))+"/lab")
	}
	return urls
}

// plural says "1 replica", "2 replicas".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// redactURL hides a connection URL's password, for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}
