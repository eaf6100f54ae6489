package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/lab"
	"quest/internal/pgpool"
	"quest/internal/server"
	"quest/internal/store"
)

func (e environment) lab(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "faults" {
		return e.labFaults(ctx, args[1:])
	}
	if len(args) == 0 || args[0] != "run" {
		return fmt.Errorf("usage: quest lab run [--quick] [--dir D] [--url URL] [--users N] [--out DIR] [--readme FILE], or quest lab faults [--quick] [--dir D]")
	}
	fs := e.newFlags("lab run", "lab run [--quick] [--dir D] [--url URL] [--users N] [--out DIR] [--readme FILE]")
	dir := fs.String("dir", e.defaultStateDir(), "the local cluster whose lag levers the lab pulls")
	appURL := fs.String("url", "", "drive a running Quest at this URL instead of starting one in-process (it must use the same cluster, and --login-limit high)")
	adminPassword := fs.String("admin-password", "", "with --url: the admin's password, to switch strategies (default: the state dir's admin-password)")
	quick := fs.Bool("quick", false, "a shorter run (under a minute): two lag settings, short cells")
	users := fs.Int("users", 8, "simulated users")
	think := fs.Duration("think", 100*time.Millisecond, "pause between a user's actions")
	out := fs.String("out", "", "directory for results.md, results.csv and chart.svg (default .quest/lab beside the state dir)")
	readme := fs.String("readme", "", "also replace the lab section of this README with the table")
	strategies := fs.String("strategies", "", "comma-separated strategies to run (default all six, in order; a name may repeat)")
	closedOnly := fs.Bool("closed-loop-only", false, "run only the closed-loop throughput cells")
	viaPgpool := fs.Bool("via-pgpool", false, "also run the app through pgpool-II (a pgpool-II row) and the query-level benchmark against it")
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
		cfg.SetStrategy, err = adminStrategySwitch(ctx, cfg.URL, pw)
		if err != nil {
			return err
		}
	} else {
		if err := migrateLeader(ctx, c); err != nil {
			return err
		}
		app, err := startInProcess(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs()}, c)
		if err != nil {
			return err
		}
		defer app.stop()
		cfg.URL = app.url
		cfg.SetStrategy = func(_ context.Context, s dbrouter.Strategy) error { return app.router.SetStrategy(s) }
	}
	fmt.Fprintf(e.stderr, "lab: %d users against %s, results into %s\n", *users, cfg.URL, *out)
	res, err := lab.Run(ctx, cfg)
	if err != nil {
		return err
	}
	section := "lab"
	if *viaPgpool {
		section = "pgpool"
		benchTime := 5 * time.Second
		if *quick {
			benchTime = 1500 * time.Millisecond
		}
		if err := e.withPgpool(ctx, c, cfg, res, benchTime, *quick); err != nil {
			return err
		}
	}
	res.Machine = lab.MachineDescription()
	res.Markdown(e.stdout)
	if err := res.WriteFiles(*out); err != nil {
		return err
	}
	if *readme != "" {
		if err := res.UpdateReadme(*readme, section); err != nil {
			return err
		}
	}
	return nil
}

