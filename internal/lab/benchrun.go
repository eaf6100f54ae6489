package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/pgpool"
)

// The interleaved query-level benchmark (quest lab bench): what routing
// costs against the physical limit, the same read from the same driver
// straight to one replica. The direct row runs before the first strategy
// row, between every two and after the last, in every repetition, so each
// strategy is compared with direct measurements taken seconds around it:
// a noisy neighbour or a frequency change hits both alike.

// Row names of the benchmark besides the strategies'.
const (
	// CausalWrote is causal for sessions with a position: each client
	// wrote once, so every read runs the in-band check against a real
	// position (and keeps the position the reads advance it to).
	CausalWrote = "causal (wrote)"
	// CausalNoPosition is causal for sessions with no position (a visitor
	// who never wrote): each read starts from an empty state.
	CausalNoPosition = "causal (no position)"
	// PgpoolRow is the same read through pgpool-II (--via-pgpool).
	PgpoolRow = "pgpool-II"
	// SpreadRow is the control for the strategies that draw a replica per
	// read: no router, a plain pool per replica, each read on a random one.
	// It is what spreading reads costs by itself on the machine.
	SpreadRow = "no router (random replica)"
	// PositionRow is the control for causal: no router, a plain pool per
	// replica, each client on one replica (as a causal session stays on
	// its rendezvous replica), each read one pipelined batch of the query
	// and the replay position check a causal read runs after its data.
	// It is what the in-band guarantee's extra statement costs by itself.
	PositionRow = "no router (read + replay position)"
)

// controlOf names the no-router row that does the same work as a
// strategy row without the router's decisions: what the strategy would
// cost if routing were free. Rows without one compare with direct itself.
func controlOf(row string) string {
	switch row {
	case dbrouter.Random.String(), dbrouter.PinOwn.String(), dbrouter.Timed.String():
		return SpreadRow
	case CausalWrote, CausalNoPosition:
		return PositionRow
	}
	return ""
}

// BenchRows are the benchmark's strategy rows by default, in order.
func BenchRows() []string {
	var rows []string
	for _, s := range dbrouter.Strategies() {
		switch s {
		case dbrouter.Causal:
			rows = append(rows, CausalWrote, CausalNoPosition)
		case dbrouter.Yours:
			// yours is the lab's teaching strategy, not a production one.
		default:
			rows = append(rows, s.String())
		}
	}
	return append(rows, SpreadRow, PositionRow)
}

// BenchConfig configures the interleaved benchmark.
type BenchConfig struct {
	Cluster *cluster.Cluster
	Clients int           // concurrent clients on every side; default 8
	Time    time.Duration // per row, after a warm-up; default 3 s
	Repeat  int           // repetitions of the whole interleaved sequence; default 3
	// Rows are the strategy rows (BenchRows' names, or a strategy's name:
	// "causal" is both causal rows); default BenchRows.
	Rows []string
	// ViaPgpool adds a pgpool-II row: pgpool-II is started in front of the
	// cluster and stopped afterwards.
	ViaPgpool bool
	Progress  io.Writer
}

// BenchRow is one side of the interleaved benchmark over the repetitions.
type BenchRow struct {
	Name string
	Runs []BenchResult // one per measurement
	// Ratios are each strategy run's queries/s over the mean of the direct
	// runs just before and after it; empty for the direct row.
	Ratios []float64
	// Median, Min and Max summarise Ratios; QPS, P50 and P99 are the
	// medians over Runs.
	Median, Min, Max float64
	QPS              float64
	P50, P99         time.Duration
	// Control is the row's no-router control (controlOf), when it ran;
	// ControlRatios are the row's ratios over the control's in the same
	// repetitions: the router's own cost. ControlMedian, ControlMin and
	// ControlMax summarise them.
	Control                               string    `json:",omitempty"`
	ControlRatios                         []float64 `json:",omitempty"`
	ControlMedian, ControlMin, ControlMax float64
}

// BenchRun is a whole interleaved benchmark.
type BenchRun struct {
	Started  time.Time
	Elapsed  time.Duration
	Machine  string
	Postgres string
	Clients  int
	Time     time.Duration
	Repeat   int
	Direct   string     // the direct row's name
	Rows     []BenchRow // the direct row first
	Comments []string
}

func (cfg *BenchConfig) defaults() {
	if cfg.Clients <= 0 {
		cfg.Clients = benchClients
	}
	if cfg.Time <= 0 {
		cfg.Time = 3 * time.Second
	}
	if cfg.Repeat <= 0 {
		cfg.Repeat = 3
	}
	if len(cfg.Rows) == 0 {
		cfg.Rows = BenchRows()
	}
	// One measurement per row and repetition, so that ratios pair up.
	var rows []string
	for _, r := range cfg.Rows {
		if !slices.Contains(rows, r) {
			rows = append(rows, r)
		}
	}
	cfg.Rows = rows
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
}

