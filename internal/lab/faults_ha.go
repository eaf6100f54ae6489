package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"quest/internal/cluster"
)

// HACluster is what the HA fault runs need of a Patroni cluster (quest
// cluster up --ha). *cluster.Cluster is one.
type HACluster interface {
	Fail(ctx context.Context, name string) (string, error)
	Freeze(ctx context.Context, name string) (thaw func() error, err error)
	KillAgent(ctx context.Context, name string) (string, error)
	StartAlone(ctx context.Context, name string) error
	Stop(ctx context.Context, name string, immediate bool) error
	WaitLeader(ctx context.Context, not string, timeout time.Duration) (string, error)
	Switchover(ctx context.Context, to string) (from, cand string, err error)
	Start(ctx context.Context, name string) error
	PrimaryURL() string
}

// The rows of the HA fault table, by the keys --rows takes, in the order
// they run: all but the last on a cluster with asynchronous replication
// (rejoin brings back the member crash crashed), the last on one with
// Patroni's synchronous_mode.
const (
	RowCrash      = "crash"
	RowRejoin     = "rejoin"
	RowSwitchover = "switchover"
	RowHang       = "hang"        // the leader's PostgreSQL hangs (SIGSTOP), then wakes
	RowAgent      = "agent"       // the leader's Patroni dies, its PostgreSQL runs on
	RowSplitBrain = "split-brain" // a crashed leader started again without Patroni
	RowCrashSync  = "crash-sync"
)

// HARows are the HA fault table's row keys, in the order they run.
func HARows() []string {
	return []string{RowCrash, RowRejoin, RowSwitchover, RowHang, RowAgent, RowSplitBrain, RowCrashSync}
}

// ParseHARows reads a comma-separated list of row keys ("" is every row)
// and returns them in the order they run.
func ParseHARows(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return HARows(), nil
	}
	want := map[string]bool{}
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if !slices.Contains(HARows(), k) {
			return nil, fmt.Errorf("unknown row %q; choose from %s", k, strings.Join(HARows(), ", "))
		}
		want[k] = true
	}
	if want[RowRejoin] && !want[RowCrash] {
		return nil, fmt.Errorf("row %s brings back the member that row %s crashed: add %s", RowRejoin, RowCrash, RowCrash)
	}
	var rows []string
	for _, k := range HARows() {
		if want[k] {
			rows = append(rows, k)
		}
	}
	return rows, nil
}

// HAConfig describes an HA fault run. The apps run the causal strategy.
type HAConfig struct {
	// Up brings up a new Patroni cluster of three members, migrated, with
	// synchronous_mode or asynchronous replication. Its down stops every
	// process of the cluster and deletes it, or with keep (the run failed)
	// keeps its data and logs to look at.
	Up func(ctx context.Context, sync bool) (c HACluster, down func(keep bool) error, err error)
	// StartApp starts a Quest instance on the cluster, given every
	// member's URL as quest cluster env prints them, with a 2 s lag limit
	// and the tracker polling every PollInterval.
	StartApp func(ctx context.Context, c HACluster) (App, error)
	Rows     []string      // row keys, in the order they run; default every row
	Users    int           // default 6
	Think    time.Duration // default 50 ms
	Phase    time.Duration // the phases before and after each fault; default 6 s
	Hang     time.Duration // how long the hang row's leader hangs; default 20 s
	// TTL is Patroni's ttl and PollInterval the apps' tracker's: the
	// targets for writes to work again are measured against them.
	TTL          time.Duration // default cluster.PatroniTTL
	PollInterval time.Duration // default 100 ms, the router's
	Versions     string        // the software, for the table's caption
	Progress     io.Writer
}