// withPgpool starts pgpool-II in front of the cluster, runs the lab once
// more through it (the pgpool-II row), then the query-level benchmark, and
// stops pgpool, removing its files, whatever happens.
func (e environment) withPgpool(ctx context.Context, c *cluster.Cluster, cfg lab.Config, res *lab.Result, benchTime time.Duration, quick bool) error {
	pc, err := pgx.ParseConfig(c.PrimaryURL())
	if err != nil {
		return err
	}
	nodes := c.Nodes()
	ppCfg := pgpool.Config{
		Primary: pgpool.Backend{Name: nodes[0].Name, Port: nodes[0].Port},
		User:    pc.User, Password: pc.Password, Database: pc.Database,
		PoolSize: appPoolSize, DelayThreshold: 64 << 20,
	}
	for _, n := range nodes[1:] {
		ppCfg.Replicas = append(ppCfg.Replicas, pgpool.Backend{Name: n.Name, Port: n.Port})
	}
	pp, err := pgpool.Start(ctx, ppCfg)
	if err != nil {
		return err
	}
	defer pp.Stop()
	fmt.Fprintf(e.stderr, "lab: pgpool-II (pid %d) on 127.0.0.1:%d in front of the cluster\n", pp.PID(), pp.Port())

	// The app with pgpool as its only database: the primary strategy from
	// the app's view; pgpool does the routing.
	via, err := startInProcess(ctx, dbrouter.Config{PrimaryURL: pp.URL()}, nil)
	if err != nil {
		return err
	}
	viaCfg := cfg
	viaCfg.URL, viaCfg.Row = via.url, "pgpool-II"
	viaCfg.Strategies = nil
	viaRes, err := lab.Run(ctx, viaCfg)
	via.stop()
	if err != nil {
		return fmt.Errorf("lab through pgpool-II: %w", err)
	}
	res.Cells = append(res.Cells, viaRes.Cells...)
	res.Elapsed += viaRes.Elapsed

	// The query-level benchmark: the same driver and query, 8 clients.
	const clients = 8
	fmt.Fprintf(e.stderr, "lab: query-level benchmark, %d clients, %s per row\n", clients, benchTime)
	ppPool, err := poolOf(ctx, pp.URL(), clients)
	if err != nil {
		return err
	}
	proxy := lab.BenchPool(ctx, "pgpool-II", ppPool, clients, benchTime)
	ppPool.Close()
	if proxy.QPS == 0 {
		return fmt.Errorf("the benchmark through pgpool-II answered no query (%d errors)", proxy.Errors)
	}
	strategies := dbrouter.Strategies()
	if quick {
		strategies = []dbrouter.Strategy{dbrouter.Random, dbrouter.Sticky, dbrouter.Causal}
	}
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxConns: clients})
	if err != nil {
		return err
	}
	defer r.Close()
	for _, s := range strategies {
		b := lab.BenchRouter(ctx, r, s, clients, benchTime)
		b.Ratio = b.QPS / proxy.QPS
		res.Bench = append(res.Bench, b)
		fmt.Fprintf(e.stderr, "  %-14s %7.0f queries/s  %.2f× pgpool-II\n", b.Name, b.QPS, b.Ratio)
	}
	// Straight to one replica, no router: what routing itself costs.
	direct, err := poolOf(ctx, c.ReplicaURLs()[0], clients)
	if err != nil {
		return err
	}
	d := lab.BenchPool(ctx, "direct to replica1", direct, clients, benchTime)
	direct.Close()
	d.Ratio = d.QPS / proxy.QPS
	res.Bench = append(res.Bench, d, proxy)
	fmt.Fprintf(e.stderr, "  %-14s %7.0f queries/s  %.2f× pgpool-II\n", d.Name, d.QPS, d.Ratio)
	fmt.Fprintf(e.stderr, "  %-14s %7.0f queries/s\n", proxy.Name, proxy.QPS)
	res.BenchClients, res.BenchTime = clients, benchTime
	res.Comments = append(res.Comments, "", "pgpool-II "+pgpoolVersion()+" was set up as:", "")
	for _, line := range ppCfg.Settings() {
		res.Comments = append(res.Comments, "- `"+line+"`")
	}
	return nil
}

// poolOf is a pool of exactly n connections, as the router's pools in the
// benchmark have.
func poolOf(ctx context.Context, url string, n int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = n
	return pgxpool.NewWithConfig(ctx, cfg)
}

func pgpoolVersion() string {
	out, err := exec.Command("pgpool", "--version").CombinedOutput()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) >= 3 {
		return f[2]
	}
	return ""
}

func migrateLeader(ctx context.Context, c *cluster.Cluster) error {
	pool, err := pgxpool.New(ctx, c.PrimaryURL())
	if err != nil {
		return err
	}
	defer pool.Close()
	return store.Migrate(ctx, pool, "up", io.Discard)
}

// inProcess is a Quest app the lab starts for itself on a free port.
type inProcess struct {
	url    string
	router *dbrouter.Router
	app    *app.App
}

// appPoolSize is the in-process app's pool size per node (the router's
// default); pgpool-II gets as many sessions.
const appPoolSize = 10

