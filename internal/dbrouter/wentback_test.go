package dbrouter_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestReplicaRestoredFromAnOlderCopyGetsNoReads: replica1 is stopped, its
// data directory swapped for a copy taken earlier, and started again —
// behind what it had replayed, and (with a long apply delay) in no hurry
// to catch up. Sessions that had read there must not read less than they
// had already seen, whatever the strategy: the tracker sees the restart
// and the position go back, so replica1 gets no reads until it has
// replayed past where it was. (Before: under sticky, 40 of 40 sessions
// read fewer rows than they had seen, for up to the 30 s lag limit.)
func TestReplicaRestoredFromAnOlderCopyGetsNoReads(t *testing.T) {
	c := promoteCluster(t)
	ctx := context.Background()
	nodes := c.Nodes() // leader, replica1, replica2
	replica1 := nodes[1]
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: 50 * time.Millisecond})
	table := newTableOn(t, r)
	writeAs(t, r, &dbrouter.State{}, table, 1)
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// The older copy.
	if err := c.Stop(ctx, replica1.Name, false); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "replica1-old")
	if out, err := exec.Command("cp", "-a", replica1.DataDir, old).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	if err := c.Start(ctx, replica1.Name); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		writeAs(t, r, &dbrouter.State{}, table, 1)
	}
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "replica1 usable", func() bool { return memberHealth(r, replica1.Name).Status == dbrouter.Usable })
	var sessions []uint64
	for id := uint64(1); len(sessions) < 40; id++ {
		if dbrouter.StickyNode(r, id) == replica1.Name {
			sessions = append(sessions, id)
		}
	}
	for _, id := range sessions {
		if n, d := countShared(t, r, dbrouter.Sticky, &dbrouter.State{Session: id}, table, 1); n != 11 || d.Member != replica1.Name {
			t.Fatalf("session %d before the swap: %d rows from %s", id, n, d.Member)
		}
	}
	before := memberHealth(r, replica1.Name).Position

	// The swap: the older copy, with a long apply delay.
	if err := c.Stop(ctx, replica1.Name, false); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(replica1.DataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, replica1.DataDir); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(replica1.DataDir, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("recovery_min_apply_delay = '1h'\n")
	f.Close()
	if err := c.Start(ctx, replica1.Name); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the router sees replica1 back, behind", func() bool {
		h := memberHealth(r, replica1.Name)
		return h.Up && h.Position < before
	})
	short := 0
	for _, id := range sessions {
		if n, _ := countShared(t, r, dbrouter.Sticky, &dbrouter.State{Session: id}, table, 1); n < 11 {
			short++
		}
	}
	if h := memberHealth(r, replica1.Name); h.Status != dbrouter.WentBack {
		t.Errorf("replica1, restarted behind where it was, is %v; want %v", h.Status, dbrouter.WentBack)
	}
	if short > 0 {
		t.Fatalf("%d of %d sticky sessions read fewer rows than they had seen", short, len(sessions))
	}
}

// countShared counts owner's notes as shared data (so sticky reads them
// on the session's replica), with the decision that served them.
func countShared(t *testing.T, r *dbrouter.Router, s dbrouter.Strategy, st *dbrouter.State, table string, owner int64) (int, dbrouter.Decision) {
	t.Helper()
	ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), st))
	var n int
	if err := r.ReadWith(ctx, s, dbrouter.Shared, func(b *pgx.Batch) {
		n = 0
		b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", owner).QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	}); err != nil {
		t.Fatal(err)
	}
	return n, trace.Decisions()[0]
}
