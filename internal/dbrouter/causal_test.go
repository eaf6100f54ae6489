package dbrouter_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// sessionOn returns a session id whose rendezvous replica is the named one.
func sessionOn(t testing.TB, r *dbrouter.Router, replica string) uint64 {
	t.Helper()
	for s := uint64(1); s < 1000; s++ {
		ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), &dbrouter.State{Session: s}))
		if err := r.ReadWith(ctx, dbrouter.Sticky, dbrouter.Shared, func(b *pgx.Batch) { b.Queue("SELECT 1") }); err != nil {
			t.Fatal(err)
		}
		if d := trace.Decisions(); d[0].Node == replica && d[0].Reason == dbrouter.ReasonSticky {
			return s
		}
	}
	t.Fatalf("no session hashes to %s", replica)
	return 0
}

func causalRouter(t *testing.T, c *cluster.Cluster, cfg dbrouter.Config) *dbrouter.Router {
	cfg.Strategy = dbrouter.Causal
	return newRouter(t, c, cfg)
}

func TestCausalReadYourWritesOnFreshReplicas(t *testing.T) {
	c := testcluster.Get(t)
	// A wait of a second instead of the default 20 ms: under make test's
	// parallel packages on two cores a replica can take longer than 20 ms
	// to replay a commit, and this test is about where a read right after
	// a write is served and what it sees, not how fast replay is (the
	// benchmark behind docs/router.md's figure uses the default).
	r := causalRouter(t, c, dbrouter.Config{CausalWait: time.Second})
	table := newTable(t, r)
	st := &dbrouter.State{Session: 11}
	ctx := dbrouter.WithState(context.Background(), st)
	onReplica := 0
	const pairs = 20
	for i := 1; i <= pairs; i++ {
		insert(t, ctx, r, table, 11, "lightsaber")
		n, node := count(t, ctx, r, dbrouter.Causal, dbrouter.Own, table, 11)
		if n != i {
			t.Fatalf("write %d: the read right after it saw %d notes on %s", i, n, node)
		}
		if node != "primary" {
			onReplica++
		}
	}
	// docs/router.md states at least 95 % (the benchmark measures it over
	// 2,000 pairs); 19 of 20 here.
	t.Logf("%d of %d reads right after a write were served by a replica", onReplica, pairs)
	if onReplica*100 < pairs*95 {
		t.Errorf("only %d of %d reads right after a write stayed on a replica, under 95 %%", onReplica, pairs)
	}
}

func TestCausalReadYourWritesWithReplayPaused(t *testing.T) {
	c := testcluster.Get(t)
	// A poll interval of an hour: the tracker never learns of the pause, so
	// only the in-band check stands between the session and stale data.
	r := causalRouter(t, c, dbrouter.Config{PollInterval: time.Hour})
	table := newTable(t, r)
	pauseReplicas(t, c, "replica1", "replica2")
	st := &dbrouter.State{Session: 12}
	ctx := dbrouter.WithState(context.Background(), st)
	for i := 1; i <= 3; i++ {
		insert(t, ctx, r, table, 12, "lightsaber")
		// Every replica falls short within the bounded wait; the primary answers.
		if n, node := count(t, ctx, r, dbrouter.Causal, dbrouter.Own, table, 12); n != i || node != "primary" {
			t.Fatalf("write %d: the next read saw %d notes on %s, want %d from primary", i, n, node, i)
		}
	}
	if s := r.CausalStats(); s.Short == 0 || s.OnPrimary == 0 {
		t.Fatalf("stats %+v: want in-band checks that fell short and reads on the primary", s)
	}
}

