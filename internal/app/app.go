// Package app wires Quest together — the read router, the store, the HTTP
// server and its sessions — in one place. `quest serve`, the lab's
// in-process instances and the end-to-end tests all start Quest through
// New, so they run the same wiring.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/levers"
	"quest/internal/server"
	"quest/internal/store"
)

// Config is everything an App needs.
type Config struct {
	Router     dbrouter.Config
	SessionKey []byte // signs cookies; at least 32 bytes
	Secure     bool   // cookies marked Secure (served over TLS)
	// LoginsPerMinutePerAddr limits failed sign-in attempts from one
	// address; 0 means the server's default.
	LoginsPerMinutePerAddr int
	// SignupsPerHourPerAddr limits the accounts made from one address;
	// 0 means the server's default.
	SignupsPerHourPerAddr int
	// Levers, when the app manages the local cluster (ManageCluster) or
	// has the lever role's URL (UseLeverURL), let admins pull replication
	// levers from /lab.
	Levers server.Levers
	// HA, when that cluster is a Patroni cluster, lets admins switch over,
	// crash and start its members from /lab; PatroniMembers tells the
	// pages what Patroni says of each member (see server.Config).
	HA             server.HALevers
	PatroniMembers func(ctx context.Context) (map[string]dbrouter.Patroni, error)
	Logger         *slog.Logger
	// MetricsAddr, when set, gives /metrics a listener of its own there
	// (Listen binds it); the main listener's /metrics then answers 404.
	// Unset, the main listener serves /metrics to loopback only.
	MetricsAddr string
}

// App is one running Quest: its router, store and HTTP server.
type App struct {
	Router *dbrouter.Router
	Store  *store.Store
	Server *server.Server

	log      *slog.Logger
	hs       *http.Server
	ln       net.Listener
	done     chan struct{} // closed when Serve returns
	serveErr error         // what Serve returned; read after done

	metricsAddr string
	ms          *http.Server // /metrics alone, when MetricsAddr is set
	mln         net.Listener
}

// New connects the router (it does not fail for nodes that are down) and
// builds the store and the HTTP server. Close releases them.
func New(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Router.Logger == nil {
		cfg.Router.Logger = cfg.Logger
	}
	r, err := dbrouter.New(ctx, cfg.Router)
	if err != nil {
		return nil, err
	}
	st := store.New(r)
	srv, err := server.New(server.Config{
		Router:                 r,
		Store:                  st,
		Logger:                 cfg.Logger,
		SessionKey:             cfg.SessionKey,
		Secure:                 cfg.Secure,
		LoginsPerMinutePerAddr: cfg.LoginsPerMinutePerAddr,
		SignupsPerHourPerAddr:  cfg.SignupsPerHourPerAddr,
		Levers:                 cfg.Levers,
		HA:                     cfg.HA,
		PatroniMembers:         cfg.PatroniMembers,
		MetricsElsewhere:       cfg.MetricsAddr != "",
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	return &App{Router: r, Store: st, Server: srv, log: cfg.Logger, metricsAddr: cfg.MetricsAddr}, nil
}

// Listen binds addr ("127.0.0.1:0" picks a free port) for Serve, and the
// metrics address when there is one.
func (a *App) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if a.metricsAddr != "" {
		mln, err := net.Listen("tcp", a.metricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", a.metricsAddr, err)
		}
		a.mln, a.ms = mln, a.httpServer(a.Server.Metrics())
	}
	a.ln = ln
	a.hs = a.httpServer(a.Server)
	a.done = make(chan struct{})
	return nil
}

// httpServer is an http.Server for h with Quest's timeouts.
func (a *App) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
}

// Addr is the address Listen bound.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

// MetricsAddr is the address Listen bound for /metrics, or nil when
// /metrics has no listener of its own.
func (a *App) MetricsAddr() net.Addr {
	if a.mln == nil {
		return nil
	}
	return a.mln.Addr()
}

