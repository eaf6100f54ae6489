package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// FaultCluster is what the fault runs need of the local cluster.
// *cluster.Cluster is one.
type FaultCluster interface {
	Cluster
	Stop(ctx context.Context, node string, immediate bool) error
	Start(ctx context.Context, node string) error
	Kill(ctx context.Context, node string) error
	PrimaryURL() string
}

// App is a Quest instance the fault runs start and stop.
type App struct {
	URL  string
	Stop func()
	// Names maps a cluster member to the name the app's router gives it,
	// where they differ: a URL without application_name (DATABASE_URL, as
	// quest cluster env prints it) names its node host:port/dbname.
	Names map[string]string
}

// name is how the app's router names a member.
func (a App) name(member string) string {
	if n, ok := a.Names[member]; ok {
		return n
	}
	return member
}

// FaultConfig describes a fault run. The apps run the causal strategy.
type FaultConfig struct {
	Cluster FaultCluster
	// StartApp starts a Quest instance on the cluster with a 2 s lag limit;
	// every instance shares the session key, as instances behind one load
	// balancer do.
	StartApp func(ctx context.Context) (App, error)
	Users    int           // default 6
	Think    time.Duration // default 50 ms
	Phase    time.Duration // each before/during/after phase; default 4 s
	Load     time.Duration // the sustained-load run; default 60 s; <0 skips it
	Progress io.Writer
}

