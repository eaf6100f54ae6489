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
	"net"
	"net/http"
	"time"

	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
)

// Config is everything an App needs.
type Config struct {
	Router     dbrouter.Config
	SessionKey []byte // signs cookies; at least 32 bytes
	Secure     bool   // cookies marked Secure (served over TLS)
	// LoginsPerMinutePerAddr limits sign-in attempts from one address;
	// 0 means the server's default.
	LoginsPerMinutePerAddr int
	// Levers, when the app manages the local cluster, let admins pull
	// replication levers from /lab.
	Levers server.Levers
	Logger *slog.Logger
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
		Levers:                 cfg.Levers,
	})
	if err != nil {
		r.Close()
		return nil, err
	}
	return &App{Router: r, Store: st, Server: srv, log: cfg.Logger}, nil
}

// Listen binds addr ("127.0.0.1:0" picks a free port) for Serve.
func (a *App) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	a.ln = ln
	a.hs = &http.Server{
		Handler:           a.Server,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.done = make(chan struct{})
	return nil
}

// Addr is the address Listen bound.
func (a *App) Addr() net.Addr { return a.ln.Addr() }

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
