package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/lab"
	"quest/internal/server"
	"quest/internal/store"
)

const labUsage = `usage: quest lab run|faults|bench [flags]

actions:
  run      the lag experiment: every strategy under every lag setting, as a table
  faults   the fault scenarios under load, as a table (--ha: failover on Patroni clusters of its own)
  bench    the query-level benchmark: each strategy's reads against the same read straight to a replica

Run "quest lab run -h", "quest lab faults -h" or "quest lab bench -h" for their flags.
`

func (e environment) lab(ctx context.Context, args []string) error {
	switch {
	case len(args) == 1 && isHelp(args[0]):
		fmt.Fprint(e.stdout, labUsage)
		return nil
	case len(args) > 0 && args[0] == "faults":
		return e.labFaults(ctx, args[1:])
	case len(args) > 0 && args[0] == "bench":
		return e.labBench(ctx, args[1:])
	case len(args) == 0 || args[0] != "run":
		return usagef("lab needs an action: run, faults or bench; see quest lab --help")
	}
	fs := e.newFlags("lab run", "lab run [--quick] [--dir D] [--url URL] [--users N] [--out DIR] [--update FILE]")
	var qc config
	e.addFlags(fs, &qc, dirFlag) // the local cluster whose lag levers the lab pulls
	dir := &qc.StateDir
	appURL := fs.String("url", "", "drive a running Quest at this URL instead of starting one in-process (it must use the same cluster, and --login-limit and --signup-limit high)")
	adminPassword := fs.String("admin-password", "", "with --url: the admin's password, to switch strategies (default: the state dir's admin-password)")
	quick := fs.Bool("quick", false, "a shorter run (under a minute): two lag settings, short cells")
	users := fs.Int("users", 8, "simulated users")
	think := fs.Duration("think", 100*time.Millisecond, "pause between a user's actions")
	out := fs.String("out", "", "directory for results.md, results.json, results.csv and chart.svg (default .quest/lab beside the state dir)")
	update := fs.String("update", "", "also replace the marked section of this Markdown file with the table: <!-- lab:begin --> … <!-- lab:end -->, or pgpool:begin/end with --via-pgpool")
	strategies := fs.String("strategies", "", "comma-separated strategies to run (default all six, in order; a name may repeat)")
	closedOnly := fs.Bool("closed-loop-only", false, "run only the closed-loop throughput cells")
	viaPgpool := fs.Bool("via-pgpool", false, "also run the app through pgpool-II (a pgpool-II row); the query-level benchmark is quest lab bench --via-pgpool")
	c, err := labTarget(fs, args[1:], "lab run", dir, users, out)
	if err != nil {
		return err
	}

	cfg := lab.Config{Cluster: c, Users: *users, Think: *think, Progress: e.stderr}
	if *quick {
		all := lab.DefaultSettings()
		cfg.Settings = []lab.LagSetting{all[0], all[2]}
		cfg.CellTime = 1200 * time.Millisecond
		cfg.ClosedLoop = 800 * time.Millisecond
		cfg.Checks = []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond}
	}
	if *strategies != "" {
		for _, name := range strings.Split(*strategies, ",") {
			st, err := dbrouter.ParseStrategy(strings.TrimSpace(name))
			if err != nil {
				return err
			}
			cfg.Strategies = append(cfg.Strategies, st)
		}
	}
	if *closedOnly {
		cfg.Settings = []lab.LagSetting{}
	}
	if *viaPgpool && *appURL != "" {
		return fmt.Errorf("--via-pgpool starts its own app instances; drop --url")
	}
	if *viaPgpool && *quick {
		// The contrast, in under a minute: with replay paused everywhere a
		// proxy that balances reads over replicas must show the anomaly,
		// whichever replica its sessions landed on.
		if *strategies == "" {
			cfg.Strategies = []dbrouter.Strategy{dbrouter.Causal}
		}
		all := lab.DefaultSettings()
		cfg.Settings = []lab.LagSetting{all[0], all[3]}
	}
	if *appURL != "" {
		cfg.URL = strings.TrimRight(*appURL, "/")
		pw := *adminPassword
		if pw == "" {
			b, err := os.ReadFile(filepath.Join(c.Dir(), "admin-password"))
			if err != nil {
				return fmt.Errorf("no admin password: pass --admin-password or run quest seed")
			}
			pw = strings.TrimSpace(string(b))
		}
		if cfg.SetStrategy, err = lab.SignInAsAdmin(ctx, cfg.URL, pw); err != nil {
			return err
		}
	} else {
		if err := migrateLeader(ctx, c); err != nil {
			return err
		}
		a, err := startInProcess(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs()}, c)
		if err != nil {
			return err
		}
		defer a.Close()
		cfg.URL = a.URL()
		cfg.SetStrategy = func(_ context.Context, s dbrouter.Strategy) error { return a.Router.SetStrategy(s) }
	}
	fmt.Fprintf(e.stderr, "lab: %d users against %s, results into %s\n", *users, cfg.URL, *out)
	res, err := lab.Run(ctx, cfg)
	if err != nil {
		return err
	}
	section := "lab"
	if *viaPgpool {
		section = "pgpool"
		pc := lab.PgpoolConfig{Cluster: c, Lab: cfg, PoolSize: appPoolSize, Progress: e.stderr,
			StartApp: func(ctx context.Context, dbURL string) (lab.App, error) {
				return labApp(startInProcess(ctx, dbrouter.Config{PrimaryURL: dbURL}, nil))
			}}
		if err := lab.ComparePgpool(ctx, pc, res); err != nil {
			return err
		}
	}
	return e.publish(res, *out, *update, section)
}