// URL is a URL a person or a client can open for the bound address.
func (a *App) URL() string {
	host, port, _ := net.SplitHostPort(a.ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// Serve answers requests on the bound address until Shutdown; it returns
// nil after a clean shutdown.
func (a *App) Serve() error {
	if a.ln == nil {
		return errors.New("app: Serve before Listen")
	}
	if a.ms != nil {
		go func() {
			// Shutdown ends it; anything else is worth a line, not the
			// app: pages do not need the metrics.
			if err := a.ms.Serve(a.mln); !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("the metrics listener stopped", "addr", a.mln.Addr().String(), "err", err)
			}
		}()
	}
	err := a.hs.Serve(a.ln)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	a.serveErr = err
	close(a.done)
	return err
}

// Start listens on addr and serves in the background, for the lab and the
// tests; Close stops it.
func (a *App) Start(addr string) error {
	if err := a.Listen(addr); err != nil {
		return err
	}
	go a.Serve()
	return nil
}

// Shutdown stops accepting requests and waits, until ctx ends, for the
// ones in flight to finish.
func (a *App) Shutdown(ctx context.Context) error {
	if a.hs == nil {
		return nil // never listened
	}
	if a.ms != nil {
		a.ms.Shutdown(ctx) // nothing there is worth waiting for past ctx
		a.mln.Close()      // in case Serve never ran
	}
	if err := a.hs.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	select {
	case <-a.done:
		return a.serveErr
	case <-ctx.Done(): // listening, but Serve never ran
		return nil
	}
}

// Close shuts the HTTP server down (waiting up to 10 s for requests in
// flight), then closes the server's background work and the pools.
func (a *App) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Shutdown(ctx)
	a.Server.Close()
	a.Router.Close()
}

// ManageCluster lets the app pull the levers of the local cluster c: c
// pauses, delays, stops and starts replicas from /lab, and on a Patroni
// cluster it also switches over, crashes and starts members, and a second
// handle on it tells the pages what Patroni says of each member (the
// levers' handle rewrites its roles while a switchover runs, so it cannot
// be asked at the same time). On a Patroni cluster the primary's URL gets
// the member's name, as the replicas' URLs have. Call it after setting
// Router's URLs from c.
func (cfg *Config) ManageCluster(c *cluster.Cluster) {
	cfg.Levers = c
	if !c.HA() {
		return
	}
	cfg.HA = c
	cfg.Router.PrimaryURL = namedMemberURL(cfg.Router.PrimaryURL, c.Nodes())
	if view, err := cluster.Open(c.Dir()); err == nil {
		cfg.PatroniMembers = askMembers(view)
	}
}

// UseLeverURL gives /lab the lag levers of a cluster the app does not
// manage (the Docker stack, say), through the lever role: pause, resume
// and the apply delay of each replica of Router.ReplicaURLs, by the name
// the router gives it. leverURL names the role, its password and the
// database; each replica's host and port come from its own URL (see
// levers.ForReplicas). Stop and start stay with whatever runs the
// cluster. It signs in as the lever role on each replica that answers, so
// a wrong role or password is said now, not at the first lever. Call it
// after setting Router's URLs.
func (cfg *Config) UseLeverURL(ctx context.Context, leverURL string) error {
	if len(cfg.Router.ReplicaURLs) == 0 {
		return errors.New("the lever URL needs the replicas' URLs (REPLICA_URLS or --replica-urls)")
	}
	byName := make(map[string]string, len(cfg.Router.ReplicaURLs))
	for _, u := range cfg.Router.ReplicaURLs {
		name, err := dbrouter.NodeName(u)
		if err != nil {
			return err
		}
		byName[name] = u
	}
	l, err := levers.ForReplicas(leverURL, byName)
	if err != nil {
		return err
	}
	if err := l.Check(ctx); err != nil {
		return err
	}
	cfg.Levers = l
	return nil
}

// namedMemberURL gives a cluster member's URL the member's name as its
// application_name: the router then calls the leader node1 rather than
// 127.0.0.1:54320/quest, so the pages name the primary, the failover
// levers find it, and the name stays right once it is a replica after a
// failover. A URL that names itself already, or is no member's, is left
// alone.
func namedMemberURL(raw string, members []cluster.Node) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	if q.Get("application_name") != "" {
		return raw
	}
	for _, n := range members {
		if u.Port() == strconv.Itoa(n.Port) {
			q.Set("application_name", n.Name)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	return raw
}

// askMembers asks a Patroni cluster what Patroni says of each member, for
// the pages (server.Config.PatroniMembers). Members answers even when no
// Patroni does: every member is then unlisted.
func askMembers(c *cluster.Cluster) func(context.Context) (map[string]dbrouter.Patroni, error) {
	return func(ctx context.Context) (map[string]dbrouter.Patroni, error) {
		ms, err := c.Members(ctx)
		if len(ms) == 0 {
			return nil, err
		}
		out := make(map[string]dbrouter.Patroni, len(ms))
		for _, m := range ms {
			p := dbrouter.Patroni{Listed: m.Role != "", Role: m.Role, State: m.State, LagBytes: m.Lag}
			if m.Timeline > 0 && m.Timeline <= math.MaxUint32 {
				p.Timeline = uint32(m.Timeline)
			}
			out[m.Name] = p
		}
		return out, err
	}
}
