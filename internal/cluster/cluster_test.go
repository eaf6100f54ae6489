package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

var tableSeq atomic.Int64

// newTable creates a fresh table on the leader and returns its name.
func newTable(t *testing.T, ctx context.Context, leader *pgx.Conn) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", time.Now().UnixNano(), tableSeq.Add(1))
	if _, err := leader.Exec(ctx, "CREATE TABLE "+pgx.Identifier{name}.Sanitize()+" (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return pgx.Identifier{name}.Sanitize()
}

func conn(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// has reports whether the row with id is visible through c. A failed query
// (a table not yet replicated) counts as not visible.
func has(ctx context.Context, c *pgx.Conn, table string, id int) bool {
	var n int
	err := c.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", id).Scan(&n)
	return err == nil && n == 1
}

type nodes struct {
	leader   *pgx.Conn
	replicas []*pgx.Conn
}

func connectAll(t *testing.T, ctx context.Context, c *cluster.Cluster) nodes {
	var ns nodes
	ns.leader = conn(t, ctx, c.PrimaryURL())
	for _, u := range c.ReplicaURLs() {
		ns.replicas = append(ns.replicas, conn(t, ctx, u))
	}
	return ns
}

func TestStreamingReachesEveryFollower(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	ns := connectAll(t, ctx, c)
	table := newTable(t, ctx, ns.leader)
	if _, err := ns.leader.Exec(ctx, "INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for i, r := range ns.replicas {
		testcluster.Eventually(t, 10*time.Second, fmt.Sprintf("the row on replica%d", i+1), func() bool { return has(ctx, r, table, 1) })
	}
	// The followers are told apart in pg_stat_replication.
	rows, err := ns.leader.Query(ctx, `SELECT application_name, state FROM pg_stat_replication ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var app, state string
		err := r.Scan(&app, &state)
		return app + ":" + state, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "replica1:streaming replica2:streaming"; strings.Join(got, " ") != want {
		t.Fatalf("pg_stat_replication = %v, want %s", got, want)
	}
}

func TestPausedReplayHidesRowsUntilResumed(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	ns := connectAll(t, ctx, c)
	table := newTable(t, ctx, ns.leader)
	testcluster.Eventually(t, 10*time.Second, "the table on replica1", func() bool {
		_, err := ns.replicas[0].Exec(ctx, "SELECT 1 FROM "+table)
		return err == nil
	})
	if err := c.Pause(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Resume(context.Background(), "replica1") })
	if _, err := ns.leader.Exec(ctx, "INSERT INTO "+table+" VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	// replica2 replays it; replica1, paused, still must not show it even
	// after that and a while longer.
	testcluster.Eventually(t, 10*time.Second, "the row on replica2", func() bool { return has(ctx, ns.replicas[1], table, 7) })
	time.Sleep(300 * time.Millisecond)
	if has(ctx, ns.replicas[0], table, 7) {
		t.Fatal("paused replica1 shows a row inserted after the pause")
	}
	if err := c.Resume(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the row on replica1 after resume", func() bool { return has(ctx, ns.replicas[0], table, 7) })
}

func TestApplyDelayHoldsRowsBack(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	ns := connectAll(t, ctx, c)
	table := newTable(t, ctx, ns.leader)
	r2 := ns.replicas[1]
	testcluster.Eventually(t, 10*time.Second, "the table on replica2", func() bool {
		_, err := r2.Exec(ctx, "SELECT 1 FROM "+table)
		return err == nil
	})
	const delay = time.Second
	if err := c.SetDelay(ctx, "replica2", delay); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.SetDelay(context.Background(), "replica2", 0) })
	sent := time.Now()
	if _, err := ns.leader.Exec(ctx, "INSERT INTO "+table+" VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 15*time.Second, "the delayed row on replica2", func() bool { return has(ctx, r2, table, 3) })
	if seen := time.Since(sent); seen < delay {
		t.Fatalf("row appeared on replica2 %s after the INSERT was sent, before the %s apply delay", seen, delay)
	}
	// Removing the delay takes effect without a restart.
	if err := c.SetDelay(ctx, "replica2", 0); err != nil {
		t.Fatal(err)
	}
	sent = time.Now()
	if _, err := ns.leader.Exec(ctx, "INSERT INTO "+table+" VALUES (4)"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the undelayed row on replica2", func() bool { return has(ctx, r2, table, 4) })
	t.Logf("without delay the row appeared after %s", time.Since(sent))
}

func TestLeverErrors(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"pause unknown node", c.Pause(ctx, "replica9"), `unknown node "replica9"; this cluster has leader, replica1, replica2`},
		{"pause the leader", c.Pause(ctx, "leader"), "cannot pause replay on the leader"},
		{"pause the primary", c.Pause(ctx, "primary"), "cannot pause replay on the leader"},
		{"resume the leader", c.Resume(ctx, "leader"), "cannot resume replay on the leader"},
		{"negative delay", c.SetDelay(ctx, "replica1", -time.Second), "out of range"},
		{"delay the leader", c.SetDelay(ctx, "leader", time.Second), "cannot set the apply delay of the leader"},
		{"stop unknown node", c.Stop(ctx, "nope", false), `unknown node "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil || !strings.Contains(tt.err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", tt.err, tt.want)
			}
			if strings.Contains(tt.err.Error(), "\n") {
				t.Fatalf("error spans several lines: %q", tt.err)
			}
		})
	}
}

func TestUpRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	t.Run("taken port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dir := filepath.Join(t.TempDir(), "state")
		_, err = cluster.Up(ctx, cluster.Config{Dir: dir, Port: l.Addr().(*net.TCPAddr).Port})
		if err == nil || !strings.Contains(err.Error(), "already in use") {
			t.Fatalf("err = %v, want a port-in-use error", err)
		}
		if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
			t.Fatalf("a failed up left %s behind", dir)
		}
	})
	t.Run("no binaries", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		_, err := cluster.Up(ctx, cluster.Config{Dir: dir, Search: cluster.Search{PATH: "/nonexistent", Glob: "/nonexistent/*/bin"}})
		if !errors.Is(err, cluster.ErrNoBinaries) || !strings.Contains(err.Error(), "apt-get install postgresql") {
			t.Fatalf("err = %v, want ErrNoBinaries naming apt-get install postgresql", err)
		}
	})
	t.Run("foreign state dir", func(t *testing.T) {
		dir := t.TempDir()
		notes := filepath.Join(dir, "notes.txt")
		if err := os.WriteFile(notes, []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := cluster.Up(ctx, cluster.Config{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "not a Quest cluster") {
			t.Fatalf("err = %v, want a refusal", err)
		}
		if b, err := os.ReadFile(notes); err != nil || string(b) != "mine" {
			t.Fatalf("the foreign file was touched: %q, %v", b, err)
		}
	})
	t.Run("damaged cluster file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cluster.json"), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := cluster.Up(ctx, cluster.Config{Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "not a Quest cluster file") {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
}

// TestLifecycle brings a second cluster up in a private (0700) directory,
// reuses it, stops it, starts its existing data again, and purges it,
// checking that no postmaster outlives Down.
func TestLifecycle(t *testing.T) {
	testcluster.Get(t) // skip or fail alongside the others when PostgreSQL is missing
	ctx := context.Background()
	dir, err := testcluster.NewDir("lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Config{Dir: dir, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Down(context.Background(), true) })
	pids := running(c)
	if len(pids) != 2 {
		t.Fatalf("running postmasters = %v, want 2", pids)
	}
	leader := conn(t, ctx, c.PrimaryURL())
	table := newTable(t, ctx, leader)
	if _, err := leader.Exec(ctx, "INSERT INTO "+table+" VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	leader.Close(ctx)

	again, err := cluster.Up(ctx, cluster.Config{Dir: dir, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := running(again); !equal(got, pids) {
		t.Fatalf("second up changed the postmasters: %v, was %v", got, pids)
	}

	if err := c.Down(ctx, false); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if cluster.Alive(pid) {
			t.Fatalf("postmaster %d still running after Down", pid)
		}
	}
	// Up on a stopped cluster starts the same data again, as after a reboot.
	c, err = cluster.Up(ctx, cluster.Config{Dir: dir, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := conn(t, ctx, c.ReplicaURLs()[0])
	testcluster.Eventually(t, 10*time.Second, "the old row on the restarted follower", func() bool { return has(ctx, r, table, 42) })
	r.Close(ctx)

	pids = running(c)
	if err := c.Down(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if cluster.Alive(pid) {
			t.Fatalf("postmaster %d still running after Down --purge", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir %s still there after purge", dir)
	}
}

func TestStopAndStartNode(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	for _, how := range []string{"fast", "immediate", "kill"} {
		var err error
		if how == "kill" {
			err = c.Kill(ctx, "replica2")
		} else {
			err = c.Stop(ctx, "replica2", how == "immediate")
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pgx.Connect(ctx, c.ReplicaURLs()[1]); err == nil {
			t.Fatalf("replica2 still answers after a %s stop", how)
		}
		if err := c.Start(ctx, "replica2"); err != nil {
			t.Fatal(err)
		}
		r := conn(t, ctx, c.ReplicaURLs()[1])
		var inRecovery bool
		if err := r.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
			t.Fatalf("restarted replica2: in recovery = %v, err = %v", inRecovery, err)
		}
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// running returns the pids of the cluster's running postmasters.
func running(c *cluster.Cluster) []int {
	var pids []int
	for _, p := range c.Processes() {
		if p.Up {
			pids = append(pids, p.PID)
		}
	}
	return pids
}
