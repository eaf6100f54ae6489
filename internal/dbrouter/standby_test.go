package dbrouter_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// setOnReplicas sets a server parameter on every replica and waits until
// each one reports it (pg_reload_conf only signals); at cleanup it resets
// the parameter and waits for the old value.
func setOnReplicas(t *testing.T, c *cluster.Cluster, param, value string) {
	t.Helper()
	for _, n := range c.Nodes()[1:] {
		setOnNode(t, superConn(t, c, n.Name), param, value)
	}
}

// TestRecoveryConflictRetriesElsewhere makes a replica cancel a read
// (SQLSTATE 40001, "conflict with recovery"): the primary takes an ACCESS
// EXCLUSIVE lock on the table the read holds, and replay may wait only
// 100 ms for it. The node is fine — the read lost a race with replay — so
// the router runs the read again on the next candidate and the caller
// sees no error.
func TestRecoveryConflictRetriesElsewhere(t *testing.T) {
	c := testcluster.Get(t)
	setOnReplicas(t, c, "max_standby_streaming_delay", "100ms")
	for _, s := range []dbrouter.Strategy{dbrouter.Random, dbrouter.Causal} {
		t.Run(s.String(), func(t *testing.T) {
			// The router's log says why it moved: pg_stat_database_conflicts
			// would too, but a backend reports it only when idle, seconds later.
			var log bytes.Buffer
			r := newRouter(t, c, dbrouter.Config{Strategy: s, Logger: slog.New(slog.NewTextHandler(&log, nil))})
			ctx := context.Background()
			table := newTable(t, r)
			insert(t, ctx, r, table, 1, "held")
			waitReplicated(t)

			// The read sleeps while it holds its ACCESS SHARE lock; the
			// probe comment lets the test find it in pg_stat_activity.
			probe := fmt.Sprintf("/* conflict probe %s */", table)
			// Every connection is made before the read starts: the lock
			// must reach the replica while the read still sleeps (3 s).
			replicas := map[string]*pgx.Conn{}
			for _, n := range c.Nodes()[1:] {
				replicas[n.Name] = superConn(t, c, n.Name)
			}
			locker, err := pgx.Connect(ctx, c.PrimaryURL())
			if err != nil {
				t.Fatal(err)
			}
			defer locker.Close(ctx)
			flusher := superConn(t, c, "leader")
			tctx, trace := dbrouter.WithTrace(ctx)
			type result struct {
				n   int
				err error
			}
			done := make(chan result, 1)
			go func() {
				var n int
				err := r.ReadWith(tctx, s, dbrouter.Shared, func(b *pgx.Batch) {
					n = 0
					b.Queue(probe + " SELECT count(*) FROM " + table + " CROSS JOIN pg_sleep(3)").QueryRow(func(row pgx.Row) error {
						return row.Scan(&n)
					})
				})
				done <- result{n, err}
			}()
			victim := ""
			testcluster.Eventually(t, 5*time.Second, "the read to start on a replica", func() bool {
				victim = runningOn(t, replicas, probe)
				return victim != ""
			})

			// Take the lock on the primary and flush it to the replicas
			// (another transaction's commit flushes the WAL before it);
			// hold it for a second, then let go.
			tx, err := locker.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			if _, err := flusher.Exec(ctx, "SELECT txid_current()"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}

			var res result
			select {
			case res = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the read did not finish")
			}
			if res.err != nil {
				t.Fatalf("the read failed: %v", res.err)
			}
			if res.n != 1 {
				t.Errorf("the read counted %d rows, want 1", res.n)
			}
			if !strings.Contains(log.String(), "node="+victim) || !strings.Contains(log.String(), "SQLSTATE 40001") {
				t.Fatalf("%s cancelled no read for a recovery conflict; the router logged:\n%s", victim, log.String())
			}
			d := trace.Decisions()
			if len(d) != 1 || d[0].Reason != dbrouter.ReasonRetried || d[0].Node == victim {
				t.Errorf("decisions %+v: want one read, retried away from %s", d, victim)
			}
		})
	}
}

// runningOn returns the replica whose backend is running a query that
// contains probe, or "".
func runningOn(t *testing.T, replicas map[string]*pgx.Conn, probe string) string {
	t.Helper()
	for name, conn := range replicas {
		var k int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, probe).Scan(&k)
		if err != nil {
			t.Fatal(err)
		}
		if k > 0 {
			return name
		}
	}
	return ""
}

