package dbrouter

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The causal strategy. A session's token is the WAL position of the
// latest data it has written or seen. A read on a replica is one pipelined
// batch: first quest_wait_for_lsn (a migration installs it) returns the
// replay position as soon as it reaches the token, or after a bounded
// wait; then the read's own queries; then the replay position again. The
// read counts only if the first position reached the token — then the data
// is at least as new as anything the session saw — and the token moves to
// the last position, since the data cannot be newer than it. Otherwise
// the result is discarded and the next candidate is tried, the primary
// last. The wait happens where the commit arrives, so no session depends
// on the poller or on another session's traffic to make progress.
//
// PostgreSQL 15 has no per-row position, so monotonic reads are exact only
// at the price of a primary read whenever every replica lags by more than
// the session's gap between requests plus the wait: such a session reads
// from the primary until a replica catches up (counted as primary streaks
// by the lab, from the served-by trail).

// CausalStats are the causal strategy's costs, for the lab and metrics.
type CausalStats struct {
	Fresh      int64         // reads a replica answered at once
	Waited     int64         // reads a replica answered after waiting in-band
	Short      int64         // in-band checks that fell short (result discarded)
	OnPrimary  int64         // reads that fell back to the primary
	Stale      int64         // reads served possibly stale (primary down, no replica fresh enough)
	WaitTotal  time.Duration // time spent waiting in-band, all reads
	ExtraTrips int64         // round trips spent on discarded attempts and post-commit positions
}

type causalCounters struct {
	fresh, waited, short, onPrimary, stale, waitNanos, extraTrips atomic.Int64
}

// CausalStats returns the causal strategy's counters.
func (r *Router) CausalStats() CausalStats {
	c := &r.causal
	return CausalStats{
		Fresh: c.fresh.Load(), Waited: c.waited.Load(), Short: c.short.Load(),
		OnPrimary: c.onPrimary.Load(), Stale: c.stale.Load(),
		WaitTotal: time.Duration(c.waitNanos.Load()), ExtraTrips: c.extraTrips.Load(),
	}
}

