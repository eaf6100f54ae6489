package dbrouter

import (
	"context"
	"strconv"
	"strings"
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

// history names one cluster's WAL history: its system identifier, the
// primary's current timeline, and where each ancestor timeline ended (its
// switch point). It is immutable once published.
type history struct {
	systemID uint64
	timeline uint32
	// ends maps an ancestor timeline to the last position the current
	// timeline shares with it: from the timeline's history file when the
	// app's role may read it, or from Patroni's /history; else the
	// furthest position the tracker saw the promoted node receive as a
	// standby — a lower bound, so a token is never wrongly kept, only at
	// worst wrongly called lost.
	ends map[uint32]uint64
	// guessed marks the ends that are the tracker's lower bound, which
	// discovery replaces with Patroni's exact ones when it can.
	guessed map[uint32]bool
}

// inexact reports whether some ancestor's end is missing or guessed.
func (h *history) inexact() bool {
	for t := uint32(1); t < h.timeline; t++ {
		if _, known := h.ends[t]; !known || h.guessed[t] {
			return true
		}
	}
	return false
}

// withEnds returns a copy of h with these exact ends.
func (h *history) withEnds(ends map[uint32]uint64) *history {
	out := &history{systemID: h.systemID, timeline: h.timeline, ends: map[uint32]uint64{}, guessed: map[uint32]bool{}}
	for t, end := range h.ends {
		out.ends[t] = end
		out.guessed[t] = h.guessed[t]
	}
	for t, end := range ends {
		if t < h.timeline {
			out.ends[t] = end
			delete(out.guessed, t)
		}
	}
	return out
}

// at is the token of position lsn in this history.
func (h *history) at(lsn uint64) Token {
	return Token{SystemID: h.systemID, Timeline: h.timeline, LSN: lsn}
}

// followHistory moves the router's history to timeline tli, which a node
// answering as a primary is on, when that is newer than the history's (or
// there is none yet). standbyEnd is the furthest position the tracker saw
// that node reach as a standby of the current history, 0 if none.
func (r *Router) followHistory(ctx context.Context, conn *pgx.Conn, timeout time.Duration, tli uint32, standbyEnd uint64) {
	cur := r.history.Load()
	if conn == nil || tli == 0 || (cur != nil && tli <= cur.timeline) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h := &history{timeline: tli, ends: map[uint32]uint64{}, guessed: map[uint32]bool{}}
	if err := conn.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&h.systemID); err != nil {
		r.log.Warn("could not read the cluster's system identifier", "err", err)
		return
	}
	if cur != nil && cur.systemID == h.systemID {
		for t, end := range cur.ends {
			h.ends[t], h.guessed[t] = end, cur.guessed[t]
		}
		if standbyEnd != 0 {
			h.ends[cur.timeline], h.guessed[cur.timeline] = standbyEnd, true
		}
	}
	if tli > 1 {
		var file []byte
		err := conn.QueryRow(ctx, `SELECT pg_read_binary_file(format('pg_wal/%s.history', lpad(upper(to_hex($1::int)), 8, '0')))`,
			int64(tli)).Scan(&file)
		if err == nil {
			h = h.withEnds(parseTimelineHistory(string(file)))
		} else if r.discovery == nil {
			r.log.Info("timeline history file not readable; using the switch point the tracker observed",
				"timeline", tli, "observed", FormatLSN(h.ends[tli-1]), "err", err)
		}
		// With Patroni, discovery asks its /history for what is missing.
	}
	if r.history.CompareAndSwap(cur, h) && cur != nil {
		r.log.Warn("the primary is on a new timeline", "timeline", tli, "was", cur.timeline)
	}
}

// parseTimelineHistory reads a timeline history file: one line per
// ancestor, "timeline<TAB>switch point<TAB>reason".
func parseTimelineHistory(file string) map[uint32]uint64 {
	ends := map[uint32]uint64{}
	for _, line := range strings.Split(file, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err1 := strconv.ParseUint(f[0], 10, 32)
		end, err2 := ParseLSN(f[1])
		if err1 == nil && err2 == nil {
			ends[uint32(tli)] = end
		}
	}
	return ends
}

// resolve returns the session's token in the current history: the token
// itself when it is on the current timeline; rebased onto it when it is on
// an ancestor at or below that ancestor's switch point, which the current
// timeline shares; UnknownLSN, which only the primary settles, when it is
// on an older timeline whose switch point this router does not know (it
// started after the promotion and could read no history): whether the
// write survived is then unknown, and the primary knows what did; the zero
// token when it names another cluster or a timeline this router has not
// seen yet. lost reports a token beyond its ancestor's switch point: WAL
// the current history does not have, a write the failover lost; the token
// is then UnknownLSN too.
func (r *Router) resolve(st *State) (tok Token, lost bool) {
	h := r.history.Load()
	if st == nil || st.Token.IsZero() || h == nil || st.Token.SystemID != h.systemID {
		return Token{}, false
	}
	switch t := st.Token; {
	case t.Timeline == h.timeline:
		return t, false
	case t.Timeline > h.timeline:
		return Token{}, false
	default:
		end, known := h.ends[t.Timeline]
		switch {
		case !known:
			return h.at(UnknownLSN), false
		case t.LSN <= end:
			return h.at(t.LSN), false
		default:
			return h.at(UnknownLSN), true
		}
	}
}

// isLost reports whether the session's last change is one a failover may
// have lost (see resolve).
func (r *Router) isLost(st *State) bool {
	_, lost := r.resolve(st)
	return lost
}

// token returns the session's token in the current history (see resolve).
func (r *Router) token(st *State) Token {
	t, _ := r.resolve(st)
	return t
}

// advance moves the session's token to lsn, if that is later.
func (r *Router) advance(st *State, lsn uint64) {
	h := r.history.Load()
	if st == nil || h == nil || lsn == 0 {
		return
	}
	cur, lost := r.resolve(st)
	if lost {
		return // only a read on the primary settles a lost token (causalOnPrimary)
	}
	if lsn > cur.LSN || (lsn == cur.LSN && st.Token.Timeline != h.timeline) {
		st.Token = h.at(lsn)
		st.changed = true
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
	b := &pgx.Batch{}
	if !covered {
		b.Queue(waitQuery, FormatLSN(token.LSN), int(r.causalWait.Milliseconds())).QueryRow(func(row pgx.Row) error {
			return row.Scan(&waitedMS)
		})
	}
	fn(b)
	b.Queue(ReplayCheckSQL).QueryRow(func(row pgx.Row) error { return row.Scan(&last, &standby) })
	err = conn.SendBatch(ctx, b).Close()
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
	b := &pgx.Batch{}
	fn(b)
	b.Queue(replayQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&last) })
	err := node.pool.SendBatch(ctx, b).Close()
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
	b := &pgx.Batch{}
	fn(b)
	b.Queue(insertQuery).QueryRow(func(row pgx.Row) error { return row.Scan(&pos) })
	err := node.pool.SendBatch(ctx, b).Close()
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

func lsnOrZero(s *string) uint64 {
	if s == nil {
		return 0
	}
	v, _ := ParseLSN(*s)
	return v
}