// startInProcess serves Quest on a free loopback port for the lab, with
// the causal strategy. With no replica URLs the app reads everything from
// the primary URL (pgpool-II's port) with the primary strategy.
func startInProcess(ctx context.Context, rc dbrouter.Config, levers server.Levers) (*inProcess, error) {
	rc.Strategy, rc.MaxConns = dbrouter.Causal, appPoolSize
	if len(rc.ReplicaURLs) == 0 {
		rc.Strategy = dbrouter.Primary
	}
	key := make([]byte, 32)
	copy(key, "quest lab in-process session key")
	a, err := app.New(ctx, app.Config{Router: rc, SessionKey: key, Levers: levers, LoginsPerMinutePerAddr: 1 << 20})
	if err != nil {
		return nil, err
	}
	if err := a.Start("127.0.0.1:0"); err != nil {
		a.Close()
		return nil, err
	}
	return &inProcess{url: a.URL(), router: a.Router, app: a}, nil
}

func (a *inProcess) stop() { a.app.Close() }

// adminStrategySwitch signs in as the admin and returns a function that
// switches the running app's strategy through /lab.
func adminStrategySwitch(ctx context.Context, base, password string) (func(context.Context, dbrouter.Strategy) error, error) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(ctx context.Context, path string, form url.Values) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, strings.NewReader(form.Encode()))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	status, err := post(ctx, "/login", url.Values{"username": {"admin"}, "password": {password}})
	if err != nil {
		return nil, fmt.Errorf("sign in as admin at %s: %w", base, err)
	}
	if status != http.StatusSeeOther {
		return nil, fmt.Errorf("sign in as admin at %s: status %d (wrong password?)", base, status)
	}
	return func(ctx context.Context, s dbrouter.Strategy) error {
		status, err := post(ctx, "/lab/strategy", url.Values{"strategy": {s.String()}})
		if err == nil && status != http.StatusSeeOther {
			err = errors.New("status " + http.StatusText(status))
		}
		return err
	}, nil
}

// labFaults runs the fault scenarios under load and prints their table.
func (e environment) labFaults(ctx context.Context, args []string) error {
	fs := e.newFlags("lab faults", "lab faults [--quick] [--dir D] [--users N] [--out DIR] [--readme FILE]")
	dir := fs.String("dir", e.defaultStateDir(), "the local cluster to break")
	quick := fs.Bool("quick", false, "short phases (about a minute in all)")
	users := fs.Int("users", 6, "simulated users")
	out := fs.String("out", "", "directory for faults.md (default .quest/lab beside the state dir)")
	readme := fs.String("readme", "", "also replace the faults section of this README with the table")
	c, err := labTarget(fs, args, "lab faults", dir, users, out)
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
		app, err := startInProcess(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxLag: 2 * time.Second}, c)
		if err != nil {
			return lab.App{}, err
		}
		return lab.App{URL: app.url, Stop: app.stop}, nil
	}
	res, err := lab.RunFaults(ctx, cfg)
	if err != nil {
		return err
	}
	res.Machine = lab.MachineDescription()
	var md strings.Builder
	res.Markdown(&md)
	fmt.Fprint(e.stdout, md.String())
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "faults.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	if *readme != "" {
		return lab.ReplaceSection(*readme, "faults", md.String())
	}
	return nil
}

// labTarget parses a lab command's flags, checks them, and opens the
// cluster it works on; out defaults to .quest/lab beside the state dir.
// The flags are passed as pointers: they are read after parsing.
func labTarget(fs *flag.FlagSet, args []string, name string, dir *string, users *int, out *string) (*cluster.Cluster, error) {
	pos, err := parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != 0 {
		return nil, fmt.Errorf("%s takes no arguments, got %q", name, pos)
	}
	if *users < 2 || *users > 200 {
		return nil, fmt.Errorf("--users %d: choose between 2 and 200", *users)
	}
	c, err := cluster.Open(*dir)
	if err != nil {
		return nil, err
	}
	if *out == "" {
		*out = filepath.Join(filepath.Dir(c.Dir()), "lab")
	}
	return c, nil
}
