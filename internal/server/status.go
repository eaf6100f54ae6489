package server

import (
	"encoding/json"
	"net/http"
	"strings"

	"quest/internal/dbrouter"
)

type statusPage struct {
	Strategy    string                    `json:"strategy"`
	Replication []dbrouter.ReplicationRow `json:"pg_stat_replication"`
	ReplErr     string                    `json:"pg_stat_replication_error,omitempty"`
	Nodes       []dbrouter.NodeInfo       `json:"nodes"`
	Router      []nodeState               `json:"router"`
}

// handleStatus is the article's check — pg_stat_replication on the
// primary — with write, flush and replay lag, and the router's view of
// each node; JSON for Accept: application/json.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	view := s.router.Inspect()
	page := statusPage{Strategy: s.router.Strategy().String(), Replication: view.Replication, ReplErr: view.ReplErr,
		Nodes: view.Nodes, Router: s.labState().Nodes}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(page)
		return
	}
	s.render(w, r, http.StatusOK, "status.html", page)
}
