package server

import (
	"encoding/json"
	"net/http"

	"quest/internal/dbrouter"
)

// homeNode is a node as the home page shows it: what it says of itself
// and, for a replica, its row in the primary's pg_stat_replication.
type homeNode struct {
	dbrouter.NodeInfo
	Stream  *dbrouter.ReplicationRow
	Tracked dbrouter.Health // the router's view, from its lag tracker
}

type homePage struct {
	Strategy dbrouter.Strategy
	Nodes    []homeNode
	ReplErr  string
}

// handleHome lists the nodes with their role and replication state, as
// the router's tracker last saw them: the page asks no node itself.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) {
	view := s.router.Inspect()
	hideErrors(&view, r)
	health := s.router.Health()
	page := homePage{Strategy: s.router.Strategy(), ReplErr: view.ReplErr}
	for i, n := range view.Nodes {
		hn := homeNode{NodeInfo: n, Tracked: health[i]}
		for i := range view.Replication {
			if view.Replication[i].AppName == n.Name {
				hn.Stream = &view.Replication[i]
			}
		}
		page.Nodes = append(page.Nodes, hn)
	}
	s.render(w, r, http.StatusOK, "home.html", page)
}

// handleHealthz answers from the tracker's last poll, never from a query
// of its own: 200 while some node can serve pages ("ok"; "read-only"
// while the primary is away; "split brain", with the nodes and timelines,
// while an old primary still accepts writes), 503 ("unavailable") when
// none can, so load balancers and orchestrators react. Each node's state
// comes with it.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	nodes := map[string]string{}
	for _, n := range s.router.Inspect().Nodes {
		nodes[n.Name] = n.Role()
	}
	status, code := "ok", http.StatusOK
	split := s.router.SplitBrain()
	switch {
	case !s.router.Serving():
		status, code = "unavailable", http.StatusServiceUnavailable
	case split != "":
		status = "split brain"
	case !s.router.Writable():
		status = "read-only"
	}
	body := map[string]any{"status": status, "nodes": nodes, "writable": s.router.Writable()}
	if split != "" {
		body["split_brain"] = split
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(body)
}
