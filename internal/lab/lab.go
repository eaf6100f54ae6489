// Package lab is Quest's experiment: simulated users play the article's two
// stories over HTTP, as real clients would, against every routing strategy
// under every lag setting, and the results become a table of what each
// strategy costs and guarantees (Run). The same users play the same
// stories while nodes and app instances fail (RunFaults), while Patroni
// fails over and switches over (RunFaultsHA), and through pgpool-II for
// comparison (ComparePgpool). It is a client of the server and pulls the
// local cluster's levers.
//
// Where things are: client.go is the simulated browser, story.go the two
// stories and tally.go what is counted while they play; lab.go the lag
// experiment, faults.go and scenarios.go the fault runs, faults_ha.go the
// HA fault table, pgpool.go the comparison with pgpool-II; bench.go and
// benchrun.go the query-level benchmark (quest lab bench); report.go
// writes the tables and files.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

// Cluster is what the lab needs of the local cluster: its lag levers.
// *cluster.Cluster is one.
type Cluster interface {
	Pause(ctx context.Context, node string) error
	Resume(ctx context.Context, node string) error
	SetDelay(ctx context.Context, node string, d time.Duration) error
	WaitCaughtUp(ctx context.Context, timeout time.Duration) error
	ReplicaURLs() []string
}

// LagSetting is one way of making the replicas lag.
type LagSetting struct {
	Name  string
	Apply func(ctx context.Context, c Cluster) error
}

