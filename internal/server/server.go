// Package server is Quest's HTTP layer: chi routes, middleware, handlers
// and template rendering. Handlers reach the database only through the
// router (and, later, the store).
package server

import (
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"

	"quest/internal/dbrouter"
	"quest/templates"
)

// Config is what a Server needs.
type Config struct {
	Router     *dbrouter.Router
	Logger     *slog.Logger
	SessionKey []byte // signs cookies; at least 32 bytes
}

// Server is Quest's HTTP handler.
type Server struct {
	router  *dbrouter.Router
	log     *slog.Logger
	pages   map[string]*template.Template
	handler http.Handler
}

// New parses the templates and builds the routes.
func New(cfg Config) (*Server, error) {
	if cfg.Router == nil {
		return nil, errors.New("server: no database router")
	}
	if len(cfg.SessionKey) < 32 {
		return nil, errors.New("server: session key shorter than 32 bytes")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages(templates.FS)
	if err != nil {
		return nil, err
	}
	s := &Server{router: cfg.Router, log: cfg.Logger, pages: pages}
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP makes a Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

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
		t, err := template.New(name).ParseFS(fsys, "base.html", name)
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}