func TestCausalMonotonicReadsAcrossFailover(t *testing.T) {
	c := testcluster.Get(t)
	r := causalRouter(t, c, dbrouter.Config{PollInterval: time.Hour})
	ctx := context.Background()
	table := newTable(t, r)
	pauseAtDifferentPositions(t, c, r, table)

	// Sessions read repeatedly; none may ever see fewer comments.
	check := func(label string, sessions []*dbrouter.State, seen []int) {
		t.Helper()
		for k, st := range sessions {
			sctx := dbrouter.WithState(ctx, st)
			for range 5 {
				n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Shared, table, 9)
				if n < seen[k] {
					t.Fatalf("%s: session %d went back in time: %d comments after %d (from %s)", label, st.Session, n, seen[k], node)
				}
				seen[k] = n
			}
		}
	}
	onFresh := &dbrouter.State{Session: sessionOn(t, r, "replica2")}
	onOld := &dbrouter.State{Session: sessionOn(t, r, "replica1")}
	sessions := []*dbrouter.State{onFresh, onOld}
	seen := make([]int, len(sessions))
	check("both replicas up", sessions, seen)
	if seen[0] != 2 {
		t.Fatalf("the session on the fresher replica saw %d comments, want 2", seen[0])
	}

	// Its replica stops: the session fails over to the older replica, which
	// must not answer; the primary does.
	if err := c.Stop(ctx, "replica2", false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Start(context.Background(), "replica2") })
	check("replica2 stopped", sessions, seen)
	fctx, trace := dbrouter.WithTrace(dbrouter.WithState(ctx, onFresh))
	if n, node := count(t, fctx, r, dbrouter.Causal, dbrouter.Shared, table, 9); n != 2 || node != "primary" {
		t.Fatalf("after failover: %d comments from %s (%+v), want 2 from primary", n, node, trace.Decisions())
	}
}

func TestCausalSurvivesAReplicaCrash(t *testing.T) {
	c := testcluster.Get(t)
	// A wait of 250 ms rather than 20: the restarted replica must serve
	// the session's reads right after its writes, and under make test's
	// load replay can take longer than 20 ms, sending them to the primary.
	r := causalRouter(t, c, dbrouter.Config{CausalWait: 250 * time.Millisecond})
	ctx := context.Background()
	table := newTable(t, r)
	st := &dbrouter.State{Session: sessionOn(t, r, "replica1")}
	sctx := dbrouter.WithState(ctx, st)
	stop := writeSteadily(t, r, table, 10*time.Millisecond)
	defer stop()
	own, seen := 0, 0
	step := func() string {
		t.Helper()
		insert(t, sctx, r, table, 77, "mine")
		own++
		n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Own, table, 77)
		if n != own {
			t.Fatalf("read-your-writes broken: %d of my %d notes (from %s)", n, own, node)
		}
		var all int
		if err := r.ReadWith(sctx, dbrouter.Causal, dbrouter.Shared, func(b *pgx.Batch) {
			b.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { return row.Scan(&all) })
		}); err != nil {
			t.Fatal(err)
		}
		if all < seen {
			t.Fatalf("monotonic reads broken: %d rows after %d", all, seen)
		}
		seen = all
		return node
	}
	for range 10 {
		step()
	}
	if err := c.Kill(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Start(context.Background(), "replica1") })
	for range 5 {
		step()
	}
	if err := c.Start(ctx, "replica1"); err != nil {
		t.Fatal(err)
	}
	// Right after the restart the replica may answer from an older
	// position than it served before the crash. Go on until the restarted
	// replica has served the session again, so the test exercises it.
	served := 0
	for i := 0; served < 5; i++ {
		if i == 300 {
			t.Fatalf("the restarted replica1 served no read in %d steps", i)
		}
		if step() == "replica1" {
			served++
		}
	}
	t.Logf("after the crash: %+v", r.CausalStats())
}

func TestCausalAcrossRouterInstances(t *testing.T) {
	c := testcluster.Get(t)
	a := causalRouter(t, c, dbrouter.Config{PollInterval: time.Hour})
	b := causalRouter(t, c, dbrouter.Config{PollInterval: time.Hour})
	table := newTable(t, a)
	pauseReplicas(t, c, "replica1", "replica2")
	// Two app instances behind one cookie: only the encoded state travels.
	cookie := dbrouter.State{Session: 21}.Encode()
	via := func(r *dbrouter.Router, write bool) int {
		st, err := dbrouter.DecodeState(cookie)
		if err != nil {
			t.Fatal(err)
		}
		ctx := dbrouter.WithState(context.Background(), &st)
		if write {
			insert(t, ctx, r, table, 21, "from one instance")
		}
		n, _ := count(t, ctx, r, dbrouter.Causal, dbrouter.Own, table, 21)
		cookie = st.Encode()
		return n
	}
	for i := 1; i <= 3; i++ {
		if n := via(a, true); n != i {
			t.Fatalf("instance a after write %d: %d notes", i, n)
		}
		if n := via(b, false); n != i {
			t.Fatalf("instance b after write %d on a: %d notes", i, n)
		}
	}
}

