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
	Router      []nodeState               `json:"router"` // the members, with the router's and Patroni's words
	Primary     string                    `json:"primary"`
	SplitBrain  string                    `json:"split_brain,omitempty"`
	Patroni     bool                      `json:"patroni_known"` // the members carry what Patroni says
	// PatroniNote says where the router's Patroni discovery asked, or why
	// it got no answer: to admins only, as the URL and the error name
	// hosts and ports; others learn only that Patroni did not answer.
	PatroniNote string `json:"patroni_note,omitempty"`
}

// handleStatus is the article's check — pg_stat_replication on the
// primary — with write, flush and replay lag, and the router's view of
// each node; JSON for Accept: application/json.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	view := s.router.Inspect()
	hideErrors(&view, r)
	lab := s.labState()
	page := statusPage{Strategy: s.router.Strategy().String(), Replication: view.Replication, ReplErr: view.ReplErr,
		Nodes: view.Nodes, Router: lab.Nodes, Primary: lab.Primary, SplitBrain: lab.SplitBrain, Patroni: lab.Patroni}
	admin := currentUser(r) != nil && currentUser(r).IsAdmin
	switch {
	case view.PatroniErr != "" && admin:
		page.PatroniNote = "Patroni did not answer the router: " + view.PatroniErr
	case view.PatroniErr != "":
		page.PatroniNote = "Patroni did not answer the router's last question."
	case view.PatroniURL != "" && admin:
		page.PatroniNote = "The router asks Patroni at " + view.PatroniURL + "."
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(page)
		return
	}
	s.render(w, r, http.StatusOK, "status.html", page)
}

// nodeUnreachable is what a node the router cannot reach is to anyone but
// an admin.
const nodeUnreachable = "node unreachable"

// hideErrors keeps the connection errors in view for admins: the driver's
// words name the database user, the database, the host and the port,
// which are nobody else's business. Everyone else reads "node
// unreachable"; the log has the detail (the router logs each new error).
func hideErrors(view *dbrouter.ClusterView, r *http.Request) {
	if u := currentUser(r); u != nil && u.IsAdmin {
		return
	}
	for i := range view.Nodes {
		if view.Nodes[i].Err != "" {
			view.Nodes[i].Err = nodeUnreachable
		}
	}
	if view.ReplErr != "" {
		view.ReplErr = "the primary did not answer"
	}
}
