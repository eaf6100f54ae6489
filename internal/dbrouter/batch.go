package dbrouter

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

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