func TestCausalIgnoresForeignTokens(t *testing.T) {
	c := testcluster.Get(t)
	r := causalRouter(t, c, dbrouter.Config{})
	waitReplicated(t)
	// A token from another cluster, far in the future of this one: treated
	// as empty, it must not push the session to the primary.
	st := &dbrouter.State{Session: 5, Token: dbrouter.Token{SystemID: 1, Timeline: 1, LSN: 1 << 60}}
	ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), st))
	if err := r.Read(ctx, dbrouter.Shared, func(b *pgx.Batch) { b.Queue("SELECT 1") }); err != nil {
		t.Fatal(err)
	}
	d := trace.Decisions()
	if len(d) != 1 || d[0].Node == "primary" || d[0].Reason != dbrouter.ReasonFresh {
		t.Fatalf("a foreign token routed the read to %+v", d)
	}
	if st.Token.SystemID == 1 {
		t.Fatalf("the foreign token was kept: %+v", st.Token)
	}
	// A malformed cookie decodes to an error; the HTTP layer then starts
	// from an empty state.
	if _, err := dbrouter.DecodeState([]byte("not a state")); err == nil {
		t.Fatal("a malformed state decoded")
	}
}

func TestCausalRoundTrips(t *testing.T) {
	c := testcluster.Get(t)
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	ctx := dbrouter.WithState(context.Background(), &dbrouter.State{Session: 8})
	total := func() int64 {
		var sum int64
		for _, n := range r.RoundTrips() {
			sum += n
		}
		return sum
	}
	waitReplicated(t)
	before := total()
	insert(t, ctx, r, table, 8, "x") // begin, insert, commit, then the flush position
	if got := total() - before; got != 4 {
		t.Errorf("a one-statement write took %d round trips, want 4 (3 + the post-commit position)", got)
	}
	waitReplicated(t)
	before = total()
	if n, node := count(t, ctx, r, dbrouter.Causal, dbrouter.Own, table, 8); n != 1 || node == "primary" {
		t.Fatalf("read: %d notes from %s", n, node)
	}
	if got := total() - before; got != 1 {
		t.Errorf("a causal read on a caught-up replica took %d round trips, want 1", got)
	}
}

// BenchmarkCausalWriteThenRead measures how often a read issued right
// after the session's own write stays on a replica (target ≥ 95%).
func BenchmarkCausalWriteThenRead(b *testing.B) {
	c := testcluster.Get(b)
	r, err := dbrouter.New(context.Background(), dbrouter.Config{
		PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), Strategy: dbrouter.Causal})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	ctx := dbrouter.WithState(context.Background(), &dbrouter.State{Session: 99})
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_notes (id bigserial PRIMARY KEY, owner bigint, body text)")
		return err
	}); err != nil {
		b.Fatal(err)
	}
	onReplica, waited := 0, time.Duration(0)
	for b.Loop() {
		if err := r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO bench_notes (owner, body) VALUES (99, 'x')")
			return err
		}); err != nil {
			b.Fatal(err)
		}
		rctx, trace := dbrouter.WithTrace(ctx)
		var n int
		if err := r.Read(rctx, dbrouter.Own, func(batch *pgx.Batch) {
			batch.Queue("SELECT count(*) FROM bench_notes WHERE owner = 99").QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
		}); err != nil {
			b.Fatal(err)
		}
		d := trace.Decisions()[0]
		if d.Node != "primary" {
			onReplica++
		}
		waited += d.Wait
	}
	b.ReportMetric(100*float64(onReplica)/float64(b.N), "%on-replica")
	b.ReportMetric(float64(waited.Microseconds())/float64(b.N)/1000, "ms-wait/op")
}

