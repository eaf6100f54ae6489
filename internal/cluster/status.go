package cluster

// Process is a node with its postmaster's state.
type Process struct {
	Node
	Up  bool
	PID int // 0 when down
}

// Processes tells which nodes' postmasters are running. What the servers
// themselves say (role, replay state, pg_stat_replication) is asked through
// the application's pools: see dbrouter.Router.Inspect.
func (c *Cluster) Processes() []Process {
	var ps []Process
	for _, n := range c.Nodes() {
		pid := c.runningPID(n)
		ps = append(ps, Process{Node: n, Up: pid > 0, PID: pid})
	}
	return ps
}
