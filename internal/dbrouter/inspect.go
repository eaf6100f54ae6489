package dbrouter

import "time"

// NodeInfo is what a node said about itself to the tracker's last poll.
type NodeInfo struct {
	Name       string // "primary" for the primary, else Member
	Member     string // the node's own name, whatever its role
	Timeline   uint32
	Reachable  bool
	Err        string
	InRecovery bool
	Position   string        // flush position on a primary, replay position on a replica
	PauseState string        // replicas only
	ApplyDelay time.Duration // recovery_min_apply_delay
	Patroni    Patroni       // what Patroni said of the member, when the router asks it
}

// Role is "primary", "replica" or "unreachable".
func (n NodeInfo) Role() string {
	switch {
	case !n.Reachable:
		return "unreachable"
	case n.InRecovery:
		return "replica"
	default:
		return "primary"
	}
}

// ReplicationRow is one row of pg_stat_replication on the primary.
type ReplicationRow struct {
	PID        int
	User       string
	AppName    string
	State      string
	SyncState  string
	LagBytes   int64
	LagSeconds float64 // replay_lag
	WriteLag   float64 // write_lag, seconds
	FlushLag   float64 // flush_lag, seconds
}

// ClusterView is what the tracker last saw of every node, for pages about
// the cluster.
type ClusterView struct {
	Nodes       []NodeInfo
	Replication []ReplicationRow
	ReplErr     string
	// PatroniURL is the Patroni REST API that last answered the router's
	// discovery, PatroniErr why none did; both empty without discovery.
	PatroniURL string
	PatroniErr string
}

// Inspect returns what the tracker last saw of every node (the primary
// first) and of the
// primary's pg_stat_replication. It asks no node: status pages and health
// checks answer from memory, so a flood of them costs the database nothing
// and cannot delay the tracker.
func (r *Router) Inspect() ClusterView {
	snap := r.snap.Load()
	view := ClusterView{Nodes: make([]NodeInfo, snap.n), Replication: snap.replication, ReplErr: snap.replErr,
		PatroniURL: snap.patroniURL, PatroniErr: snap.patroniErr}
	for i := range snap.n {
		h := snap.nodes[i]
		info := NodeInfo{Name: h.Name, Member: h.Member, Timeline: h.Timeline, Reachable: h.Up, Err: h.Err, InRecovery: h.InRecovery,
			PauseState: h.PauseState, ApplyDelay: h.ApplyDelay, Patroni: h.Patroni}
		if h.Up && h.Position != 0 {
			info.Position = FormatLSN(h.Position)
		}
		view.Nodes[i] = info
	}
	return view
}

// Serving reports whether any node answered the tracker's last poll: with
// none, no page can be served, and health checks should say so.
func (r *Router) Serving() bool {
	snap := r.snap.Load()
	for i := range snap.n {
		if snap.nodes[i].Up {
			return true
		}
	}
	return false
}

// Writable reports whether the primary answered the last poll as a
// primary.
func (r *Router) Writable() bool { return !r.snap.Load().primaryDown }