func (c *HAConfig) defaults() {
	if len(c.Rows) == 0 {
		c.Rows = HARows()
	}
	if c.Users <= 0 {
		c.Users = 6
	}
	if c.Think <= 0 {
		c.Think = 50 * time.Millisecond
	}
	if c.Phase <= 0 {
		c.Phase = 6 * time.Second
	}
	if c.Hang <= 0 {
		c.Hang = 20 * time.Second
	}
	if c.TTL <= 0 {
		c.TTL = cluster.PatroniTTL
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// HARow is one row of the HA fault table. Unlike a FaultRow's, its
// acknowledged and lost writes are the row's own.
type HARow struct {
	Key      string
	Scenario string
	Sync     bool // on the cluster with Patroni's synchronous_mode

	Requests    int
	FailedReads int // page views that failed: transport errors, 5xx, users signed out
	// FailedWrites: forms that failed otherwise than with the read-only
	// page or the "may have been saved" page, the users' and the probe's.
	FailedWrites int
	ReadOnly     int // forms answered 503 "read-only right now"
	Unknown      int // forms answered 503 "may have been saved" (the connection broke during COMMIT)
	Stale        int // pages served with the staleness banner
	LostPages    int // pages that said the session's change may have been lost in a failover
	LostForms    int // form answers (redirects, which browsers do not show) that said so
	Anomalies    int // read-your-writes and monotonic failures on pages that said neither
	StaleMisses  int // the same on pages with the staleness banner (announced)
	LostMisses   int // the same on pages saying a change may have been lost (announced)
	Acked        int // writes acknowledged during the row
	Lost         int // … of them missing on the primary after the row
	P50, P99     time.Duration
	// Writes, WriteP50 and WriteP99: the acknowledged forms of the phase
	// before the fault, on the healthy cluster, and their latency.
	Writes             int
	WriteP50, WriteP99 time.Duration

	Member    string // the member crashed, brought back, or handed over from
	NewLeader string // the member that leads after the fault
	// Promoted: from the crash until Patroni's new leader accepted writes,
	// as the lab's own poll (every 50 ms) saw it.
	Promoted time.Duration
	// WritesBack: from the fault (the crash, the switchover asked for)
	// until a write was acknowledged again, by a probe writing every
	// 20 ms; 0 when writes never stopped.
	WritesBack time.Duration
	// Refused: from the probe's first refused write to the first one
	// acknowledged after it.
	Refused    time.Duration
	Switchover time.Duration // a switchover: until every member followed the new leader
	Rejoined   time.Duration // a member brought back: until it streamed from the leader
	// SplitBrain: how long the app's status pages reported a split brain
	// (two primaries), in the rows that make one.
	SplitBrain time.Duration
	ReadsAgain time.Duration // … until the app's router gave it reads; 0: it did not
	// PhaseReads counts the reads each node served before the fault and
	// after it, by the name the app's router gives it (Names).
	PhaseReads []map[string]int
	Names      map[string]string // member → the app's name for it, where they differ
	Notes      []string
	Elapsed    time.Duration
}

// name is how the app's router names a member.
func (r HARow) name(member string) string { return App{Names: r.Names}.name(member) }

// AfterPromotion is how long after the promotion writes worked again:
// negative when the router saw the new leader before the lab's poll did.
func (r HARow) AfterPromotion() time.Duration { return r.WritesBack - r.Promoted }

// Target is one of the run's targets and whether it held.
type Target struct {
	What     string
	Held     bool
	Measured string
}

// HAResult is a whole HA fault run.
type HAResult struct {
	Rows         []HARow
	Targets      []Target
	Users        int
	Phase        time.Duration
	TTL          time.Duration
	PollInterval time.Duration
	Machine      string
	Versions     string
	Elapsed      time.Duration
}

// RunFaultsHA runs the HA fault table: on a new Patroni cluster with
// asynchronous replication, the leader crashed, the crashed member brought
// back, a planned switchover; on a new one with synchronous_mode, the
// leader crashed. Each cluster is removed after its rows.
func RunFaultsHA(ctx context.Context, cfg HAConfig) (*HAResult, error) {
	cfg.defaults()
	began := time.Now()
	res := &HAResult{Users: cfg.Users, Phase: cfg.Phase, TTL: cfg.TTL, PollInterval: cfg.PollInterval,
		Machine: machine(), Versions: cfg.Versions}
	var err error
	for _, sync := range []bool{false, true} {
		var keys []string
		for _, k := range cfg.Rows {
			if (k == RowCrashSync) == sync {
				keys = append(keys, k)
			}
		}
		if len(keys) == 0 {
			continue
		}
		var rows []HARow
		rows, err = runHACluster(ctx, cfg, sync, keys)
		res.Rows = append(res.Rows, rows...)
		if err != nil {
			break
		}
	}
	res.Elapsed = time.Since(began)
	res.Targets = targets(res.Rows, cfg.TTL, cfg.PollInterval)
	return res, err
}

// replication names a cluster's replication mode.
func replication(sync bool) string {
	if sync {
		return "synchronous_mode"
	}
	return "asynchronous replication"
}

// haRun is what the rows on one cluster share.
type haRun struct {
	*faultRun
	c           HACluster
	cfg         HAConfig
	sync        bool
	crashed     string                           // the member the crash row crashed, for rejoin
	acked, lost int                              // verifyWrites after the last row
	say         func(format string, args ...any) // a progress line
}

// runHACluster brings up a cluster, plays its rows on it, and removes it
// (keeps it stopped when a row failed).
func runHACluster(ctx context.Context, cfg HAConfig, sync bool, keys []string) (rows []HARow, err error) {
	say := func(format string, args ...any) { fmt.Fprintf(cfg.Progress, "faults-ha: "+format+"\n", args...) }
	say("a new Patroni cluster of three members, %s", replication(sync))
	c, down, err := cfg.Up(ctx, sync)
	if err != nil {
		return nil, fmt.Errorf("bring up a Patroni cluster (%s): %w", replication(sync), err)
	}
	defer func() {
		if derr := down(err != nil); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove the cluster: %w", derr))
		}
	}()
	app, err := cfg.StartApp(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("start the app: %w", err)
	}
	f := &faultRun{phase: cfg.Phase, think: cfg.Think, primaryURL: c.PrimaryURL, app: app, watcher: newBrowser("", 0)}
	defer func() { f.app.Stop() }() // before the cluster goes
	if f.story, err = newStory(ctx, app.URL, cfg.Users); err != nil {
		return nil, err
	}
	if err := f.story.newThread(ctx, "Failover"); err != nil {
		return nil, err
	}
	h := &haRun{faultRun: f, c: c, cfg: cfg, sync: sync, say: say}
	for _, key := range keys {
		row, err := h.row(ctx, key)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", row.Scenario, err)
		}
		rows = append(rows, row)
		say("%-44s %5d requests, %d failed reads, %d anomalies, %d of %d acknowledged writes lost (%.1fs)",
			row.Scenario, row.Requests, row.FailedReads, row.Anomalies, row.Lost, row.Acked, row.Elapsed.Seconds())
	}
	return rows, nil
}

