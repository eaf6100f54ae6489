package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
)

// clusterFail crashes a member and, when it led, waits for Patroni to
// promote another and says how long that took.
func (e environment) clusterFail(ctx context.Context, c *cluster.Cluster, name string, noWait bool) error {
	n, _ := c.Node(name) // Fail says what is wrong with the name
	failed, err := c.Fail(ctx, name)
	if err != nil {
		return err
	}
	crashed := time.Now()
	if noWait || !n.Leader() {
		return nil
	}
	fmt.Fprintln(e.stdout, "waiting for Patroni to promote a replica (the leader key expires 10s after the last renewal)…")
	leader, err := c.WaitLeader(ctx, failed, time.Minute)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s leads now, %.1fs after the crash; bring %s back with: quest cluster start %s\n", leader, time.Since(crashed).Seconds(), failed, failed)
	return nil
}

// clusterStatus prints each node's process state, what the node says of
// itself, and the leader's pg_stat_replication; for an HA cluster, what
// Patroni says of each member too.
func (e environment) clusterStatus(ctx context.Context, c *cluster.Cluster) error {
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), MaxConns: 2})
	if err != nil {
		return err
	}
	defer r.Close()
	view := r.Inspect()
	if c.HA() {
		return e.clusterHAStatus(ctx, c, view)
	}
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
	e.printReplication(view)
	return nil
}

// clusterHAStatus prints, for each member, what Patroni says of it (role,
// state, timeline, lag) beside what the member says of itself, then etcd
// and the leader's pg_stat_replication.
func (e environment) clusterHAStatus(ctx context.Context, c *cluster.Cluster, view dbrouter.ClusterView) error {
	members, err := c.Members(ctx)
	byName := map[string]cluster.Member{}
	for _, m := range members {
		byName[m.Name] = m
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tROLE\tSTATE\tTL\tLAG (BYTES)\tPORT\tPID\tPATRONI API\tPATRONI PID\tPOSITION\tREPLAY\tAPPLY DELAY")
	for i, p := range c.Processes() {
		m, info := byName[p.Name], view.Nodes[i]
		role, tl, lag, pid, ppid, pos, replay, delay := "-", "-", "-", "-", "-", "-", "-", "-"
		if m.Role != "" {
			role = m.Role
		}
		if m.Timeline > 0 {
			tl = strconv.Itoa(m.Timeline)
		}
		if m.Lag >= 0 {
			lag = strconv.FormatInt(m.Lag, 10)
		}
		if p.Up {
			pid = strconv.Itoa(p.PID)
		}
		if m.PID > 0 {
			ppid = strconv.Itoa(m.PID)
		}
		if info.Reachable {
			pos, delay = info.Position, info.ApplyDelay.String()
			if info.InRecovery {
				replay = info.PauseState
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, role, m.State, tl, lag, p.Port, pid, m.APIURL, ppid, pos, replay, delay)
	}
	tw.Flush()
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		fmt.Fprintf(e.stdout, "(Patroni: %s)\n", first)
	}
	etcd, pid := c.Etcd()
	state := "down"
	if pid > 0 {
		state = "up, pid " + strconv.Itoa(pid)
	}
	fmt.Fprintf(e.stdout, "\netcd %s: %s\n", etcd, state)
	leader := "no member leads"
	if n := c.Nodes()[0]; n.Leader() {
		leader = n.Name
	}
	fmt.Fprintf(e.stdout, "\npg_stat_replication on the leader (%s):\n", leader)
	e.printReplication(view)
	return nil
}

// printReplication prints the leader's pg_stat_replication as the router
// last saw it.
func (e environment) printReplication(view dbrouter.ClusterView) {
	switch {
	case view.ReplErr != "":
		first, _, _ := strings.Cut(view.ReplErr, "\n")
		fmt.Fprintf(e.stdout, "  (not available: %s)\n", first)
	case len(view.Replication) == 0:
		fmt.Fprintln(e.stdout, "  (no follower connected)")
	default:
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "PID\tUSENAME\tAPPLICATION_NAME\tSTATE\tSYNC_STATE\tREPLAY LAG (BYTES)\tREPLAY LAG (S)")
		for _, r := range view.Replication {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%.3f\n", r.PID, r.User, r.AppName, r.State, r.SyncState, r.LagBytes, r.LagSeconds)
		}
		tw.Flush()
	}
}
