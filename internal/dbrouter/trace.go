package dbrouter

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Decision records where one read or write went and why.
type Decision struct {
	Node     string
	Strategy Strategy
	Intent   Intent
	Reason   Reason
	Write    bool
	Lag      time.Duration // the node's replay lag as the tracker last saw it
	LagBytes int64
	Wait     time.Duration // time spent waiting for the node to catch up (causal)
}

// Trace collects a request's decisions, so the page footer, the
// X-Quest-Served-By header, the logs and the metrics tell one story.
type Trace struct {
	mu        sync.Mutex
	decisions []Decision
}

type traceKey struct{}

// WithTrace returns a context that records decisions into a new Trace.
func WithTrace(ctx context.Context) (context.Context, *Trace) {
	t := &Trace{}
	return context.WithValue(ctx, traceKey{}, t), t
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

// counters counts decisions by node, strategy and reason, for metrics.
type counters struct {
	reads      [maxNodes][numStrategies][numReasons]atomic.Int64
	roundTrips [maxNodes]atomic.Int64
}

// DecisionCount is one cell of the decision counters.
type DecisionCount struct {
	Node     string
	Strategy Strategy
	Reason   Reason
	Count    int64
}

// DecisionCounts returns the non-zero decision counters.
func (r *Router) DecisionCounts() []DecisionCount {
	var out []DecisionCount
	for i, n := range r.nodes {
		for s := range Strategy(numStrategies) {
			for re := range Reason(numReasons) {
				if c := r.counts.reads[i][s][re].Load(); c > 0 {
					out = append(out, DecisionCount{Node: n.Name, Strategy: s, Reason: re, Count: c})
				}
			}
		}
	}
	return out
}

// RoundTrips returns how many round trips the application's pools made to
// each node: one per query, one per batch however many queries it holds.
// The tracker's own polling is not counted.
func (r *Router) RoundTrips() map[string]int64 {
	out := make(map[string]int64, len(r.nodes))
	for i, n := range r.nodes {
		out[n.Name] = r.counts.roundTrips[i].Load()
	}
	return out
}
