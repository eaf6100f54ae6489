package dbrouter

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The causal strategy. A session's token is the WAL position of the
// latest data it has written or seen. A read on a replica is one pipelined
// batch: first an in-band check — answered at once when the replica has
// already replayed the token, else by quest_await_lsn (a migration
// installs it), which waits for replay to reach the token for a bounded
// time and raises when it does not; then the read's own queries; then the
// replay position. A raise aborts the batch's implicit transaction, so the
// read's queries never run on a replica that falls short. The check is
// left out when nothing can fall short: the session has no position, or
// the tracker saw this very server replay it (causalOnReplica says when
// that holds). The replay position read after the data is never left out:
// behind the token, the replica went back and its answer is discarded.
// When the checks pass, the data is at least as new as anything the
// session saw, and the token moves to the last position, since the data
// cannot be newer than it. A read waits in-band at most once: after one replica falls short the
// primary answers. Replicas whose tracked replay is behind the token and
// whose lag exceeds the wait are not asked at all. The wait happens where
// the commit arrives, so no session depends on the poller or on another
// session's traffic to make progress.
//
// Positions: after the session's own write, the primary's flush position
// read after COMMIT returned (synchronous_commit is pinned on, so the
// commit is in it); after a read on the primary, the insert position,
// because another client's asynchronous commit is visible there before it
// is flushed, and the session must not lose it on its next read.
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

const (
	// waitQuery enters quest_await_lsn only when the replica is behind the
	// token: when it already has it (the usual case) the CASE answers
	// without entering PL/pgSQL, which keeps a causal read cheap.
	waitQuery = `
		SELECT CASE WHEN pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= $1::text::pg_lsn THEN 0::float8
		            ELSE quest_await_lsn($1::text::pg_lsn, $2) END`
	replayQuery = `SELECT pg_last_wal_replay_lsn()::text`
	flushQuery  = `SELECT pg_current_wal_flush_lsn()::text`
	insertQuery = `SELECT pg_current_wal_insert_lsn()::text`

	codeShort      = "QW001" // quest_await_lsn: the budget ran out before replay reached the token
	codeNotStandby = "QW002" // quest_await_lsn: the server is not in recovery
)

// ReplayCheckSQL follows a causal read's data on a replica, in the same
// pipelined batch: the replay position the data cannot be newer than, and
// whether the server is still a standby. It is exported for the
// benchmark's control row, which runs it without a router.
const ReplayCheckSQL = `SELECT pg_last_wal_replay_lsn()::text, pg_is_in_recovery()`

