package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// The tests in this file are the router's answers to faults that are not a
// node going down: one connection dying, role settings that change what a
// statement sees, another client's asynchronous commit, replicas that lag
// when the router starts, and a COMMIT whose answer never arrives.

// backendRunning waits until a backend on the named node runs a statement
// containing probe, and returns its pid.
func backendRunning(t *testing.T, conn *pgx.Conn, probe string) int {
	t.Helper()
	var pid int
	testcluster.Eventually(t, 10*time.Second, "a backend running "+probe, func() bool {
		err := conn.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0 LIMIT 1`, probe).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	})
	return pid
}

// terminate ends one backend, as an administrator or a proxy would.
func terminate(t *testing.T, conn *pgx.Conn, pid int) {
	t.Helper()
	var ok bool
	if err := conn.QueryRow(context.Background(), "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v %v", pid, ok, err)
	}
}

// terminateRunning ends one backend that is running a statement
// containing probe at that moment: finding it and ending it in one
// statement leaves it no time to move on to its COMMIT.
func terminateRunning(t *testing.T, conn *pgx.Conn, probe string) {
	t.Helper()
	testcluster.Eventually(t, 10*time.Second, "a backend running "+probe+" to terminate", func() bool {
		var ok bool
		err := conn.QueryRow(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0 LIMIT 1`, probe).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		if err != nil || !ok {
			t.Fatalf("pg_terminate_backend: %v %v", ok, err)
		}
		return true
	})
}

// TestOneDeadWriteConnectionRefusesNoWrite: eight writers keep the
// primary busy; one in-flight write has its backend terminated. That
// connection is gone, the primary is not: no write may be refused as
// read-only, and the terminated write, which never reached COMMIT, is
// retried on a live connection.
func TestOneDeadWriteConnectionRefusesNoWrite(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{Strategy: dbrouter.Primary})
	table := newTable(t, r)
	probe := "/* write probe " + table + " */"
	leader := superConn(t, c, "leader")

	var terminatedAt atomic.Int64 // unix nanos, 0 before
	var mu sync.Mutex
	var total, inWindow, refused, failed int
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := r.Write(ctx, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, probe+" SELECT pg_sleep(0.05)"); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, 'w')", w)
					return err
				})
				at := terminatedAt.Load()
				mu.Lock()
				total++
				if at != 0 && time.Since(time.Unix(0, at)) < 300*time.Millisecond {
					inWindow++
				}
				if err != nil {
					failed++
					if errors.Is(err, dbrouter.ErrReadOnly) {
						refused++
					}
					if firstErr == nil {
						firstErr = err
					}
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	backendRunning(t, leader, probe)
	terminatedAt.Store(time.Now().UnixNano())
	terminateRunning(t, leader, probe)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	t.Logf("%d writes, %d in the 300 ms after the termination; %d refused as read-only, %d failed (first: %v)",
		total, inWindow, refused, failed, firstErr)
	if inWindow == 0 {
		t.Fatal("no write ran after the termination: the scenario did not happen")
	}
	if refused > 0 || failed > 0 {
		t.Fatalf("%d writes refused as read-only and %d failed after one connection was terminated (first: %v)", refused, failed, firstErr)
	}
	if h := health(r, "primary"); h.Status != dbrouter.Usable {
		t.Fatalf("the primary is %s after one of its connections was terminated", h.Status)
	}
}

