package server

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"quest/web"
)

// routes is the whole URL map at a glance.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(secureHeaders) // first: every response carries them, refusals included
	r.Use(middleware.RequestID)
	r.Use(s.metrics.count)
	r.Use(s.logRequests)
	r.Use(s.recoverPanics)
	r.Use(middleware.GetHead) // every GET route answers HEAD
	r.Use(s.consistency)
	r.Use(s.limitBodies)

	static, _ := fs.Sub(web.FS, "static")
	r.Get("/static/*", handleStatic(static))
	r.Get("/healthz", s.handleHealthz)
	r.Get("/metrics", s.handleMetrics)
	r.With(noStore).Get("/lab/state", s.handleLabState)

	// Pages: kept out of every cache (each names who is signed in); their
	// reads keep their SQL for the panel; cross-origin protection on every
	// state-changing request, then the session (scs saves it on the first
	// write), then who is signed in, then the strategy they chose for
	// their own session, if the lab allows it.
	r.Group(func(r chi.Router) {
		r.Use(noStore)
		r.Use(keepSQL)
		r.Use(s.crossOrigin.Handler)
		r.Use(s.sessions.LoadAndSave)
		r.Use(s.authenticate)
		r.Use(s.ownStrategy)

		r.Get("/", s.handleHome)
		r.Get("/signup", s.handleSignup)
		r.Post("/signup", s.handleSignupPost)
		r.Get("/login", s.handleLogin)
		r.Post("/login", s.handleLoginPost)
		r.Post("/logout", s.handleLogout)
		r.Get("/users/{id}", s.handleUser)
		r.Get("/catalog", s.handleCatalog)
		r.Get("/forum", s.handleForum)
		r.Get("/forum/{id}", s.handleThread)
		r.Get("/status", s.handleStatus)
		r.Get("/lab", s.handleLab)
		r.With(s.requireLogin).Post("/lab/own-strategy", s.handleLabOwnStrategy)
		r.Get("/glossary", s.handleGlossary)
		r.Group(func(r chi.Router) {
			r.Use(s.requireAdmin)
			r.Post("/lab/strategy", s.handleLabStrategy)
			r.Post("/lab/replicas/{node}/{action}", s.handleLabLever)
			r.Post("/lab/members/{member}/{action}", s.handleLabMember) // switchover, fail, start: Patroni clusters
			r.Post("/lab/scenarios/{scenario}", s.handleLabSetup)
			r.Post("/lab/reset", s.handleLabReset)
			r.Post("/lab/allow-own", s.handleLabAllowOwn)
		})

		r.Group(func(r chi.Router) {
			r.Use(s.requireLogin)
			r.Get("/profile", s.handleProfile)
			r.Post("/profile", s.handleProfilePost)
			r.Get("/wishlist", s.handleWishlist)
			r.Post("/wishlist", s.handleWishlistAdd)
			r.Post("/wishlist/{id}/delete", s.handleWishlistDelete)
			r.Post("/forum", s.handleThreadCreate)
			r.Post("/forum/{id}/comments", s.handleCommentCreate)
		})

		r.NotFound(func(w http.ResponseWriter, r *http.Request) {
			s.serverError(w, r, problem(http.StatusNotFound, "There is no page here."))
		})
		r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed(r))
			s.serverError(w, r, problem(http.StatusMethodNotAllowed, "That method is not allowed here."))
		})
	})
	return r
}

// allowed lists the methods the request's path answers, for a 405's Allow
// header: chi calls a custom 405 handler without them. HEAD comes with
// GET (GetHead).
func allowed(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	path := r.URL.RawPath // what chi routes on, as GetHead does
	if path == "" {
		path = r.URL.Path
	}
	var methods []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if rctx.Routes.Match(chi.NewRouteContext(), m, path) ||
			m == http.MethodHead && rctx.Routes.Match(chi.NewRouteContext(), http.MethodGet, path) {
			methods = append(methods, m)
		}
	}
	return strings.Join(methods, ", ")
}
