package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"quest/internal/cluster"
	"quest/internal/lab"
	"quest/internal/testcluster"
)

// TestLabFaultsHAFlagErrors: a bad lab faults --ha command line says what
// is wrong in one line, before anything starts; none of these needs
// PostgreSQL or Patroni.
func TestLabFaultsHAFlagErrors(t *testing.T) {
	// A directory holding a cluster the lab did not make (a plain one, as
	// cluster.json records it): the lab must not remove it.
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "cluster.json"), []byte(`{"format": 1, "phase": "ready", "nodes": [{"name": "leader", "port": 1, "data_dir": "/nonexistent"}]}`), 0o600)
	empty := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--rows", "crash"}, "lab faults: --rows needs --ha"},
		{[]string{"--port", "56000", "--ha-dir", empty}, "lab faults: --ha-dir and --port need --ha"},
		{[]string{"--ha", "--rows", "rejoin"}, "row rejoin brings back the member that row crash crashed: add crash"},
		{[]string{"--ha", "--rows", "crash,teleport"}, `unknown row "teleport"`},
		{[]string{"--ha", "--port", "80"}, "lab faults --port 80: choose 1024–65514"},
		{[]string{"--ha", "--users", "1"}, "--users 1: choose between 2 and 200"},
		{[]string{"--ha", "now"}, `lab faults takes no arguments, got ["now"]`},
		{[]string{"--ha", "--ha-dir", foreign}, "holds a cluster the lab did not make; choose another --ha-dir"},
	} {
		_, _, err := quest(t, nil, append([]string{"lab", "faults"}, tt.args...)...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lab faults %s: %v, want %q", strings.Join(tt.args, " "), err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("lab faults %s: the error spans lines: %q", strings.Join(tt.args, " "), err)
		}
	}
	if _, err := os.Stat(filepath.Join(foreign, "cluster.json")); err != nil {
		t.Errorf("the foreign cluster was touched: %v", err)
	}

	// Without Patroni and etcd on PATH: ErrNoHATools, in one line.
	t.Setenv("PATH", t.TempDir())
	_, _, err := quest(t, nil, "lab", "faults", "--ha", "--ha-dir", empty)
	if !errors.Is(err, cluster.ErrNoHATools) || strings.Contains(err.Error(), "\n") {
		t.Errorf("lab faults --ha without Patroni: %v; want cluster.ErrNoHATools in one line", err)
	}
}

// TestLabFaultsHAQuick runs one row of the HA fault table for real — the
// leader of a synchronous_mode cluster crashed under load — and checks
// its targets: no read fails, no anomaly, no acknowledged write lost,
// writes refused while there is no leader and back within a second of
// the promotion; and that the lab removes its cluster. The asynchronous
// crash is internal/dbrouter's TestRouterHAFailover; the full table is
// make faults-ha.
func TestLabFaultsHAQuick(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	dir, err := testcluster.NewDir("faults-ha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := cluster.Open(dir); err == nil {
			c.Down(context.Background(), true)
		}
		os.RemoveAll(dir)
	})
	out := t.TempDir()
	began := time.Now()
	_, stderr, err := quest(t, map[string]string{"QUEST_PG_BIN": os.Getenv("QUEST_PG_BIN")},
		"lab", "faults", "--ha", "--quick", "--rows", "crash-sync", "--ha-dir", dir, "--out", out)
	if err != nil {
		t.Fatalf("lab faults --ha: %v\n%s", err, stderr)
	}
	t.Logf("quick HA fault run (crash-sync) took %s", time.Since(began).Round(time.Second))
	var res lab.HAResult
	readResults(t, filepath.Join(out, "faults-ha.json"), &res)
	if len(res.Rows) != 1 || res.Rows[0].Key != lab.RowCrashSync || !res.Rows[0].Sync {
		t.Fatalf("rows %+v, want the one crash-sync row", res.Rows)
	}
	r := res.Rows[0]
	t.Logf("%s: %s promoted after %s, writes back after %s (%s after the promotion), writes p50 %s / p99 %s, %d of %d writes lost",
		r.Scenario, r.NewLeader, r.Promoted, r.WritesBack, r.AfterPromotion(), r.WriteP50, r.WriteP99, r.Lost, r.Acked)
	if r.Requests == 0 || r.Acked == 0 || r.Writes == 0 {
		t.Errorf("%d requests, %d acknowledged writes, %d timed before the crash; the load did not run", r.Requests, r.Acked, r.Writes)
	}
	if r.Member == "" || r.NewLeader == "" || r.Member == r.NewLeader {
		t.Errorf("crashed %q, new leader %q: no failover", r.Member, r.NewLeader)
	}
	if r.ReadOnly == 0 {
		t.Error("no form was answered read-only while there was no leader")
	}
	if r.FailedReads != 0 || r.FailedWrites != 0 || r.Anomalies != 0 || r.Lost != 0 {
		t.Errorf("%d failed reads, %d failed writes, %d anomalies, %d acknowledged writes lost; want none (notes: %q)",
			r.FailedReads, r.FailedWrites, r.Anomalies, r.Lost, r.Notes)
	}
	if r.Promoted <= 0 || r.Promoted > 2*res.TTL || r.WritesBack <= 0 {
		t.Errorf("promoted after %s, writes back after %s; want a promotion within twice Patroni's ttl, and writes back", r.Promoted, r.WritesBack)
	}
	// Two poll intervals and the probe's request take about 50 ms alone;
	// three seconds leave room for -race and make test's parallel packages
	// on two cores. Writes that came back only by a restart or a pool's
	// reconnect backoff would still miss it.
	if r.AfterPromotion() > 3*time.Second {
		t.Errorf("writes worked again %s after the promotion; want within three seconds", r.AfterPromotion())
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lab left its cluster in %s: %v", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "faults-ha.md")); err != nil || !strings.Contains(string(b), "| leader crashed, synchronous_mode |") {
		t.Errorf("faults-ha.md lacks the row: %v\n%s", err, b)
	}
}