// TestOneDeadReadConnectionKeepsTheReplica: a read whose backend is
// terminated moves to another node, and its replica keeps its reads and
// its pooled connections.
func TestOneDeadReadConnectionKeepsTheReplica(t *testing.T) {
	c := testcluster.Get(t)
	// As many connections per pool as readers: once warm, a pool makes a
	// new connection only to replace one that died.
	r := newRouter(t, c, dbrouter.Config{Strategy: dbrouter.Random, MaxConns: 8})
	table := newTable(t, r)
	probe := "/* read probe " + table + " */"
	replica1 := superConn(t, c, "replica1")
	pool := r.Replicas()[0]

	var mu sync.Mutex
	var failed int
	var firstErr error
	var excluded atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := r.Read(context.Background(), dbrouter.Shared, func(b *pgx.Batch) {
					b.Queue(probe + " SELECT pg_sleep(0.005), count(*) FROM " + table)
				})
				if err != nil {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the pools are full by now
	before := pool.Stat().NewConnsCount()
	backendRunning(t, replica1, probe)
	terminateRunning(t, replica1, probe)
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if health(r, "replica1").Status != dbrouter.Usable {
			excluded.Store(true)
		}
	}
	close(stop)
	wg.Wait()
	reconnects := pool.Stat().NewConnsCount() - before

	t.Logf("replica1: %d new connections after one was terminated; excluded: %v; %d reads failed (first: %v)", reconnects, excluded.Load(), failed, firstErr)
	if failed > 0 {
		t.Fatalf("%d reads failed (first: %v)", failed, firstErr)
	}
	if excluded.Load() {
		t.Fatal("replica1 lost its reads because one of its connections was terminated")
	}
	if reconnects > 3 {
		t.Fatalf("replica1's pool made %d new connections after one was terminated: it was reset, not just the one connection dropped", reconnects)
	}
}

// alterRole sets one of the application role's defaults until the test
// ends; only connections made after it see it.
func alterRole(t *testing.T, c *cluster.Cluster, setting, value string) {
	t.Helper()
	superExec(t, c, "leader", fmt.Sprintf("ALTER ROLE %s SET %s = '%s'", cluster.AppRole, setting, value))
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), c.SuperURL(c.Nodes()[0]))
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), fmt.Sprintf("ALTER ROLE %s RESET %s", cluster.AppRole, setting)); err != nil {
			t.Error(err)
		}
		if err := c.WaitCaughtUp(context.Background(), 15*time.Second); err != nil {
			t.Error(err)
		}
	})
	waitReplicated(t) // the role's settings are a catalog: the replicas must have them too
}

// setDelay gives the named replicas an apply delay until the test ends.
func setDelay(t *testing.T, c *cluster.Cluster, d time.Duration, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := c.SetDelay(context.Background(), name, d); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.SetDelay(context.Background(), name, 0) })
	}
}

// TestCausalUnderRoleSettings: the in-band check relies on each statement
// of a batch taking its own snapshot, and on the wait finishing within
// the statement timeout. A role's defaults must change neither.
func TestCausalUnderRoleSettings(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()

	t.Run("repeatable read", func(t *testing.T) {
		alterRole(t, c, "default_transaction_isolation", "repeatable read")
		r := causalRouter(t, c, dbrouter.Config{CausalWait: 50 * time.Millisecond})
		table := newTable(t, r)
		// Replay 5 ms behind: most reads after a write wait in-band.
		setDelay(t, c, 5*time.Millisecond, "replica1", "replica2")
		missed, waited := 0, 0
		const n = 100
		for k := range n {
			st := &dbrouter.State{Session: uint64(1000 + k)}
			sctx := dbrouter.WithState(ctx, st)
			insert(t, sctx, r, table, int64(k), "mine")
			tctx, trace := dbrouter.WithTrace(sctx)
			var got int
			if err := r.Read(tctx, dbrouter.Own, func(b *pgx.Batch) {
				b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", k).QueryRow(func(row pgx.Row) error { return row.Scan(&got) })
			}); err != nil {
				t.Fatal(err)
			}
			d := trace.Decisions()[0]
			if d.Reason == dbrouter.ReasonWaited {
				waited++
			}
			if got != 1 && d.Node != "primary" {
				missed++
			}
		}
		t.Logf("%d of %d reads missed the session's own write on a replica; %d waited in-band", missed, n, waited)
		if waited == 0 {
			t.Fatal("no read waited in-band: the scenario did not happen")
		}
		if missed > 0 {
			t.Fatalf("%d of %d reads missed the session's own write although the in-band check passed", missed, n)
		}
	})

	t.Run("statement timeout below the wait", func(t *testing.T) {
		alterRole(t, c, "statement_timeout", "100ms")
		r := causalRouter(t, c, dbrouter.Config{CausalWait: 400 * time.Millisecond})
		table := newTable(t, r)
		setDelay(t, c, time.Second, "replica1", "replica2")
		st := &dbrouter.State{Session: 7}
		sctx := dbrouter.WithState(ctx, st)
		insert(t, sctx, r, table, 7, "mine")
		n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Own, table, 7)
		if n != 1 {
			t.Fatalf("read %d rows on %s, want the session's 1", n, node)
		}
	})

	t.Run("read-only transactions by default", func(t *testing.T) {
		r := causalRouter(t, c, dbrouter.Config{})
		table := newTable(t, r)
		alterRole(t, c, "default_transaction_read_only", "on")
		r = causalRouter(t, c, dbrouter.Config{})
		if err := r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES (1, 'x')")
			return err
		}); err != nil {
			t.Fatalf("a write under the role's default_transaction_read_only: %v", err)
		}
	})
}

