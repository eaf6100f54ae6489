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

// handleHome lists the nodes with their role and replication state. It is
// a page about the cluster itself: it asks every node directly.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) {
	view := s.router.Inspect(r.Context())
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

// handleHealthz answers 200 while the process serves requests, with each
// node's reachability for whoever wants more.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	view := s.router.Inspect(r.Context())
	nodes := map[string]string{}
	for _, n := range view.Nodes {
		nodes[n.Name] = n.Role()
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"status": "ok", "nodes": nodes})
}
