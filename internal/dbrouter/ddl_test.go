package dbrouter_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestDDLWhileServingFailsNoRead: a deploy's migration changes a column's
// type (varchar(50) to varchar(100) and back) while readers run. Every
// pooled connection holds a prepared plan whose result type the DDL
// changed, and fails it once with "cached plan must not change result
// type" (0A000); pgx then drops its cached statements, so the read runs
// once more on the same connection. No read may fail. (Before: 18 of
// 6,191 page loads answered 500.)
func TestDDLWhileServingFailsNoRead(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := newRouter(t, c, dbrouter.Config{MaxConns: 4})
	table := fmt.Sprintf("sabers_%d", time.Now().UnixNano())
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+table+" (id bigserial PRIMARY KEY, wielder varchar(50) NOT NULL); INSERT INTO "+table+" (wielder) VALUES ('Luke'), ('Leia')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t)

	var reads, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []dbrouter.Strategy{dbrouter.Random, dbrouter.Causal, dbrouter.Primary, dbrouter.Sticky}[i%4]
			st := &dbrouter.State{Session: uint64(i + 1)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := r.ReadWith(dbrouter.WithState(ctx, st), s, dbrouter.Shared, func(b *pgx.Batch) {
					b.Queue("SELECT id, wielder FROM " + table + " ORDER BY id").Query(func(rows pgx.Rows) error {
						_, err := pgx.CollectRows(rows, pgx.RowToMap)
						return err
					})
				})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					reads.Add(1)
				}
			}
		}()
	}
	for _, typ := range []string{"varchar(100)", "varchar(50)", "varchar(100)", "varchar(50)"} {
		time.Sleep(300 * time.Millisecond) // readers prepare their plans meanwhile
		if err := r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "ALTER TABLE "+table+" ALTER COLUMN wielder TYPE "+typ)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d reads, %d failed (first: %v)", reads.Load(), failed.Load(), firstErr.Load())
	if failed.Load() > 0 {
		t.Fatalf("%d reads failed during the DDL (first: %v)", failed.Load(), firstErr.Load())
	}
}