// row plays one row of the table.
func (h *haRun) row(ctx context.Context, key string) (HARow, error) {
	row := HARow{Key: key, Sync: h.sync, Names: h.app.Names}
	var do step
	switch key {
	case RowCrash, RowCrashSync:
		row.Scenario = "leader crashed, " + replication(h.sync)
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.crash(ctx, &row) }
	case RowRejoin:
		row.Scenario = "crashed member brought back"
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.rejoin(ctx, &row) }
	case RowSwitchover:
		row.Scenario = "planned switchover, " + replication(h.sync)
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.switchover(ctx, &row) }
	case RowHang:
		row.Scenario = fmt.Sprintf("leader hung %s (SIGSTOP of its PostgreSQL), %s", span(h.cfg.Hang), replication(h.sync))
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.hang(ctx, &row) }
	case RowAgent:
		row.Scenario = "leader's Patroni killed, its PostgreSQL running on, " + replication(h.sync)
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.agent(ctx, &row) }
	case RowSplitBrain:
		row.Scenario = "split brain: crashed leader started again without Patroni, " + replication(h.sync)
		do = func(ctx context.Context, _ *faultRun, _ *FaultRow) error { return h.splitBrain(ctx, &row) }
	default:
		return row, fmt.Errorf("unknown row %q", key)
	}
	h.say("%s: users play for %s, then the fault", row.Scenario, span(h.phase))
	var scratch FaultRow // the plain table's row: the HA steps fill row
	t, err := h.play(ctx, scenario{name: row.Scenario, steps: []step{do}}, &scratch)
	if err != nil {
		return row, err
	}
	row.Elapsed, row.Requests = t.elapsed, t.requests
	row.FailedReads = t.failedGets
	row.FailedWrites += t.failed - t.failedGets // the probe's were counted by the step
	row.ReadOnly, row.Unknown, row.Stale, row.LostPages, row.LostForms = t.readOnly, t.unknown, t.stalePages, t.lostPages, t.lostForms
	row.Anomalies, row.StaleMisses, row.LostMisses = t.anomalies, t.staleMisses, t.lostMisses
	row.P50, row.P99 = percentiles(t.latencies)
	row.Writes = len(t.writes[0])
	row.WriteP50, row.WriteP99 = percentiles(t.writes[0])
	row.PhaseReads = t.served
	// The writes are checked on whichever member leads now, which Patroni
	// may have changed again since the row's fault.
	leader, err := h.c.WaitLeader(ctx, "", time.Minute)
	if err != nil {
		return row, err
	}
	if want := row.NewLeader; want != "" && leader != want {
		row.Notes = append(row.Notes, fmt.Sprintf("Patroni moved the leader again during the row: %s leads now", leader))
	}
	acked, lost, err := h.verifyWrites(ctx)
	if err != nil {
		return row, err
	}
	// Lost writes stay lost, so the row's are the new ones. (A write of
	// unknown outcome that was saved after all can hide one of an earlier
	// row's of the same item: never below 0.)
	row.Acked, row.Lost = acked-h.acked, max(0, lost-h.lost)
	h.acked, h.lost = acked, lost
	row.Notes = append(row.Notes, h.notes(row)...)
	row.Notes = append(row.Notes, t.notes()...)
	return row, nil
}

