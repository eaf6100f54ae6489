package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of Read and Write.
var (
	// ErrReadOnly: the primary cannot take writes (it is down, or it is a
	// standby); nothing was written.
	ErrReadOnly = errors.New("the primary is unreachable: Quest is read-only right now")
	// ErrOutcomeUnknown: the connection was lost while COMMIT was in
	// flight, so the change may or may not have been saved. The session's
	// next reads go to the primary, which knows.
	ErrOutcomeUnknown = errors.New("the connection to the primary was lost while it committed: the change may have been saved")
	// ErrUnavailable: no node could serve a read.
	ErrUnavailable = errors.New("no database node is reachable")
	// ErrBusy: the node is up but refused a new connection — too many
	// connections (SQLSTATE 53300), out of memory (53400), still starting
	// (57P03) — for as long as the node timeout let the request wait for
	// one of the pool's. Nothing was written.
	ErrBusy = errors.New("the database is busy: it refused a new connection")
	// ErrSplitBrain: a node that accepts writes is on an older timeline
	// than one already promoted, and the router writes to none of them
	// (Router.SplitBrain says which). It comes wrapped with ErrReadOnly.
	ErrSplitBrain = errors.New("split brain")
)

// mark is what a session must remember of a committed write.
type mark struct {
	at    time.Time
	token Token // the primary's flush position after COMMIT returned
}

// Write runs fn in a transaction on the primary and commits it, then reads
// the primary's flush position on the same connection: a position read
// before COMMIT returns is older than the commit record, and walsenders
// ship flushed WAL. The session state in ctx, if any, learns of both.
//
// When the primary is known to be down Write fails at once with an error
// wrapping ErrReadOnly. When the connection dies before COMMIT was sent —
// one terminated backend, say — nothing was committed, and the whole
// transaction runs once more on a connection proven alive: fn may
// therefore run twice, and must keep nothing of a failed run. When it dies
// while COMMIT is in flight, the outcome is unknown: Write returns an
// error wrapping ErrOutcomeUnknown and the session reads from the primary
// until a read there settles its position.
func (r *Router) Write(ctx context.Context, fn func(pgx.Tx) error) error {
	snap := r.snap.Load()
	if err := r.fenced(snap, StateFrom(ctx)); err != nil {
		return err
	}
	// The write's position is stamped with the history fenced checked: a
	// promotion seen while it runs must not make a write on the old
	// timeline look like one on the new (resolve then judges it).
	ctx = context.WithValue(ctx, historyKey{}, r.history.Load())
	node := snap.members[0]
	m, sent, err := r.writeOnce(ctx, node, fn, false)
	if err != nil && serverRefused(err) {
		// A healthy server that will not take another connection: wait
		// for one of the pool's, within the node timeout.
		m, sent, err = r.writeWhileRefused(ctx, node, fn, err)
	}
	if err != nil && !sent && nodeFailed(err) && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
		if r.snap.Load().primaryDown {
			// The tracker has meanwhile found the primary gone (or hung):
			// no second wait for it.
			return fmt.Errorf("%w: %w", ErrReadOnly, err)
		}
		r.tracker.kick(node)
		r.log.WarnContext(ctx, "a write's connection failed before COMMIT; running it again on a live connection", "err", err)
		m, sent, err = r.writeOnce(ctx, node, fn, true)
	}
	st := StateFrom(ctx)
	lost := false
	switch {
	case err == nil:
	case sent && (nodeFailed(err) || ctx.Err() != nil):
		// COMMIT left, and then the connection broke or the request's
		// context ended (pgx then closes the connection): the server may
		// have committed, and nothing tells whether it did.
		r.tracker.kick(node)
		r.log.WarnContext(ctx, "the connection failed while COMMIT was in flight; the write may have been saved", "err", err)
		if st != nil {
			r.setUnknown(st, time.Now())
		}
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	case ctx.Err() != nil:
		return err
	case serverRefused(err):
		r.tracker.kick(node)
		return fmt.Errorf("%w: %w", ErrBusy, err)
	case isConnectTimeout(err):
		// Overloaded or gone: the probe tells which.
		r.tracker.kick(node)
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	case isConnectError(err):
		r.tracker.markDown(node, err)
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	case nodeFailed(err) || isCode(err, "25006"): // 25006: the "primary" is a standby
		r.tracker.kick(node)
		return fmt.Errorf("%w: %w", ErrReadOnly, err)
	default:
		return err
	}
	if st != nil {
		if m.at.After(st.LastWrite) {
			st.LastWrite = m.at
			st.changed = true
		}
		// A session whose earlier change a failover lost keeps its lost
		// token through this write: the page after it (and the next read,
		// on the primary, which settles the token) must still say that the
		// earlier change may be gone. advance leaves a lost token alone.
		lost = r.isLost(st)
		if h := r.history.Load(); !lost && m.token.LSN != 0 && h != nil && h.timeline != m.token.Timeline {
			// The history moved while the write ran: the session keeps the
			// write's own stamp, which resolve judges against the new one.
			st.Token, st.changed = m.token, true
		} else {
			r.advance(st, m.token.LSN)
		}
	}
	r.record(ctx, node, Decision{Node: "primary", Member: node.Name, Strategy: r.StrategyFor(ctx), Reason: ReasonPrimaryOnly, Write: true, Lost: lost})
	return nil
}

