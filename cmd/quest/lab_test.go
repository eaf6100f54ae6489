package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"quest/internal/cluster"
	"quest/internal/lab"
	"quest/internal/testcluster"
)

// readResults decodes the JSON file a lab command wrote: a missing file,
// or one that is not the result it should be, fails the test.
func readResults(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("the run wrote no results: %v", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// labCells indexes a lab run's cells by "strategy × lag".
func labCells(res lab.Result) map[string]lab.Cell {
	cells := map[string]lab.Cell{}
	for _, c := range res.Cells {
		cells[c.Strategy+" × "+c.Setting] = c
	}
	return cells
}

// failures adds up a cell's read-your-writes and monotonic failures. A
// cell that is missing or made no check of either kind fails the test:
// its zero failures would pass without saying anything.
func failures(t *testing.T, cells map[string]lab.Cell, key string) (ryw, mono int) {
	t.Helper()
	c, ok := cells[key]
	if !ok {
		t.Fatalf("the run has no %s cell", key)
	}
	if len(c.RYWChecks) == 0 || c.RYWChecks[0] == 0 || c.MonoChecks == 0 {
		t.Fatalf("%s made %v read-your-writes and %d monotonic checks; both kinds are needed", key, c.RYWChecks, c.MonoChecks)
	}
	for _, n := range c.RYWFailures {
		ryw += n
	}
	return ryw, c.MonoFailures
}

// TestLabQuick runs the quick experiment against the package's cluster and
// checks what the results must show: causal never fails a check, random
// does under lag, sticky keeps reads monotonic.
func TestLabQuick(t *testing.T) {
	testcluster.Long(t)
	c := testcluster.Get(t)
	out := t.TempDir()
	began := time.Now()
	_, stderr, err := quest(t, nil, "lab", "run", "--quick", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab run: %v\n%s", err, stderr)
	}
	t.Logf("quick lab run took %s", time.Since(began).Round(time.Second))
	var res lab.Result
	readResults(t, filepath.Join(out, "results.json"), &res)
	cells := labCells(res)
	lags := []string{"none", "replica1 5 s behind, replica2 fresh", "none, closed loop"}
	for _, s := range []string{"primary", "random", "pin-own", "sticky", "timed", "causal"} {
		for _, lag := range lags {
			failures(t, cells, s+" × "+lag)
		}
	}
	if c := cells["causal × none, closed loop"]; !c.ClosedLoop || c.RPS == 0 {
		t.Errorf("the closed-loop cell is not one, or measured no throughput: %+v", c)
	}
	for _, lag := range lags {
		if r, m := failures(t, cells, "causal × "+lag); r != 0 || m != 0 {
			t.Errorf("causal × %s: %d read-your-writes and %d monotonic failures, want none", lag, r, m)
		}
	}
	if r, m := failures(t, cells, "random × "+lags[1]); r == 0 || m == 0 {
		t.Errorf("random under 5 s of lag shows %d read-your-writes and %d monotonic failures; the anomalies should appear", r, m)
	}
	if _, m := failures(t, cells, "sticky × "+lags[1]); m != 0 {
		t.Errorf("sticky went back in time %d times", m)
	}
	for _, f := range []string{"results.md", "results.csv", "chart.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("lab run did not write %s: %v", f, err)
		}
	}
}

// TestLabQuickViaPgpool runs the quick experiment through pgpool-II: its row
// shows read-your-writes failures where causal shows none, and pgpool is
// gone afterwards with its files. Then a short benchmark through it.
func TestLabQuickViaPgpool(t *testing.T) {
	testcluster.Long(t)
	c := testcluster.Get(t)
	if _, err := os.Stat("/usr/sbin/pgpool"); err != nil {
		if _, err := exec.LookPath("pgpool"); err != nil {
			if testcluster.InCI() {
				t.Fatal("pgpool-II is not installed (CI=true, so this fails; .ci/run installs pgpool2)")
			}
			t.Skip("pgpool-II is not installed")
		}
	}
	leftBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "qpgpool*"))
	out := t.TempDir()
	began := time.Now()
	_, stderr, err := quest(t, nil, "lab", "run", "--quick", "--via-pgpool", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab run --via-pgpool: %v\n%s", err, stderr)
	}
	t.Logf("quick pgpool run took %s", time.Since(began).Round(time.Second))
	var res lab.Result
	readResults(t, filepath.Join(out, "results.json"), &res)
	cells := labCells(res)
	lag := "every replica paused"
	// An INSERT, then a SELECT in the same session outside a transaction:
	// pgpool sends the SELECT to a replica that has not replayed it.
	if r, _ := failures(t, cells, "pgpool-II × "+lag); r == 0 {
		t.Errorf("pgpool-II read its own writes with replay paused everywhere: %+v", cells["pgpool-II × "+lag])
	}
	for _, l := range []string{"none", lag} {
		if r, m := failures(t, cells, "causal × "+l); r != 0 || m != 0 {
			t.Errorf("causal × %s failed %d read-your-writes and %d monotonic checks", l, r, m)
		}
	}
	if !slices.ContainsFunc(res.Comments, func(s string) bool { return strings.Contains(s, "delay_threshold = 67108864") }) {
		t.Errorf("the results do not say how pgpool-II was set up: %q", res.Comments)
	}
	pgpoolGone(t, stderr, leftBefore)

	stdout, stderr, err := quest(t, nil, "lab", "bench", "--via-pgpool", "--strategies", "random", "--seconds", "0.2", "--repeat", "1", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab bench --via-pgpool: %v\n%s", err, stderr)
	}
	if !regexp.MustCompile(`(?m)^\| pgpool-II \| \d+ \| .* \| \d+\.\d\d \| \d+\.\d\d–\d+\.\d\d \| – \|$`).MatchString(stdout) {
		t.Errorf("the benchmark has no measured pgpool-II row:\n%s", stdout)
	}
	pgpoolGone(t, stderr, leftBefore)
}

