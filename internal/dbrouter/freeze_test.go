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

// TestHungReplicaSlowsNoPage: replica1 hangs (SIGSTOP) for 8 s under 8
// readers, random and causal. Reads in flight there, and those routed
// there before the tracker notices, give up after the read timeout (2 s,
// the default) and move to another node: no read fails, none takes 3 s.
// (Before the read timeout: the slowest waited the node timeout, 5 s;
// before any bound, the whole 8 s.)
func TestHungReplicaSlowsNoPage(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	insert(t, ctx, r, table, 95, "before")
	waitReplicated(t)

	var mu sync.Mutex
	var slowest time.Duration
	var reads, failed int
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []dbrouter.Strategy{dbrouter.Random, dbrouter.Causal}[i%2]
			st := &dbrouter.State{Session: uint64(400 + i)}
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now()
				err := r.ReadWith(dbrouter.WithState(ctx, st), s, dbrouter.Shared, func(b *pgx.Batch) {
					b.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { var n int; return row.Scan(&n) })
				})
				took := time.Since(began)
				mu.Lock()
				reads++
				slowest = max(slowest, took)
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // readers on every node, replica1 included
	thaw, err := c.Freeze(ctx, "replica1")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thawOnce := func() { once.Do(func() { thaw() }) }
	t.Cleanup(thawOnce)
	time.Sleep(8 * time.Second) // the hang, under load
	thawOnce()
	testcluster.Eventually(t, 10*time.Second, "replica1 usable again", func() bool { return health(r, "replica1").Status == dbrouter.Usable })
	close(stop)
	wg.Wait()
	t.Logf("%d reads through an 8 s hang of replica1: %d failed (%v), the slowest %s", reads, failed, firstErr, slowest.Round(time.Millisecond))
	if failed > 0 {
		t.Errorf("%d reads failed (first: %v)", failed, firstErr)
	}
	if slowest >= 3*time.Second {
		t.Errorf("the slowest read took %s; want under 3 s", slowest.Round(time.Millisecond))
	}
}
