package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

const clusterUsage = `usage: quest cluster <action> [flags]

actions:
  up       [--replicas N] [--port P] [--user U]   start (or reuse) the leader and N followers
  down     [--purge]                              stop every server; --purge also deletes the data
  status                                          nodes, roles, replay state and pg_stat_replication
  env                                             DATABASE_URL and REPLICA_URLS lines for a shell
  pause    NODE                                   pause WAL replay on a replica
  resume   NODE                                   resume WAL replay on a replica
  delay    NODE DURATION                          set a replica's apply delay (0 removes it)
  stop     NODE [--immediate]                     stop one node (fast, or immediate as in a crash)
  start    NODE                                   start a stopped node
  kill     NODE                                   SIGKILL a node's postmaster
  sweep    DIR                                    stop and purge every cluster under DIR (test clean-up)

Every action takes --dir D, the state directory (default .quest/cluster at the
repository root, or $QUEST_DIR). Flags may come before or after NODE.
`

func (e environment) cluster(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(e.stderr, clusterUsage)
		if len(args) == 0 {
			return errUsageShown
		}
		return nil
	}
	action := args[0]
	fs := e.newFlags("cluster "+action, "cluster "+action+" [flags]")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag)
	dir := &cfg.StateDir
	replicas := fs.Int("replicas", 2, "number of followers (up)")
	port := fs.Int("port", cluster.DefaultPort, "leader's port, followers on the next ones; 0 picks free ports (up)")
	user := fs.String("user", "", "OS user for the servers when run as root (up; default postgres, else one is created)")
	purge := fs.Bool("purge", false, "also delete the state and data directories (down)")
	immediate := fs.Bool("immediate", false, "immediate shutdown, as in a crash (stop)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	want := map[string]int{"up": 0, "down": 0, "status": 0, "env": 0, "pause": 1, "resume": 1,
		"delay": 2, "stop": 1, "start": 1, "kill": 1, "sweep": 1}
	n, ok := want[action]
	if !ok {
		return fmt.Errorf("unknown cluster action %q; run quest cluster help", action)
	}
	if len(pos) != n {
		return fmt.Errorf("cluster %s takes %d argument(s), got %d (%s); see: quest cluster help", action, n, len(pos), strings.Join(pos, " "))
	}

	switch action {
	case "up":
		return e.clusterUp(ctx, cluster.Config{Dir: *dir, Replicas: *replicas, Port: *port, User: *user, Log: e.stdout})
	case "sweep":
		count, err := cluster.Sweep(ctx, pos[0])
		if count > 0 {
			fmt.Fprintf(e.stdout, "swept %d leftover cluster(s) under %s\n", count, pos[0])
		}
		return err
	}

	c, err := cluster.Open(*dir)
	if err != nil {
		if action == "down" && errors.Is(err, cluster.ErrNotCluster) {
			fmt.Fprintf(e.stdout, "no cluster in %s; nothing to stop\n", *dir)
			return nil
		}
		return err
	}
	c.SetLog(e.stdout)
	switch action {
	case "down":
		return c.Down(ctx, *purge)
	case "status":
		return e.clusterStatus(ctx, c)
	case "env":
		fmt.Fprintf(e.stdout, "DATABASE_URL='%s'\n", c.PrimaryURL())
		fmt.Fprintf(e.stdout, "REPLICA_URLS='%s'\n", strings.Join(c.ReplicaURLs(), ","))
		return nil
	case "pause":
		return e.done(c.Pause(ctx, pos[0]), "replay paused on %s", pos[0])
	case "resume":
		return e.done(c.Resume(ctx, pos[0]), "replay resumed on %s", pos[0])
	case "delay":
		d, err := time.ParseDuration(pos[1])
		if err != nil {
			return fmt.Errorf("invalid duration %q: use e.g. 200ms, 1.5s or 0", pos[1])
		}
		return e.done(c.SetDelay(ctx, pos[0], d), "apply delay of %s is now %s", pos[0], d)
	case "stop":
		return e.done(c.Stop(ctx, pos[0], *immediate), "%s stopped", pos[0])
	case "start":
		return e.done(c.Start(ctx, pos[0]), "%s running", pos[0])
	case "kill":
		return e.done(c.Kill(ctx, pos[0]), "%s killed", pos[0])
	}
	return nil
}

func (e environment) clusterUp(ctx context.Context, cfg cluster.Config) error {
	c, err := cluster.Up(ctx, cfg)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(cfg.Dir)
	nodes := c.Nodes()
	if len(nodes)-1 != cfg.Replicas || (cfg.Port != 0 && nodes[0].Port != cfg.Port) {
		fmt.Fprintf(e.stdout, "note: the existing cluster keeps its %d replicas and leader port %d; to change them: quest cluster down --purge --dir %s\n",
			len(nodes)-1, nodes[0].Port, abs)
	}
	for _, n := range nodes {
		fmt.Fprintf(e.stdout, "  %-9s 127.0.0.1:%d\n", n.Name, n.Port)
	}
	return nil
}

// done prints a confirmation when err is nil.
func (e environment) done(err error, format string, args ...any) error {
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, format+"\n", args...)
	return nil
}

// clusterStatus prints each node's process state, what the node says of
// itself, and the leader's pg_stat_replication.
func (e environment) clusterStatus(ctx context.Context, c *cluster.Cluster) error {
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxConns: 2})
	if err != nil {
		return err
	}
	defer r.Close()
	view := r.Inspect()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPORT\tPID\tSTATE\tROLE\tPOSITION\tREPLAY\tAPPLY DELAY")
	for i, p := range c.Processes() {
		info := view.Nodes[i]
		state, pid, pos, replay, delay := "down", "-", "-", "-", "-"
		if p.Up {
			state, pid = "up", strconv.Itoa(p.PID)
		}
		if info.Reachable {
			pos, delay = info.Position, info.ApplyDelay.String()
			if info.InRecovery {
				replay = info.PauseState
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Port, pid, state, info.Role(), pos, replay, delay)
	}
	tw.Flush()
	fmt.Fprintln(e.stdout, "\npg_stat_replication on the leader:")
	switch {
	case view.ReplErr != "":
		first, _, _ := strings.Cut(view.ReplErr, "\n")
		fmt.Fprintf(e.stdout, "  (not available: %s)\n", first)
	case len(view.Replication) == 0:
		fmt.Fprintln(e.stdout, "  (no follower connected)")
	default:
		tw = tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PID\tUSENAME\tAPPLICATION_NAME\tSTATE\tSYNC_STATE\tREPLAY LAG (BYTES)\tREPLAY LAG (S)")
		for _, r := range view.Replication {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%.3f\n", r.PID, r.User, r.AppName, r.State, r.SyncState, r.LagBytes, r.LagSeconds)
		}
		tw.Flush()
	}
	return nil
}