// DefaultSettings are the lag settings of a full run.
func DefaultSettings() []LagSetting {
	return []LagSetting{
		{"none", func(context.Context, Cluster) error { return nil }},
		{"replica1 200 ms behind", func(ctx context.Context, c Cluster) error {
			return c.SetDelay(ctx, "replica1", 200*time.Millisecond)
		}},
		{"replica1 5 s behind, replica2 fresh", func(ctx context.Context, c Cluster) error {
			return c.SetDelay(ctx, "replica1", 5*time.Second)
		}},
		{"every replica paused", func(ctx context.Context, c Cluster) error {
			for i := range c.ReplicaURLs() {
				if err := c.Pause(ctx, cluster.ReplicaName(i+1)); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// Config describes a run.
type Config struct {
	URL         string // the app
	Cluster     Cluster
	SetStrategy func(context.Context, dbrouter.Strategy) error
	// Row, if set, names a row that is not a Quest strategy (pgpool-II):
	// the run then has that one row and leaves the strategy alone.
	Row        string
	Strategies []dbrouter.Strategy
	Settings   []LagSetting  // nil means DefaultSettings; empty runs only the closed-loop cells
	Users      int           // simulated users; default 8
	Think      time.Duration // pause between a user's actions; default 100 ms
	CellTime   time.Duration // how long users act in each cell; default 8 s
	ClosedLoop time.Duration // the throughput cell per strategy; default 8 s; <0 skips it
	// Checks are when a user re-reads their wishlist after adding to it:
	// default at once, 1 s and 3 s later.
	Checks   []time.Duration
	Progress io.Writer
}

func (c *Config) defaults() {
	if c.Users <= 0 {
		c.Users = 8
	}
	if c.Think <= 0 {
		c.Think = 100 * time.Millisecond
	}
	if c.CellTime <= 0 {
		c.CellTime = 8 * time.Second
	}
	if c.ClosedLoop == 0 {
		c.ClosedLoop = 8 * time.Second
	}
	if len(c.Checks) == 0 {
		c.Checks = []time.Duration{0, time.Second, 3 * time.Second}
	}
	if len(c.Strategies) == 0 {
		c.Strategies = dbrouter.Strategies()
	}
	if c.Settings == nil {
		c.Settings = DefaultSettings()
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Cell is one strategy under one lag setting (or the closed-loop cell).
type Cell struct {
	Strategy     string
	Setting      string
	ClosedLoop   bool
	Proxy        bool // a row through a proxy: which node served is not known
	Requests     int
	Errors       int
	RYWChecks    []int // per check delay
	RYWFailures  []int
	MonoChecks   int
	MonoFailures int
	Reads        int // the strategy's read decisions seen in X-Quest-Route (not session lookups)
	PrimaryReads int
	StaleReads   int
	Waited       int           // causal reads that waited in-band
	WaitTotal    time.Duration // their total wait
	Streaks      int           // runs of 3+ consecutive page views served only by the primary
	P50, P99     time.Duration
	RPS          float64
	Elapsed      time.Duration
}

// primaryShare is the share of reads the primary served.
func (c Cell) primaryShare() float64 {
	if c.Reads == 0 {
		return 0
	}
	return float64(c.PrimaryReads) / float64(c.Reads)
}

// Result is a whole run.
type Result struct {
	Started  time.Time
	Elapsed  time.Duration
	Machine  string
	Users    int
	Think    time.Duration
	CellTime time.Duration
	Checks   []time.Duration // when users re-read their wishlists after an add
	Cells    []Cell
	Comments []string // extra lines printed under the table (pgpool's settings, say)
}

// Run runs the experiment: for every strategy, every lag setting, then the
// closed-loop cell.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{Started: time.Now(), Machine: machine(), Users: cfg.Users, Think: cfg.Think,
		CellTime: cfg.CellTime, Checks: cfg.Checks}
	s, err := newStory(ctx, cfg.URL, cfg.Users)
	if err != nil {
		return nil, err
	}
	rows := cfg.Strategies
	names := make([]string, len(rows))
	for i, st := range rows {
		names[i] = st.String()
	}
	if cfg.Row != "" {
		rows, names = []dbrouter.Strategy{0}, []string{cfg.Row}
	}
	settings := cfg.Settings
	if cfg.ClosedLoop > 0 {
		settings = append(slices.Clip(settings), LagSetting{Name: closedLoop})
	}
	total := len(rows) * len(settings)
	defer resetLag(context.WithoutCancel(ctx), cfg.Cluster)
	for i, st := range rows {
		if cfg.Row == "" {
			if err := cfg.SetStrategy(ctx, st); err != nil {
				return nil, fmt.Errorf("switch to %s: %w", st, err)
			}
		}
		for _, setting := range settings {
			if err := resetLag(ctx, cfg.Cluster); err != nil {
				return nil, err
			}
			if setting.Apply != nil {
				if err := setting.Apply(ctx, cfg.Cluster); err != nil {
					return nil, fmt.Errorf("lag setting %q: %w", setting.Name, err)
				}
			}
			closed := setting.Name == closedLoop
			cell, err := runCell(ctx, cfg, s, appStrategy(cfg, st), closed)
			if err != nil {
				return nil, err
			}
			cell.Strategy, cell.Setting, cell.ClosedLoop, cell.Proxy = names[i], setting.Name, closed, cfg.Row != ""
			res.Cells = append(res.Cells, cell)
			progress(cfg.Progress, len(res.Cells), total, cell)
		}
	}
	res.Elapsed = time.Since(res.Started)
	return res, nil
}

// closedLoop names the throughput cell's setting: no lag, no think time.
const closedLoop = "none, closed loop"

// appStrategy is the strategy the app runs in a row: a row that is not a
// Quest strategy (pgpool-II) runs the app with primary.
func appStrategy(cfg Config, s dbrouter.Strategy) string {
	if cfg.Row != "" {
		return dbrouter.Primary.String()
	}
	return s.String()
}

func progress(w io.Writer, n, total int, c Cell) {
	fmt.Fprintf(w, "[%2d/%d] %-8s × %-36s %5d requests, %4.0f req/s, read-your-writes failures %v, monotonic failures %d (%.1fs)\n",
		n, total, c.Strategy, c.Setting, c.Requests, c.RPS, c.RYWFailures, c.MonoFailures, c.Elapsed.Seconds())
}

// resetLag resumes every replica, removes every delay, and waits until the
// replicas have replayed what the primary had flushed.
func resetLag(ctx context.Context, c Cluster) error {
	for i := range c.ReplicaURLs() {
		name := cluster.ReplicaName(i + 1)
		if err := c.Resume(ctx, name); err != nil {
			return fmt.Errorf("resume %s: %w", name, err)
		}
		if err := c.SetDelay(ctx, name, 0); err != nil {
			return fmt.Errorf("remove %s's delay: %w", name, err)
		}
	}
	if err := c.WaitCaughtUp(ctx, time.Minute); err != nil {
		return fmt.Errorf("reset the lag: %w", err)
	}
	return nil
}

// runCell plays the stories for one cell on a fresh thread.
func runCell(ctx context.Context, cfg Config, s *story, strategy string, closed bool) (Cell, error) {
	if err := s.newThread(ctx, "Comments in order?"); err != nil {
		return Cell{}, err
	}
	a := act{think: cfg.Think, writerThink: cfg.Think, rereads: cfg.Checks}
	length := cfg.CellTime
	if closed {
		a = act{rereads: cfg.Checks[:1]}
		length = cfg.ClosedLoop
	}
	t := newTally(strategy, len(cfg.Checks), 0)
	start := time.Now()
	a.end = start.Add(length)
	s.play(ctx, a, t)
	if err := ctx.Err(); err != nil {
		return Cell{}, err
	}
	c := Cell{
		Requests: t.requests, Errors: t.failed + t.readOnly + t.unknown,
		RYWChecks: t.rywChecks, RYWFailures: t.rywFailures, MonoChecks: t.monoChecks, MonoFailures: t.monoFailures,
		Reads: t.reads, PrimaryReads: t.primaryReads, StaleReads: t.staleReads,
		Waited: t.waited, WaitTotal: t.waitTotal, Streaks: t.streaks,
		Elapsed: time.Since(start),
	}
	c.P50, c.P99 = percentiles(t.latencies)
	window := c.Elapsed
	if !closed {
		// The drain, when only the last re-reads are made, is not load.
		window = min(window, length+slices.Max(a.rereads))
	}
	c.RPS = float64(c.Requests) / window.Seconds()
	if c.Requests > 0 && c.Errors == c.Requests {
		return c, errors.New("every request failed; is the app up?")
	}
	return c, nil
}
