package server

import (
	"bytes"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"quest/internal/dbrouter"
)

// view is what every page template gets: the page's own data in Data,
// and the frame around it.
type view struct {
	User     *sessionUser
	Outage   bool // no database node answers: who is signed in is not known
	Flash    string
	Stale    bool   // some read may be stale: the primary is unreachable
	Served   string // the footer: which nodes served this page, and why
	Strategy string
	Data     any
}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		d := time.Since(t)
		switch {
		case d < time.Minute:
			return "just now"
		case d < time.Hour:
			return fmt.Sprintf("%d min ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%d h ago", int(d.Hours()))
		}
		return t.Format("2 Jan 2006")
	},
	"seq": func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i + 1
		}
		return s
	},
}

// render executes a page into a buffer first, so a template error never
// sends half a page. The footer is computed here, after the handler's
// reads, so it tells which nodes served them.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	t, ok := s.pages[page]
	if !ok {
		s.log.ErrorContext(r.Context(), "no such template", slog.String("page", page))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := view{User: currentUser(r), Flash: s.takeFlash(w, r), Strategy: s.router.Strategy().String(), Data: data}
	if e, ok := data.(errorPage); ok && e.Outage {
		v.Outage = true
	}
	v.Served, v.Stale = footer(dbrouter.TraceFrom(r.Context()), v.Strategy)
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "base", v); err != nil {
		s.log.ErrorContext(r.Context(), "render", slog.String("page", page), slog.Any("err", err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	buf.WriteTo(w)
}

// footer says in words which nodes served the request's reads, e.g.
// "served by replica2 · 1.2 s behind · sticky".
func footer(t *dbrouter.Trace, strategy string) (text string, stale bool) {
	var parts []string
	seen := map[string]bool{}
	for _, d := range t.Decisions() {
		if d.Write {
			continue
		}
		stale = stale || d.Reason == dbrouter.ReasonStale
		if seen[d.Node] {
			continue
		}
		seen[d.Node] = true
		p := d.Node
		if d.Node != "primary" {
			p += fmt.Sprintf(" · %.1f s behind", d.Lag.Seconds())
		}
		p += " · " + d.Reason.String()
		if d.Wait > 0 {
			p += fmt.Sprintf(" after %.1f ms", float64(d.Wait.Microseconds())/1000)
		}
		if d.Strategy.String() != strategy { // the session lookup, always causal
			p += " (" + d.Strategy.String() + ")"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "no database read · strategy " + strategy, stale
	}
	return "served by " + strings.Join(parts, "; ") + " · strategy " + strategy, stale
}

type errorPage struct {
	Status  int
	Title   string
	Message string
	Outage  bool
}
