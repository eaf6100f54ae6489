// Package server is Quest's HTTP layer: chi routes, middleware, handlers
// and template rendering. Handlers reach the database only through the
// store, whose every query goes through the router; the consistency
// middleware carries the router's per-session state in a signed cookie.
package server

import (
	"context"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alexedwards/scs/v2"

	"quest/internal/dbrouter"
	"quest/internal/store"
	"quest/templates"
)

// Config is what a Server needs.
type Config struct {
	Router     *dbrouter.Router
	Store      *store.Store
	Logger     *slog.Logger
	SessionKey []byte // signs cookies; at least 32 bytes
	// Secure marks cookies Secure: set it when Quest is served over TLS.
	Secure bool
	// LoginsPerMinutePerAddr limits failed sign-in attempts from one
	// address; default 30. The lab and tests, all on 127.0.0.1, raise it.
	LoginsPerMinutePerAddr int
	// SignupsPerHourPerAddr limits the accounts made from one address;
	// default 20. The lab and tests raise it too.
	SignupsPerHourPerAddr int
	// Levers, when the app has the lever role's URL or manages the local
	// cluster, let admins pause replay on replicas and delay it from
	// /lab; levers that are also a Launcher stop and start them too.
	Levers Levers
	// HA, when the cluster the app manages is a Patroni cluster, lets
	// admins switch over, crash and start its members from /lab. Set it
	// with Levers, on the same cluster handle: the server pulls one lever
	// at a time.
	HA HALevers
	// MetricsElsewhere says /metrics has a listener of its own, served
	// by Server.Metrics: the main handler's /metrics then answers 404.
	// Without it, the main handler serves /metrics to loopback only.
	MetricsElsewhere bool
	// PatroniMembers, when set, asks Patroni what it says of each member,
	// by name; the pages use it for a member the router's own Patroni
	// discovery does not list. Asked once a second, in the background.
	PatroniMembers func(ctx context.Context) (map[string]dbrouter.Patroni, error)
}

// Server is Quest's HTTP handler.
type Server struct {
	router   *dbrouter.Router
	store    *store.Store
	log      *slog.Logger
	key      []byte
	secure   bool
	sessions *scs.SessionManager
	pages    map[string]*template.Template
	logins   *loginLimiter
	signups  *signupLimiter
	handler  http.Handler

	crossOrigin *http.CrossOriginProtection
	levers      Levers
	launcher    Launcher // nil unless the levers also stop and start nodes
	ha          HALevers
	ops         clusterOps // one lever at a time, and the failover lever's progress
	patroni     patroniCache
	history     history
	recent      recentLog // each session's last page views, for the lab
	metrics     *metrics

	metricsElsewhere bool // /metrics is served by Metrics, on a listener of its own

	// defaultStrategy is the strategy in force at start, which the lab's
	// reset returns to; allowOwn lets each signed-in user pick a strategy
	// for their own session on /lab.
	defaultStrategy dbrouter.Strategy
	allowOwn        atomic.Bool

	// backgroundCtx ends at Close: the background work, and a failover
	// lever, which outlives the request that pulled it.
	backgroundCtx  context.Context
	stopBackground context.CancelFunc
	background     sync.WaitGroup
}

// Session lifetime: absolute, so a page view never writes the session.
const sessionLifetime = 7 * 24 * time.Hour

// New parses the templates, builds the routes and starts the expired
// session clean-up. Close stops it.
func New(cfg Config) (*Server, error) {
	if cfg.Router == nil || cfg.Store == nil {
		return nil, errors.New("server: no database router or store")
	}
	if len(cfg.SessionKey) < 32 {
		return nil, errors.New("server: session key shorter than 32 bytes")
	}
	if cfg.HA != nil && cfg.Levers == nil {
		return nil, errors.New("server: HA levers without the cluster's levers")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LoginsPerMinutePerAddr <= 0 {
		cfg.LoginsPerMinutePerAddr = 30
	}
	if cfg.SignupsPerHourPerAddr <= 0 {
		cfg.SignupsPerHourPerAddr = 20
	}
	pages, err := parsePages(templates.FS)
	if err != nil {
		return nil, err
	}
	s := &Server{
		router: cfg.Router,
		store:  cfg.Store,
		log:    cfg.Logger,
		key:    cfg.SessionKey,
		secure: cfg.Secure,
		pages:  pages,
		// 5 failed sign-ins a minute for one account from one address;
		// past 5 a minute for one account from anywhere, a backoff.
		logins:  newLoginLimiter(5, cfg.LoginsPerMinutePerAddr, 5),
		signups: newSignupLimiter(cfg.SignupsPerHourPerAddr),
		levers:  cfg.Levers,
		ha:      cfg.HA,

		metricsElsewhere: cfg.MetricsElsewhere,

		defaultStrategy: cfg.Router.Strategy(),
	}
	s.launcher, _ = cfg.Levers.(Launcher)
	s.metrics = newMetrics(cfg.Router)
	sm := scs.New()
	sm.Store = cfg.Store.Sessions(func(data []byte) int64 { return sessionUserID(sm.Codec, data) })
	sm.Lifetime = sessionLifetime
	sm.IdleTimeout = 0
	sm.Cookie.Name = "quest_session"
	sm.Cookie.HttpOnly = true
	sm.Cookie.SameSite = http.SameSiteLaxMode
	sm.Cookie.Secure = cfg.Secure
	sm.Cookie.Persist = true
	sm.ErrorFunc = s.sessionError
	s.sessions = sm
	s.crossOrigin = http.NewCrossOriginProtection()
	s.crossOrigin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serverError(w, r, problem(http.StatusForbidden, "That form was sent from another site, so Quest refused it."))
	}))
	s.handler = s.routes()

	s.ops.init()
	ctx, cancel := context.WithCancel(context.Background())
	s.backgroundCtx, s.stopBackground = ctx, cancel
	s.every(ctx, 10*time.Minute, false, func(time.Time) { s.cleanSessions(ctx) })
	s.every(ctx, 30*time.Second, false, s.pruneLimits)
	s.every(ctx, time.Second, false, func(now time.Time) { s.history.record(s.router, now, s.ops.switchover(now)) })
	if ask := cfg.PatroniMembers; ask != nil {
		s.every(ctx, time.Second, true, func(time.Time) { s.askPatroni(ctx, ask) })
	}
	return s, nil
}

// ServeHTTP makes a Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close stops the background work.
func (s *Server) Close() {
	s.stopBackground()
	s.background.Wait()
}

// every runs f every d (and at once, with now) as the server's background
// work, until the server closes.
func (s *Server) every(ctx context.Context, d time.Duration, now bool, f func(time.Time)) {
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		if now {
			f(time.Now())
		}
		tick := time.NewTicker(d)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case t := <-tick.C:
				f(t)
			}
		}
	}()
}

// cleanSessions deletes expired sessions.
func (s *Server) cleanSessions(ctx context.Context) {
	if n, err := s.store.DeleteExpiredSessions(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("clean expired sessions", "err", err)
	} else if n > 0 {
		s.log.Info("cleaned expired sessions", "count", n)
	}
}

// parsePages parses every page template together with the layout, once.
func parsePages(fsys fs.FS) (map[string]*template.Template, error) {
	names, err := fs.Glob(fsys, "*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range names {
		if name == "base.html" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(fsys, "base.html", name)
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}
