package dbrouter_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestFrozenPrimaryHoldsNoRequestPastTheTimeout: the primary hangs
// (SIGSTOP of its postmaster and every backend) with writes and reads on
// their way to it. None may wait for it past the router's NodeTimeout
// (1 s here, plus room for a loaded machine), though the hang lasts 10 s:
// writes end refused or of unknown outcome, reads move to a replica.
// (Before the timeout, each waited out the whole hang: 30 s behind the
// app's server.)
func TestFrozenPrimaryHoldsNoRequestPastTheTimeout(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	const timeout = time.Second
	r := causalRouter(t, c, dbrouter.Config{NodeTimeout: timeout})
	table := newTable(t, r)
	base := &dbrouter.State{Session: 96}
	insert(t, dbrouter.WithState(ctx, base), r, table, 96, "before")
	unknown := base.Token
	unknown.LSN = dbrouter.UnknownLSN

	thaw, err := c.Freeze(ctx, cluster.LeaderName)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thawOnce := func() {
		once.Do(func() {
			if err := thaw(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(thawOnce)
	frozen := time.Now()
	// The hang ends after 10 s whatever happens, so that a router without
	// the bound fails this test instead of hanging it.
	time.AfterFunc(10*time.Second, thawOnce)

	type result struct {
		what string
		took time.Duration
		err  error
	}
	results := make(chan result, 12)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(3)
		go func() {
			defer wg.Done()
			began := time.Now()
			err := r.Write(ctx, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, 'frozen?')", 96)
				return err
			})
			results <- result{"write", time.Since(began), err}
		}()
		go func() {
			defer wg.Done()
			began := time.Now()
			err := r.ReadWith(ctx, dbrouter.Primary, dbrouter.Shared, func(b *pgx.Batch) {
				b.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { var n int; return row.Scan(&n) })
			})
			results <- result{"primary read", time.Since(began), err}
		}()
		go func() {
			defer wg.Done()
			// A session whose last write has an unknown position: only the
			// primary vouches, so the read goes there first.
			st := &dbrouter.State{Session: uint64(200 + i), Token: unknown}
			began := time.Now()
			err := r.ReadWith(dbrouter.WithState(ctx, st), dbrouter.Causal, dbrouter.Own, func(b *pgx.Batch) {
				b.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { var n int; return row.Scan(&n) })
			})
			results <- result{"causal read", time.Since(began), err}
		}()
	}
	wg.Wait()
	close(results)
	stillFrozen := time.Since(frozen) < 9*time.Second
	for res := range results {
		t.Logf("%s: %s, %v", res.what, res.took.Round(time.Millisecond), res.err)
		if res.took > 6*timeout {
			t.Errorf("%s took %s with the primary frozen; want at most about the node timeout, %s", res.what, res.took.Round(time.Millisecond), timeout)
		}
		switch {
		case res.what == "write" && res.err != nil && !errors.Is(res.err, dbrouter.ErrReadOnly) && !errors.Is(res.err, dbrouter.ErrOutcomeUnknown):
			t.Errorf("write: %v, want refused (read-only) or of unknown outcome", res.err)
		case res.what != "write" && res.err != nil:
			t.Errorf("%s: %v, want a replica's answer", res.what, res.err)
		}
	}
	if !stillFrozen {
		t.Fatal("the requests ended only after the 10 s the test gives them: the bound did not hold")
	}
	thawOnce()
	testcluster.Eventually(t, 10*time.Second, "writes again after the thaw", func() bool { return r.Writable() })
}
