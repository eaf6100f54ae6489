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

// ForgeNewerTimeline moves r's history onto the next timeline, as a
// promotion the tracker saw would, forking at end.
func ForgeNewerTimeline(r *Router, end uint64) {
	h := r.history.Load()
	r.history.Store(&history{systemID: h.systemID, timeline: h.timeline + 1,
		ends: map[uint32]uint64{h.timeline: end}, guessed: map[uint32]bool{}})
}
