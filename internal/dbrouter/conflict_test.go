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
	ctx := context.Background()
	apply := func(n cluster.Node, stmt, want string) error {
		conn, err := pgx.Connect(ctx, c.SuperURL(n))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return err
		}
		for deadline := time.Now().Add(5 * time.Second); ; {
			var got string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", param).Scan(&got); err != nil {
				return err
			}
			if got == want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %s is %s after reload, want %s", n.Name, param, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, n := range c.Nodes()[1:] {
		conn, err := pgx.Connect(ctx, c.SuperURL(n))
		if err != nil {
			t.Fatal(err)
		}
		var old string
		err = conn.QueryRow(ctx, "SELECT current_setting($1)", param).Scan(&old)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := apply(n, fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", param, value), value); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := apply(n, "ALTER SYSTEM RESET "+param, old); err != nil {
				t.Error(err)
			}
		})
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
					b.Queue(probe + " SELECT count(*) FROM " + table + " CROSS JOIN pg_sleep(1.5)").QueryRow(func(row pgx.Row) error {
						return row.Scan(&n)
					})
				})
				done <- result{n, err}
			}()
			victim := ""
			testcluster.Eventually(t, 5*time.Second, "the read to start on a replica", func() bool {
				victim = runningOn(t, c, probe)
				return victim != ""
			})

			// Take the lock on the primary and flush it to the replicas
			// (another transaction's commit flushes the WAL before it);
			// hold it for a second, then let go.
			primary, err := pgx.Connect(ctx, c.SuperURL(c.Nodes()[0]))
			if err != nil {
				t.Fatal(err)
			}
			defer primary.Close(ctx)
			locker, err := pgx.Connect(ctx, c.PrimaryURL())
			if err != nil {
				t.Fatal(err)
			}
			defer locker.Close(ctx)
			tx, err := locker.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				t.Fatal(err)
			}
			if _, err := primary.Exec(ctx, "SELECT txid_current()"); err != nil {
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
func runningOn(t *testing.T, c *cluster.Cluster, probe string) string {
	t.Helper()
	ctx := context.Background()
	for _, n := range c.Nodes()[1:] {
		conn, err := pgx.Connect(ctx, c.SuperURL(n))
		if err != nil {
			t.Fatal(err)
		}
		var k int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0", probe).Scan(&k)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if k > 0 {
			return n.Name
		}
	}
	return ""
}
