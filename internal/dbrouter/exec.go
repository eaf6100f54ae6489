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
// memory; the read is one round trip (one batch); a node that fails during
// it is forgotten and the read is retried once on the next candidate.
func (r *Router) Read(ctx context.Context, intent Intent, fn ReadFunc) error {
	return r.ReadWith(ctx, r.Strategy(), intent, fn)
}

// ReadWith runs a read with the given strategy, whatever is in force
// (session lookups, say, which must route causally).
func (r *Router) ReadWith(ctx context.Context, s Strategy, intent Intent, fn ReadFunc) error {
	st := StateFrom(ctx)
	var p plan
	snap := r.snap.Load()
	r.decide(st, intent, s, time.Now(), snap, &p)
	if s == Causal {
		return r.readCausal(ctx, st, intent, fn, snap, &p)
	}
	reason := p.reason
	var err error
	for k := 0; k < p.n && k < 2; k++ {
		i := int(p.nodes[k])
		node := r.nodes[i]
		b := &pgx.Batch{}
		fn(b)
		if b.Len() == 0 {
			return nil
		}
		err = node.Pool.SendBatch(ctx, b).Close()
		if err == nil {
			r.record(ctx, Decision{Node: node.Name, Strategy: s, Intent: intent, Reason: reason,
				Lag: snap.nodes[i].Lag, LagBytes: snap.nodes[i].LagBytes})
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.mayRetryElsewhere(ctx, i, err) {
			return err
		}
		reason = ReasonRetried
	}
	return fmt.Errorf("dbrouter: read failed on every candidate: %w", err)
}

// Mark is what a session must remember of a committed write.
type Mark struct {
	At    time.Time
	Token Token // the primary's flush position after COMMIT returned
}

// Write runs fn in a transaction on the primary and commits it, then reads
// the primary's flush position on the same connection: a position read
// before COMMIT returns is older than the commit record, and walsenders
// ship flushed WAL. The session state in ctx, if any, learns of both. When
// the primary is unreachable Write fails at once with an error wrapping
// ErrReadOnly. A write is retried only when pgconn proves nothing reached
// the server.
func (r *Router) Write(ctx context.Context, fn func(pgx.Tx) error) (Mark, error) {
	primary := r.nodes[0]
	if r.snap.Load().primaryDown {
		return Mark{}, ErrReadOnly
	}
	var m Mark
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		m, err = r.writeOnce(ctx, fn)
		if err == nil || !pgconn.SafeToRetry(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		if ctx.Err() == nil && nodeFailed(err) {
			r.tracker.forget(0, err)
			return Mark{}, fmt.Errorf("%w (%v)", ErrReadOnly, err)
		}
		if isCode(err, "25006") { // read_only_sql_transaction: the "primary" is a standby
			return Mark{}, fmt.Errorf("%w (%v)", ErrReadOnly, err)
		}
		return Mark{}, err
	}
	if st := StateFrom(ctx); st != nil {
		if m.At.After(st.LastWrite) {
			st.LastWrite = m.At
			st.changed = true
		}
		r.advance(st, m.Token.LSN)
	}
	r.record(ctx, Decision{Node: primary.Name, Strategy: r.Strategy(), Reason: ReasonPrimaryOnly, Write: true})
	return m, nil
}

func (r *Router) writeOnce(ctx context.Context, fn func(pgx.Tx) error) (Mark, error) {
	conn, err := r.nodes[0].Pool.Acquire(ctx)
	if err != nil {
		return Mark{}, err
	}
	defer conn.Release()
	if err := pgx.BeginFunc(ctx, conn, fn); err != nil {
		return Mark{}, err
	}
	m := Mark{At: time.Now()}
	if r.testAfterCommit != nil {
		r.testAfterCommit()
	}
	var flush string
	err = conn.QueryRow(ctx, flushQuery).Scan(&flush)
	if err != nil && ctx.Err() == nil {
		// The connection broke after COMMIT returned. The flush position
		// is global and only grows, so another connection's reading is
		// at least this commit's.
		err = r.nodes[0].Pool.QueryRow(ctx, flushQuery).Scan(&flush)
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
	if h := r.history.Load(); h != nil {
		m.Token = Token{SystemID: h.SystemID, Timeline: h.Timeline, LSN: lsn}
	}
	return m, nil
}

func (r *Router) record(ctx context.Context, d Decision) {
	TraceFrom(ctx).add(d)
	if d.Write {
		return
	}
	for i, n := range r.nodes {
		if n.Name == d.Node {
			r.counts.reads[i][d.Strategy][d.Reason][d.Intent].Add(1)
			return
		}
	}
}

// mayRetryElsewhere decides, after a read failed on node i, whether it may
// move to the next candidate: when the node itself failed (it is then
// forgotten until a poll reaches it again), or on a hot-standby recovery
// conflict, where the node is fine but the read lost a race with replay.
func (r *Router) mayRetryElsewhere(ctx context.Context, i int, err error) bool {
	switch {
	case nodeFailed(err):
		r.tracker.forget(i, err)
	case i > 0 && isCode(err, "40001"):
	default:
		return false
	}
	r.log.WarnContext(ctx, "read failed on a node; retrying elsewhere", "node", r.nodes[i].Name, "err", err)
	return true
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
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