// labFaults runs the fault scenarios under load and prints their table;
// with --ha, the HA fault table on Patroni clusters of its own.
func (e environment) labFaults(ctx context.Context, args []string) error {
	fs := e.newFlags("lab faults", "lab faults [--quick] [--dir D] [--users N] [--out DIR] [--update FILE]\n"+
		"       quest lab faults --ha [--quick] [--rows R] [--ha-dir D] [--port P] [--pg-bin D] [--users N] [--out DIR] [--update FILE]")
	var qc config
	e.addFlags(fs, &qc, dirFlag|pgBinFlag) // the local cluster to break
	dir := &qc.StateDir
	quick := fs.Bool("quick", false, "short phases (about a minute in all; with --ha about two)")
	users := fs.Int("users", 6, "simulated users")
	out := fs.String("out", "", "directory for faults.md and faults.json, or faults-ha.md and faults-ha.json (default .quest/lab beside the state dir)")
	update := fs.String("update", "", "also replace the marked section of this Markdown file with the table: <!-- faults:begin --> … <!-- faults:end -->, or faults-ha:begin/end with --ha")
	ha := fs.Bool("ha", false, "the HA fault table instead, on Patroni clusters the lab starts and removes: the leader crashed (asynchronous\nreplication, and synchronous_mode), the crashed member brought back, a planned switchover (docs/ha.md)")
	haDir := fs.String("ha-dir", "", "with --ha: the state directory of the lab's Patroni clusters, one at a time (default .quest/faults-ha beside the state dir)")
	port := fs.Int("port", 0, "with --ha: the clusters' base port P (PostgreSQL P to P+2, Patroni P+10 to P+12, etcd P+20 and P+21); 0 picks free ports")
	rows := fs.String("rows", "", "with --ha: the rows to run, comma-separated: "+strings.Join(lab.HARows(), ", ")+" (default all; rejoin needs crash)")
	if err := labArgs(fs, args, "lab faults", users); err != nil {
		return err
	}
	if *ha {
		return e.labFaultsHA(ctx, haOptions{stateDir: *dir, dir: *haDir, port: *port, rows: *rows, pgBin: qc.PGBin,
			quick: *quick, users: *users, out: *out, update: *update})
	}
	var onlyHA []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "ha-dir" || f.Name == "port" || f.Name == "rows" || f.Name == "pg-bin" {
			onlyHA = append(onlyHA, "--"+f.Name)
		}
	})
	switch len(onlyHA) {
	case 0:
	case 1:
		return usagef("lab faults: %s needs --ha", onlyHA[0])
	default:
		return usagef("lab faults: %s need --ha", strings.Join(onlyHA, " and "))
	}
	c, err := labCluster(*dir, out)
	if err != nil {
		return err
	}
	if err := migrateLeader(ctx, c); err != nil {
		return err
	}
	cfg := lab.FaultConfig{Cluster: c, Users: *users, Progress: e.stderr}
	if *quick {
		cfg.Phase, cfg.Load = 2500*time.Millisecond, 4*time.Second
	}
	// Every instance shares the session key and runs with a 2 s lag limit,
	// so a paused replica is excluded within the scenario.
	cfg.StartApp = func(ctx context.Context) (lab.App, error) {
		return labApp(startInProcess(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxLag: 2 * time.Second}, c))
	}
	res, err := lab.RunFaults(ctx, cfg)
	if err != nil {
		return err
	}
	return e.publish(res, *out, *update, "faults")
}

