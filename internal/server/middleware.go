package server

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/go-chi/chi/v5/middleware"

	"quest/internal/dbrouter"
)

// requestInfo is filled in by inner middleware for the request's log line.
type requestInfo struct {
	user string
}

type requestInfoKey struct{}

// logRequests starts the request's decision trace and writes one line per
// request: method, path, status, duration, user, and the nodes that served
// its reads.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, trace := dbrouter.WithTrace(r.Context())
		info := &requestInfo{user: "-"}
		ctx = context.WithValue(ctx, requestInfoKey{}, info)
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now()
		next.ServeHTTP(ww, r.WithContext(ctx))
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		served := trace.ServedBy()
		if served == "" {
			served = "none"
		}
		s.log.LogAttrs(ctx, slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Duration("duration", time.Since(start)),
			slog.String("user", info.user),
			slog.String("served_by", served),
			slog.String("request_id", middleware.GetReqID(ctx)),
		)
	})
}

// recoverPanics turns a panic into a logged 500 page instead of a dropped
// connection; the stack goes to the log, never to the client.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "panic", slog.Any("value", v), slog.String("path", r.URL.Path))
				s.serverError(w, r, problem(http.StatusInternalServerError, "Something went wrong on our side."))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// maxBody bounds every request body; forms are small.
const maxBody = 64 << 10

func (s *Server) limitBodies(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		next.ServeHTTP(w, r)
	})
}

// sessionUser is who is signed in, as the session says.
type sessionUser struct {
	ID       int64
	Username string
	IsAdmin  bool
}

type userKey struct{}

// Session keys.
const (
	keyUserID   = "userID"
	keyUsername = "username"
	keyAdmin    = "admin"
	keyStrategy = "strategy" // the strategy the user chose for their own session, when allowed
)

// keepSQL makes a page's trace keep each read's SQL, the session lookup's
// included, for the panel that explains how the page was read.
func keepSQL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dbrouter.TraceFrom(r.Context()).KeepSQL()
		next.ServeHTTP(w, r)
	})
}

// ownStrategy applies the strategy the session chose for itself, when the
// lab allows sessions to choose.
func (s *Server) ownStrategy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.allowOwn.Load() {
			if name := s.sessions.GetString(r.Context(), keyStrategy); name != "" {
				if st, err := dbrouter.ParseStrategy(name); err == nil {
					r = r.WithContext(dbrouter.WithStrategy(r.Context(), st))
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate puts the signed-in user, if any, in the context.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id := s.sessions.GetInt64(ctx, keyUserID)
		if id == 0 {
			next.ServeHTTP(w, r)
			return
		}
		u := &sessionUser{ID: id, Username: s.sessions.GetString(ctx, keyUsername), IsAdmin: s.sessions.GetBool(ctx, keyAdmin)}
		if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
			info.user = u.Username
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(ctx, userKey{}, u)))
	})
}

// sessionUserID reads whose session some encoded session data is: the
// store records it beside the data, so the database can end a user's
// sessions. 0 is nobody's, as for data it cannot read.
func sessionUserID(codec scs.Codec, data []byte) int64 {
	_, values, err := codec.Decode(data)
	if err != nil {
		return 0
	}
	id, _ := values[keyUserID].(int64)
	return id
}

// currentUser returns the signed-in user, or nil.
func currentUser(r *http.Request) *sessionUser {
	u, _ := r.Context().Value(userKey{}).(*sessionUser)
	return u
}

// requireLogin sends anonymous visitors to the sign-in page: a GET comes
// back after signing in; a form post cannot, so it says why.
func (s *Server) requireLogin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if currentUser(r) != nil {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(safeNext(r.URL.RequestURI())), http.StatusSeeOther) // #nosec G710 -- a path on this site
			return
		}
		s.serverError(w, r, problem(http.StatusUnauthorized, "Please sign in first."))
	})
}
