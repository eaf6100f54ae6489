package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/lab"
	"quest/internal/store"
)

// haOptions are quest lab faults --ha's flags.
type haOptions struct {
	stateDir, dir string // the local cluster's state dir (for defaults), the lab's clusters'
	port          int
	rows, pgBin   string
	quick         bool
	users         int
	out, update   string
}

// labMarker marks a state directory whose cluster the HA fault run made,
// so that the next run may remove it and nothing else.
const labMarker = "made-by-lab-faults-ha"

// haPollInterval is the lab's apps' tracker poll interval (the router's
// default), which the targets for writes to work again are measured
// against.
const haPollInterval = 100 * time.Millisecond

// labFaultsHA runs the HA fault table on Patroni clusters of its own, one
// at a time, in o.dir.
func (e environment) labFaultsHA(ctx context.Context, o haOptions) error {
	rows, err := lab.ParseHARows(o.rows)
	if err != nil {
		return usagef("lab faults --rows: %v", err)
	}
	if o.port != 0 && (o.port < 1024 || o.port > 65535-21) {
		return usagef("lab faults --port %d: choose 1024–%d (the clusters take P to P+21), or 0 for free ports", o.port, 65535-21)
	}
	base, err := filepath.Abs(filepath.Dir(o.stateDir))
	if err != nil {
		return err
	}
	if o.dir == "" {
		o.dir = filepath.Join(base, "faults-ha")
	}
	if o.out == "" {
		o.out = filepath.Join(base, "lab")
	}
	if err := removeLabCluster(ctx, o.dir); err != nil {
		return err
	}
	if _, _, err := cluster.FindHATools(); err != nil {
		return fmt.Errorf("lab faults --ha: %w", err)
	}
	binDir := o.pgBin
	if binDir == "" {
		if binDir, err = cluster.FindBinDir(cluster.Search{}); err != nil {
			return err
		}
	}
	cfg := lab.HAConfig{Rows: rows, Users: o.users, TTL: cluster.PatroniTTL, PollInterval: haPollInterval,
		Versions: haVersions(ctx, binDir), Progress: e.stderr}
	if o.quick {
		cfg.Phase = 2500 * time.Millisecond
	}
	cfg.Up = func(ctx context.Context, sync bool) (lab.HACluster, func(keep bool) error, error) {
		c, down, err := e.labHACluster(ctx, o, binDir, sync)
		if err != nil {
			return nil, nil, err // not a nil *Cluster in a non-nil interface
		}
		return c, down, nil
	}
	// The app is configured as quest cluster env's lines configure serve:
	// every member's URL, and Patroni's REST APIs, from which its router
	// discovers the members (named as Patroni names them) and the
	// timelines' switch points; it reads each node's role on every poll,
	// so it follows a promotion by itself.
	cfg.StartApp = func(ctx context.Context, hc lab.HACluster) (lab.App, error) {
		c, ok := hc.(*cluster.Cluster)
		if !ok {
			return lab.App{}, fmt.Errorf("not a local cluster: %T", hc)
		}
		return labApp(startInProcess(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(),
			PatroniURLs: c.PatroniURLs(), MaxLag: 2 * time.Second, PollInterval: haPollInterval}, c))
	}
	fmt.Fprintf(e.stderr, "faults-ha: rows %s, %d users, clusters in %s, results into %s\n", strings.Join(rows, ", "), o.users, o.dir, o.out)
	res, err := lab.RunFaultsHA(ctx, cfg)
	if err != nil {
		return err
	}
	return e.publish(res, o.out, o.update, "faults-ha")
}

// labHACluster brings up a new Patroni cluster for the HA fault run,
// migrated, its replicas caught up; down stops it and deletes it, or
// with keep only stops it.
func (e environment) labHACluster(ctx context.Context, o haOptions, binDir string, sync bool) (*cluster.Cluster, func(keep bool) error, error) {
	if err := removeLabCluster(ctx, o.dir); err != nil {
		return nil, nil, err
	}
	c, err := cluster.Up(ctx, cluster.Config{Dir: o.dir, Port: o.port, HA: true, Sync: sync, BinDir: binDir, Log: e.stderr})
	if err != nil {
		return nil, nil, err
	}
	down := func(keep bool) error {
		// Even when the run was interrupted: every process goes.
		dctx := context.WithoutCancel(ctx)
		if !keep {
			return c.Down(dctx, true)
		}
		err := c.Down(dctx, false)
		fmt.Fprintf(e.stderr, "faults-ha: the cluster is stopped; its data and logs stay in %s (quest cluster down --purge --dir %s removes them; so does the next run)\n", o.dir, o.dir)
		return err
	}
	err = os.WriteFile(filepath.Join(c.Dir(), labMarker), []byte("quest lab faults --ha made this cluster and removes it\n"), 0o644)
	if err == nil {
		err = store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard)
	}
	if err == nil {
		// The first reads of a user without a token may go to any replica.
		err = c.WaitCaughtUp(ctx, time.Minute)
	}
	if err != nil {
		return nil, nil, errors.Join(err, down(true))
	}
	return c, down, nil
}

// removeLabCluster stops and deletes the cluster an earlier HA fault run
// left in dir (kept after a failure, or interrupted); a cluster the lab
// did not make there is refused.
func removeLabCluster(ctx context.Context, dir string) error {
	c, err := cluster.Open(dir)
	if errors.Is(err, cluster.ErrNotCluster) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.Dir(), labMarker)); err != nil {
		return fmt.Errorf("%s holds a cluster the lab did not make; choose another --ha-dir (or remove it: quest cluster down --purge --dir %s)", dir, dir)
	}
	return c.Down(context.WithoutCancel(ctx), true)
}

var versionRE = regexp.MustCompile(`\d+\.\d+(\.\d+)?`)

// haVersions names the software the HA run ran on, for the table's
// caption: "PostgreSQL 15.18, Patroni 3.0.2, etcd 3.4.23"; what cannot be
// asked is left out.
func haVersions(ctx context.Context, binDir string) string {
	var out []string
	for _, v := range []struct{ name, bin string }{
		{"PostgreSQL", filepath.Join(binDir, "postgres")}, {"Patroni", "patroni"}, {"etcd", "etcd"},
	} {
		b, err := exec.CommandContext(ctx, v.bin, "--version").Output()
		if m := versionRE.Find(b); err == nil && m != nil {
			out = append(out, v.name+" "+string(m))
		}
	}
	return strings.Join(out, ", ")
}
