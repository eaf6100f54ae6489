package dbrouter

import "time"

// SetAfterCommit makes the router call f between a write's COMMIT and the
// read of its WAL position, where a primary crash hurts most.
func SetAfterCommit(r *Router, f func()) { r.testAfterCommit = f }

// StickyNode returns the node a sticky read of the session would go to
// first, from the router's current snapshot.
func StickyNode(r *Router, session uint64) string {
	var p plan
	snap := r.snap.Load()
	r.decide(&State{Session: session}, Shared, Sticky, time.Now(), snap, &p)
	return snap.nodes[p.nodes[0]].Name
}
