package dbrouter_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestConnectionLimitIsNotADeadPrimary: the app's role may open 6
// connections per server, and 12 writers share a pool of 10. The pool's
// 7th connect is refused by a healthy server (FATAL 53300, too many
// connections): that must neither mark the primary down nor reset its
// pool. Writes wait for a pooled connection instead, within the node
// timeout. (Before: 448 writes ok and 1,009 refused with the read-only
// page in 6 s, while the primary was healthy.)
func TestConnectionLimitIsNotADeadPrimary(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := newRouter(t, c, dbrouter.Config{MaxConns: 10})
	table := newTable(t, r)
	leader := superConn(t, c, "leader")
	if _, err := leader.Exec(ctx, "ALTER ROLE quest CONNECTION LIMIT 6"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := leader.Exec(context.Background(), "ALTER ROLE quest CONNECTION LIMIT -1"); err != nil {
			t.Error(err)
		}
		waitReplicated(t)
	})

	var ok, readOnly, busy, other atomic.Int64
	var firstOther atomic.Value
	var unwritable atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if !r.Writable() {
				unwritable.Add(1)
			}
		}
	}()
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) SELECT $1, 'busy' FROM pg_sleep(0.002)", i)
					return err
				})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, dbrouter.ErrReadOnly):
					readOnly.Add(1)
				case errors.Is(err, dbrouter.ErrBusy):
					busy.Add(1)
				default:
					other.Add(1)
					firstOther.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	time.Sleep(3 * time.Second) // the load's length, not a wait for a condition
	close(stop)
	wg.Wait()
	t.Logf("12 writers, a pool of 10, a limit of 6 connections: %d writes ok, %d refused read-only, %d busy, %d other (%v); the primary unwritable in %d samples of 5 ms",
		ok.Load(), readOnly.Load(), busy.Load(), other.Load(), firstOther.Load(), unwritable.Load())
	if readOnly.Load() > 0 || unwritable.Load() > 0 {
		t.Errorf("a connection limit made the healthy primary read-only")
	}
	if other.Load() > 0 || busy.Load()*100 > ok.Load() {
		t.Errorf("%d writes failed otherwise, %d busy, against %d ok; want every write to wait for a connection", other.Load(), busy.Load(), ok.Load())
	}
}
