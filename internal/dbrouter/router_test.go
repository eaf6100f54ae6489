package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

// newRouter starts a router on the package's cluster; cfg's URLs are filled in.
func newRouter(t *testing.T, c *cluster.Cluster, cfg dbrouter.Config) *dbrouter.Router {
	t.Helper()
	cfg.PrimaryURL, cfg.ReplicaURLs = c.PrimaryURL(), c.ReplicaURLs()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	r, err := dbrouter.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

var tableSeq atomic.Int64

// newTable creates a notes table and waits until both replicas have it.
func newTable(t *testing.T, r *dbrouter.Router) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("notes_%d_%d", time.Now().UnixNano(), tableSeq.Add(1))
	err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+name+" (id bigserial PRIMARY KEY, owner bigint NOT NULL, body text NOT NULL)")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	waitReplicated(t)
	return name
}

// waitReplicated waits until every running replica has replayed the
// primary's current position.
func waitReplicated(t *testing.T) {
	t.Helper()
	if err := testcluster.Get(t).WaitCaughtUp(context.Background(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

func insert(t *testing.T, ctx context.Context, r *dbrouter.Router, table string, owner int64, body string) {
	t.Helper()
	err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, $2)", owner, body)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// count reads how many notes the owner has, and which node answered.
func count(t *testing.T, ctx context.Context, r *dbrouter.Router, s dbrouter.Strategy, intent dbrouter.Intent, table string, owner int64) (int, string) {
	t.Helper()
	ctx, trace := dbrouter.WithTrace(ctx)
	var n int
	err := r.ReadWith(ctx, s, intent, func(b *pgx.Batch) {
		n = 0
		b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", owner).QueryRow(func(row pgx.Row) error {
			return row.Scan(&n)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, trace.ServedBy()
}

func pauseReplicas(t *testing.T, c *cluster.Cluster, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range names {
		if err := c.Pause(ctx, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Resume(context.Background(), name) })
	}
}

func TestReadYourWrites(t *testing.T) {
	c := testcluster.Get(t)
	// Two seconds, timed's default: the read right after the write must
	// fall inside it even when make test's load stalls the test between
	// the two.
	r := newRouter(t, c, dbrouter.Config{TimedDelay: 2 * time.Second})
	table := newTable(t, r)
	// The user's earlier data has replicated; then replay stops everywhere.
	insert(t, context.Background(), r, table, 1, "an older note")
	waitReplicated(t)
	pauseReplicas(t, c, "replica1", "replica2")

	for _, tt := range []struct {
		s       dbrouter.Strategy
		anomaly bool
	}{
		{dbrouter.Random, true},
		{dbrouter.PinOwn, false},
		{dbrouter.Timed, false},
	} {
		t.Run(tt.s.String(), func(t *testing.T) {
			st := &dbrouter.State{Session: 1}
			ctx := dbrouter.WithState(context.Background(), st)
			before, _ := count(t, ctx, r, tt.s, dbrouter.Own, table, 1)
			insert(t, ctx, r, table, 1, "a green lightsaber")
			after, node := count(t, ctx, r, tt.s, dbrouter.Own, table, 1)
			if missing := after == before; missing != tt.anomaly {
				t.Fatalf("%s: read after write saw %d notes (before: %d) on %s; anomaly=%v, want %v", tt.s, after, before, node, missing, tt.anomaly)
			}
			if tt.s != dbrouter.Timed {
				return
			}
			// Once timed's delay has passed, its reads go back to the
			// (still paused) replicas, and the write is missing again.
			time.Sleep(2100 * time.Millisecond)
			late, node := count(t, ctx, r, tt.s, dbrouter.Own, table, 1)
			if late != before {
				t.Fatalf("timed after its delay saw %d notes on %s; the paused replicas have %d", late, node, before)
			}
		})
	}
}

// pauseAtDifferentPositions writes two comments by owner 9 and leaves
// replica1 paused before the second, replica2 after it.
func pauseAtDifferentPositions(t *testing.T, c *cluster.Cluster, r *dbrouter.Router, table string) {
	t.Helper()
	ctx := context.Background()
	insert(t, ctx, r, table, 9, "There's nothing wrong with the site")
	waitReplicated(t)
	pauseReplicas(t, c, "replica1")
	insert(t, ctx, r, table, 9, "What's up with the site today?")
	replica2, err := pgx.Connect(ctx, c.ReplicaURLs()[1])
	if err != nil {
		t.Fatal(err)
	}
	defer replica2.Close(ctx)
	testcluster.Eventually(t, 15*time.Second, "replica2 to have both comments", func() bool {
		var n int
		err := replica2.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
		return err == nil && n == 2
	})
	pauseReplicas(t, c, "replica2")
}

func TestMonotonicReads(t *testing.T) {
	c := testcluster.Get(t)
	rng := rand.New(rand.NewPCG(7, 11))
	r := newRouter(t, c, dbrouter.Config{Rand: rng})
	ctx := context.Background()
	table := newTable(t, r)
	pauseAtDifferentPositions(t, c, r, table)

	wentBack := func(s dbrouter.Strategy, session uint64) int {
		sctx := dbrouter.WithState(ctx, &dbrouter.State{Session: session})
		back, best := 0, 0
		for range 30 {
			n, _ := count(t, sctx, r, s, dbrouter.Shared, table, 9)
			if n < best {
				back++
			}
			best = max(best, n)
		}
		return back
	}
	if back := wentBack(dbrouter.Random, 1); back == 0 {
		t.Error("random never went back in time over 30 reads across two replicas at different positions")
	}
	for session := uint64(1); session <= 20; session++ {
		if back := wentBack(dbrouter.Sticky, session); back != 0 {
			t.Errorf("sticky went back in time %d times for session %d", back, session)
		}
	}
}

func TestRoundTripsPerRead(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{})
	ctx := dbrouter.WithState(context.Background(), &dbrouter.State{Session: 5})
	table := newTable(t, r)
	total := func() int64 {
		var sum int64
		for _, n := range r.RoundTrips() {
			sum += n
		}
		return sum
	}
	for _, s := range dbrouter.Strategies() {
		for _, intent := range []dbrouter.Intent{dbrouter.Own, dbrouter.Shared} {
			before := total()
			var a, b int
			err := r.ReadWith(ctx, s, intent, func(batch *pgx.Batch) {
				batch.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { return row.Scan(&a) })
				batch.Queue("SELECT 1").QueryRow(func(row pgx.Row) error { return row.Scan(&b) })
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := total() - before; got != 1 {
				t.Errorf("%s/%s: a two-query read took %d round trips, want 1", s, intent, got)
			}
		}
	}
}

func TestTrackerIgnoresAnIdlePrimary(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{MaxLag: 300 * time.Millisecond})
	waitReplicated(t)
	time.Sleep(time.Second) // idle for longer than the lag limit
	// The lag must not grow with idle time (as now() − the last replay's
	// timestamp would: over a second on every sample from here on).
	// Background WAL (autovacuum, a standby snapshot) not yet replayed at
	// one poll may show on a sample, so each replica needs one good sample
	// of ten.
	last := map[string]dbrouter.Health{}
	good := map[string]bool{}
	for range 10 {
		for _, h := range r.Health()[1:] {
			last[h.Name] = h
			if h.Status == dbrouter.Usable && h.Lag <= 100*time.Millisecond {
				good[h.Name] = true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, h := range last {
		if !good[name] {
			t.Errorf("%s after an idle second: %s, lag %s, on all ten samples; want usable with no lag", name, h.Status, h.Lag)
		}
	}
}

// writeSteadily commits a small write every period until stop is closed.
func writeSteadily(t *testing.T, r *dbrouter.Router, table string, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES (0, 'tick')")
					return err
				})
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func TestTrackerExcludesALaggingReplicaAndTakesItBack(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{MaxLag: 400 * time.Millisecond})
	table := newTable(t, r)
	stop := writeSteadily(t, r, table, 20*time.Millisecond)
	defer stop()
	pauseReplicas(t, c, "replica1")
	testcluster.Eventually(t, 15*time.Second, "replica1 excluded for lag", func() bool {
		return r.Health()[1].Status == dbrouter.Lagging
	})
	// Sticky sessions of replica1 now read elsewhere, saying why.
	moved := 0
	for s := uint64(1); s <= 40; s++ {
		ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), &dbrouter.State{Session: s}))
		if err := r.ReadWith(ctx, dbrouter.Sticky, dbrouter.Shared, func(b *pgx.Batch) { b.Queue("SELECT 1") }); err != nil {
			t.Fatal(err)
		}
		d := trace.Decisions()[0]
		if d.Node == "replica1" {
			t.Fatalf("session %d read from the excluded replica1", s)
		}
		if d.Reason == dbrouter.ReasonFallbackLag {
			moved++
		}
	}
	if moved == 0 {
		t.Error("no sticky session fell back for lag, though replica1 is excluded")
	}
	if err := c.Resume(context.Background(), "replica1"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 15*time.Second, "replica1 taken back after catching up", func() bool {
		return r.Health()[1].Status == dbrouter.Usable
	})
}

func TestLagOfASteadyApplyDelay(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	if err := c.SetDelay(context.Background(), "replica2", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.SetDelay(context.Background(), "replica2", 0) })
	stop := writeSteadily(t, r, table, 20*time.Millisecond)
	time.Sleep(time.Second) // settle
	var lags []time.Duration
	for range 30 {
		time.Sleep(100 * time.Millisecond)
		lags = append(lags, r.Health()[2].Lag)
	}
	stop()
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	// The 28th of 30 samples: one or two polls stalled by a loaded machine
	// may read high; a lag that grows reads high on most.
	median, high, worst := lags[len(lags)/2], lags[len(lags)-3], lags[len(lags)-1]
	t.Logf("replica2 with a 200ms apply delay: median lag %s, 28th of 30 %s, max %s", median, high, worst)
	if median < 100*time.Millisecond || median > 450*time.Millisecond {
		t.Errorf("median lag %s, want near 200ms", median)
	}
	if high > time.Second {
		t.Errorf("lag reached %s (28th of 30 samples): it grows instead of holding near 200ms", high)
	}
}