// results are a lab run's or a fault run's.
type results interface {
	Markdown(w io.Writer)
	WriteFiles(dir string) error
}

// publish prints a run's table, writes its files into out and, when asked,
// replaces the marked section of a Markdown file with the table.
func (e environment) publish(res results, out, update, section string) error {
	var md strings.Builder
	res.Markdown(&md)
	fmt.Fprint(e.stdout, md.String())
	if err := res.WriteFiles(out); err != nil {
		return err
	}
	if update == "" {
		return nil
	}
	return lab.ReplaceSection(update, section, md.String())
}

// labTarget parses a lab command's flags, checks them, and opens the
// cluster it works on; out defaults to .quest/lab beside the state dir.
// The flags are passed as pointers: they are read after parsing.
func labTarget(fs *flag.FlagSet, args []string, name string, dir *string, users *int, out *string) (*cluster.Cluster, error) {
	if err := labArgs(fs, args, name, users); err != nil {
		return nil, err
	}
	return labCluster(*dir, out)
}

// labArgs parses a lab command's flags and checks what they share.
func labArgs(fs *flag.FlagSet, args []string, name string, users *int) error {
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%s takes no arguments, got %q", name, pos)
	}
	if *users < 2 || *users > 200 {
		return fmt.Errorf("--users %d: choose between 2 and 200", *users)
	}
	return nil
}

// labCluster opens the local cluster a lab command works on; out defaults
// to .quest/lab beside its state dir.
func labCluster(dir string, out *string) (*cluster.Cluster, error) {
	c, err := cluster.Open(dir)
	if err != nil {
		return nil, err
	}
	if *out == "" {
		*out = filepath.Join(filepath.Dir(c.Dir()), "lab")
	}
	return c, nil
}

// migrateLeader applies the migrations the lab's apps need.
func migrateLeader(ctx context.Context, c *cluster.Cluster) error {
	return store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard)
}

// appPoolSize is the in-process app's pool size per node (the router's
// default); pgpool-II gets as many sessions.
const appPoolSize = 10

// startInProcess serves Quest on a free loopback port for the lab, with
// the causal strategy. With no replica URLs the app reads everything from
// the primary URL (pgpool-II's port) with the primary strategy.
func startInProcess(ctx context.Context, rc dbrouter.Config, levers server.Levers) (*app.App, error) {
	rc.Strategy, rc.MaxConns = dbrouter.Causal, appPoolSize
	if len(rc.ReplicaURLs) == 0 {
		rc.Strategy = dbrouter.Primary
	}
	key := make([]byte, 32)
	copy(key, "quest lab in-process session key")
	a, err := app.New(ctx, app.Config{Router: rc, SessionKey: key, Levers: levers, LoginsPerMinutePerAddr: 1 << 20, SignupsPerHourPerAddr: 1 << 20})
	if err != nil {
		return nil, fmt.Errorf("start the lab's app: %w", err)
	}
	if err := a.Start("127.0.0.1:0"); err != nil {
		a.Close()
		return nil, fmt.Errorf("start the lab's app: %w", err)
	}
	return a, nil
}

// labApp is an in-process app as the lab's runs see it.
func labApp(a *app.App, err error) (lab.App, error) {
	if err != nil {
		return lab.App{}, err
	}
	return lab.App{URL: a.URL(), Stop: a.Close}, nil
}