// superConn connects as superuser to the named node (database "postgres")
// and closes the connection when the test ends.
func superConn(t *testing.T, c *cluster.Cluster, name string) *pgx.Conn {
	t.Helper()
	n, err := c.Node(name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), c.SuperURL(n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// replayLSN returns the named node's replay position.
func replayLSN(t *testing.T, c *cluster.Cluster, name string) uint64 {
	t.Helper()
	return replayOf(t, superConn(t, c, name))
}

// superExec runs a statement as superuser on the named node.
func superExec(t *testing.T, c *cluster.Cluster, name, stmt string) {
	t.Helper()
	if _, err := superConn(t, c, name).Exec(context.Background(), stmt); err != nil {
		t.Fatalf("%s on %s: %v", stmt, name, err)
	}
}

// TestCausalRefusesAReplicaThatWentBack forces what a crash can do to a
// standby: it comes back accepting queries at a replay position older than
// what it served before. After a restartpoint, a few commits and a
// SIGKILL, replay restarts at the restartpoint, opens for queries once
// consistent, and — with a one-hour apply delay, which PostgreSQL applies
// only after consistency — stops before the commits it had replayed. A
// session that wrote them, and one that read them there, must still see
// them: replica1 is passed over and the primary answers.
func TestCausalRefusesAReplicaThatWentBack(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	session := sessionOn(t, r, "replica1")
	writer := &dbrouter.State{Session: session}
	wctx := dbrouter.WithState(ctx, writer)

	// A fresh restartpoint on replica1, then commits it replays past it.
	superExec(t, c, "leader", "CHECKPOINT")
	waitReplicated(t)
	superExec(t, c, "replica1", "CHECKPOINT")
	for i := range 5 {
		insert(t, wctx, r, table, 5, fmt.Sprint("note ", i))
	}
	waitReplicated(t)
	reader := &dbrouter.State{Session: session}
	rctx := dbrouter.WithState(ctx, reader)
	if n, node := count(t, rctx, r, dbrouter.Causal, dbrouter.Shared, table, 5); n != 5 || node != "replica1" {
		t.Fatalf("before the crash: %d notes from %s, want 5 from replica1", n, node)
	}
	before := replayLSN(t, c, "replica1")

	// replica2 paused: causal skips it, so replica1 is the only replica
	// left to try. Then the crash, with replay held back after restart.
	pauseReplicas(t, c, "replica2")
	if err := c.SetDelay(ctx, "replica1", time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.SetDelay(context.Background(), "replica1", 0) })
	if err := c.Kill(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Start(context.Background(), "replica1") })
	testcluster.Eventually(t, 10*time.Second, "the router to see replica1 down", func() bool {
		return !health(r, "replica1").Up
	})
	if err := c.Start(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	after := replayLSN(t, c, "replica1")
	if after >= before {
		t.Fatalf("replica1 restarted at %s, not behind %s: the scenario did not happen",
			dbrouter.FormatLSN(after), dbrouter.FormatLSN(before))
	}
	// What replica1 itself now shows, asked directly.
	n1, err := c.Node("replica1")
	if err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.Connect(ctx, c.URL(n1))
	if err != nil {
		t.Fatal(err)
	}
	var there int
	err = direct.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE owner = 5").Scan(&there)
	direct.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if there >= 5 {
		t.Fatalf("replica1 still shows %d notes after going back", there)
	}
	t.Logf("replica1 served up to %s (5 notes) before the crash, restarted at %s (%d notes)",
		dbrouter.FormatLSN(before), dbrouter.FormatLSN(after), there)
	// The tracker sees it back behind what it had replayed: it gets no
	// reads from any strategy until it replays past that again.
	testcluster.Eventually(t, 10*time.Second, "the router to see replica1 back, gone back in time", func() bool {
		h := health(r, "replica1")
		return h.Up && h.Status == dbrouter.WentBack && h.Position == after
	})

	// Each session is turned away from replica1 by the plan; were the
	// tracker not to have seen it yet, the in-band check would
	// (TestCausalReadYourWritesWithReplayPaused covers that path alone).
	// Either way the primary answers, for a replica that falls short.
	for _, s := range []struct {
		name string
		ctx  context.Context
	}{{"the writer", wctx}, {"the reader", rctx}} {
		tctx, trace := dbrouter.WithTrace(s.ctx)
		var n int
		if err := r.ReadWith(tctx, dbrouter.Causal, dbrouter.Shared, func(b *pgx.Batch) {
			b.Queue("SELECT count(*) FROM " + table + " WHERE owner = 5").QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
		}); err != nil {
			t.Fatal(err)
		}
		node := trace.ServedBy()
		if n != 5 {
			t.Errorf("%s saw %d of the 5 notes (from %s) after replica1 went back", s.name, n, node)
		}
		if d := trace.Decisions(); node != "primary" || d[0].Reason != dbrouter.ReasonFallbackLag {
			t.Errorf("%s was served by %s (%+v); want the primary, because replica1 is behind its token", s.name, node, d)
		}
	}
}

// health returns the router's view of the named node.
func health(r *dbrouter.Router, name string) dbrouter.Health {
	for _, h := range r.Health() {
		if h.Name == name {
			return h
		}
	}
	return dbrouter.Health{}
}
