package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
)

// render executes a page into a buffer first, so a template error never
// sends half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	t, ok := s.pages[page]
	if !ok {
		s.log.ErrorContext(r.Context(), "no such template", slog.String("page", page))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "base", data); err != nil {
		s.log.ErrorContext(r.Context(), "render", slog.String("page", page), slog.Any("err", err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	buf.WriteTo(w)
}

type errorPage struct {
	Status  int
	Title   string
	Message string
}

// renderError shows an error page with a status.
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error.html", errorPage{
		Status:  status,
		Title:   fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Message: msg,
	})
}
