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
)

// clusterAction is one action of quest cluster: what it takes and what it
// does, for the usage text, the flags it registers and the errors that
// name what is missing.
type clusterAction struct {
	name  string
	args  []string // positional: NODE, REPLICA (a node in recovery), DURATION or DIR
	flags string   // the action's own flags, for the usage line
	what  string
}

var clusterActions = []clusterAction{
	{"up", nil, "[--ha [--sync]] [--replicas N] [--port P] [--user U] [--pg-bin D]", "start (or reuse) the leader and N followers; --ha: a Patroni cluster"},
	{"down", nil, "[--purge]", "stop every server; --purge also deletes the data"},
	{"status", nil, "", "nodes, roles, replay state and pg_stat_replication"},
	{"env", nil, "", "DATABASE_URL and REPLICA_URLS lines for a shell (HA: and QUEST_PATRONI_URL)"},
	{"pause", []string{"REPLICA"}, "", "pause WAL replay on a replica"},
	{"resume", []string{"REPLICA"}, "", "resume WAL replay on a replica"},
	{"delay", []string{"REPLICA", "DURATION"}, "", "set a replica's apply delay: 5s or 5000ms; 0 removes it"},
	{"stop", []string{"NODE"}, "[--immediate]", "stop one node (fast, or immediate as in a crash)"},
	{"start", []string{"NODE"}, "", "start a stopped node (HA: its Patroni; a failed member rejoins as a replica)"},
	{"kill", []string{"NODE"}, "", "SIGKILL a node's postmaster"},
	{"switchover", nil, "[--to MEMBER]", "HA: hand the leader's role to a replica, planned (Patroni's REST API)"},
	{"fail", []string{"NODE"}, "[--no-wait]", "HA: crash a member (leader, or its name): SIGKILL its Patroni and PostgreSQL"},
	{"sweep", []string{"DIR"}, "", "stop and purge every cluster under DIR (test clean-up)"},
	{"init-node", nil, "--role leader|follower [--name N] [--leader H:P] [--data D]", "set up one node in place, as the docker-compose images do (docs/docker.md)"},
}

// rest is what the action takes: its arguments and its own flags.
func (a clusterAction) rest() string {
	return strings.TrimSpace(strings.Join(append(append([]string(nil), a.args...), a.flags), " "))
}

// line is the action's synopsis after "quest cluster".
func (a clusterAction) line() string { return strings.TrimSpace(a.name + " " + a.rest()) }

// clusterUsage is quest cluster's usage text, made from clusterActions.
func clusterUsage() string {
	var b strings.Builder
	b.WriteString("usage: quest cluster <action> [flags]\n\nactions:\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, a := range clusterActions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", a.name, a.rest(), a.what)
	}
	tw.Flush()
	b.WriteString(`
Every action but sweep and init-node takes --dir D, the state directory
(default .quest/cluster at the repository root, or $QUEST_DIR). Nodes are
leader (or primary), replica1, replica2, …; a REPLICA is one of the
replicas.
In an HA cluster (up --ha: etcd and Patroni) they are node1, node2, …,
leader names the member that leads now, and the replicas are the others.
Flags may come before or after the arguments. Run "quest cluster ACTION -h"
for an action's flags.
`)
	return b.String()
}