// readLoop reads continuously from several goroutines until stopped and
// counts failures and which nodes served.
type readLoop struct {
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	served map[string]int
}

func startReads(r *dbrouter.Router, s dbrouter.Strategy) *readLoop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &readLoop{stop: cancel, served: map[string]int{}}
	for w := range 4 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := uint64(0); ctx.Err() == nil; i++ {
				rctx, trace := dbrouter.WithTrace(dbrouter.WithState(ctx, &dbrouter.State{Session: uint64(w)*1000 + i%50}))
				err := r.ReadWith(rctx, s, dbrouter.Shared, func(b *pgx.Batch) {
					b.Queue("SELECT 1").QueryRow(func(row pgx.Row) error { var x int; return row.Scan(&x) })
				})
				l.mu.Lock()
				if err != nil && ctx.Err() == nil {
					l.errs = append(l.errs, err)
				} else if err == nil {
					l.served[trace.ServedBy()]++
				}
				l.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *readLoop) finish() ([]error, map[string]int) {
	l.stop()
	l.wg.Wait()
	return l.errs, l.served
}

func (l *readLoop) reset() {
	l.mu.Lock()
	l.served = map[string]int{}
	l.mu.Unlock()
}

func TestReplicaStoppedDuringReads(t *testing.T) {
	c := testcluster.Get(t)
	for _, immediate := range []bool{false, true} {
		t.Run(fmt.Sprintf("immediate=%v", immediate), func(t *testing.T) {
			r := newRouter(t, c, dbrouter.Config{})
			ctx := context.Background()
			t.Cleanup(func() { c.Start(context.Background(), "replica2") })
			for _, s := range []dbrouter.Strategy{dbrouter.Random, dbrouter.Sticky} {
				l := startReads(r, s)
				time.Sleep(200 * time.Millisecond)
				if err := c.Stop(ctx, "replica2", immediate); err != nil {
					t.Fatal(err)
				}
				time.Sleep(300 * time.Millisecond) // longer than a poll interval
				l.reset()
				time.Sleep(300 * time.Millisecond)
				errs, served := l.finish()
				if len(errs) > 0 {
					t.Fatalf("%s: %d reads failed while replica2 stopped; first: %v", s, len(errs), errs[0])
				}
				if served["replica2"] > 0 || served["replica1"] == 0 {
					t.Fatalf("%s: after the stop reads went to %v; want replica1, not replica2", s, served)
				}
				if err := c.Start(ctx, "replica2"); err != nil {
					t.Fatal(err)
				}
				testcluster.Eventually(t, 15*time.Second, "replica2 back in rotation", func() bool {
					return r.Health()[2].Status == dbrouter.Usable
				})
			}
		})
	}
}