// historyKey carries, in a write's context, the history its position is
// stamped with (see Write).
type historyKey struct{}

// writeWhileRefused runs the write again, backing off, for as long as the
// primary refuses new connections and the node timeout allows: a pooled
// connection comes free within milliseconds under a connection limit.
func (r *Router) writeWhileRefused(ctx context.Context, node *Node, fn func(pgx.Tx) error, err error) (m mark, sent bool, _ error) {
	deadline := time.Now().Add(r.nodeTimeout)
	backoff := 2 * time.Millisecond
	for serverRefused(err) && ctx.Err() == nil && time.Now().Add(backoff).Before(deadline) {
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 50*time.Millisecond)
		m, sent, err = r.writeOnce(ctx, node, fn, false)
	}
	return m, sent, err
}

// fenced says why nothing may be written now, if anything: the primary
// is away; or a split brain (see fence.go); or the primary is not on the
// timeline of the router's history, which a write's token is stamped
// with (a promotion or a regression between two polls); or the session
// has seen a newer timeline of this cluster than the primary's, so the
// primary was superseded and this router has not noticed yet.
func (r *Router) fenced(snap *snapshot, st *State) error {
	if snap.splitBrain != "" && snap.primaryDown {
		return fmt.Errorf("%w: %w: %s", ErrReadOnly, ErrSplitBrain, snap.splitBrain)
	}
	if p := &snap.nodes[0]; snap.primaryDown && p.Up && !p.InRecovery && p.PatroniLeaderErr != "" {
		return fmt.Errorf("%w: Patroni does not name %s the leader: %s", ErrReadOnly, p.Member, p.PatroniLeaderErr)
	}
	if snap.primaryDown {
		return ErrReadOnly
	}
	h := r.history.Load()
	if h == nil {
		return nil // no history learned yet: the write's token stays empty
	}
	tli := snap.nodes[0].Timeline
	if tli != h.timeline {
		return fmt.Errorf("%w: the primary's timeline is changing", ErrReadOnly)
	}
	if st != nil && st.Token.SystemID == h.systemID && st.Token.Timeline > tli {
		if _, abandoned := h.abandoned[st.Token.Timeline]; !abandoned {
			r.tracker.kick(snap.members[0])
			return fmt.Errorf("%w: %w: this session has seen timeline %d, newer than the primary's %d",
				ErrReadOnly, ErrSplitBrain, st.Token.Timeline, tli)
		}
	}
	return nil
}

// setUnknown records a write of unknown position in the session: only the
// primary can vouch for it (see UnknownLSN).
func (r *Router) setUnknown(st *State, at time.Time) {
	if at.After(st.LastWrite) {
		st.LastWrite = at
	}
	if h := r.history.Load(); h != nil && !r.isLost(st) {
		st.Token = h.at(UnknownLSN)
	}
	st.changed = true
}

// writeOnce runs one attempt of a write. sent reports whether COMMIT was
// sent (so the transaction may have committed). live asks the pool for a
// connection that answers a ping first.
func (r *Router) writeOnce(ctx context.Context, node *Node, fn func(pgx.Tx) error, live bool) (m mark, sent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.nodeTimeout)
	defer cancel()
	actx := ctx
	if live {
		actx = context.WithValue(ctx, pingKey{}, true)
	}
	conn, err := node.pool.Acquire(actx)
	if err != nil {
		return mark{}, false, err
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return mark{}, false, err
	}
	if err := fn(tx); err != nil {
		tx.Rollback(ctx)
		return mark{}, false, err
	}
	if err := tx.Commit(ctx); err != nil {
		// pgconn knows whether the COMMIT left the client at all.
		return mark{}, !pgconn.SafeToRetry(err), err
	}
	m = mark{at: time.Now()}
	if r.testAfterCommit != nil {
		r.testAfterCommit()
	}
	var flush string
	err = conn.QueryRow(ctx, flushQuery).Scan(&flush)
	if err != nil && ctx.Err() == nil {
		// The connection broke after COMMIT returned. The flush position
		// is global and only grows, so another connection's reading is
		// at least this commit's.
		err = node.pool.QueryRow(ctx, flushQuery).Scan(&flush)
	}
	r.causal.extraTrips.Add(1)
	lsn, _ := ParseLSN(flush)
	if err != nil {
		// Committed, but its position is unknown: the write stands (a
		// retry would duplicate it), and only the primary can vouch for
		// it now.
		r.log.WarnContext(ctx, "write committed but its WAL position could not be read; the session reads from the primary until it can", "err", err)
		lsn = UnknownLSN
	}
	if h, _ := ctx.Value(historyKey{}).(*history); h != nil {
		m.token = h.at(lsn)
	}
	return m, true, nil
}