// loadHistory reads the cluster's system identifier and timeline.
func (r *Router) loadHistory(ctx context.Context, pool *pgxpool.Pool) {
	var h Token
	err := pool.QueryRow(ctx, `SELECT (SELECT system_identifier FROM pg_control_system()),
	                                  (SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&h.SystemID, &h.Timeline)
	if err == nil {
		r.history.CompareAndSwap(nil, &h)
	}
}

// token returns the session's token if it belongs to this cluster's
// history, else the zero token.
func (r *Router) token(st *State) Token {
	h := r.history.Load()
	if st == nil || st.Token.IsZero() || h == nil || st.Token.SystemID != h.SystemID || st.Token.Timeline != h.Timeline {
		return Token{}
	}
	return st.Token
}

// advance moves the session's token to lsn, if that is later.
func (r *Router) advance(st *State, lsn uint64) {
	h := r.history.Load()
	if st == nil || h == nil || lsn == 0 {
		return
	}
	cur := r.token(st)
	if lsn > cur.LSN {
		st.Token = Token{SystemID: h.SystemID, Timeline: h.Timeline, LSN: lsn}
		st.changed = true
	}
}

const (
	// waitQuery calls quest_wait_for_lsn only when the replica is behind
	// the token: when it already has it (the usual case) a one-time filter
	// answers without entering PL/pgSQL, which keeps a causal read cheap.
	waitQuery = `
		SELECT w.pos::text, w.waited_ms
		  FROM (SELECT pg_last_wal_replay_lsn() AS p, pg_is_in_recovery() AS r) n,
		       LATERAL (SELECT f.pos, f.waited_ms FROM quest_wait_for_lsn($1::text::pg_lsn, $2) f
		                 WHERE (n.r AND n.p >= $1::text::pg_lsn) IS NOT TRUE
		                UNION ALL
		                SELECT n.p, 0 WHERE n.r AND n.p >= $1::text::pg_lsn) w`
	replayQuery = `SELECT pg_last_wal_replay_lsn()::text`
	flushQuery  = `SELECT pg_current_wal_flush_lsn()::text`
)

func (r *Router) readCausal(ctx context.Context, st *State, intent Intent, fn ReadFunc, snap *snapshot, p *plan) error {
	token := r.token(st)
	if token.LSN == UnknownLSN {
		// A write whose position is unknown: only the primary vouches.
		p.n, p.reason = 0, ReasonFallbackLag
		if !snap.primaryDown {
			p.add(0)
		}
	}
	reason := p.reason
	failures := 0
	var lastErr error
	for k := 0; k < p.n; k++ {
		i := int(p.nodes[k])
		node := r.nodes[i]
		if k > 0 {
			r.causal.extraTrips.Add(1)
		}
		var err error
		var ok bool
		if i == 0 {
			err = r.causalOnPrimary(ctx, st, fn)
			ok = err == nil
		} else {
			var wait time.Duration
			ok, wait, err = r.causalOnReplica(ctx, st, token, node, fn, false)
			if ok {
				re := reason
				if re == ReasonSticky { // the session's own replica answered
					re = ReasonFresh
					if wait > 0 {
						re = ReasonWaited
					}
				}
				if wait > 0 {
					r.causal.waited.Add(1)
				} else {
					r.causal.fresh.Add(1)
				}
				r.record(ctx, Decision{Node: node.Name, Strategy: Causal, Intent: intent, Reason: re,
					Lag: snap.nodes[i].Lag, LagBytes: snap.nodes[i].LagBytes, Wait: wait})
				return nil
			}
		}
		if ok { // the primary
			r.causal.onPrimary.Add(1)
			r.record(ctx, Decision{Node: node.Name, Strategy: Causal, Intent: intent, Reason: reason})
			return nil
		}
		if err == nil { // fell short: try the next candidate
			r.causal.short.Add(1)
			reason = ReasonFallbackLag
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.mayRetryElsewhere(ctx, i, err) {
			return err
		}
		lastErr = err
		if failures++; failures > 1 {
			break
		}
		reason = ReasonRetried
	}
	// Nothing fresh enough answered and the primary could not: serve the
	// freshest replica, flagged as possibly stale.
	if i := r.freshestReplica(); i > 0 {
		node := r.nodes[i]
		r.causal.extraTrips.Add(1)
		if token.LSN == UnknownLSN {
			token = Token{} // no replica can reach it: do not wait for it
		}
		_, wait, err := r.causalOnReplica(ctx, st, token, node, fn, true)
		if err == nil {
			r.causal.stale.Add(1)
			r.record(ctx, Decision{Node: node.Name, Strategy: Causal, Intent: intent, Reason: ReasonStale,
				Lag: snap.nodes[i].Lag, LagBytes: snap.nodes[i].LagBytes, Wait: wait})
			return nil
		}
		lastErr = err
	}
	if lastErr == nil {
		lastErr = fmt.Errorf("no node could serve the read")
	}
	return fmt.Errorf("dbrouter: causal read failed on every candidate: %w", lastErr)
}

// causalOnReplica runs one attempt on a replica. ok reports whether the
// replica had the session's position when the data was read (or, with
// acceptStale, that it answered at all).
func (r *Router) causalOnReplica(ctx context.Context, st *State, token Token, node *Node, fn ReadFunc, acceptStale bool) (ok bool, wait time.Duration, err error) {
	var first, last *string
	var waitedMS float64
	b := &pgx.Batch{}
	b.Queue(waitQuery, FormatLSN(token.LSN), int(r.causalWait.Milliseconds())).QueryRow(func(row pgx.Row) error {
		return row.Scan(&first, &waitedMS)
	})
	fn(b)
	b.Queue(replayQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&last) })
	err = node.Pool.SendBatch(ctx, b).Close()
	wait = time.Duration(waitedMS * float64(time.Millisecond))
	r.causal.waitNanos.Add(int64(wait))
	firstPos := lsnOrZero(first)
	fresh := first != nil && firstPos >= token.LSN
	if !fresh && first != nil && !acceptStale {
		// Short: whatever the data queries said (even an error such as
		// "no rows" for a row not replayed yet) is discarded.
		return false, wait, nil
	}
	if err != nil {
		return false, wait, err
	}
	if first == nil && !acceptStale {
		return false, wait, nil // not in recovery: vouches for nothing
	}
	r.advance(st, lsnOrZero(last))
	return true, wait, nil
}

// causalOnPrimary runs the read on the primary and moves the token to the
// primary's flush position read in the same batch.
func (r *Router) causalOnPrimary(ctx context.Context, st *State, fn ReadFunc) error {
	var flush string
	b := &pgx.Batch{}
	fn(b)
	b.Queue(flushQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&flush) })
	if err := r.nodes[0].Pool.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	lsn := lsnOrZero(&flush)
	if h := r.history.Load(); h != nil && lsn != 0 && r.token(st).LSN == UnknownLSN {
		// The primary answered after the write of unknown position, so
		// its flush position covers it: the session may use replicas again.
		st.Token = Token{SystemID: h.SystemID, Timeline: h.Timeline, LSN: lsn}
		st.changed = true
		return nil
	}
	r.advance(st, lsn)
	return nil
}

// freshestReplica returns the up replica with the highest replay position
// the tracker saw, or 0.
func (r *Router) freshestReplica() int {
	snap := r.snap.Load()
	best, pos := 0, uint64(0)
	for i := 1; i < len(r.nodes); i++ {
		if h := snap.nodes[i]; h.Up && h.InRecovery && (best == 0 || h.Position > pos) {
			best, pos = i, h.Position
		}
	}
	return best
}

func lsnOrZero(s *string) uint64 {
	if s == nil {
		return 0
	}
	v, _ := ParseLSN(*s)
	return v
}