// TestCausalReadOnThePrimaryCoversAsyncCommits: another client commits
// with synchronous_commit = off, so its row is visible on the primary
// before its WAL is flushed (and before any replica can have it). A
// session that saw the row on the primary must not lose it on its next
// read.
func TestCausalReadOnThePrimaryCoversAsyncCommits(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	// The WAL writer flushes asynchronous commits every 10 s instead of
	// every 200 ms: the window this test needs stays open.
	leader := superConn(t, c, "leader")
	setOnNode(t, leader, "wal_writer_delay", "10s")
	other, err := pgx.Connect(ctx, c.PrimaryURL()+"&options=-c%20synchronous_commit%3Doff")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	replica1, replica2 := superConn(t, c, "replica1"), superConn(t, c, "replica2")
	replicas := []string{"replica1", "replica2"}
	t.Cleanup(func() {
		for _, name := range replicas {
			c.Resume(context.Background(), name)
		}
	})

	const pairs = 10
	wentBack := 0
	for k := range pairs {
		// Replay paused until after the first read, which so cannot be
		// served by a replica. (An apply delay instead let a loaded
		// machine's replica replay the session's write in time for that
		// read, which rightly went there then.)
		for _, name := range replicas {
			if err := c.Pause(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		st := &dbrouter.State{Session: uint64(2000 + k)}
		sctx := dbrouter.WithState(ctx, st)
		insert(t, sctx, r, table, 1, "the session's own write")
		written := st.Token.LSN
		if _, err := other.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, 'async')", 100+k); err != nil {
			t.Fatal(err)
		}
		n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Shared, table, int64(100+k))
		if n != 1 || node != "primary" {
			t.Fatalf("pair %d: the first read saw %d rows on %s; want the row, on the primary", k, n, node)
		}
		for _, name := range replicas {
			if err := c.Resume(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		// Wait until the replicas are past the session's own write.
		testcluster.Eventually(t, 5*time.Second, "the replicas to replay the session's write", func() bool {
			return replayOf(t, replica1) >= written && replayOf(t, replica2) >= written
		})
		if n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Shared, table, int64(100+k)); n != 1 {
			wentBack++
			t.Logf("pair %d: the second read on %s lost the row the first read showed", k, node)
		}
	}
	if wentBack > 0 {
		t.Fatalf("%d of %d sessions went back in time after reading an asynchronous commit on the primary", wentBack, pairs)
	}
}

// replayOf returns the replay position of the node conn is connected to.
func replayOf(t *testing.T, conn *pgx.Conn) uint64 {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), "SELECT pg_last_wal_replay_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := dbrouter.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// setOnNode sets a server parameter through conn (a superuser's), waits
// until the server reports it, and resets it at cleanup.
func setOnNode(t *testing.T, conn *pgx.Conn, param, value string) {
	t.Helper()
	ctx := context.Background()
	var old string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1)", param).Scan(&old); err != nil {
		t.Fatal(err)
	}
	apply := func(stmt, want string) error {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			return err
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var got string
			if err := conn.QueryRow(ctx, "SELECT current_setting($1)", param).Scan(&got); err != nil {
				return err
			}
			if got == want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is %s after reload, want %s", param, got, want)
			}
		}
	}
	if err := apply(fmt.Sprintf("ALTER SYSTEM SET %s = '%s'", param, value), value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := apply("ALTER SYSTEM RESET "+param, old); err != nil {
			t.Error(err)
		}
	})
}

