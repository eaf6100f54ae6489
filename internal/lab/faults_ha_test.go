package lab

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseHARows(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{"", HARows(), ""},
		{"switchover, crash", []string{RowCrash, RowSwitchover}, ""},
		{"crash-sync,crash-sync", []string{RowCrashSync}, ""},
		{"rejoin,crash", []string{RowCrash, RowRejoin}, ""},
		{"rejoin", nil, "row rejoin brings back the member that row crash crashed: add crash"},
		{"crash,failover", nil, `unknown row "failover"; choose from crash, rejoin, switchover, hang, agent, split-brain, crash-sync`},
		{"crash,", nil, `unknown row ""`},
	} {
		got, err := ParseHARows(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHARows(%q) = %v, %v; want an error saying %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseHARows(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// haRows is a made-up HA run: an asynchronous crash that lost two writes
// and whose writes came back just past the ttl, the member brought back,
// a switchover that never refused a write, and a crash under
// synchronous_mode.
func haRows() []HARow {
	s := time.Second
	return []HARow{
		{Key: RowCrash, Scenario: "leader crashed, asynchronous replication", Requests: 3000, ReadOnly: 600, Stale: 40, LostPages: 3, LostForms: 1,
			LostMisses: 2, Acked: 700, Lost: 2, P50: 2 * time.Millisecond, P99: 20 * time.Millisecond,
			Writes: 300, WriteP50: 2400 * time.Microsecond, WriteP99: 19 * time.Millisecond,
			Member: "node1", NewLeader: "node2", Promoted: 10250 * time.Millisecond, WritesBack: 10300 * time.Millisecond, Refused: 10 * s,
			PhaseReads: []map[string]int{{"node2": 10, "node3": 10}, {"primary": 5, "node3": 15}}, Notes: []string{"node1 crashed"}},
		{Key: RowRejoin, Scenario: "crashed member brought back", Requests: 2000, Acked: 900, Writes: 280,
			WriteP50: 2 * time.Millisecond, WriteP99: 15 * time.Millisecond, Member: "node1", Rejoined: 3 * s, ReadsAgain: 3200 * time.Millisecond,
			PhaseReads: []map[string]int{{"node3": 20}, {"127.0.0.1:5432/quest": 8, "node3": 12}},
			Names:      map[string]string{"node1": "127.0.0.1:5432/quest"}},
		{Key: RowSwitchover, Scenario: "planned switchover, asynchronous replication", Requests: 1500, FailedReads: 1, Acked: 500,
			Member: "node2", NewLeader: "node1", Switchover: 5 * s, PhaseReads: []map[string]int{{}, {}}},
		{Key: RowCrashSync, Sync: true, Scenario: "leader crashed, synchronous_mode", Requests: 2900, ReadOnly: 590, Acked: 650,
			Writes: 250, WriteP50: 4600 * time.Microsecond, WriteP99: 40 * time.Millisecond,
			Member: "node3", NewLeader: "node1", Promoted: 9900 * time.Millisecond, WritesBack: 9850 * time.Millisecond, Refused: 9800 * time.Millisecond,
			PhaseReads: []map[string]int{{"node1": 1}, {"primary": 1}}},
	}
}

func TestHATargets(t *testing.T) {
	got := map[string]Target{}
	for _, tg := range targets(haRows(), 10*time.Second, 100*time.Millisecond) {
		got[tg.What] = tg
	}
	for _, tc := range []struct {
		what     string
		held     bool
		measured string
	}{
		{"no read fails", false, `1 in "planned switchover, asynchronous replication"`},
		{"no anomaly (a read short of a change the page said may have been lost is not one)", true, "0 in every row"},
		{"leader crashed, asynchronous replication: writes work again within Patroni's ttl + 2 poll intervals (10.2 s) of the crash", false,
			"10.3 s (Patroni's promotion alone took 10.2 s)"},
		{"leader crashed, asynchronous replication: writes work again within 2 poll intervals (0.20 s) of the promotion", true, "0.05 s"},
		{"leader crashed, synchronous_mode: writes work again within 2 poll intervals (0.20 s) of the promotion", true, "-0.05 s"},
		{"the crashed member gets reads again once caught up", true, "after 3.2 s; 40 % of reads after"},
		{"no acknowledged write lost in a planned switchover", true, "0 of 500"},
		{"no acknowledged write lost under synchronous_mode", true, "0 of 650"},
	} {
		tg, ok := got[tc.what]
		if !ok {
			t.Errorf("no target %q among %v", tc.what, got)
			continue
		}
		if tg.Held != tc.held || tg.Measured != tc.measured {
			t.Errorf("%s: held %v, measured %q; want %v, %q", tc.what, tg.Held, tg.Measured, tc.held, tc.measured)
		}
	}
	if len(got) != 9 {
		t.Errorf("%d targets, want 9: %v", len(got), got)
	}
	if targets(nil, time.Second, time.Second) != nil {
		t.Error("a run without rows has targets")
	}
}

func TestHAMarkdownAndFiles(t *testing.T) {
	res := &HAResult{Rows: haRows(), Users: 6, Phase: 6 * time.Second, TTL: 10 * time.Second, PollInterval: 100 * time.Millisecond,
		Machine: "2 cores (test CPU), 24 GiB, go1.x", Versions: "PostgreSQL 15.18, Patroni 3.0.2", Elapsed: 150 * time.Second}
	res.Targets = targets(res.Rows, res.TTL, res.PollInterval)
	var md strings.Builder
	res.Markdown(&md)
	text := md.String()
	lines := strings.Split(text, "\n")
	for _, want := range []string{
		"| leader crashed, asynchronous replication | 3000 | 0 | 0 | 600 | 40 | 3 | 0 | 700 | 2 | 10.2 s | 10.3 s / 0.05 s | 2.4 ms / 19.0 ms (300) | 2.0 ms | 20.0 ms | node1 crashed |",
		"| crashed member brought back | 2000 | 0 | 0 | 0 | 0 | 0 | 0 | 900 | 0 | – | – | 2.0 ms / 15.0 ms (280) | 0.0 ms | 0.0 ms |  |",
		"| planned switchover, asynchronous replication | 1500 | 1 | 0 | 0 | 0 | 0 | 0 | 500 | 0 | – | never refused | – | 0.0 ms | 0.0 ms |  |",
		"| leader crashed, synchronous_mode | 2900 | 0 | 0 | 590 | 0 | 0 | 0 | 650 | 0 | 9.9 s | 9.8 s / -0.05 s | 4.6 ms / 40.0 ms (250) | 0.0 ms | 0.0 ms |  |",
		"Asynchronous replication: the crash lost 2 of the row's 700 acknowledged writes; 3 pages and 1 form answers said a change may have been lost.",
		"Writes on the healthy cluster, p50 / p99 (the form's whole request): asynchronous replication 2.4 ms / 19.0 ms; synchronous_mode 4.6 ms / 40.0 ms.",
		"- **not held**: no read fails — 1 in \"planned switchover, asynchronous replication\"",
		"- held: no acknowledged write lost under synchronous_mode — 0 of 650",
		"Run took 2m30s on 2 cores (test CPU), 24 GiB, go1.x; PostgreSQL 15.18, Patroni 3.0.2.",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("the table lacks the line\n%s\nin\n%s", want, text)
		}
	}
	if !strings.Contains(text, "for 6 s before the fault and 6 s after it settled") || !strings.Contains(text, "every 100 ms") {
		t.Errorf("the caption does not give the phases and the poll interval:\n%s", text)
	}

	dir := t.TempDir()
	if err := res.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "faults-ha.md")); err != nil || string(b) != text {
		t.Errorf("faults-ha.md is not the table printed: %v", err)
	}
	f, err := os.Open(filepath.Join(dir, "faults-ha.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	var back HAResult
	if err := dec.Decode(&back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, res) {
		t.Errorf("faults-ha.json does not read back as the result:\n got %+v\nwant %+v", back, *res)
	}
}

// TestReplaceSectionFaultsHA: --update replaces the faults-ha section and
// leaves the plain faults section, whose markers start alike, alone.
func TestReplaceSectionFaultsHA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "doc.md")
	doc := "# Doc\n<!-- faults:begin -->\nplain\n<!-- faults:end -->\ntext\n<!-- faults-ha:begin -->\nold\n<!-- faults-ha:end -->\nend\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceSection(path, "faults-ha", "| new |\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := "# Doc\n<!-- faults:begin -->\nplain\n<!-- faults:end -->\ntext\n<!-- faults-ha:begin -->\n| new |\n<!-- faults-ha:end -->\nend\n"
	if string(b) != want {
		t.Errorf("after the update:\n%s\nwant\n%s", b, want)
	}
	os.WriteFile(path, []byte("# no markers\n"), 0o644)
	if err := ReplaceSection(path, "faults-ha", "x"); err == nil || !strings.Contains(err.Error(), "has no <!-- faults-ha:begin -->") {
		t.Errorf("a file without the markers: %v", err)
	}
}
