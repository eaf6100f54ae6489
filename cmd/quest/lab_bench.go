package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"time"

	"quest/internal/lab"
)

// labBench runs the interleaved query-level benchmark on the local cluster
// and prints its table.
func (e environment) labBench(ctx context.Context, args []string) error {
	fs := e.newFlags("lab bench", "lab bench [--seconds S] [--clients N] [--repeat R] [--strategies LIST] [--via-pgpool] [--dir D] [--out DIR] [--update FILE] [--cpuprofile FILE]")
	var qc config
	e.addFlags(fs, &qc, dirFlag) // the local cluster to read from
	seconds := fs.Float64("seconds", 3, "how long each row runs, after a warm-up of a quarter of it (at most 0.5 s)")
	clients := fs.Int("clients", 8, "concurrent clients on every side, and the size of each pool")
	repeat := fs.Int("repeat", 3, "repetitions of the interleaved sequence; each strategy's ratio is the median over them")
	strategies := fs.String("strategies", "", "comma-separated rows to run: primary, random, pin-own, sticky, timed, causal (both causal rows),\n\""+lab.CausalWrote+"\", \""+lab.CausalNoPosition+"\", and the controls without a router:\n\""+lab.SpreadRow+"\" (each read on a random replica through plain pools) and\n\""+lab.PositionRow+"\" (each client on one replica, the read and causal's\nreplay position check in one batch) (default all, in that order)")
	viaPgpool := fs.Bool("via-pgpool", false, "also start pgpool-II in front of the cluster and measure the read through it (a pgpool-II row)")
	out := fs.String("out", "", "directory for bench.md and bench.json (default .quest/lab beside the state dir)")
	update := fs.String("update", "", "also replace the marked section of this Markdown file with the table: <!-- bench:begin --> … <!-- bench:end -->")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (this process: the router and the clients) to this file, for go tool pprof")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("lab bench takes no arguments, got %q", pos)
	}
	switch {
	case math.IsNaN(*seconds) || *seconds < 0.05 || *seconds > 600:
		return usagef("--seconds %g: choose between 0.05 and 600", *seconds)
	case *clients < 1 || *clients > 200:
		return usagef("--clients %d: choose between 1 and 200", *clients)
	case *repeat < 1 || *repeat > 100:
		return usagef("--repeat %d: choose between 1 and 100", *repeat)
	}
	cfg := lab.BenchConfig{Clients: *clients, Repeat: *repeat, ViaPgpool: *viaPgpool, Progress: e.stderr,
		Time: time.Duration(*seconds * float64(time.Second))}
	if *strategies != "" {
		if cfg.Rows, err = lab.ParseBenchRows(*strategies); err != nil {
			return usagef("--strategies: %v", err)
		}
	}
	if cfg.Cluster, err = labCluster(qc.StateDir, out); err != nil {
		return err
	}
	if err := migrateLeader(ctx, cfg.Cluster); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := lab.Bench(ctx, cfg)
	if err != nil {
		return err
	}
	return e.publish(res, *out, *update, "bench")
}
