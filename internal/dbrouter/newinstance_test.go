package dbrouter_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestNewRouterAfterFailoverKeepsOffAnOldTimelineStandby: replica1 is cut
// off, the leader takes more writes (replica2 replays them), the leader
// crashes and replica1 is promoted. replica2, left on timeline 1 past the
// fork, is ahead of the new primary by LSN. A router started only now —
// a second app instance, or a deploy — cannot read where timeline 2
// forked (the app's role may not read history files), so replica2 must
// get no reads until it is known to be on the primary's history: not the
// session's causal reads, which its LSN would wrongly satisfy (200 of 200
// missed the session's own write before), and not random reads, which
// would show the rows the failover lost.
func TestNewRouterAfterFailoverKeepsOffAnOldTimelineStandby(t *testing.T) {
	c := promoteCluster(t)
	ctx := context.Background()
	nodes := c.Nodes() // leader, replica1, replica2
	first := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: 50 * time.Millisecond})
	table := newTableOn(t, first)
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	super1 := superConn(t, c, nodes[1].Name)
	if _, err := super1.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = ''"); err != nil {
		t.Fatal(err)
	}
	if _, err := super1.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "replica1's walreceiver stops", func() bool {
		var n int
		return super1.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n) == nil && n == 0
	})
	// The writes the failover will lose: plenty, so that replica2 ends far
	// ahead of what the new primary writes next.
	if err := first.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) SELECT 7, repeat('x', 1000) FROM generate_series(1, 2000)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var flushed string
	leaderConn := superConn(t, c, cluster.LeaderName)
	if err := leaderConn.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flushed); err != nil {
		t.Fatal(err)
	}
	end, _ := dbrouter.ParseLSN(flushed)
	super2 := superConn(t, c, nodes[2].Name)
	testcluster.Eventually(t, 10*time.Second, "replica2 replays the writes replica1 missed", func() bool {
		return replayOf(t, super2) >= end
	})
	leaderConn.Close(ctx)
	if err := c.Stop(ctx, cluster.LeaderName, true); err != nil {
		t.Fatal(err)
	}
	if _, err := super1.Exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the first router writes to replica1", func() bool { return first.Writable() })

	// The new instance.
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: 50 * time.Millisecond})
	testcluster.Eventually(t, 10*time.Second, "the new router writes to replica1", func() bool { return r.Writable() })
	if h := r.Health(); h[0].Member != nodes[1].Name {
		t.Fatalf("the new router's primary is %s, want replica1", h[0].Member)
	}
	missed, onReplica2, lostRows := 0, 0, 0
	for i := range 50 {
		st := &dbrouter.State{Session: uint64(1000 + i)}
		writeAs(t, r, st, table, int64(1000+i))
		if pos := replayOf(t, super2); pos < st.Token.LSN {
			t.Fatalf("replica2 at %s is behind the session's write at %s: the scenario did not happen",
				dbrouter.FormatLSN(pos), dbrouter.FormatLSN(st.Token.LSN))
		}
		n, d := readOwner(t, r, dbrouter.Causal, st, table, int64(1000+i))
		if n != 1 {
			missed++
		}
		if d.Member == nodes[2].Name {
			onReplica2++
		}
		n, d = readOwner(t, r, dbrouter.Random, &dbrouter.State{Session: uint64(5000 + i)}, table, 7)
		if n > 0 {
			lostRows++
		}
		if d.Member == nodes[2].Name {
			onReplica2++
		}
	}
	for _, h := range r.Health() {
		if h.Member == nodes[2].Name && h.Status != dbrouter.Unverified {
			t.Errorf("replica2 is %v to the new router, want %v", h.Status, dbrouter.Unverified)
		}
	}
	if missed > 0 || onReplica2 > 0 || lostRows > 0 {
		t.Fatalf("of 50 sessions: %d causal reads missed the session's own write, %d random reads showed the lost rows, %d reads went to replica2",
			missed, lostRows, onReplica2)
	}
}