func (e environment) cluster(ctx context.Context, args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) == 0 {
			fmt.Fprint(e.stderr, clusterUsage())
			return errUsageShown
		}
		fmt.Fprint(e.stdout, clusterUsage())
		return nil
	}
	var a clusterAction
	for _, ca := range clusterActions {
		if ca.name == args[0] {
			a = ca
		}
	}
	if a.name == "" {
		return usagef("unknown cluster action %q; run quest cluster help", args[0])
	}
	if a.name == "init-node" {
		return e.clusterInitNode(ctx, a, args[1:])
	}
	fs := e.newFlags("cluster "+a.name, "cluster "+a.line()+"\n\n"+a.what)
	var cfg config
	if a.name == "up" {
		e.addFlags(fs, &cfg, dirFlag|pgBinFlag)
	} else if a.name != "sweep" {
		e.addFlags(fs, &cfg, dirFlag)
	}
	dir := &cfg.StateDir
	var (
		replicas, port   int
		user, to         string
		purge, immediate bool
		ha, sync, noWait bool
	)
	switch a.name {
	case "up":
		fs.BoolVar(&ha, "ha", false, "a Patroni cluster: etcd and 1+N PostgreSQL members (node1, …) run by Patroni,\nwith failover, switchover and rewind (docs/ha.md)")
		fs.BoolVar(&sync, "sync", false, "with --ha: Patroni's synchronous_mode (a commit waits for one replica)")
		fs.IntVar(&replicas, "replicas", 2, "number of followers")
		fs.IntVar(&port, "port", cluster.DefaultPort, "the leader's port; the followers take the next ones; 0 picks free ports.\nWith --ha: node1's, the other members the next ones, Patroni's REST APIs from P+10, etcd on P+20 and P+21.\nA cluster that exists keeps its ports (quest cluster down --purge first to change them)")
		fs.StringVar(&user, "user", "", "OS user for the servers when run as root (default postgres, else a quest-pg user is created)")
	case "down":
		fs.BoolVar(&purge, "purge", false, "also delete the state and data directories")
	case "stop":
		fs.BoolVar(&immediate, "immediate", false, "immediate shutdown, as in a crash")
	case "switchover":
		fs.StringVar(&to, "to", "", "the member to lead (default: the synchronous standby, else the replica least behind)")
	case "fail":
		fs.BoolVar(&noWait, "no-wait", false, "return at once instead of waiting for Patroni to promote a replica")
	}
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) < len(a.args) {
		return e.missing(a, pos, *dir)
	}
	if len(pos) > len(a.args) {
		return usagef("cluster %s takes %d argument(s), got %d (%s); see quest cluster %s --help", a.name, len(a.args), len(pos), strings.Join(pos, " "), a.name)
	}

	switch a.name {
	case "up":
		if sync && !ha {
			return usagef("cluster up: --sync is Patroni's synchronous_mode and needs --ha")
		}
		if err := e.resolve(&cfg); err != nil {
			return err
		}
		return e.clusterUp(ctx, cluster.Config{Dir: *dir, Replicas: replicas, Port: port, User: user, BinDir: cfg.PGBin, Log: e.stdout, HA: ha, Sync: sync})
	case "sweep":
		count, err := cluster.Sweep(ctx, pos[0])
		if count > 0 {
			fmt.Fprintf(e.stdout, "swept %d leftover cluster(s) under %s\n", count, pos[0])
		}
		return err
	}
	var delay time.Duration
	if a.name == "delay" {
		if delay, err = parseDelay(pos[1]); err != nil {
			return err
		}
	}

	c, err := cluster.Open(*dir)
	if err != nil {
		if a.name == "down" && errors.Is(err, cluster.ErrNotCluster) {
			fmt.Fprintf(e.stdout, "no cluster in %s; nothing to stop\n", *dir)
			return nil
		}
		return err
	}
	c.SetLog(e.stdout)
	switch a.name {
	case "down":
		return c.Down(ctx, purge)
	case "status":
		return e.clusterStatus(ctx, c)
	case "env":
		fmt.Fprintf(e.stdout, "DATABASE_URL='%s'\n", c.PrimaryURL())
		fmt.Fprintf(e.stdout, "REPLICA_URLS='%s'\n", strings.Join(c.ReplicaURLs(), ","))
		if c.HA() {
			fmt.Fprintf(e.stdout, "QUEST_PATRONI_URL='%s'\n", strings.Join(c.PatroniURLs(), ","))
		}
		return nil
	case "pause":
		return e.done(c.Pause(ctx, pos[0]), "replay paused on %s", pos[0])
	case "resume":
		return e.done(c.Resume(ctx, pos[0]), "replay resumed on %s", pos[0])
	case "delay":
		return e.done(c.SetDelay(ctx, pos[0], delay), "apply delay of %s is now %s", pos[0], delay)
	case "stop":
		return e.done(c.Stop(ctx, pos[0], immediate), "%s stopped", pos[0])
	case "start":
		return e.done(c.Start(ctx, pos[0]), "%s running", pos[0])
	case "kill":
		return e.done(c.Kill(ctx, pos[0]), "%s killed", pos[0])
	case "switchover":
		_, _, err := c.Switchover(ctx, to)
		return err
	case "fail":
		return e.clusterFail(ctx, c, pos[0], noWait)
	}
	return nil
}