// pgpoolGone checks that the pgpool-II a command started (it says which on
// stderr) is stopped and its files removed.
func pgpoolGone(t *testing.T, stderr string, leftBefore []string) {
	t.Helper()
	leftAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "qpgpool*"))
	if len(leftAfter) > len(leftBefore) {
		t.Errorf("pgpool's files were left behind: %v", leftAfter)
	}
	if pid := regexp.MustCompile(`pgpool-II \(pid (\d+)\)`).FindStringSubmatch(stderr); pid == nil {
		t.Error("the run did not say which pgpool it started")
	} else if n, _ := strconv.Atoi(pid[1]); cluster.Alive(n) {
		t.Errorf("pgpool (pid %d) still runs after the run", n)
	}
}

// TestLabFaultsQuick breaks the package's cluster under load and checks the
// results: no failed request, no anomaly and no lost write in any
// scenario, the sustained load included, where the app's goroutines and
// pool connections must also stay flat.
func TestLabFaultsQuick(t *testing.T) {
	testcluster.Long(t)
	c := testcluster.Get(t)
	out := t.TempDir()
	began := time.Now()
	_, stderr, err := quest(t, nil, "lab", "faults", "--quick", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab faults: %v\n%s", err, stderr)
	}
	t.Logf("quick fault run took %s", time.Since(began).Round(time.Second))
	var res lab.FaultResult
	readResults(t, filepath.Join(out, "faults.json"), &res)
	rows := map[string]lab.FaultRow{}
	for _, r := range res.Rows {
		rows[r.Scenario] = r
	}
	row := func(name string) lab.FaultRow {
		t.Helper()
		r, ok := rows[name]
		if !ok {
			t.Fatalf("the run has no %q row", name)
		}
		return r
	}
	const (
		killed  = "replica1 killed (SIGKILL), restarted"
		paused  = "replica1 paused past the 2 s lag limit"
		loading = "sustained load, 4s"
	)
	for _, name := range []string{killed, "primary stopped (fast), restarted", "primary stopped (immediate), restarted",
		paused, "app restarted, users signed in", "two app instances, users alternating", loading} {
		r := row(name)
		if r.Requests == 0 || r.Acked == 0 {
			t.Errorf("%s: %d requests, %d acknowledged writes checked; the load did not run", name, r.Requests, r.Acked)
		}
		if r.Failed != 0 || r.Anomalies != 0 || r.Lost != 0 {
			t.Errorf("%s: %d failed requests, %d anomalies, %d lost writes; want none (notes: %q)", name, r.Failed, r.Anomalies, r.Lost, r.Notes)
		}
		if strings.HasPrefix(name, "primary") && (r.ReadOnly == 0 || r.WritesResumed <= 0) {
			t.Errorf("%s: %d forms answered 503 while the primary was down, writes resumed after %s; want some, and a time",
				name, r.ReadOnly, r.WritesResumed)
		}
	}
	if r := row(paused); !r.Excluded || !r.TakenBack {
		t.Errorf("the paused replica: excluded past the limit %v, taken back once caught up %v; want both", r.Excluded, r.TakenBack)
	}
	if s := row(killed).PhaseReads; len(s) != 3 || s[0]["replica1"] == 0 || s[1]["replica1"] != 0 || s[2]["replica1"] == 0 ||
		s[1]["primary"]+s[1]["replica2"] == 0 {
		t.Errorf("reads by node before / while replica1 was down / after its restart: %v; want replica1 in some, none, some", s)
	}
	r := row(loading)
	if r.Before == nil || r.After == nil || r.Before.Goroutines == 0 || r.Before.PoolConns == 0 {
		t.Fatalf("the sustained load did not read the app's gauges: before %+v, after %+v", r.Before, r.After)
	}
	t.Logf("sustained load: goroutines %.0f → %.0f, pool connections %.0f → %.0f", r.Before.Goroutines, r.After.Goroutines, r.Before.PoolConns, r.After.PoolConns)
	// Halfway through the load, then after it: a leak grows with the
	// requests (hundreds here); a keep-alive connection more or less, or a
	// pool connection opened for a burst, is noise.
	if r.After.Goroutines > r.Before.Goroutines+10 || r.After.PoolConns > r.Before.PoolConns+2 {
		t.Errorf("under sustained load goroutines went %.0f → %.0f and pool connections %.0f → %.0f; want them flat",
			r.Before.Goroutines, r.After.Goroutines, r.Before.PoolConns, r.After.PoolConns)
	}
}

