package dbrouter

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Decision records where one read or write went and why: enough for a
// page to explain, in words, how it was read.
type Decision struct {
	// Node is how pages name the node that served it: "primary" for the
	// primary, whichever node that is now; else the node's name.
	Node string
	// Member is the node's own name (Node.Name), whatever its role.
	Member   string
	Strategy Strategy
	Intent   Intent
	Reason   Reason
	Write    bool
	Lag      time.Duration // the node's replay lag as the tracker last saw it
	LagBytes int64
	Wait     time.Duration // time spent waiting for the node to catch up (causal)

	// SessionLSN is the session's position (its last write, or the newest
	// data it had seen) when the read started: 0 for none, UnknownLSN for
	// a write whose position is unknown.
	SessionLSN uint64
	// NodeLSN is the node's position for this read: a replica's replay
	// position (read in the same batch by causal; else the tracker's last
	// poll, NodeLSNTracked), or the primary's position.
	NodeLSN        uint64
	NodeLSNTracked bool
	Paused         bool          // the replica's replay was paused (tracker)
	ApplyDelay     time.Duration // its recovery_min_apply_delay (tracker)
	// ShortOn names the replica whose in-band check fell short before
	// this node answered (causal).
	ShortOn string
	// Lost: the session's last change was beyond the point where the
	// primary's timeline forked from the one it was written on — a
	// failover may have lost it — so the primary answered (or, with none,
	// the freshest replica).
	Lost bool
	// SQL is the batch the node ran, the router's own statements
	// included, when the request's trace asks for it (WithTrace).
	SQL []string
}

// Trace collects a request's decisions, so the page footer, the
// X-Quest-Served-By header, the logs and the metrics tell one story.
type Trace struct {
	mu        sync.Mutex
	decisions []Decision
	keepSQL   atomic.Bool // read by every read: no lock
}

type traceKey struct{}

// WithTrace returns a context that records decisions into a new Trace.
func WithTrace(ctx context.Context) (context.Context, *Trace) {
	t := &Trace{}
	return context.WithValue(ctx, traceKey{}, t), t
}

// KeepSQL makes the trace keep, from now on, the SQL each read ran, for
// pages that show it.
func (t *Trace) KeepSQL() {
	if t != nil {
		t.keepSQL.Store(true)
	}
}

func (t *Trace) keepsSQL() bool {
	return t != nil && t.keepSQL.Load()
}

// TraceFrom returns the trace in ctx, or nil.
func TraceFrom(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

func (t *Trace) add(d Decision) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.decisions = append(t.decisions, d)
	t.mu.Unlock()
}

// Decisions returns a copy of the recorded decisions.
func (t *Trace) Decisions() []Decision {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Decision(nil), t.decisions...)
}

// ServedBy lists the distinct nodes that served the request's reads, in
// the order first used: "replica2" or "primary,replica1".
func (t *Trace) ServedBy() string {
	var nodes []string
	for _, d := range t.Decisions() {
		if d.Write {
			continue
		}
		seen := false
		for _, n := range nodes {
			seen = seen || n == d.Node
		}
		if !seen {
			nodes = append(nodes, d.Node)
		}
	}
	return strings.Join(nodes, ",")
}

// Route describes the request's reads for a response header, each as
// node:reason:strategy, with ":<ms>ms" after a read that waited in-band:
// "primary:fallback-lag:causal,replica2:waited:sticky:1.2ms".
func (t *Trace) Route() string {
	var b strings.Builder
	for _, d := range t.Decisions() {
		if d.Write {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.Node)
		b.WriteByte(':')
		b.WriteString(d.Reason.String())
		b.WriteByte(':')
		b.WriteString(d.Strategy.String())
		if d.Wait > 0 {
			fmt.Fprintf(&b, ":%.1fms", float64(d.Wait.Microseconds())/1000)
		}
	}
	return b.String()
}

// Stale reports whether any read of the request may have been stale.
func (t *Trace) Stale() bool {
	for _, d := range t.Decisions() {
		if d.Reason == ReasonStale {
			return true
		}
	}
	return false
}

// Lost reports whether the session's last change may have been lost in a
// failover (see Decision.Lost).
func (t *Trace) Lost() bool {
	for _, d := range t.Decisions() {
		if d.Lost {
			return true
		}
	}
	return false
}

// counters holds each node's counters by name, so a member that
// discovery drops and adds back keeps counting where it left off.
type counters struct {
	mu     sync.Mutex
	byName map[string]*nodeCounters
}

// nodeCounters counts one node's reads by strategy, reason and intent, and
// its round trips, for metrics.
type nodeCounters struct {
	reads      [numStrategies][numReasons][numIntents]atomic.Int64
	roundTrips atomic.Int64
}

// of returns the counters of the node called name.
func (c *counters) of(name string) *nodeCounters {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName == nil {
		c.byName = map[string]*nodeCounters{}
	}
	nc := c.byName[name]
	if nc == nil {
		nc = &nodeCounters{}
		c.byName[name] = nc
	}
	return nc
}

// DecisionCount is one cell of the decision counters.
type DecisionCount struct {
	Node     string
	Strategy Strategy
	Reason   Reason
	Intent   Intent
	Count    int64
}

// DecisionCounts returns the non-zero decision counters, each node's under
// its label now (Label).
func (r *Router) DecisionCounts() []DecisionCount {
	var out []DecisionCount
	snap := r.snap.Load()
	for slot, n := range snap.members[:snap.n] {
		label := snap.nodes[slot].Name
		for s := range Strategy(numStrategies) {
			for re := range Reason(numReasons) {
				for in := range Intent(numIntents) {
					if c := n.counts.reads[s][re][in].Load(); c > 0 {
						out = append(out, DecisionCount{Node: label, Strategy: s, Reason: re, Intent: in, Count: c})
					}
				}
			}
		}
	}
	return out
}

// RoundTrips returns how many round trips the application's pools made to
// each node, by its label now: one per query, one per batch however many queries it holds.
// The tracker's own polling is not counted.
func (r *Router) RoundTrips() map[string]int64 {
	snap := r.snap.Load()
	out := make(map[string]int64, snap.n)
	for slot, n := range snap.members[:snap.n] {
		out[snap.nodes[slot].Name] = n.counts.roundTrips.Load()
	}
	return out
}
