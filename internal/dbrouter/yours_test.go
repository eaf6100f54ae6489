package dbrouter_test

import (
	"context"
	"os"
	"testing"
	"time"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestYourStrategy is the workshop's exercise check (docs/workshop.md):
// the strategy in yours.go must keep read-your-writes and monotonic reads
// while both replicas replay 300 ms behind. A session writes, reads its
// own data at once, then re-reads the shared data for two seconds, twice
// over. With QUEST_EXERCISE=1 it must also serve at least half of the
// reads from replicas. The starting strategy (everything from the
// primary) passes the first part and fails the second.
func TestYourStrategy(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := newRouter(t, c, dbrouter.Config{Strategy: dbrouter.Yours})
	table := newTable(t, r)
	setDelay(t, c, 300*time.Millisecond, "replica1", "replica2")
	stop := writeSteadily(t, r, table, 50*time.Millisecond) // someone else writes too, owner 0
	defer stop()

	st := &dbrouter.State{Session: 77}
	sctx := dbrouter.WithState(ctx, st)
	reads, onReplicas, seen := 0, 0, 0
	read := func(intent dbrouter.Intent) int {
		n, node := count(t, sctx, r, dbrouter.Yours, intent, table, 77)
		reads++
		if node != "primary" {
			onReplicas++
		}
		return n
	}
	for round := 1; round <= 2; round++ {
		insert(t, sctx, r, table, 77, "mine")
		if n := read(dbrouter.Own); n != round {
			t.Fatalf("round %d: right after writing, your own data showed %d of your %d rows (read-your-writes)", round, n, round)
		}
		seen = round
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			n := read(dbrouter.Shared)
			if n < seen {
				t.Fatalf("round %d: the shared data showed %d of your rows after it had shown %d (monotonic reads)", round, n, seen)
			}
			seen = n
		}
	}
	share := 100 * onReplicas / reads
	t.Logf("your strategy kept read-your-writes and monotonic reads; %d of %d reads (%d %%) on replicas", onReplicas, reads, share)
	if os.Getenv("QUEST_EXERCISE") == "1" && share < 50 {
		t.Fatalf("%d %% of reads on replicas: the exercise wants at least half off the primary", share)
	}
}