// TestCausalFallingShortCostsOneWait: with every replica far behind the
// session's write, a read waits in-band at most once and runs its data
// statement once, on the primary.
func TestCausalFallingShortCostsOneWait(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	setDelay(t, c, 300*time.Millisecond, "replica1", "replica2")
	stop := writeSteadily(t, r, table, 20*time.Millisecond)
	defer stop()
	time.Sleep(500 * time.Millisecond) // the tracker learns the lag

	for k := range 5 {
		st := &dbrouter.State{Session: uint64(3000 + k)}
		sctx := dbrouter.WithState(ctx, st)
		insert(t, sctx, r, table, int64(3000+k), "mine")
		before := r.CausalStats()
		tctx, trace := dbrouter.WithTrace(sctx)
		executions, got := 0, 0
		err := r.Read(tctx, dbrouter.Own, func(b *pgx.Batch) {
			got = 0
			b.Queue("SELECT count(*) FROM "+table+", pg_sleep(0.05) WHERE owner = $1", 3000+k).QueryRow(func(row pgx.Row) error {
				err := row.Scan(&got)
				if err == nil {
					executions++
				}
				return err
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		after := r.CausalStats()
		short := after.Short - before.Short
		wait := after.WaitTotal - before.WaitTotal
		t.Logf("read %d: served by %s, data statement ran %d times, %d in-band checks fell short, %s waited in-band",
			k, trace.ServedBy(), executions, short, wait)
		if got != 1 {
			t.Fatalf("read %d rows, want the session's 1", got)
		}
		if executions != 1 || short > 1 || wait > 2*r.CausalWait() {
			t.Fatalf("the data statement ran %d times and %d in-band checks fell short (%s waited); want once and at most one", executions, short, wait)
		}
	}
}

// TestLagIsKnownFromTheFirstPoll: a replica 2 s behind when the router
// starts is not served as fresh under a 1 s lag limit.
func TestLagIsKnownFromTheFirstPoll(t *testing.T) {
	c := testcluster.Get(t)
	setup := newRouter(t, c, dbrouter.Config{})
	table := newTable(t, setup)
	setDelay(t, c, 2*time.Second, "replica2")
	insert(t, context.Background(), setup, table, 1, "behind")
	start := time.Now()
	r := newRouter(t, c, dbrouter.Config{MaxLag: time.Second})
	for time.Since(start) < 1500*time.Millisecond {
		h := health(r, "replica2")
		if h.Position >= health(r, "primary").Position {
			break // caught up: nothing more to check
		}
		if h.Status == dbrouter.Usable {
			t.Fatalf("%s after start: replica2 is %s behind, usable under a 1 s limit while 2 s behind",
				time.Since(start).Round(time.Millisecond), h.Lag)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCommitWithoutAnswerIsAnUnknownOutcome: the connection dies while
// COMMIT waits (here for a synchronous standby that does not exist), so
// the change is durable on the primary but the client never hears so. The
// write reports an unknown outcome — not a read-only primary — and the
// session's next read comes from the primary and shows the change.
func TestCommitWithoutAnswerIsAnUnknownOutcome(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	leader := superConn(t, c, "leader")
	setOnNode(t, leader, "synchronous_standby_names", "quest_nobody")
	pauseReplicas(t, c, "replica1", "replica2")
	testcluster.Eventually(t, 5*time.Second, "the tracker to see the pause", func() bool {
		return health(r, "replica1").Paused && health(r, "replica2").Paused
	})

	st := &dbrouter.State{Session: 99}
	sctx := dbrouter.WithState(ctx, st)
	done := make(chan error, 1)
	go func() {
		err := r.Write(sctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(sctx, "INSERT INTO "+table+" (owner, body) VALUES (99, 'saved?')")
			return err
		})
		done <- err
	}()
	var pid int
	testcluster.Eventually(t, 10*time.Second, "COMMIT to wait for the synchronous standby", func() bool {
		err := leader.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' LIMIT 1`).Scan(&pid)
		return err == nil
	})
	terminate(t, leader, pid)
	err := <-done
	if errors.Is(err, dbrouter.ErrReadOnly) {
		t.Fatalf("Write after losing the connection during COMMIT: %v; want ErrOutcomeUnknown, not read-only", err)
	}
	checkUnknownOutcome(t, sctx, r, err, st, table, 99)
}

// checkUnknownOutcome checks a write whose COMMIT was in flight when it
// ended (err): the outcome is unknown, the session's token says so, and
// its next read comes from the primary, which shows owner's row, durable.
func checkUnknownOutcome(t *testing.T, sctx context.Context, r *dbrouter.Router, err error, st *dbrouter.State, table string, owner int64) {
	t.Helper()
	if !errors.Is(err, dbrouter.ErrOutcomeUnknown) {
		t.Fatalf("Write whose COMMIT was in flight: %v; want ErrOutcomeUnknown", err)
	}
	if st.Token.LSN != dbrouter.UnknownLSN {
		t.Fatalf("token %v after an unknown outcome; want the unknown position", st.Token)
	}
	n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Own, table, owner)
	if node != "primary" || n != 1 {
		t.Fatalf("the next read saw %d rows on %s; want the durable row, from the primary", n, node)
	}
}

// TestNoNodeAtAllIsUnavailable: a router whose nodes do not answer says
// so with ErrUnavailable, which the HTTP layer turns into an outage page.
func TestNoNodeAtAllIsUnavailable(t *testing.T) {
	dead := fmt.Sprintf("postgres://quest:x@127.0.0.1:%d/quest?sslmode=disable&connect_timeout=1", closedPort(t))
	r, err := dbrouter.New(context.Background(), dbrouter.Config{PrimaryURL: dead, ReplicaURLs: []string{dead + "&application_name=r1"}, Strategy: dbrouter.Random})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = r.Read(context.Background(), dbrouter.Shared, func(b *pgx.Batch) { b.Queue("SELECT 1") })
	if !errors.Is(err, dbrouter.ErrUnavailable) {
		t.Fatalf("a read with no node up: %v; want ErrUnavailable", err)
	}
	if r.Serving() {
		t.Fatal("Serving() with no node up")
	}
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// TestNodeNamesComeFromTheNodes: a replica's name, and so its share of
// sticky sessions, comes from its URL, not its place in the list; removing
// one replica moves only the sessions that were on it.
func TestNodeNamesComeFromTheNodes(t *testing.T) {
	c := testcluster.Get(t)
	named := func(u, name string) string {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		q := p.Query()
		q.Set("application_name", name)
		p.RawQuery = q.Encode()
		return p.String()
	}
	urls := c.ReplicaURLs()
	three := []string{named(urls[0], "east"), named(urls[1], "west"), named(urls[0], "north")}
	before := dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: three}
	after := dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: three[1:]}
	r1, err := dbrouter.New(context.Background(), before)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := dbrouter.New(context.Background(), after)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	var names []string
	for _, n := range r1.Replicas() {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, ","); got != "east,west,north" {
		t.Fatalf("replica names %s; want east,west,north from application_name", got)
	}
	moved, stayed := 0, 0
	for s := uint64(1); s <= 3000; s++ {
		a, b := dbrouter.StickyNode(r1, s), dbrouter.StickyNode(r2, s)
		if a == "east" {
			continue
		}
		if a != b {
			moved++
		} else {
			stayed++
		}
	}
	t.Logf("removing east: %d sessions moved, %d stayed (of those not on east)", moved, stayed)
	if moved > 0 {
		t.Fatalf("removing one replica moved %d of %d sessions that were not on it", moved, moved+stayed)
	}
}