// ParseBenchRows reads a comma-separated list of rows: strategy names
// ("causal" meaning both causal rows) or BenchRows' names.
func ParseBenchRows(list string) ([]string, error) {
	var rows []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "causal":
			rows = append(rows, CausalWrote, CausalNoPosition)
		case slices.Contains(BenchRows(), name):
			rows = append(rows, name)
		default:
			return nil, fmt.Errorf("no benchmark row %q: choose among %s (causal is both causal rows)",
				name, strings.Join(BenchRows(), ", "))
		}
	}
	return rows, nil
}

// benchSide measures one row once.
type benchSide func(ctx context.Context) BenchResult

// Bench runs the interleaved benchmark on the cluster.
func Bench(ctx context.Context, cfg BenchConfig) (*BenchRun, error) {
	cfg.defaults()
	c := cfg.Cluster
	run := &BenchRun{Started: time.Now(), Machine: machine(), Clients: cfg.Clients, Time: cfg.Time, Repeat: cfg.Repeat,
		Direct: "direct to " + cluster.ReplicaName(1)}
	clients := int32(cfg.Clients) // #nosec G115 -- the command bounds it
	direct, err := poolOf(ctx, c.ReplicaURLs()[0], clients)
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	if err := direct.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&run.Postgres); err != nil {
		return nil, fmt.Errorf("the benchmark cannot read from %s: %w", run.Direct, err)
	}
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxConns: clients})
	if err != nil {
		return nil, fmt.Errorf("the benchmark's router: %w", err)
	}
	defer r.Close()
	if err := awaitReplicas(ctx, r); err != nil {
		return nil, err
	}

	sides := map[string]benchSide{}
	var replicaPools []*pgxpool.Pool
	for _, name := range cfg.Rows { // unique: defaults drops repeats
		switch name {
		case SpreadRow, PositionRow:
			// The controls' plain pools, one per replica, shared by both.
			if replicaPools == nil {
				for _, u := range c.ReplicaURLs() {
					p, err := poolOf(ctx, u, clients)
					if err != nil {
						return nil, err
					}
					defer p.Close()
					replicaPools = append(replicaPools, p)
				}
			}
			pools, measure := replicaPools, benchPools
			if name == PositionRow {
				measure = benchPositions
			}
			sides[name] = func(ctx context.Context) BenchResult {
				return measure(ctx, name, pools, cfg.Clients, cfg.Time)
			}
		case CausalWrote:
			states, err := wroteStates(ctx, r, cfg.Clients)
			if err != nil {
				return nil, err
			}
			sides[name] = func(ctx context.Context) BenchResult {
				return benchStates(ctx, r, name, dbrouter.Causal, states, cfg.Time, nil)
			}
		case CausalNoPosition:
			states := sessionStates(cfg.Clients)
			sides[name] = func(ctx context.Context) BenchResult {
				// Each read starts with no position, as a visitor's first read.
				return benchStates(ctx, r, name, dbrouter.Causal, states, cfg.Time, func(st *dbrouter.State) { st.Token = dbrouter.Token{} })
			}
		default:
			s, err := dbrouter.ParseStrategy(name)
			if err != nil {
				return nil, err
			}
			states := sessionStates(cfg.Clients)
			sides[name] = func(ctx context.Context) BenchResult {
				return benchStates(ctx, r, name, s, states, cfg.Time, nil)
			}
		}
	}
	rows := slices.Clone(cfg.Rows)
	if cfg.ViaPgpool {
		pp, ppCfg, err := startPgpool(ctx, c, max(cfg.Clients, 10), cfg.Progress)
		if err != nil {
			return nil, err
		}
		defer pp.Stop()
		ppPool, err := poolOf(ctx, pp.URL(), clients)
		if err != nil {
			return nil, err
		}
		defer ppPool.Close()
		sides[PgpoolRow] = func(ctx context.Context) BenchResult {
			return benchPool(ctx, PgpoolRow, ppPool, cfg.Clients, cfg.Time)
		}
		rows = append(rows, PgpoolRow)
		run.Comments = append(run.Comments, "pgpool-II "+pgpool.Version()+" in front of the cluster, set up as: `"+strings.Join(ppCfg.Settings(), "`, `")+"`.")
	}
	sides[run.Direct] = func(ctx context.Context) BenchResult {
		return benchPool(ctx, run.Direct, direct, cfg.Clients, cfg.Time)
	}

	fmt.Fprintf(cfg.Progress, "bench: %d clients, %s per row, %d rows interleaved with %s, %d repetitions (about %s)\n",
		cfg.Clients, cfg.Time, len(rows), run.Direct, cfg.Repeat,
		(time.Duration(cfg.Repeat*(2*len(rows)+1)) * (cfg.Time + min(cfg.Time/4, 500*time.Millisecond))).Round(time.Second))
	byName := map[string]*BenchRow{run.Direct: {Name: run.Direct}}
	run.Rows = []BenchRow{}
	order := append([]string{run.Direct}, rows...)
	for _, name := range rows {
		byName[name] = &BenchRow{Name: name}
	}
	measure := func(rep int, name string) (BenchResult, error) {
		res := sides[name](ctx)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if res.QPS == 0 {
			return res, fmt.Errorf("the benchmark's %s row answered no query (%d errors)", name, res.Errors)
		}
		row := byName[name]
		row.Runs = append(row.Runs, res)
		fmt.Fprintf(cfg.Progress, "  %d/%d  %-22s %7.0f queries/s  p50 %s\n", rep+1, cfg.Repeat, name, res.QPS, ms(res.P50, 2))
		return res, nil
	}
	for rep := range cfg.Repeat {
		before, err := measure(rep, run.Direct)
		if err != nil {
			return nil, err
		}
		for _, name := range rows {
			res, err := measure(rep, name)
			if err != nil {
				return nil, err
			}
			after, err := measure(rep, run.Direct)
			if err != nil {
				return nil, err
			}
			ratio := res.QPS / ((before.QPS + after.QPS) / 2)
			byName[name].Ratios = append(byName[name].Ratios, ratio)
			fmt.Fprintf(cfg.Progress, "        %-22s %.2f× direct\n", name, ratio)
			before = after
		}
	}
	for _, name := range order {
		row := byName[name]
		row.summarise(byName[controlOf(name)])
		run.Rows = append(run.Rows, *row)
	}
	run.Elapsed = time.Since(run.Started)
	return run, nil
}