// readCausal runs a causal read; s is the strategy the decision reports
// (a session whose change a failover lost reads this way whatever its
// strategy).
func (r *Router) readCausal(ctx context.Context, st *State, s Strategy, intent Intent, fn ReadFunc, snap *snapshot, p *plan) error {
	token, lost := r.resolve(st)
	if token.LSN == UnknownLSN {
		// A write whose position is unknown: only the primary vouches.
		p.n, p.reason = 0, ReasonFallbackLag
		if !snap.primaryDown {
			p.add(0)
		}
	}
	reason := p.reason
	failures := 0
	fellShort := false
	shortOn := ""
	var lastErr error
	for k := 0; k < p.n; k++ {
		i := int(p.nodes[k])
		if i != 0 && fellShort && !snap.primaryDown {
			continue // one in-band wait per read: the primary answers now
		}
		node := snap.members[i]
		if k > 0 {
			r.causal.extraTrips.Add(1)
		}
		d := r.decision(snap, i, s, intent, reason, token.LSN)
		d.ShortOn, d.Lost = shortOn, lost
		if i == 0 {
			err := r.causalOnPrimary(ctx, st, node, fn, &d)
			if err != nil && ctx.Err() == nil && nodeFailed(err) && !isConnectError(err) && !errors.Is(err, context.DeadlineExceeded) {
				// One dropped connection is not a dead primary: the read
				// runs once more, on a connection that answers a ping,
				// before a replica serves it possibly stale. (A primary
				// that did not answer within NodeTimeout gets no second
				// wait.)
				r.tracker.kick(node)
				r.causal.extraTrips.Add(1)
				err = r.causalOnPrimary(context.WithValue(ctx, pingKey{}, true), st, node, fn, &d)
			}
			if err == nil {
				r.causal.onPrimary.Add(1)
				r.record(ctx, node, d)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !r.mayRetryElsewhere(ctx, snap, i, err) {
				return err
			}
			lastErr = err
			break
		}
		ok, err := r.causalOnReplica(ctx, st, token, node, &snap.nodes[i], fn, &d)
		switch {
		case ok:
			if d.Reason == ReasonSticky { // the session's own replica answered
				d.Reason = ReasonFresh
				if d.Wait > 0 {
					d.Reason = ReasonWaited
				}
			}
			if d.Wait > 0 {
				r.causal.waited.Add(1)
			} else {
				r.causal.fresh.Add(1)
			}
			r.record(ctx, node, d)
			return nil
		case err == nil: // fell short: the read's own queries did not run
			r.causal.short.Add(1)
			fellShort = fellShort || d.Wait > 0
			shortOn = node.Name
			reason = ReasonFallbackLag
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !r.mayRetryElsewhere(ctx, snap, i, err):
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
	if i := freshestReplica(snap, snap.n); i > 0 {
		node := snap.members[i]
		r.causal.extraTrips.Add(1)
		d := r.decision(snap, i, s, intent, ReasonStale, token.LSN)
		d.ShortOn, d.Lost = shortOn, lost
		err := r.causalStale(ctx, st, node, fn, &d)
		if err == nil {
			r.causal.stale.Add(1)
			r.record(ctx, node, d)
			return nil
		}
		lastErr = err
	}
	return unavailable(lastErr)
}

// causalOnReplica runs one attempt on a replica, filling d with its wait,
// the replay position it read and its SQL. ok reports whether the replica
// had the session's position when the data was read; !ok with a nil error
// means it fell short (or is not a standby, or went back), and the read's
// result is discarded.
//
// The batch is the read's own queries and then the replay position, with
// the in-band wait first only when the session's position is not already
// known to be there: a session with no position needs no wait, nor does
// one whose position the tracker saw this replica replay — provided every
// connection of the node's pool was made before that poll began. Such a
// connection reaches the very server the tracker saw (a restart breaks it,
// and then the batch fails on it), and a server's replay only moves
// forward. A connection made since may reach a server restarted behind
// what the tracker saw, so it waits in-band. Whatever ran before the data,
// the position read after it must not be behind the session's and the
// server must still be a standby: a replica that went back, or was
// promoted, does not answer.
func (r *Router) causalOnReplica(ctx context.Context, st *State, token Token, node *Node, h *Health, fn ReadFunc, d *Decision) (ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.nodeTimeout)
	defer cancel()
	conn, err := node.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	covered := token.LSN == 0 ||
		(h.Status == Usable && h.Position >= token.LSN && node.conns.Load() == h.connsAt)
	var waitedMS float64
	var last *string
	var standby bool
	b, err := sendOn(ctx, conn, func(b *pgx.Batch) {
		if !covered {
			b.Queue(waitQuery, FormatLSN(token.LSN), int(r.causalWait.Milliseconds())).QueryRow(func(row pgx.Row) error {
				return row.Scan(&waitedMS)
			})
		}
		fn(b)
		b.Queue(ReplayCheckSQL).QueryRow(func(row pgx.Row) error { return row.Scan(&last, &standby) })
	})
	d.SQL = sqlOf(ctx, b)
	switch {
	case isCode(err, codeShort):
		r.causal.waitNanos.Add(int64(r.causalWait))
		d.Wait = r.causalWait
		return false, nil
	case isCode(err, codeNotStandby):
		return false, nil // promoted, or misconfigured: vouches for nothing
	case err != nil:
		return false, err
	case !standby:
		return false, nil // promoted since the tracker's poll
	}
	d.Wait = time.Duration(waitedMS * float64(time.Millisecond))
	r.causal.waitNanos.Add(int64(d.Wait))
	d.NodeLSN, d.NodeLSNTracked = lsnOrZero(last), false
	if d.NodeLSN < token.LSN {
		// Behind the session after the data was read: the replica went
		// back (a crash lost replayed WAL); its data may be older still.
		return false, nil
	}
	r.advance(st, d.NodeLSN)
	return true, nil
}

// causalStale runs the read on a replica without the in-band check: the
// last resort while the primary is down and no replica has the session's
// position. The page says the data may be stale.
func (r *Router) causalStale(ctx context.Context, st *State, node *Node, fn ReadFunc, d *Decision) error {
	var last *string
	b, err := r.readOn(ctx, node, func(b *pgx.Batch) {
		fn(b)
		b.Queue(replayQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&last) })
	})
	d.SQL = sqlOf(ctx, b)
	if err != nil {
		return err
	}
	d.NodeLSN, d.NodeLSNTracked = lsnOrZero(last), false
	r.advance(st, d.NodeLSN)
	return nil
}

// causalOnPrimary runs the read on the primary and moves the token to the
// primary's insert position read after the data in the same batch: it
// covers every commit the data could show, asynchronous ones included.
func (r *Router) causalOnPrimary(ctx context.Context, st *State, node *Node, fn ReadFunc, d *Decision) error {
	var pos string
	b, err := r.readOn(ctx, node, func(b *pgx.Batch) {
		fn(b)
		b.Queue(insertQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&pos) })
	})
	d.SQL = sqlOf(ctx, b)
	if err != nil {
		return err
	}
	lsn := lsnOrZero(&pos)
	d.NodeLSN, d.NodeLSNTracked = lsn, false
	if h := r.history.Load(); h != nil && lsn != 0 && r.token(st).LSN == UnknownLSN {
		// The primary answered after the write of unknown position, so
		// its insert position covers it: the session may use replicas again.
		st.Token = h.at(lsn)
		st.changed = true
		return nil
	}
	r.advance(st, lsn)
	return nil
}

// freshestReplica returns the slot of the up replica with the highest
// replay position the tracker saw, or 0.
func freshestReplica(snap *snapshot, n int) int {
	best, pos := 0, uint64(0)
	for i := 1; i < n; i++ {
		if h := snap.nodes[i]; h.Up && h.InRecovery && (best == 0 || h.Position > pos) {
			best, pos = i, h.Position
		}
	}
	return best
}
