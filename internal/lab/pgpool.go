package lab

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"quest/internal/cluster"
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
	Progress io.Writer
}

// benchClients is the query-level benchmark's concurrency on every side.
const benchClients = 8

// ComparePgpool starts pgpool-II in front of the cluster, runs the lab once
// more through it (the pgpool-II row) and adds its cells to res. It stops
// pgpool, removing its files, whatever happens. The query-level benchmark
// against pgpool-II is Bench's (quest lab bench --via-pgpool).
func ComparePgpool(ctx context.Context, cfg PgpoolConfig, res *Result) error {
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
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

// poolOf is a pool of at most n connections, as the router's pools in the
// benchmark have, with all n already open: a row's short warm-up is no
// time to authenticate a pool's worth of connections on a busy machine.
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
	held := make([]*pgxpool.Conn, 0, n)
	for range n {
		var c *pgxpool.Conn
		if c, err = pool.Acquire(ctx); err != nil {
			break
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Release()
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("benchmark pool: opened %d of %d connections to %s:%d: %w", len(held), n, cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}
