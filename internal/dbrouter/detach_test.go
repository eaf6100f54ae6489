package dbrouter_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestMistakenPromotionIsUndoneWithoutARestart: replica2 is promoted by
// mistake while the leader is healthy. With no Patroni to arbitrate, the
// router follows the higher timeline, as every tool that reads
// pg_is_in_recovery() does: writes go to replica2, and the leader is a
// superseded primary (split brain). replica2 is then stopped: writes stop
// too, since it may come back. The operator makes it a standby again
// (standby.signal) and starts it: nothing claims timeline 2 any more, and
// the router steps back to the leader by itself — writes there, replica1
// reads again, and the session that wrote on replica2 is told its change
// may be lost. (Before: the router wrote to the leader as soon as replica2
// was gone, and kept every healthy replica "off the primary's history",
// 0 of 300 reads on replicas, until serve restarted.)
func TestMistakenPromotionIsUndoneWithoutARestart(t *testing.T) {
	c := promoteCluster(t)
	ctx := context.Background()
	nodes := c.Nodes() // leader, replica1, replica2
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: 50 * time.Millisecond})
	leader, err := dbrouter.NodeName(c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	replica1, replica2 := nodes[1].Name, nodes[2].Name
	table := newTableOn(t, r)
	kept := &dbrouter.State{Session: 1}
	writeAs(t, r, kept, table, 1)
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}

	// The mistake.
	if _, err := superConn(t, c, replica2).Exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "writes go to replica2", func() bool { return r.Health()[0].Member == replica2 })
	lost := &dbrouter.State{Session: 2}
	writeAs(t, r, lost, table, 2)
	if r.SplitBrain() == "" || memberHealth(r, leader).Status != dbrouter.Superseded {
		t.Fatalf("after the mistaken promotion: split brain %q, the leader %v", r.SplitBrain(), memberHealth(r, leader).Status)
	}

	// replica2 is stopped: no write anywhere, since it may come back.
	if err := c.Stop(ctx, replica2, false); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "the router sees replica2 down", func() bool { return !memberHealth(r, replica2).Up })
	if err := r.Write(ctx, func(pgx.Tx) error { return nil }); !errors.Is(err, dbrouter.ErrSplitBrain) {
		t.Fatalf("a write with replica2 down: %v, want a split brain refusal", err)
	}

	// The operator makes replica2 a standby again and starts it.
	if err := os.WriteFile(filepath.Join(nodes[2].DataDir, "standby.signal"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, replica2); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "writes go to the leader again", func() bool {
		return r.Writable() && r.Health()[0].Member == leader && r.SplitBrain() == ""
	})
	again := &dbrouter.State{Session: 3}
	writeAs(t, r, again, table, 3)
	testcluster.Eventually(t, 10*time.Second, "replica1 gets reads again", func() bool { return memberHealth(r, replica1).Status == dbrouter.Usable })
	if s := memberHealth(r, replica2).Status; s != dbrouter.Diverged {
		t.Errorf("replica2, a standby holding timeline 2's WAL, is %v; want %v until it is rewound", s, dbrouter.Diverged)
	}
	if n, d := readOwner(t, r, dbrouter.Causal, lost, table, 2); !d.Lost || n != 0 {
		t.Errorf("the session that wrote on replica2: %d notes from %s, told lost %v; want 0, told", n, d.Node, d.Lost)
	}
	if n, d := readOwner(t, r, dbrouter.Causal, &dbrouter.State{Session: 1, Token: kept.Token}, table, 1); n != 1 || d.Lost {
		t.Errorf("the session that wrote before the mistake: %d notes from %s, told lost %v", n, d.Node, d.Lost)
	}
	reads := 0
	for i := range 100 {
		if _, d := readOwner(t, r, dbrouter.Random, &dbrouter.State{Session: uint64(100 + i)}, table, 3); d.Member == replica1 {
			reads++
		}
	}
	if reads == 0 {
		t.Errorf("0 of 100 random reads on replica1 after the router stepped back")
	}
}
