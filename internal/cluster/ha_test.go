package cluster_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/testcluster"
)

// needHA skips the test when Patroni, etcd or PostgreSQL is missing, or
// fails it under CI, where nothing may skip.
func needHA(t *testing.T) {
	t.Helper()
	_, _, err := cluster.FindHATools()
	if err == nil {
		_, err = cluster.FindBinDir(cluster.Search{})
	}
	if err != nil {
		if testcluster.InCI() {
			t.Fatalf("%v (CI=true, so this fails)", err)
		}
		t.Skip(err)
	}
}

// haPIDs returns the pids of every process of the cluster now running:
// etcd, each member's Patroni and postmaster.
func haPIDs(ctx context.Context, c *cluster.Cluster) []int {
	var pids []int
	if _, pid := c.Etcd(); pid > 0 {
		pids = append(pids, pid)
	}
	ms, _ := c.Members(ctx)
	for _, m := range ms {
		if m.PID > 0 {
			pids = append(pids, m.PID)
		}
	}
	for _, p := range c.Processes() {
		if p.Up {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// showDelay reads a node's recovery_min_apply_delay as the lever role sees it.
func showDelay(t *testing.T, ctx context.Context, c *cluster.Cluster, name string) string {
	t.Helper()
	n, err := c.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	lever := conn(t, ctx, c.LeverURL(n))
	defer lever.Close(ctx)
	var d string
	if err := lever.QueryRow(ctx, "SHOW recovery_min_apply_delay").Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestHA brings up a Patroni cluster and takes it through what quest
// cluster does to one: the roles and levers of a plain cluster, a crash of
// the leader, the crashed member's return, a planned switchover, and down,
// after which no process of it may be left.
func TestHA(t *testing.T) {
	testcluster.Long(t)
	needHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, err := testcluster.NewDir("ha")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, err := cluster.Up(ctx, cluster.Config{Dir: dir, Port: 0, HA: true, BinDir: os.Getenv("QUEST_PG_BIN")})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{} // every pid of the cluster ever seen, for the clean-up
	see := func() {
		for _, pid := range haPIDs(ctx, c) {
			seen[pid] = true
		}
	}
	t.Cleanup(func() {
		c.Down(context.Background(), true)
		for pid := range seen {
			if cluster.Alive(pid) {
				t.Errorf("pid %d outlived the test; killing it", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	see()
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("up --ha took %s, more than 30s", took.Round(100*time.Millisecond))
	}
	t.Logf("up --ha: %s", time.Since(began).Round(100*time.Millisecond))

	// Three members: one leads, the others stream from it, each under its
	// own name, as the replication role.
	nodes := c.Nodes()
	if len(nodes) != 3 || !nodes[0].Leader() || nodes[1].Leader() || nodes[2].Leader() {
		t.Fatalf("nodes = %+v, want 3, the leader first", nodes)
	}
	leader, a, b := nodes[0].Name, nodes[1].Name, nodes[2].Name
	super := conn(t, ctx, c.SuperURL(nodes[0]))
	rows, _ := super.Query(ctx, `SELECT usename || ' ' || application_name || ' ' || state FROM pg_stat_replication ORDER BY application_name`)
	repl, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"quest_replicator " + a + " streaming", "quest_replicator " + b + " streaming"}; !slices.Equal(repl, want) {
		t.Fatalf("pg_stat_replication on %s = %q, want %q", leader, repl, want)
	}
	super.Close(ctx)

	// The application role writes on the primary and reads on a replica
	// whose URL names it.
	app := conn(t, ctx, c.PrimaryURL())
	table := newTable(t, ctx, app)
	if _, err := app.Exec(ctx, "INSERT INTO "+table+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	app.Close(ctx)
	for _, u := range c.ReplicaURLs() {
		if !strings.Contains(u, "application_name=node") {
			t.Errorf("replica URL %s does not name its member", u)
		}
		r := conn(t, ctx, u)
		testcluster.Eventually(t, 10*time.Second, "the row on "+u, func() bool { return has(ctx, r, table, 1) })
		r.Close(ctx)
	}

	// Patroni undoes a bare ALTER SYSTEM of the apply delay within a loop
	// or two; SetDelay tells Patroni first, so its delay stays.
	bn, _ := c.Node(b)
	lever := conn(t, ctx, c.LeverURL(bn))
	if _, err := lever.Exec(ctx, "ALTER SYSTEM SET recovery_min_apply_delay = '2s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := lever.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	lever.Close(ctx)
	if err := c.SetDelay(ctx, a, time.Second); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	testcluster.Eventually(t, 10*time.Second, "Patroni to undo the bare ALTER SYSTEM on "+b, func() bool { return showDelay(t, ctx, c, b) == "0" })
	for time.Since(set) < 3*time.Second { // three Patroni loops
		if d := showDelay(t, ctx, c, a); d != "1s" {
			t.Fatalf("%s's apply delay is %s %s after SetDelay, want 1s", a, d, time.Since(set))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The lever role pauses and resumes a replica, and is refused on the
	// leader.
	if err := c.Pause(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(ctx, b); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{leader, "leader"} {
		if err := c.Pause(ctx, name); err == nil || !strings.Contains(err.Error(), "cannot pause replay on the leader") {
			t.Errorf("Pause(%s) = %v, want a refusal", name, err)
		}
	}

	// A crash of the leader's host: Patroni promotes a replica once the
	// leader key expires.
	crashedPIDs := haPIDs(ctx, c)
	crashed := time.Now()
	failed, err := c.Fail(ctx, "leader")
	if err != nil {
		t.Fatal(err)
	}
	if failed != leader {
		t.Fatalf("Fail(leader) crashed %s, want %s", failed, leader)
	}
	ms, _ := c.Members(ctx)
	for _, m := range ms {
		if m.Name == failed && (m.PID != 0 || m.State != "down") {
			t.Fatalf("after Fail, %s = %+v, want its Patroni gone", failed, m)
		}
	}
	if c.Processes()[0].Up {
		t.Fatalf("after Fail, %s's postmaster still runs", failed)
	}
	newLeader, err := c.WaitLeader(ctx, failed, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(crashed)
	t.Logf("fail %s: %s leads %s later", failed, newLeader, took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("a new leader took %s, more than 20s (ttl 10s)", took)
	}
	if c.Nodes()[0].Name != newLeader {
		t.Fatalf("after WaitLeader the first node is %s, want %s", c.Nodes()[0].Name, newLeader)
	}
	app = conn(t, ctx, c.PrimaryURL())
	if _, err := app.Exec(ctx, "INSERT INTO "+table+" VALUES (2)"); err != nil {
		t.Fatalf("write on the new leader %s: %v", newLeader, err)
	}
	app.Close(ctx)

	// The crashed member comes back: Patroni rewinds it and it streams
	// from the new leader, the row written since included.
	restarted := time.Now()
	if err := c.Start(ctx, failed); err != nil {
		t.Fatal(err)
	}
	t.Logf("start %s: a streaming replica again after %s", failed, time.Since(restarted).Round(100*time.Millisecond))
	see()
	fn, _ := c.Node(failed)
	if fn.Leader() {
		t.Fatalf("%s came back as the leader", failed)
	}
	r := conn(t, ctx, c.URL(fn))
	testcluster.Eventually(t, 10*time.Second, "the row written after the failover on "+failed, func() bool { return has(ctx, r, table, 2) })
	r.Close(ctx)

	// A planned switchover back to it.
	switched := time.Now()
	from, to, err := c.Switchover(ctx, failed)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("switchover %s → %s: %s", from, to, time.Since(switched).Round(100*time.Millisecond))
	see()
	if from != newLeader || to != failed || c.Nodes()[0].Name != failed {
		t.Fatalf("switchover from %s to %s, first node %s; want from %s to %s", from, to, c.Nodes()[0].Name, newLeader, failed)
	}
	app = conn(t, ctx, c.PrimaryURL())
	if _, err := app.Exec(ctx, "INSERT INTO "+table+" VALUES (3)"); err != nil {
		t.Fatalf("write on %s after the switchover: %v", failed, err)
	}
	app.Close(ctx)
	// a is a replica again, whoever led meanwhile, and its delay outlived
	// Patroni's rewrites of its configuration.
	if d := showDelay(t, ctx, c, a); d != "1s" {
		t.Errorf("%s's apply delay after a failover and a switchover is %s, want 1s", a, d)
	}

	// A second handle on the state directory sees the same leader.
	again, err := cluster.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.PrimaryURL() != c.PrimaryURL() {
		t.Errorf("Open gives primary %s, want %s", again.PrimaryURL(), c.PrimaryURL())
	}

	// down leaves nothing running, the processes killed by Fail included.
	pids := append(haPIDs(ctx, c), crashedPIDs...)
	see()
	downed := time.Now()
	if err := c.Down(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Logf("down: %s", time.Since(downed).Round(100*time.Millisecond))
	if len(pids) < 7 { // etcd, 3 Patroni, 3 postmasters
		t.Fatalf("only %d pids seen before down: %v", len(pids), pids)
	}
	for _, pid := range pids {
		if cluster.Alive(pid) {
			t.Errorf("pid %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s still there after down --purge", dir)
	}
}

func TestHARefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("sync without ha", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		_, err := cluster.Up(ctx, cluster.Config{Dir: dir, Sync: true})
		if err == nil || !strings.Contains(err.Error(), "needs --ha") {
			t.Fatalf("err = %v, want a refusal naming --ha", err)
		}
	})
	t.Run("taken port", func(t *testing.T) {
		needHA(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		dir := filepath.Join(t.TempDir(), "state")
		// The REST API of node1 lands on the taken port.
		_, err = cluster.Up(ctx, cluster.Config{Dir: dir, HA: true, Port: l.Addr().(*net.TCPAddr).Port - 10})
		if err == nil || !strings.Contains(err.Error(), "already in use") {
			t.Fatalf("err = %v, want a port-in-use error", err)
		}
		if _, statErr := os.Stat(dir); !errors.Is(statErr, os.ErrNotExist) {
			t.Fatalf("a failed up left %s behind", dir)
		}
	})
	t.Run("ha on a plain cluster", func(t *testing.T) {
		c := testcluster.Get(t)
		_, err := cluster.Up(ctx, cluster.Config{Dir: c.Dir(), HA: true})
		if err == nil || !strings.Contains(err.Error(), "holds a plain cluster") {
			t.Fatalf("err = %v, want a refusal", err)
		}
	})
	t.Run("ha verbs on a plain cluster", func(t *testing.T) {
		c := testcluster.Get(t)
		if _, err := c.Fail(ctx, "leader"); err == nil || !strings.Contains(err.Error(), "up --ha") {
			t.Errorf("Fail: %v, want a refusal naming up --ha", err)
		}
		if _, _, err := c.Switchover(ctx, ""); err == nil || !strings.Contains(err.Error(), "up --ha") {
			t.Errorf("Switchover: %v, want a refusal naming up --ha", err)
		}
		if c.HA() || c.PatroniURLs() != nil {
			t.Errorf("a plain cluster says HA %v, Patroni URLs %v", c.HA(), c.PatroniURLs())
		}
	})
}