func TestPrimaryStopped(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{})
	ctx := context.Background()
	table := newTable(t, r)
	insert(t, ctx, r, table, 4, "before the outage")
	waitReplicated(t)
	t.Cleanup(func() {
		if err := c.Start(context.Background(), "leader"); err != nil {
			t.Errorf("restart leader: %v", err)
		}
	})
	if err := c.Stop(ctx, "leader", false); err != nil {
		t.Fatal(err)
	}
	// Reads keep working from the replicas, in every strategy and intent.
	for _, s := range dbrouter.Strategies() {
		for _, intent := range []dbrouter.Intent{dbrouter.Own, dbrouter.Shared} {
			n, node := count(t, ctx, r, s, intent, table, 4)
			if n != 1 || node == "primary" {
				t.Errorf("%s/%s with the primary down: %d notes from %q", s, intent, n, node)
			}
		}
	}
	// Writes fail at once with the typed error.
	began := time.Now()
	err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES (4, 'during')")
		return err
	})
	if !errors.Is(err, dbrouter.ErrReadOnly) {
		t.Fatalf("write with the primary down: %v, want ErrReadOnly", err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("the failed write took %s; it should fail fast", d)
	}
	// Back up, writes work again without a new router.
	if err := c.Start(ctx, "leader"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, "writes to work again", func() bool {
		err := r.Write(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES (4, 'after')")
			return err
		})
		return err == nil
	})
}

func TestStrategySwitchAtRunTime(t *testing.T) {
	c := testcluster.Get(t)
	r := newRouter(t, c, dbrouter.Config{Strategy: dbrouter.Random})
	for _, s := range dbrouter.Strategies() {
		if err := r.SetStrategy(s); err != nil {
			t.Fatal(err)
		}
		ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), &dbrouter.State{Session: 1}))
		if err := r.Read(ctx, dbrouter.Shared, func(b *pgx.Batch) { b.Queue("SELECT 1") }); err != nil {
			t.Fatal(err)
		}
		if d := trace.Decisions(); len(d) != 1 || d[0].Strategy != s {
			t.Fatalf("after SetStrategy(%s) the read used %+v", s, d)
		}
	}
	if _, err := dbrouter.ParseStrategy("fastest"); err == nil {
		t.Fatal("ParseStrategy accepted an unknown name")
	}
}
