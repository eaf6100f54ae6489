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
	"github.com/jackc/pgx/v5/pgxpool"
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
		b := &pgx.Batch{}
		fn(b)
		if b.Len() == 0 {
			return nil
		}
		actx, cancel := context.WithTimeout(ctx, r.nodeTimeout)
		err = runBatch(actx, node.pool, b)
		cancel()
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

// runBatch runs a read's batch on pool. A batch of one statement — most
// reads outside causal — runs as a plain query: pgx sends a batch in
// pipeline mode, which cost 13 % of a one-statement read's throughput
// against the same query sent alone (docs/performance.md). The statement's
// callback sees the same results either way.
func runBatch(ctx context.Context, pool *pgxpool.Pool, b *pgx.Batch) error {
	if len(b.QueuedQueries) != 1 {
		return pool.SendBatch(ctx, b).Close()
	}
	q := b.QueuedQueries[0]
	if q.Fn == nil { // queued without a callback: the batch would Exec it
		_, err := pool.Exec(ctx, q.SQL, q.Arguments...)
		return err
	}
	one := &oneResult{ctx: ctx, pool: pool, q: q}
	err := q.Fn(one)
	if cerr := one.Close(); err == nil {
		err = cerr
	}
	return err
}

// oneResult gives a one-statement batch's callback its results from a
// plain query (runBatch).
type oneResult struct {
	ctx  context.Context
	pool *pgxpool.Pool
	q    *pgx.QueuedQuery
	rows pgx.Rows
}

func (o *oneResult) Exec() (pgconn.CommandTag, error) {
	return o.pool.Exec(o.ctx, o.q.SQL, o.q.Arguments...)
}

func (o *oneResult) Query() (pgx.Rows, error) {
	rows, err := o.pool.Query(o.ctx, o.q.SQL, o.q.Arguments...)
	o.rows = rows
	return rows, err
}

func (o *oneResult) QueryRow() pgx.Row {
	rows, err := o.Query()
	return &oneRow{rows: rows, err: err}
}

// Close releases the query's connection if the callback left its rows open.
func (o *oneResult) Close() error {
	if o.rows == nil {
		return nil
	}
	o.rows.Close()
	return o.rows.Err()
}

func (o *oneResult) Tx() pgx.Tx { return nil } // a read's batch has no transaction of its own

// oneRow is QueryRow's row, as pgx's own: the first row, or ErrNoRows.
type oneRow struct {
	rows pgx.Rows
	err  error
}

func (r *oneRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
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
	if !TraceFrom(ctx).keepsSQL() {
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
	if err == nil {
		return ErrUnavailable
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// mark is what a session must remember of a committed write.
type mark struct {
	at    time.Time
	token Token // the primary's flush position after COMMIT returned
}

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
	// ErrSplitBrain: a node that accepts writes is on an older timeline
	// than one already promoted, and the router writes to none of them
	// (Router.SplitBrain says which). It comes wrapped with ErrReadOnly.
	ErrSplitBrain = errors.New("split brain")
)

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
	node := snap.members[0]
	m, sent, err := r.writeOnce(ctx, node, fn, false)
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
		r.advance(st, m.token.LSN)
	}
	r.record(ctx, node, Decision{Node: "primary", Member: node.Name, Strategy: r.StrategyFor(ctx), Reason: ReasonPrimaryOnly, Write: true, Lost: lost})
	return nil
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
	if h := r.history.Load(); h != nil {
		m.token = h.at(lsn)
	}
	return m, true, nil
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
// that connection, and the tracker is asked to poll the node now; only a
// connection that cannot be made marks the node down at once.
func (r *Router) mayRetryElsewhere(ctx context.Context, snap *snapshot, i int, err error) bool {
	switch {
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