func (c *FaultConfig) defaults() {
	if c.Users <= 0 {
		c.Users = 6
	}
	if c.Think <= 0 {
		c.Think = 50 * time.Millisecond
	}
	if c.Phase <= 0 {
		c.Phase = 4 * time.Second
	}
	if c.Load == 0 {
		c.Load = time.Minute
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// FaultRow is one scenario's outcome.
type FaultRow struct {
	Scenario    string
	Requests    int
	Failed      int // 5xx other than the read-only 503, transport errors, lost sign-ins
	ReadOnly    int // forms answered 503 "read-only right now" while the primary was down
	Stale       int // pages served with the staleness banner
	Anomalies   int // read-your-writes and monotonic failures on pages served as fresh
	StaleMisses int // the same on pages served with the staleness banner (announced)
	Acked       int // writes that got a success answer, in this scenario and the ones before
	Lost        int // acknowledged writes missing on the primary afterwards
	P50, P99    time.Duration
	Notes       []string
	Elapsed     time.Duration
	// PhaseReads counts the reads each node served in each phase: before
	// the first step, between steps, after the last.
	PhaseReads []map[string]int

	// What some scenarios measure besides.
	WritesResumed time.Duration // primary restarts: from the restart until a write went through
	Excluded      bool          // a paused replica: excluded once past the lag limit
	TakenBack     bool          // … and taken back once caught up
	Before, After *Gauges       // sustained load: the app's, halfway and after it
}

// Gauges are an app's resource gauges, from its /metrics.
type Gauges struct {
	Goroutines float64 // go_goroutines
	PoolConns  float64 // quest_pool_total_conns, over all nodes
}

// FaultResult is a whole fault run.
type FaultResult struct {
	Rows    []FaultRow
	Machine string
	Elapsed time.Duration
}

// faultRun is what the scenarios of one run share.
type faultRun struct {
	cfg          FaultConfig // the plain fault run's; zero in an HA run
	phase, think time.Duration
	primaryURL   func() string // where acknowledged writes are looked for
	story        *story
	app          App      // the instance users are sent to
	second       App      // a second instance, while one runs
	watcher      *browser // reads the app's /lab/state and /metrics
}

// transition is how long after a fault's step reads go unattributed:
// one and a half of the tracker's 100 ms poll intervals.
const transition = 150 * time.Millisecond

// drain is how long an instance keeps serving after users stop being sent
// to it.
const drain = 500 * time.Millisecond

// RunFaults runs every fault scenario under load and checks, after each,
// that no acknowledged write is missing.
func RunFaults(ctx context.Context, cfg FaultConfig) (*FaultResult, error) {
	cfg.defaults()
	began := time.Now()
	defer resetLag(context.WithoutCancel(ctx), cfg.Cluster)
	app, err := cfg.StartApp(ctx)
	if err != nil {
		return nil, fmt.Errorf("start the app: %w", err)
	}
	f := &faultRun{cfg: cfg, phase: cfg.Phase, think: cfg.Think, primaryURL: cfg.Cluster.PrimaryURL, app: app, watcher: newBrowser("", 0)}
	defer func() { f.app.Stop() }()
	if f.story, err = newStory(ctx, app.URL, cfg.Users); err != nil {
		return nil, err
	}
	if err := f.story.newThread(ctx, "Faults"); err != nil {
		return nil, err
	}
	res := &FaultResult{Machine: machine()}
	for _, sc := range scenarios(cfg) {
		row, err := f.run(ctx, sc)
		if err != nil {
			return res, fmt.Errorf("%s: %w", sc.name, err)
		}
		res.Rows = append(res.Rows, row)
		fmt.Fprintf(cfg.Progress, "faults: %-40s %5d requests, %d failed, %d read-only, %d anomalies, %d/%d writes lost (%.1fs)\n",
			row.Scenario, row.Requests, row.Failed, row.ReadOnly, row.Anomalies, row.Lost, row.Acked, row.Elapsed.Seconds())
	}
	res.Elapsed = time.Since(began)
	return res, nil
}

// scenario is one row of the fault table. The users play through a phase
// before the first step, one after each step, and stop; then every
// acknowledged write is looked for on the primary, and after runs.
type scenario struct {
	name  string
	steps []step
	phase time.Duration // 0: the run's phase
	// after, if set, completes the row: what the steps measured, in notes.
	after func(ctx context.Context, f *faultRun, row *FaultRow) error
}

// step is one move of a fault: kill a node, restart it, start an app.
type step func(ctx context.Context, f *faultRun, row *FaultRow) error

// run plays one scenario.
func (f *faultRun) run(ctx context.Context, sc scenario) (FaultRow, error) {
	row := FaultRow{Scenario: sc.name}
	t, err := f.play(ctx, sc, &row)
	if err != nil {
		return row, err
	}
	row.Elapsed = t.elapsed
	row.Requests, row.Failed, row.ReadOnly, row.Stale = t.requests, t.failed, t.readOnly, t.stalePages
	row.Anomalies, row.StaleMisses, row.PhaseReads = t.anomalies, t.staleMisses, t.served
	row.Notes = append(row.Notes, t.notes()...)
	row.P50, row.P99 = percentiles(t.latencies)
	if row.Acked, row.Lost, err = f.verifyWrites(ctx); err != nil {
		return row, err
	}
	if sc.after != nil {
		if err := sc.after(ctx, f, &row); err != nil {
			return row, err
		}
	}
	return row, nil
}

// play has the users play through a scenario's phases and steps, and
// returns what they saw.
func (f *faultRun) play(ctx context.Context, sc scenario, row *FaultRow) (*tally, error) {
	phase := sc.phase
	if phase == 0 {
		phase = f.phase
	}
	t := newTally("causal", 1, len(sc.steps)+1)
	start := time.Now()
	lctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.story.play(lctx, act{think: f.think, writerThink: 2 * f.think, rereads: []time.Duration{0}}, t)
	}()
	var stepErr error
	for i, do := range sc.steps {
		sleep(ctx, phase)
		// While a step runs, and for a poll interval and a half after it,
		// reads are not attributed to a phase: requests already in flight
		// when a node died still come back from it.
		t.setPhase(-1)
		if stepErr = do(ctx, f, row); stepErr != nil {
			stepErr = fmt.Errorf("step %d: %w", i+1, stepErr)
			break
		}
		sleep(ctx, transition)
		t.setPhase(i + 1)
	}
	if stepErr == nil {
		sleep(ctx, phase)
	}
	stop()
	<-done
	if stepErr != nil {
		return nil, stepErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.elapsed = time.Since(start)
	return t, nil
}

// notes are what a fault row says of its tally besides the counts: the
// first anomaly and failure, and forms of unknown outcome.
func (t *tally) notes() []string {
	var notes []string
	switch len(t.firstAnomalies) {
	case 0:
	case 1:
		notes = append(notes, "first anomaly: "+t.firstAnomalies[0])
	default:
		notes = append(notes, fmt.Sprintf("first %d anomalies: %s", len(t.firstAnomalies), strings.Join(t.firstAnomalies, "; ")))
	}
	if t.firstFail != "" {
		notes = append(notes, t.firstFail)
	}
	if t.unknown > 0 {
		notes = append(notes, fmt.Sprintf("%d forms answered that the change may have been saved (the connection broke during COMMIT)", t.unknown))
	}
	return notes
}

// gauges reads the app's resource gauges.
func (f *faultRun) gauges(ctx context.Context) (Gauges, error) {
	var g Gauges
	var err error
	if g.Goroutines, err = f.watcher.metric(ctx, f.app.URL, "go_goroutines"); err != nil {
		return g, err
	}
	g.PoolConns, err = f.watcher.metric(ctx, f.app.URL, "quest_pool_total_conns")
	return g, err
}

// verifyWrites checks every acknowledged write against the primary: each
// user's wishlist has at least the acknowledged adds of each item, and the
// thread at least the acknowledged comments. It counts the run so far.
func (f *faultRun) verifyWrites(ctx context.Context) (acked, lost int, err error) {
	conn, err := pgx.Connect(ctx, f.primaryURL())
	if err != nil {
		return 0, 0, fmt.Errorf("connect to the primary: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// After a failover the node checked must be the new primary: a
	// replica may lack writes the primary holds.
	var inRecovery bool
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return 0, 0, fmt.Errorf("ask the primary: %w", err)
	}
	if inRecovery {
		return 0, 0, errors.New("the node checked for acknowledged writes is a replica, not the primary")
	}
	for _, u := range f.story.users {
		for item, n := range u.wishes {
			var have int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM wishlist_entries w JOIN users u ON u.id = w.user_id
				WHERE u.username = $1 AND w.item_id = $2`, u.name, item).Scan(&have); err != nil {
				return 0, 0, fmt.Errorf("count %s's wishes: %w", u.name, err)
			}
			acked += n
			lost += max(0, n-have)
			// The user takes in what the primary holds: a loss is counted
			// here once, not again as an anomaly at each later read-back.
			u.lost[item] = max(u.lost[item], n-have)
		}
	}
	id, err := strconv.Atoi(strings.TrimPrefix(f.story.thread, "/forum/"))
	if err != nil {
		return 0, 0, fmt.Errorf("the thread's path %q: %w", f.story.thread, err)
	}
	var have int
	if err := conn.QueryRow(ctx, `SELECT count(*) - 1 FROM comments WHERE thread_id = $1`, id).Scan(&have); err != nil {
		return 0, 0, fmt.Errorf("count the thread's comments: %w", err)
	}
	comments := int(f.story.comments.Load())
	return acked + comments, lost + max(0, comments-have), nil
}

// share says what part of a phase's reads a node served.
func share(m map[string]int, node string) string {
	total := 0
	for _, n := range m {
		total += n
	}
	if total == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(m[node])/float64(total))
}