// targets says which of the run's targets held.
func targets(rows []HARow, ttl, poll time.Duration) []Target {
	if len(rows) == 0 {
		return nil
	}
	var out []Target
	var failed, anomalies []string
	for _, r := range rows {
		if r.FailedReads > 0 {
			failed = append(failed, fmt.Sprintf("%d in %q", r.FailedReads, r.Scenario))
		}
		if r.Anomalies > 0 {
			anomalies = append(anomalies, fmt.Sprintf("%d in %q", r.Anomalies, r.Scenario))
		}
	}
	out = append(out, Target{"no read fails", len(failed) == 0, orNone(failed, "0 in every row")},
		Target{"no anomaly (a read short of a change the page said may have been lost is not one)", len(anomalies) == 0, orNone(anomalies, "0 in every row")})
	for _, r := range rows {
		switch r.Key {
		case RowCrash, RowCrashSync:
			limit := ttl + 2*poll
			out = append(out,
				Target{fmt.Sprintf("%s: writes work again within Patroni's ttl + 2 poll intervals (%s) of the crash", r.Scenario, secs(limit)),
					r.WritesBack > 0 && r.WritesBack <= limit,
					fmt.Sprintf("%s (Patroni's promotion alone took %s)", secs(r.WritesBack), secs(r.Promoted))},
				Target{fmt.Sprintf("%s: writes work again within 2 poll intervals (%s) of the promotion", r.Scenario, secs(2*poll)),
					r.WritesBack > 0 && r.AfterPromotion() <= 2*poll,
					secs(r.AfterPromotion())})
			if r.Key == RowCrashSync {
				out = append(out, Target{"no acknowledged write lost under synchronous_mode", r.Lost == 0, fmt.Sprintf("%d of %d", r.Lost, r.Acked)})
			}
		case RowSwitchover:
			out = append(out, Target{"no acknowledged write lost in a planned switchover", r.Lost == 0, fmt.Sprintf("%d of %d", r.Lost, r.Acked)})
		case RowHang, RowAgent, RowSplitBrain:
			out = append(out, Target{"no acknowledged write lost: " + r.Scenario, r.Lost == 0, fmt.Sprintf("%d of %d", r.Lost, r.Acked)})
		case RowRejoin:
			after := r.PhaseReads[len(r.PhaseReads)-1]
			got := "none within a minute"
			if r.ReadsAgain > 0 {
				got = "after " + secs(r.ReadsAgain)
			}
			out = append(out, Target{"the crashed member gets reads again once caught up", r.ReadsAgain > 0 && after[r.name(r.Member)] > 0,
				fmt.Sprintf("%s; %s of reads after", got, share(after, r.name(r.Member)))})
		}
	}
	return out
}

// orNone joins what went wrong, or says none did.
func orNone(list []string, none string) string {
	if len(list) == 0 {
		return none
	}
	return strings.Join(list, "; ")
}

// secs formats d in seconds: "10.2 s", "0.05 s" below a second.
func secs(d time.Duration) string {
	if d > -time.Second && d < time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// span formats a configured duration: "10 s", "2.5 s", "100 ms".
func span(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}