// summarise fills the row's medians and spread, and its ratios to its
// control when that ran (nil if not).
func (row *BenchRow) summarise(control *BenchRow) {
	qps := make([]float64, len(row.Runs))
	var p50, p99 []time.Duration
	for i, r := range row.Runs {
		qps[i], p50, p99 = r.QPS, append(p50, r.P50), append(p99, r.P99)
	}
	row.QPS, row.P50, row.P99 = median(qps), median(p50), median(p99)
	if len(row.Ratios) > 0 {
		row.Median, row.Min, row.Max = median(row.Ratios), slices.Min(row.Ratios), slices.Max(row.Ratios)
	}
	if control == nil || len(control.Ratios) != len(row.Ratios) || len(row.Ratios) == 0 {
		return
	}
	// Both ratios of a repetition were taken to direct rows of the same
	// minute; their quotient is the row against its control then.
	row.Control = control.Name
	for i, r := range row.Ratios {
		row.ControlRatios = append(row.ControlRatios, r/control.Ratios[i])
	}
	row.ControlMedian = median(row.ControlRatios)
	row.ControlMin, row.ControlMax = slices.Min(row.ControlRatios), slices.Max(row.ControlRatios)
}

// median is the middle value (the mean of the two middle ones).
func median[T float64 | time.Duration](v []T) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// awaitReplicas waits until the router's tracker has seen every replica
// usable, so no row starts while reads still fall back to the primary.
func awaitReplicas(ctx context.Context, r *dbrouter.Router) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		usable := 0
		for _, h := range r.Health() {
			if h.InRecovery && h.Status == dbrouter.Usable {
				usable++
			}
		}
		if usable == len(r.Replicas()) && usable > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the benchmark's router sees %d of %d replicas usable after 10 s", usable, len(r.Replicas()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// sessionStates are one session per client, with no position.
func sessionStates(clients int) []*dbrouter.State {
	states := make([]*dbrouter.State, clients)
	for i := range states {
		states[i] = &dbrouter.State{Session: uint64(i + 1)} // #nosec G115 -- i ≥ 0
	}
	return states
}

