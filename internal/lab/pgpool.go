package lab

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/pgpool"
)

// PgpoolConfig describes the comparison with pgpool-II.
type PgpoolConfig struct {
	Cluster *cluster.Cluster
	// Lab is the run's configuration: the lab runs once more through
	// pgpool-II with it, as a pgpool-II row.
	Lab Config
	// StartApp starts a Quest instance whose only database is dbURL
	// (pgpool-II's port), reading everything there: pgpool routes.
	StartApp func(ctx context.Context, dbURL string) (App, error)
	// PoolSize is the app's pool size per node; pgpool-II gets as many
	// sessions.
	PoolSize int
	// BenchTime is how long each row of the query-level benchmark runs;
	// BenchStrategies are Quest's rows there (nil: every strategy).
	BenchTime       time.Duration
	BenchStrategies []dbrouter.Strategy
	Progress        io.Writer
}

// benchClients is the query-level benchmark's concurrency on every side.
const benchClients = 8

// ComparePgpool starts pgpool-II in front of the cluster, runs the lab once
// more through it (the pgpool-II row), then the query-level benchmark, and
// adds both to res. It stops pgpool, removing its files, whatever happens.
func ComparePgpool(ctx context.Context, cfg PgpoolConfig, res *Result) error {
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if len(cfg.BenchStrategies) == 0 {
		cfg.BenchStrategies = dbrouter.Strategies()
	}
	pp, ppCfg, err := startPgpool(ctx, cfg.Cluster, cfg.PoolSize, cfg.Progress)
	if err != nil {
		return err
	}
	defer pp.Stop()

	via, err := cfg.StartApp(ctx, pp.URL())
	if err != nil {
		return fmt.Errorf("start the app on pgpool-II: %w", err)
	}
	viaCfg := cfg.Lab
	viaCfg.URL, viaCfg.Row, viaCfg.Strategies = via.URL, "pgpool-II", nil
	viaRes, err := Run(ctx, viaCfg)
	via.Stop()
	if err != nil {
		return fmt.Errorf("lab through pgpool-II: %w", err)
	}
	res.Cells = append(res.Cells, viaRes.Cells...)
	res.Elapsed += viaRes.Elapsed

	if err := benchAll(ctx, cfg, pp.URL(), res); err != nil {
		return err
	}
	res.Comments = append(res.Comments, "", "pgpool-II "+pgpool.Version()+" was set up as:", "")
	for _, line := range ppCfg.Settings() {
		res.Comments = append(res.Comments, "- `"+line+"`")
	}
	return nil
}

// startPgpool starts pgpool-II in front of the cluster with poolSize
// sessions, reads balanced over the replicas; the caller stops it.
func startPgpool(ctx context.Context, c *cluster.Cluster, poolSize int, progress io.Writer) (*pgpool.Pgpool, pgpool.Config, error) {
	pc, err := pgx.ParseConfig(c.PrimaryURL())
	if err != nil {
		return nil, pgpool.Config{}, fmt.Errorf("the primary's URL: %w", err)
	}
	nodes := c.Nodes()
	ppCfg := pgpool.Config{
		Primary: pgpool.Backend{Name: nodes[0].Name, Port: nodes[0].Port},
		User:    pc.User, Password: pc.Password, Database: pc.Database,
		PoolSize: poolSize, DelayThreshold: 64 << 20,
	}
	for _, n := range nodes[1:] {
		ppCfg.Replicas = append(ppCfg.Replicas, pgpool.Backend{Name: n.Name, Port: n.Port})
	}
	pp, err := pgpool.Start(ctx, ppCfg)
	if err != nil {
		return nil, ppCfg, fmt.Errorf("start pgpool-II: %w", err)
	}
	fmt.Fprintf(progress, "lab: pgpool-II (pid %d) on 127.0.0.1:%d in front of the cluster\n", pp.PID(), pp.Port())
	return pp, ppCfg, nil
}

// benchAll runs the query-level benchmark: the same driver and query
// through pgpool-II, through Quest's router with each strategy, and
// straight to one replica, no router: what routing itself costs.
func benchAll(ctx context.Context, cfg PgpoolConfig, pgpoolURL string, res *Result) error {
	fmt.Fprintf(cfg.Progress, "lab: query-level benchmark, %d clients, %s per row\n", benchClients, cfg.BenchTime)
	ppPool, err := poolOf(ctx, pgpoolURL, benchClients)
	if err != nil {
		return err
	}
	proxy := benchPool(ctx, "pgpool-II", ppPool, benchClients, cfg.BenchTime)
	ppPool.Close()
	if proxy.QPS == 0 {
		return fmt.Errorf("the benchmark through pgpool-II answered no query (%d errors)", proxy.Errors)
	}
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: cfg.Cluster.PrimaryURL(), ReplicaURLs: cfg.Cluster.ReplicaURLs(), MaxConns: benchClients})
	if err != nil {
		return fmt.Errorf("the benchmark's router: %w", err)
	}
	defer r.Close()
	add := func(b BenchResult) {
		b.Ratio = b.QPS / proxy.QPS
		res.Bench = append(res.Bench, b)
		fmt.Fprintf(cfg.Progress, "  %-18s %7.0f queries/s  %.2f× pgpool-II\n", b.Name, b.QPS, b.Ratio)
	}
	for _, s := range cfg.BenchStrategies {
		add(benchRouter(ctx, r, s, benchClients, cfg.BenchTime))
	}
	direct, err := poolOf(ctx, cfg.Cluster.ReplicaURLs()[0], benchClients)
	if err != nil {
		return err
	}
	add(benchPool(ctx, "direct to "+cluster.ReplicaName(1), direct, benchClients, cfg.BenchTime))
	direct.Close()
	fmt.Fprintf(cfg.Progress, "  %-18s %7.0f queries/s\n", proxy.Name, proxy.QPS)
	res.Bench = append(res.Bench, proxy)
	res.BenchClients, res.BenchTime = benchClients, cfg.BenchTime
	return nil
}

// poolOf is a pool of exactly n connections, as the router's pools in the
// benchmark have.
func poolOf(ctx context.Context, url string, n int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("benchmark pool: %w", err)
	}
	cfg.MaxConns = n
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("benchmark pool: %w", err)
	}
	return pool, nil
}
