package server

import (
	"bytes"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"quest/internal/dbrouter"
)

// view is what every page template gets: the page's own data in Data,
// and the frame around it.
type view struct {
	User     *sessionUser
	Outage   bool // no database node answers: who is signed in is not known
	Flash    string
	Stale    bool      // some read may be stale: the primary is unreachable
	Lost     bool      // the session's last change may have been lost in a failover
	Reads    pageReads // the panel: how this page was read
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
	trace := dbrouter.TraceFrom(r.Context())
	strategy := s.router.StrategyFor(r.Context())
	v := view{User: currentUser(r), Flash: s.takeFlash(w, r), Strategy: strategy.String(), Data: data, Stale: trace.Stale(), Lost: trace.Lost()}
	if s.takeLost(w, r) && !v.Lost {
		v.Lost = true // told on a form's redirect, which the browser did not show
		w.Header().Set("X-Quest-Lost", "1")
	}
	if e, ok := data.(errorPage); ok && e.Outage {
		v.Outage = true
	}
	v.Reads = explain(trace, strategy, s.router.CausalWait())
	v.Reads.Own = strategy != s.router.Strategy()
	if st := dbrouter.StateFrom(r.Context()); st != nil && r.Method == http.MethodGet {
		s.recent.add(st.Session, recentRequest{At: time.Now(), Path: r.URL.Path, Reads: slices.Clone(v.Reads.Reads)})
	}
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

type errorPage struct {
	Status  int
	Title   string
	Message string
	Outage  bool
}