// missing is the usage error of an action given too few arguments: it
// names what is missing and, for a node, the names the cluster in dir
// has (a generic hint when there is none).
func (e environment) missing(a clusterAction, got []string, dir string) error {
	var msg string
	switch need := a.args[len(got):]; need[0] {
	case "DIR":
		msg = "sweep needs a directory: the one whose subdirectories hold the clusters to remove, e.g. quest cluster sweep .quest/test"
	case "DURATION":
		msg = fmt.Sprintf("delay needs a duration after %s: e.g. 5s or 5000ms, 0 removes the delay", got[0])
	default: // NODE or REPLICA
		names := nodeNames(dir, need[0] == "REPLICA")
		if len(need) > 1 {
			msg = fmt.Sprintf("%s needs a node and a duration%s, then e.g. 5s or 5000ms", a.name, names)
		} else {
			msg = fmt.Sprintf("%s needs a node%s", a.name, names)
		}
	}
	return usagef("%s", msg)
}

// nodeNames lists the nodes of the cluster in dir (": replica1 or
// replica2"), only the replicas when asked, or gives a generic hint when
// there is no cluster there.
func nodeNames(dir string, replicasOnly bool) string {
	c, err := cluster.Open(dir)
	if err != nil {
		if replicasOnly {
			return ", such as replica1"
		}
		return ", such as leader or replica1"
	}
	var names []string
	for _, n := range c.Nodes() {
		if !replicasOnly || !n.Leader() {
			names = append(names, n.Name)
		}
	}
	if len(names) == 1 {
		return ": " + names[0]
	}
	return ": " + strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// parseDelay reads an apply delay as Go writes durations: 5s, 5000ms,
// 1.5s, 0. A bare number other than 0 is refused rather than guessed at:
// PostgreSQL reads recovery_min_apply_delay = 5000 as milliseconds, a
// person typing 5 often means seconds.
func parseDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, numErr := strconv.ParseFloat(s, 64); numErr == nil {
		return 0, usagef("invalid duration %q: a number needs its unit, e.g. %sms or %ss", s, s, s)
	}
	return 0, usagef("invalid duration %q: use e.g. 5s, 5000ms, 1.5s or 0 (units: ms, s, m)", s)
}

func (e environment) clusterUp(ctx context.Context, cfg cluster.Config) error {
	c, err := cluster.Up(ctx, cfg)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(cfg.Dir)
	nodes := c.Nodes()
	// The port --port names: the leader's, or an HA cluster's node1's
	// (whoever leads now).
	first, base := "leader", nodes[0].Port
	if c.HA() {
		first = cluster.MemberName(1)
		if n, err := c.Node(first); err == nil {
			base = n.Port
		}
	}
	if c.HA() && !cfg.HA {
		fmt.Fprintf(e.stdout, "note: the cluster in %s is an HA cluster (Patroni) and stays one\n", abs)
	}
	if len(nodes)-1 != cfg.Replicas || (cfg.Port != 0 && base != cfg.Port) {
		purge := "quest cluster down --purge --dir " + abs
		if def, _ := filepath.Abs(e.defaultStateDir()); def == abs {
			purge = "make purge, or quest cluster down --purge" // make purge works on the default dir
		}
		fmt.Fprintf(e.stdout, "note: the cluster in %s already exists and keeps its %d replicas and its ports (%s %d); to change them, delete it first: %s\n",
			abs, len(nodes)-1, first, base, purge)
	}
	if !c.HA() {
		for _, n := range nodes {
			fmt.Fprintf(e.stdout, "  %-9s 127.0.0.1:%d\n", n.Name, n.Port)
		}
		return nil
	}
	api := c.PatroniURLs()
	for _, n := range c.Nodes() {
		role := "replica"
		if n.Leader() {
			role = "leader"
		}
		fmt.Fprintf(e.stdout, "  %-6s %-8s 127.0.0.1:%d\n", n.Name, role, n.Port)
	}
	etcd, _ := c.Etcd()
	fmt.Fprintf(e.stdout, "  Patroni REST APIs %s; etcd %s\n", strings.Join(api, ", "), etcd)
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
