package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"quest/internal/cluster"
	"quest/internal/testcluster"
)

// TestCLIHA drives one Patroni cluster through quest cluster as a person
// would: up --ha, env, status, dbshell, the refusals on the leader, a
// switchover after which env names the new leader, and down, which leaves
// no process behind. internal/cluster's TestHA covers the crash and the
// return of a member; this one checks the command line's side.
func TestCLIHA(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	dir, err := testcluster.NewDir("ha")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	t.Cleanup(func() {
		if c, err := cluster.Open(dir); err == nil {
			c.Down(context.Background(), true)
		}
		for _, pid := range pids {
			if cluster.Alive(pid) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	env := map[string]string{"QUEST_DIR": dir}
	out, _, err := quest(t, env, "cluster", "up", "--ha", "--port", "0")
	if err != nil {
		t.Fatalf("cluster up --ha: %v\n%s", err, out)
	}
	if !strings.Contains(out, "HA cluster up in") || !strings.Contains(out, "Patroni REST APIs http://127.0.0.1:") {
		t.Errorf("cluster up --ha printed:\n%s", out)
	}
	c, err := cluster.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ms, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		pids = append(pids, m.PID)
	}
	for _, p := range c.Processes() {
		pids = append(pids, p.PID)
	}
	_, etcd := c.Etcd()
	pids = append(pids, etcd)
	leader, replicas := c.Nodes()[0].Name, []string{c.Nodes()[1].Name, c.Nodes()[2].Name}

	// env: the current roles, each replica named, and every Patroni API.
	out, _, err = quest(t, env, "cluster", "env")
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", `eval "$(cat)"; printf '%s\n%s\n%s' "$DATABASE_URL" "$REPLICA_URLS" "$QUEST_PATRONI_URL"`)
	sh.Stdin = strings.NewReader(out)
	got, err := sh.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := c.PrimaryURL() + "\n" + strings.Join(c.ReplicaURLs(), ",") + "\n" + strings.Join(c.PatroniURLs(), ",")
	if string(got) != want {
		t.Fatalf("after eval of env:\n%s\nwant\n%s", got, want)
	}
	for _, r := range replicas {
		if !strings.Contains(out, "application_name="+r) {
			t.Errorf("env names no replica %s:\n%s", r, out)
		}
	}
	if n := len(c.PatroniURLs()); n != 3 {
		t.Errorf("%d Patroni URLs, want 3", n)
	}

	// status: Patroni's view of each member beside what each says of itself.
	// Right after up, Patroni may still restart a replica to apply its
	// settings, so its walsender row can be missing for a moment: status is
	// asked again, for up to 15 s, until every line is there.
	wantStatus := []string{
		`(?m)^` + leader + `\s+leader\s+running\s+1\s+-\s+\d+\s+\d+\s+http://127\.0\.0\.1:\d+\s+\d+\s+\S+\s+-\s+0s$`,
		`(?m)^` + replicas[0] + `\s+replica\s+running\s+1\s+\d+\s+.*not paused\s+0s$`,
		`(?m)^` + replicas[1] + `\s+replica\s+running\s+1\s+\d+\s+.*not paused\s+0s$`,
		`(?m)^etcd http://127\.0\.0\.1:\d+: up, pid \d+$`,
		`(?m)^\d+\s+quest_replicator\s+` + replicas[0] + `\s+streaming\s+async`,
		`(?m)^\d+\s+quest_replicator\s+` + replicas[1] + `\s+streaming\s+async`,
	}
	var lacking []string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		out, _, err = quest(t, env, "cluster", "status")
		if err != nil {
			t.Fatal(err)
		}
		lacking = lacking[:0]
		for _, re := range wantStatus {
			if !regexp.MustCompile(re).MatchString(out) {
				lacking = append(lacking, re)
			}
		}
		if len(lacking) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, re := range lacking {
		t.Errorf("status output lacks %s:\n%s", re, out)
	}

	// dbshell reaches a member by its name; the leader is the primary.
	out, _, err = quest(t, env, "dbshell", "--database", replicas[0], "--", "-Atc", "SELECT pg_is_in_recovery()")
	if err != nil || strings.TrimSpace(out) != "t" {
		t.Errorf("dbshell --database %s: %q, %v", replicas[0], out, err)
	}
	out, _, err = quest(t, env, "dbshell", "--", "-Atc", "SELECT pg_is_in_recovery(), current_setting('port')")
	if want := "f|" + strconv.Itoa(c.Nodes()[0].Port); err != nil || strings.TrimSpace(out) != want {
		t.Errorf("dbshell: %q (want %q), %v", out, want, err)
	}

	// The levers refuse the leader, and name the replicas when one is missing.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "pause", "leader"}, "cannot pause replay on the leader"},
		{[]string{"cluster", "delay", leader, "1s"}, "cannot set the apply delay of the leader"},
		{[]string{"cluster", "pause"}, "pause needs a node: " + replicas[0] + " or " + replicas[1]},
		{[]string{"cluster", "fail"}, "fail needs a node: "},
		{[]string{"cluster", "switchover", "--to", leader}, leader + " leads already"},
		{[]string{"cluster", "up", "--sync"}, "--sync is Patroni's synchronous_mode and needs --ha"},
	} {
		if _, _, err := quest(t, env, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("quest %s: %v, want %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}

	// A planned switchover; env then names the new leader.
	out, _, err = quest(t, env, "cluster", "switchover", "--to", replicas[1])
	if err != nil || !strings.Contains(out, "switchover from "+leader+" to "+replicas[1]+" done in") {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	out, _, err = quest(t, env, "cluster", "env")
	n, _ := c.Node(replicas[1])
	if err != nil || !strings.Contains(out, "DATABASE_URL='"+c.URL(n)+"'") || !strings.Contains(out, "application_name="+leader) {
		t.Errorf("env after the switchover to %s:\n%s", replicas[1], out)
	}

	// down stops every process it started; a second down has nothing to do.
	ms, _ = c.Members(ctx)
	for _, m := range ms {
		pids = append(pids, m.PID)
	}
	for _, p := range c.Processes() {
		pids = append(pids, p.PID)
	}
	if _, _, err := quest(t, env, "cluster", "down", "--purge"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second) // a reaped child may show a moment longer
	for _, pid := range pids {
		for pid > 0 && cluster.Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if pid > 0 && cluster.Alive(pid) {
			t.Errorf("pid %d still runs after down", pid)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("down --purge left %s", dir)
	}
	if out, _, err := quest(t, env, "cluster", "down"); err != nil || !strings.Contains(out, "nothing to stop") {
		t.Errorf("second down: %v, %q", err, out)
	}
}

// TestCLIHAVerbsNeedHA: fail and switchover on a plain cluster say what
// they need.
func TestCLIHAVerbsNeedHA(t *testing.T) {
	c := testcluster.Get(t)
	for _, args := range [][]string{{"cluster", "fail", "leader"}, {"cluster", "switchover"}} {
		_, _, err := quest(t, nil, append(args, "--dir", c.Dir())...)
		if err == nil || !strings.Contains(err.Error(), "up --ha") {
			t.Errorf("quest %s on a plain cluster: %v, want a refusal naming up --ha", strings.Join(args, " "), err)
		}
	}
}