// wroteStates are one session per client, each with the position of a
// write of its own, as a signed-in user who just changed something has.
func wroteStates(ctx context.Context, r *dbrouter.Router, clients int) ([]*dbrouter.State, error) {
	states := sessionStates(clients)
	for _, st := range states {
		err := r.Write(dbrouter.WithState(ctx, st), func(tx pgx.Tx) error {
			// A real change (a new row version, WAL to replay), which
			// leaves the catalog as it was.
			_, err := tx.Exec(ctx, `UPDATE items SET name = name WHERE id = (SELECT min(id) FROM items)`)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("the benchmark's sessions could not write: %w", err)
		}
		if st.Token.IsZero() {
			return nil, fmt.Errorf("a write gave the session no position")
		}
	}
	return states, nil
}

// benchStates measures reads through the router with strategy s, client c
// reading as session states[c]; reset, when set, runs before each read.
func benchStates(ctx context.Context, r *dbrouter.Router, name string, s dbrouter.Strategy, states []*dbrouter.State, d time.Duration, reset func(*dbrouter.State)) BenchResult {
	ctxs := make([]context.Context, len(states))
	for i, st := range states {
		ctxs[i] = dbrouter.WithState(ctx, st)
	}
	read := func(b *pgx.Batch) { b.Queue(benchQuery).Query(scanItems) }
	return bench(ctx, name, len(states), d, func(_ context.Context, c int) error {
		if reset != nil {
			reset(states[c])
		}
		return r.ReadWith(ctxs[c], s, dbrouter.Shared, read)
	})
}

// benchPools measures the read on a random pool of pools each time: a
// random replica, without a router.
func benchPools(ctx context.Context, name string, pools []*pgxpool.Pool, clients int, d time.Duration) BenchResult {
	return bench(ctx, name, clients, d, func(ctx context.Context, _ int) error {
		rows, err := pools[rand.IntN(len(pools))].Query(ctx, benchQuery) // #nosec G404 -- load spreading
		if err != nil {
			return err
		}
		defer rows.Close()
		return scanItems(rows)
	})
}

// benchPositions measures the read and the replay position check in one
// pipelined batch, client c always on pools[c % len(pools)]: causal's
// statements on a session's own replica, without a router.
func benchPositions(ctx context.Context, name string, pools []*pgxpool.Pool, clients int, d time.Duration) BenchResult {
	return bench(ctx, name, clients, d, func(ctx context.Context, c int) error {
		var last *string
		var standby bool
		b := &pgx.Batch{}
		b.Queue(benchQuery).Query(scanItems)
		b.Queue(dbrouter.ReplayCheckSQL).QueryRow(func(row pgx.Row) error { return row.Scan(&last, &standby) })
		if err := pools[c%len(pools)].SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if last == nil || !standby {
			return fmt.Errorf("the replay position check did not run on a standby")
		}
		_, err := dbrouter.ParseLSN(*last)
		return err
	})
}

// Markdown writes the benchmark's table.
func (b *BenchRun) Markdown(w io.Writer) {
	fmt.Fprintf(w, "| reads through | queries/s (median) | p50 | p99 | × direct (median) | × direct (min–max) | × its no-router control (min–max) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, row := range b.Rows {
		errs := 0
		for _, r := range row.Runs {
			errs += r.Errors
		}
		name := row.Name
		if errs > 0 {
			name += fmt.Sprintf(" (%d errors)", errs)
		}
		median, spread := "1.00", "–"
		if len(row.Ratios) > 0 {
			median, spread = fmt.Sprintf("%.2f", row.Median), fmt.Sprintf("%.2f–%.2f", row.Min, row.Max)
		}
		control := "–"
		if row.Control != "" {
			control = fmt.Sprintf("%.2f (%.2f–%.2f)", row.ControlMedian, row.ControlMin, row.ControlMax)
		}
		fmt.Fprintf(w, "| %s | %.0f | %s | %s | %s | %s | %s |\n", name, row.QPS, ms(row.P50, 2), ms(row.P99, 2), median, spread, control)
	}
	fmt.Fprintf(w, "\n%d concurrent clients, the same pgx driver and query (%q), %s per row after a warm-up; "+
		"%d repetitions, each strategy row between two %s rows, its ratio taken to their mean. "+
		"Run took %s on %s, PostgreSQL %s, clients and servers on the same machine.\n",
		b.Clients, benchQuery, b.Time, b.Repeat, b.Direct, b.Elapsed.Round(time.Second), b.Machine, b.Postgres)
	for _, line := range b.Comments {
		fmt.Fprintln(w, "\n"+line)
	}
}

// WriteFiles writes bench.md and bench.json into dir.
func (b *BenchRun) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	var md strings.Builder
	b.Markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "bench.md"), []byte(md.String()), 0o600); err != nil {
		return err
	}
	js, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "bench.json"), append(js, '\n'), 0o600)
}