func TestCausalServesStaleWhenThePrimaryIsDown(t *testing.T) {
	c := testcluster.Get(t)
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	st := &dbrouter.State{Session: 31}
	ctx := dbrouter.WithState(context.Background(), st)
	insert(t, ctx, r, table, 31, "replicated")
	waitReplicated(t)
	pauseReplicas(t, c, "replica1", "replica2")
	insert(t, ctx, r, table, 31, "only on the primary") // the token is now ahead of every replica
	if err := c.Stop(context.Background(), "leader", false); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-first: the leader starts before replay resumes.
	t.Cleanup(func() { c.Start(context.Background(), "leader") })
	before := r.CausalStats().Stale
	rctx, trace := dbrouter.WithTrace(ctx)
	var n int
	err := r.Read(rctx, dbrouter.Own, func(b *pgx.Batch) {
		b.Queue("SELECT count(*) FROM " + table + " WHERE owner = 31").QueryRow(func(row pgx.Row) error { return row.Scan(&n) })
	})
	d := trace.Decisions()
	if err != nil || len(d) != 1 || d[0].Node == "primary" || d[0].Reason != dbrouter.ReasonStale {
		t.Fatalf("with the primary down and the replicas behind: %v, decisions %+v; want a stale read from a replica", err, d)
	}
	if n != 1 {
		t.Fatalf("the stale read saw %d notes; the paused replicas have 1", n)
	}
	if got := r.CausalStats().Stale - before; got != 1 {
		t.Fatalf("stale reads counted: %d, want 1", got)
	}
}

func waits(sql []string) bool {
	return slices.ContainsFunc(sql, func(q string) bool { return strings.Contains(q, "quest_await_lsn") })
}

// TestCausalWaitsOnlyWhenItMust checks the causal read's statements: no
// in-band wait for a session with no position, nor for one whose position
// the tracker saw the replica replay through connections older than that
// poll; a wait when the tracker has not seen the position there.
func TestCausalWaitsOnlyWhenItMust(t *testing.T) {
	c := testcluster.Get(t)
	table := newTable(t, causalRouter(t, c, dbrouter.Config{}))
	// The tracker polls once, at the start: it never sees a later position.
	// That one poll must find both replicas usable (caught up, the primary
	// sampled first), or every read would go to the primary.
	var r *dbrouter.Router
	for try := 0; ; try++ {
		// A wait of a second, as in TestCausalReadYourWritesOnFreshReplicas:
		// the read after the insert below must wait in-band on a replica,
		// and under make test's load replay can take longer than 20 ms.
		r = causalRouter(t, c, dbrouter.Config{PollInterval: time.Hour, CausalWait: time.Second})
		usable := 0
		for _, h := range r.Health()[1:] {
			if h.Status == dbrouter.Usable {
				usable++
			}
		}
		if usable == len(c.ReplicaURLs()) {
			break
		}
		if try == 20 {
			t.Fatalf("20 routers' first polls found %d of the replicas usable: %+v", usable, r.Health())
		}
		r.Close()
		time.Sleep(50 * time.Millisecond)
	}
	st := &dbrouter.State{Session: 21}
	n, d := readOwner(t, r, dbrouter.Causal, st, table, 21)
	if d.Node == "primary" || len(d.SQL) != 2 || waits(d.SQL) {
		t.Fatalf("a session with no position read on %s with %q; want a replica, the read and its replay position, no wait", d.Node, d.SQL)
	}
	if n != 0 || st.Token.IsZero() {
		t.Fatalf("read %d notes, token %+v: want 0 and a position from the replay position", n, st.Token)
	}
	insert(t, dbrouter.WithState(context.Background(), st), r, table, 21, "lightsaber")
	if n, d = readOwner(t, r, dbrouter.Causal, st, table, 21); n != 1 || d.Node == "primary" || len(d.SQL) != 3 || !waits(d.SQL) {
		t.Fatalf("after a write the tracker never saw replayed: %d notes on %s with %q; want 1 on a replica, after an in-band wait", n, d.Node, d.SQL)
	}

	// With the tracker polling, the position is soon seen replayed, and the
	// wait is left out.
	r = causalRouter(t, c, dbrouter.Config{})
	st = &dbrouter.State{Session: 22}
	insert(t, dbrouter.WithState(context.Background(), st), r, table, 22, "lightsaber")
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, d := readOwner(t, r, dbrouter.Causal, st, table, 22)
		if n != 1 {
			t.Fatalf("read %d notes on %s after the session's write, want 1", n, d.Node)
		}
		if d.Node != "primary" && !waits(d.SQL) {
			if len(d.SQL) != 2 {
				t.Fatalf("the read without a wait ran %q; want the read and its replay position", d.SQL)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("every read for 5 s waited in-band (last on %s: %q); want the tracker's position to spare it", d.Node, d.SQL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
