package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ReadFunc queues a read's queries on b, each with a callback that scans
// its result. The router may add statements around them, and may call the
// function again with a new batch to run the read on another node, so it
// must reset whatever its callbacks fill.
type ReadFunc func(b *pgx.Batch)

// Read runs a read with the strategy in force. The node is picked from
// memory; the read is one round trip (one batch). When the node's
// connection fails during it, the read is retried once on the next
// candidate; the node is marked down only if a fresh connection to it
// cannot be made (or the tracker's probe says so).
func (r *Router) Read(ctx context.Context, intent Intent, fn ReadFunc) error {
	return r.ReadWith(ctx, r.StrategyFor(ctx), intent, fn)
}

type strategyKey struct{}

// WithStrategy returns a context whose reads use s instead of the strategy
// in force: a session that chose its own (the lab lets attendees do so).
func WithStrategy(ctx context.Context, s Strategy) context.Context {
	return context.WithValue(ctx, strategyKey{}, s)
}

// StrategyFor is the strategy Read uses in ctx: the session's own choice
// (WithStrategy), else the strategy in force.
func (r *Router) StrategyFor(ctx context.Context) Strategy {
	if s, ok := ctx.Value(strategyKey{}).(Strategy); ok && s < numStrategies {
		return s
	}
	return r.Strategy()
}

// ReadWith runs a read with the given strategy, whatever is in force
// (session lookups, say, which must route causally).
func (r *Router) ReadWith(ctx context.Context, s Strategy, intent Intent, fn ReadFunc) error {
	st := StateFrom(ctx)
	var p plan
	snap := r.snap.Load()
	if snap.n == 0 {
		return ErrUnavailable // discovery is replacing the only node
	}
	if _, lost := r.resolve(st); lost {
		// The session's last change is beyond the point where the current
		// timeline forked from its own: the failover may have lost it.
		// Whatever the strategy, the primary answers and says so.
		return r.readCausal(ctx, st, s, intent, fn, snap, &p)
	}
	r.decide(st, intent, s, time.Now(), snap, &p)
	if s == Causal {
		return r.readCausal(ctx, st, s, intent, fn, snap, &p)
	}
	reason := p.reason
	sessionLSN := r.token(st).LSN
	var err error
	for k := 0; k < p.n && k < 2; k++ {
		i := int(p.nodes[k])
		node := snap.members[i]
		var b *pgx.Batch
		b, err = r.readOn(ctx, node, fn)
		if err == nil && b.Len() == 0 {
			return nil
		}
		if err == nil {
			d := r.decision(snap, i, s, intent, reason, sessionLSN)
			d.SQL = sqlOf(ctx, b)
			r.record(ctx, node, d)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.mayRetryElsewhere(ctx, snap, i, err) {
			return err
		}
		reason = ReasonRetried
	}
	return unavailable(err)
}

// readOn runs a read's batch on one of node's connections, within the
// node timeout, and returns the batch that ran.
func (r *Router) readOn(ctx context.Context, node *Node, build func(*pgx.Batch)) (*pgx.Batch, error) {
	ctx, cancel := context.WithTimeout(ctx, r.nodeTimeout)
	defer cancel()
	conn, err := node.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	return sendOn(ctx, conn, build)
}

// decision describes a read served by node i, from what the tracker last
// saw of it; a causal read then puts in the positions it read itself.
func (r *Router) decision(snap *snapshot, i int, s Strategy, intent Intent, reason Reason, sessionLSN uint64) Decision {
	h := &snap.nodes[i]
	return Decision{Node: h.Name, Member: h.Member, Strategy: s, Intent: intent, Reason: reason,
		Lag: h.Lag, LagBytes: h.LagBytes, SessionLSN: sessionLSN,
		NodeLSN: h.Position, NodeLSNTracked: true, Paused: h.Paused, ApplyDelay: h.ApplyDelay}
}

// sqlOf lists a batch's statements when the request's trace keeps them.
func sqlOf(ctx context.Context, b *pgx.Batch) []string {
	if b == nil || !TraceFrom(ctx).keepsSQL() {
		return nil
	}
	sql := make([]string, len(b.QueuedQueries))
	for i, q := range b.QueuedQueries {
		sql[i] = q.SQL
	}
	return sql
}

// unavailable wraps the last error of a read that no node could serve.
func unavailable(err error) error {
	switch {
	case err == nil:
		return ErrUnavailable
	case serverRefused(err):
		return fmt.Errorf("%w: %w: %w", ErrUnavailable, ErrBusy, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// record adds the decision to the request's trace, if any, and counts a
// read in node n's counters: one atomic add, the labelled metrics are
// read from these counters when scraped.
func (r *Router) record(ctx context.Context, n *Node, d Decision) {
	TraceFrom(ctx).add(d)
	if !d.Write {
		n.counts.reads[d.Strategy][d.Reason][d.Intent].Add(1)
	}
}

// mayRetryElsewhere decides, after a read failed on slot i, whether it may
// move to the next candidate: when the node's connection failed, or on a
// hot-standby recovery conflict, where the node is fine but the read lost
// a race with replay. A failed connection is not a failed node: pgx drops
// that connection, and the tracker is asked to poll the node now. Nor is
// a connect the server refused (too many connections, out of memory,
// starting up) or one that timed out: only a connect that found nothing
// listening marks the node down at once.
func (r *Router) mayRetryElsewhere(ctx context.Context, snap *snapshot, i int, err error) bool {
	switch {
	case serverRefused(err), isConnectTimeout(err):
		// Up, but busy or slow to let a connection in: the probe, on
		// the connection it has, decides whether the node is down.
		r.tracker.kick(snap.members[i])
	case isConnectError(err):
		r.tracker.markDown(snap.members[i], err)
	case nodeFailed(err):
		r.tracker.kick(snap.members[i])
	case i > 0 && isCode(err, "40001"):
	default:
		return false
	}
	r.log.WarnContext(ctx, "read failed on a node; retrying elsewhere", "node", snap.members[i].Name, "err", err)
	return true
}

// serverRefused reports whether err is a connect that the server itself
// refused while it runs: too many connections (53300), out of memory
// (53400), or not accepting connections yet (57P03).
func serverRefused(err error) bool {
	var pgErr *pgconn.PgError
	return isConnectError(err) && errors.As(err, &pgErr) &&
		(pgErr.Code == "53300" || pgErr.Code == "53400" || pgErr.Code == "57P03")
}

// isConnectTimeout reports whether err is a connect that timed out: an
// overloaded server, as likely as a dead one.
func isConnectTimeout(err error) bool {
	var netErr net.Error
	return isConnectError(err) && (errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()))
}

// isConnectError reports whether err is a failure to open a connection.
func isConnectError(err error) bool {
	var connectErr *pgconn.ConnectError
	return errors.As(err, &connectErr)
}

// nodeFailed reports whether err means the node itself failed — the
// connection broke or could not be made, or the server is shutting down —
// rather than the query.
func nodeFailed(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") ||
			pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, context.DeadlineExceeded) || // the attempt's NodeTimeout: a node that stopped answering
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
