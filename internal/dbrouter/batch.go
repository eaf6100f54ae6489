package dbrouter

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier runs a read's statements: a pooled connection.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// sendOn builds a read's batch and runs it on conn. When the server threw
// away a plan of one of its statements that pgx had prepared on this
// connection — DDL changed a result type ("cached plan must not change
// result type"), or the prepared statement is gone — pgx has by then
// dropped the connection's cached statements, so the batch is built and
// run once more on the same connection: another connection of the pool
// may hold the same stale statement. It returns the batch that ran last.
func sendOn(ctx context.Context, conn querier, build func(*pgx.Batch)) (*pgx.Batch, error) {
	for try := 0; ; try++ {
		b := &pgx.Batch{}
		build(b)
		if b.Len() == 0 {
			return b, nil
		}
		err := runBatch(ctx, conn, b)
		if try == 0 && planInvalidated(err) {
			continue
		}
		return b, err
	}
}

// planInvalidated reports whether err says a statement pgx had prepared
// on the connection no longer holds: its plan's result type changed
// (0A000), or it no longer exists (26000).
func planInvalidated(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) &&
		((pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "cached plan must not change result type")) || pgErr.Code == "26000")
}

// runBatch runs a read's batch on conn. A batch of one statement — most
// reads outside causal — runs as a plain query: pgx sends a batch in
// pipeline mode, which cost 13 % of a one-statement read's throughput
// against the same query sent alone (docs/performance.md). The statement's
// callback sees the same results either way.
func runBatch(ctx context.Context, conn querier, b *pgx.Batch) error {
	if len(b.QueuedQueries) != 1 {
		return conn.SendBatch(ctx, b).Close()
	}
	q := b.QueuedQueries[0]
	if q.Fn == nil { // queued without a callback: the batch would Exec it
		_, err := conn.Exec(ctx, q.SQL, q.Arguments...)
		return err
	}
	one := &oneResult{ctx: ctx, conn: conn, q: q}
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
	conn querier
	q    *pgx.QueuedQuery
	rows pgx.Rows
}

func (o *oneResult) Exec() (pgconn.CommandTag, error) {
	return o.conn.Exec(o.ctx, o.q.SQL, o.q.Arguments...)
}

func (o *oneResult) Query() (pgx.Rows, error) {
	rows, err := o.conn.Query(o.ctx, o.q.SQL, o.q.Arguments...)
	o.rows = rows
	return rows, err
}

func (o *oneResult) QueryRow() pgx.Row {
	rows, err := o.Query()
	return &oneRow{rows: rows, err: err}
}

// Close closes the query's rows if the callback left them open.
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