// TestLabBenchShort runs the interleaved benchmark briefly on the package's
// cluster: every strategy row must have measured queries and a ratio to
// the direct row, in the JSON and in the printed table.
func TestLabBenchShort(t *testing.T) {
	c := testcluster.Get(t)
	out := t.TempDir()
	stdout, stderr, err := quest(t, nil, "lab", "bench", "--seconds", "0.2", "--repeat", "1", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab bench: %v\n%s", err, stderr)
	}
	var res lab.BenchRun
	readResults(t, filepath.Join(out, "bench.json"), &res)
	rows := map[string]lab.BenchRow{}
	for _, r := range res.Rows {
		rows[r.Name] = r
	}
	direct, ok := rows["direct to replica1"]
	if !ok || len(direct.Runs) != len(lab.BenchRows())+1 || direct.QPS == 0 {
		t.Errorf("the direct row ran %d times at %.0f queries/s; want it before, between and after the %d strategy rows",
			len(direct.Runs), direct.QPS, len(lab.BenchRows()))
	}
	for _, name := range lab.BenchRows() {
		r, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("no %q row in %v", name, res.Rows)
		case len(r.Runs) != 1 || r.QPS == 0 || len(r.Ratios) != 1 || r.Median <= 0:
			t.Errorf("%s: %d runs at %.0f queries/s, ratios %v; want one run, measured, with its ratio", name, len(r.Runs), r.QPS, r.Ratios)
		}
		control := `–`
		if want := map[string]string{"random": lab.SpreadRow, "pin-own": lab.SpreadRow, "timed": lab.SpreadRow,
			lab.CausalWrote: lab.PositionRow, lab.CausalNoPosition: lab.PositionRow}[name]; want != "" {
			// Any size: on a loaded machine a 0.2 s control row can stall.
			control = `\d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\)`
			if r.Control != want || len(r.ControlRatios) != 1 || r.ControlMedian <= 0 {
				t.Errorf("%s: control %q with ratios %v; want its ratio to %q", name, r.Control, r.ControlRatios, want)
			}
		}
		if !regexp.MustCompile(`(?m)^\| ` + regexp.QuoteMeta(name) + ` \| \d+ \| [\d.]+ ms \| [\d.]+ ms \| \d+\.\d\d \| \d+\.\d\d–\d+\.\d\d \| ` + control + ` \|$`).MatchString(stdout) {
			t.Errorf("the table has no ratio row for %s:\n%s", name, stdout)
		}
	}
	if !strings.Contains(stdout, "| direct to replica1 | ") {
		t.Errorf("the table has no direct row:\n%s", stdout)
	}
	if !strings.Contains(stderr, "causal (wrote)") || !strings.Contains(stderr, "× direct") {
		t.Errorf("no progress lines on stderr:\n%s", stderr)
	}
}
