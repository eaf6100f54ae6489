package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"quest/internal/dbrouter"
	"quest/internal/store"
)

// errRateLimited is returned when too many sign-in attempts came in.
var errRateLimited = errors.New("rate limited")

// problemError is a failure a handler found itself (a bad page number, a
// thread that does not exist), with the status and words the user gets.
type problemError struct {
	status int
	msg    string
}

func (e *problemError) Error() string { return e.msg }

// problem returns an error that statusOf answers with status and msg.
func problem(status int, msg string) error { return &problemError{status, msg} }

// statusOf maps an error to the status and message a user sees. It is the
// one place that decides: handlers pass every failure, their own as a
// problem, to serverError.
func statusOf(err error) (int, string) {
	var p *problemError
	if errors.As(err, &p) {
		return p.status, p.msg
	}
	switch {
	case errors.Is(err, dbrouter.ErrBusy):
		return http.StatusServiceUnavailable, "Quest's database is busy right now: it would not take another connection. Nothing was changed; try again in a moment."
	case errors.Is(err, dbrouter.ErrUnavailable):
		return http.StatusServiceUnavailable, "Quest cannot reach its database right now. This page will work again by itself once the database is back — reload it in a moment."
	case errors.Is(err, dbrouter.ErrSplitBrain):
		return http.StatusServiceUnavailable, "Quest is read-only right now: two database servers both accept writes (a split brain), and a change saved on the wrong one would be lost. Pages still load; your change was not saved — try it again once an operator has resolved it."
	case errors.Is(err, dbrouter.ErrOutcomeUnknown):
		return http.StatusServiceUnavailable, "The connection to the database broke while your change was being saved, so it may or may not have been saved. Check the page before you try it again, or you may add it twice."
	case errors.Is(err, dbrouter.ErrReadOnly):
		return http.StatusServiceUnavailable, "The primary database is unreachable, so Quest is read-only right now. Pages still load from the replicas; try your change again in a moment."
	case errors.Is(err, store.ErrNoDemoUsers):
		return http.StatusConflict, "The demo data belongs to the seeded users (admin, luke, leia, han), and they are missing: run quest seed, then try again."
	case errors.Is(err, store.ErrUserGone):
		return http.StatusUnauthorized, "Your account no longer exists, so you have been signed out."
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "There is nothing here — it may have been removed."
	case errors.Is(err, errRateLimited):
		return http.StatusTooManyRequests, "Too many sign-in attempts. Wait a minute and try again."
	case errors.Is(err, errBadForm):
		return http.StatusBadRequest, "The form could not be read: it was too large or held characters that are not text."
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, "That was more than Quest accepts in one request."
	}
	return http.StatusInternalServerError, "Something went wrong on our side."
}

// statusClientClosedRequest is nginx's 499: the client left before the
// answer. Nobody receives it; the request log and the metrics count it
// apart from the server's own failures.
const statusClientClosedRequest = 499

// serverError renders the error page for err, logging what is unexpected.
func (s *Server) serverError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(r.Context().Err(), context.Canceled) {
		// The client closed the connection (or the stream) while the
		// request ran, so its queries were cancelled: that is not Quest
		// failing, and counting it as a 500 at ERROR would let anyone
		// who hangs up inflate the error rate. No page: nobody reads it.
		s.log.DebugContext(r.Context(), "client left before the answer", slog.String("path", r.URL.Path), slog.Any("err", err))
		w.WriteHeader(statusClientClosedRequest)
		return
	}
	status, msg := statusOf(err)
	if errors.Is(err, store.ErrUserGone) {
		s.endSession(r)
	}
	if status >= 500 && status != http.StatusServiceUnavailable {
		s.log.ErrorContext(r.Context(), "request failed", slog.String("path", r.URL.Path), slog.Any("err", err))
	}
	page := errorPage{Status: status, Title: http.StatusText(status), Message: msg}
	switch {
	case errors.Is(err, dbrouter.ErrUnavailable):
		page.Title, page.Outage = "The database is unreachable", true
		w.Header().Set("Retry-After", "5")
	case errors.Is(err, dbrouter.ErrOutcomeUnknown):
		page.Title = "Your change may have been saved"
	case status == http.StatusServiceUnavailable:
		page.Title = "Read-only right now"
	}
	s.render(w, r, status, "error.html", page)
}

// endSession signs out a session whose user no longer exists: its row is
// deleted (the deletion of the account may not have reached the replica
// that found it) and its cookie with the response. ErrUserGone comes only
// from handlers behind the session middleware, which put the session in
// the request's context.
func (s *Server) endSession(r *http.Request) {
	if err := s.sessions.Destroy(r.Context()); err != nil {
		s.log.WarnContext(r.Context(), "end the session of a deleted user", slog.Any("err", err))
	}
}

// sessionError is scs's ErrorFunc: loading or saving the session failed.
// The error page becomes the whole response; whatever the handler writes
// after it is dropped.
func (s *Server) sessionError(w http.ResponseWriter, r *http.Request, err error) {
	// Drop what the handler already put in the header (a redirect's
	// Location, a flash cookie): it described a response that is not sent.
	// The security headers and Cache-Control describe this one too.
	h := w.Header()
	for name := range h {
		if !keptHeader(name) {
			delete(h, name)
		}
	}
	s.serverError(w, r, err)
	if cw, ok := w.(*consistencyWriter); ok {
		cw.seal()
	}
}
