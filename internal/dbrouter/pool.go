package dbrouter

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pinned are the session settings every connection of the router starts
// with, whatever the role's or the database's defaults say:
//   - synchronous_commit: a commit is flushed locally before it returns, so
//     the position read after it covers it;
//   - default_transaction_isolation: the causal read's batch runs in one
//     implicit transaction, and each statement must take its own snapshot,
//     or the data statement would see what existed before the in-band wait;
//   - default_transaction_read_only: a write refused with SQLSTATE 25006
//     then means the node is a standby, never a role default;
//   - default_transaction_deferrable: no read waits for a safe snapshot.
//
// statement_timeout stays the operator's: the in-band wait shortens its
// own budget to fit under it (see the causal_wait migration).
var pinned = map[string]string{
	"synchronous_commit":             "on",
	"default_transaction_isolation":  "read committed",
	"default_transaction_read_only":  "off",
	"default_transaction_deferrable": "off",
}

// poolConfig parses a node's URL into the router's pool configuration.
func poolConfig(url string, maxConns int32) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	for k, v := range pinned {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	pc.MaxConns = maxConns
	// A write retried after its connection died asks for a connection
	// proven alive (see Write); otherwise pgxpool's default holds: ping a
	// connection that sat idle for a second.
	pc.ShouldPing = func(ctx context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > time.Second || ctx.Value(pingKey{}) != nil
	}
	return pc, nil
}

// pingKey marks a context whose pool acquisitions must ping the connection.
type pingKey struct{}

// roundTripTracer counts round trips to one node: a query, or a whole
// batch, is one.
type roundTripTracer struct{ n *atomic.Int64 }

func (t *roundTripTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *roundTripTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (t *roundTripTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *roundTripTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (t *roundTripTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
