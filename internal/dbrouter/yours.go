package dbrouter

import "time"

// The workshop's extension point: write your own strategy here.
//
// chooseYours decides where one read goes, from what the router knows
// without asking any node. Run `go test -run TestYourStrategy
// ./internal/dbrouter/` to see whether it keeps read-your-writes and
// monotonic reads and how many reads it keeps off the primary; with
// QUEST_EXERCISE=1 the test also wants at least half of them on replicas.
// Try it in the app with `quest serve --strategy yours`. docs/workshop.md
// has the exercise, hints, and one answer.

// YourRead is what your strategy sees of one read.
type YourRead struct {
	Own bool // the signed-in user's own data (wishlist, profile); else shared (forum, catalog)
	// SinceWrite is how long ago the session last wrote; a negative value
	// means it never has.
	SinceWrite time.Duration
	// Replicas are the replicas that are up and within the lag limit, the
	// session's own (rendezvous) replica first.
	Replicas []YourReplica
}

// YourReplica is one replica as the lag tracker last saw it.
type YourReplica struct {
	Name   string
	Lag    time.Duration // how far its replay is behind the primary
	Paused bool          // its replay is paused
}

// chooseYours returns the index in in.Replicas of the replica to read
// from, or -1 for the primary.
func chooseYours(in YourRead) int {
	return -1 // everything from the primary: always right, no read scaling
}

// decideYours asks chooseYours and returns the node index it chose (0 is
// the primary). The rest of the plan — other replicas if that one fails,
// then the primary — is the router's, as for every strategy.
func (r *Router) decideYours(st *State, intent Intent, now time.Time, snap *snapshot, order *[maxNodes]uint8, nr int) int {
	in := YourRead{Own: intent == Own, SinceWrite: -1}
	if st != nil && !st.LastWrite.IsZero() {
		in.SinceWrite = now.Sub(st.LastWrite)
	}
	idx := make([]int, 0, nr)
	for k := 0; k < nr; k++ {
		i := int(order[k])
		if h := &snap.nodes[i]; snap.usable(i) {
			in.Replicas = append(in.Replicas, YourReplica{Name: h.Name, Lag: h.Lag, Paused: h.Paused})
			idx = append(idx, i)
		}
	}
	if k := chooseYours(in); k >= 0 && k < len(idx) {
		return idx[k]
	}
	return 0
}
