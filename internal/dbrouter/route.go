package dbrouter

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spaolacci/murmur3"
)

// plan is the ordered list of nodes a read may try: the first is where
// the strategy sends it, the rest are where it moves if that node fails.
type plan struct {
	nodes  [maxNodes]uint8
	n      int
	reason Reason
}

func (p *plan) add(i int) {
	for _, j := range p.nodes[:p.n] {
		if int(j) == i {
			return
		}
	}
	p.nodes[p.n] = uint8(i) // #nosec G115 -- i < maxNodes
	p.n++
}

// nodeSeed is a node's identity in rendezvous hashing: removing one
// replica changes no other replica's weights.
func nodeSeed(name string) uint64 {
	return murmur3.Sum64([]byte(name))
}

var keyPool = sync.Pool{New: func() any { return new([16]byte) }}

// rendezvous fills order with the replicas' slots (1…) sorted by their
// highest-random-weight for the session, best first. Weights come from
// the nodes' names, so a promotion moves only the promoted node's sessions.
func (r *Router) rendezvous(snap *snapshot, session uint64, order *[maxNodes]uint8) int {
	var weights [maxNodes]uint64
	// murmur3 keeps its input on the heap; a pooled buffer keeps the
	// decision free of allocations.
	key := keyPool.Get().(*[16]byte)
	defer keyPool.Put(key)
	binary.LittleEndian.PutUint64(key[:8], session)
	n := 0
	for slot := 1; slot < snap.n; slot++ {
		binary.LittleEndian.PutUint64(key[8:], snap.members[slot].seed)
		w := murmur3.Sum64(key[:])
		// Insertion sort: a handful of replicas.
		j := n
		for j > 0 && weights[j-1] < w {
			weights[j], order[j] = weights[j-1], order[j-1]
			j--
		}
		weights[j], order[j] = w, uint8(slot) // #nosec G115 -- slot < maxNodes
		n++
	}
	return n
}

// decide plans a read. It reads only memory: the tracker's snapshot and
// the session's state.
func (r *Router) decide(st *State, intent Intent, s Strategy, now time.Time, snap *snapshot, p *plan) {
	var order [maxNodes]uint8
	var session uint64
	if st != nil {
		session = st.Session
	}
	nr := r.rendezvous(snap, session, &order)

	// preferred: the node the strategy wants; 0 means the primary.
	preferred, reason := -1, ReasonPrimaryOnly
	switch {
	case s == Primary:
		preferred = 0
	case s == Causal:
		r.decideCausal(snap, &order, nr, r.token(st).LSN, p)
		return
	case s == Yours:
		preferred, reason = r.decideYours(st, intent, now, snap, &order, nr), ReasonYours
	case (s == PinOwn || s == Sticky) && intent == Own:
		preferred, reason = 0, ReasonOwnData
	case s == Timed && st != nil && !st.LastWrite.IsZero() && now.Sub(st.LastWrite) < r.timedDelay:
		preferred, reason = 0, ReasonRecentWrite
	case s == Sticky:
		// The session's replica, or the next in rendezvous order.
		reason = ReasonSticky
		for k := 0; k < nr; k++ {
			i := int(order[k])
			if snap.usable(i) {
				preferred = i
				break
			}
			if k == 0 {
				reason = fallbackReason(snap.nodes[i].Status)
			}
		}
	default: // Random, PinOwn and Timed for shared data, Timed after its delay
		reason = ReasonRandom
		var usable [maxNodes]uint8
		k := 0
		for i := 1; i <= nr; i++ {
			if snap.usable(i) {
				usable[k] = uint8(i)
				k++
			}
		}
		if k > 0 {
			preferred = int(usable[r.intn(k)])
		} else if nr > 0 {
			reason = fallbackReason(snap.nodes[order[0]].Status)
		}
	}
	if preferred < 0 { // no usable replica
		preferred = 0
	}
	if preferred == 0 && snap.primaryDown && reason != ReasonFallbackLag && reason != ReasonFallbackDown {
		// The primary is gone: reads move to the replicas.
		for k := 0; k < nr; k++ {
			if i := int(order[k]); snap.usable(i) {
				preferred, reason = i, ReasonFallbackDown
				break
			}
		}
	}
	p.n, p.reason = 0, reason
	p.add(preferred)
	for k := 0; k < nr; k++ {
		if i := int(order[k]); snap.usable(i) {
			p.add(i)
		}
	}
	if !snap.primaryDown {
		p.add(0)
	}
	if p.n == 1 && preferred == 0 && snap.primaryDown {
		// Nothing is known to work: try the replicas anyway, in rendezvous
		// order — but not an old primary a newer one superseded, whose
		// data the cluster's history is about to discard.
		for k := 0; k < nr; k++ {
			if i := int(order[k]); snap.nodes[i].Status != Superseded {
				p.add(i)
			}
		}
	}
}

// decideCausal plans a causal read, for own and shared data alike: the
// session's rendezvous replica unless the tracker knows it is down, paused,
// past the lag limit, beyond the prefer-fresh threshold while a fresher
// replica exists, or unable to reach the session's position within the
// in-band wait (behind it, and lagging by more than the wait plus a poll
// interval — the lag estimate is only that exact); then the
// other such replicas in rendezvous order; then the primary. The in-band
// check decides which of them may answer.
func (r *Router) decideCausal(snap *snapshot, order *[maxNodes]uint8, nr int, token uint64, p *plan) {
	freshExists := false
	for k := 0; k < nr; k++ {
		h := &snap.nodes[order[k]]
		freshExists = freshExists || (h.Status == Usable && !h.Paused && h.Lag <= r.preferFresh)
	}
	p.n, p.reason = 0, ReasonSticky
	for k := 0; k < nr; k++ {
		i := int(order[k])
		h := &snap.nodes[i]
		switch {
		case h.Status == Usable && !h.Paused && (h.Lag <= r.preferFresh || !freshExists) &&
			(h.Position >= token || h.Lag <= r.causalWait+r.pollInterval):
			p.add(i)
		case k == 0 && h.Status == Down:
			p.reason = ReasonFallbackDown
		case k == 0:
			p.reason = ReasonFallbackLag
		}
	}
	if !snap.primaryDown {
		p.add(0)
	}
}

func fallbackReason(e Status) Reason {
	if e == Lagging {
		return ReasonFallbackLag
	}
	return ReasonFallbackDown
}

// intn picks a number in [0, n). Without a configured source it uses
// math/rand/v2's top-level generator, which keeps its state per thread and
// takes no lock: a shared source behind a mutex was every random read's
// one point of contention. A configured source (tests seed one to make
// anomalies reproducible) is shared, so it keeps its lock.
func (r *Router) intn(n int) int {
	if r.rand == nil {
		return rand.IntN(n) // #nosec G404 -- load spreading, not security
	}
	r.randMu.Lock()
	v := r.rand.IntN(n)
	r.randMu.Unlock()
	return v
}
