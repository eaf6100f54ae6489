package server

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"quest/internal/dbrouter"
)

func TestReadVerdict(t *testing.T) {
	for _, tt := range []struct {
		name  string
		v     readView
		class string
		label string
	}{
		{"behind the session", readView{Node: "replica1", You: "0/3000100", NodePos: "0/3000060", Missing: "this page may be missing…", Verdict: "may be missing your change"},
			verdictMissing, "may be missing your change"},
		{"primary", readView{Node: "primary", You: "0/3000100", NodePos: "0/3000100", Verdict: "primary"}, verdictPrimary, "primary"},
		{"waited", readView{Node: "replica2", You: "0/3000100", NodePos: "0/3000100", Verdict: "waited 1.5 ms"}, verdictWaited, "waited 1.5 ms"},
		{"replica with the position", readView{Node: "replica2", You: "0/3000100", NodePos: "0/3000200", Verdict: "random replica"}, verdictFresh, "fresh"},
		{"no position to miss", readView{Node: "replica2", You: "none yet", Verdict: "random replica"}, verdictFresh, "fresh"},
		{"node position unknown", readView{Node: "replica2", You: "0/3000100", Verdict: "random replica"}, verdictUnchecked, "not checked"},
		{"session position lost", readView{Node: "replica2", You: position(dbrouter.UnknownLSN), NodePos: "0/3000200"}, verdictUnchecked, "not checked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if class, label := readVerdict(tt.v); class != tt.class || label != tt.label {
				t.Fatalf("readVerdict = %s, %q; want %s, %q", class, label, tt.class, tt.label)
			}
		})
	}
}

// TestExplainALostChange: a read after a failover lost the session's last
// change says so in words, and marks the request as missing it.
func TestExplainALostChange(t *testing.T) {
	d := dbrouter.Decision{Node: "primary", Member: "replica1", Strategy: dbrouter.Causal, Reason: dbrouter.ReasonFallbackLag,
		SessionLSN: dbrouter.UnknownLSN, NodeLSN: 0x5000000, Lost: true}
	v := explainRead(d, dbrouter.Causal, 20*time.Millisecond)
	if !strings.Contains(v.Missing, "may have been lost in a failover") || v.Verdict != "change may be lost" {
		t.Fatalf("lost change explained as %q / %q", v.Missing, v.Verdict)
	}
	if class, _ := requestVerdict([]readView{v}); class != verdictMissing {
		t.Fatalf("a request whose change was lost is classed %s", class)
	}
}

func TestRequestVerdict(t *testing.T) {
	lookup := readView{For: "your session (who is signed in)", Node: "primary", Verdict: "primary"}
	data := readView{For: "this page's data", Node: "replica1", You: "none yet", Verdict: "random replica"}
	missing := readView{For: "this page's data", Node: "replica1", You: "0/2", NodePos: "0/1", Missing: "…", Verdict: "may be missing your change"}
	for _, tt := range []struct {
		name  string
		reads []readView
		class string
	}{
		{"the page's data decides", []readView{lookup, data}, verdictFresh},
		{"the session lookup alone", []readView{lookup}, verdictPrimary},
		{"a missing read wins", []readView{lookup, data, missing}, verdictMissing},
		{"no read", nil, verdictNone},
	} {
		if class, _ := requestVerdict(tt.reads); class != tt.class {
			t.Errorf("%s: %s, want %s", tt.name, class, tt.class)
		}
	}
}

func TestBuildTimeline(t *testing.T) {
	now := time.Date(2025, 5, 4, 12, 0, 0, 0, time.Local)
	if tl := buildTimeline(nil, now); len(tl.Rows) != 0 || len(tl.Marks) != 0 {
		t.Fatalf("an empty history drew %+v", tl)
	}
	fresh := readView{For: "this page's data", Node: "replica2", You: "none yet"}
	missing := readView{For: "this page's data", Node: "replica1", You: "0/2", NodePos: "0/1", Missing: "…", Verdict: "may be missing your change"}
	reqs := []recentRequest{
		{At: now.Add(-60 * time.Second), Path: "/catalog", Reads: []readView{fresh}},
		{At: now.Add(-30 * time.Second), Path: "/wishlist", Reads: []readView{missing}},
		{At: now, Path: "/lab"},
	}
	tl := buildTimeline(reqs, now)
	if len(tl.Marks) != 3 || len(tl.Rows) != 3 {
		t.Fatalf("%d marks, %d rows; want 3 each", len(tl.Marks), len(tl.Rows))
	}
	if tl.Rows[0].Path != "/lab" || tl.Rows[2].Path != "/catalog" {
		t.Fatalf("rows not newest first: %s … %s", tl.Rows[0].Path, tl.Rows[2].Path)
	}
	// The marks sit on the time axis in time order, the first at its start,
	// the last at its end, the middle one halfway; each in its verdict's lane.
	xs := make([]float64, 3)
	for i, m := range tl.Marks {
		x, err := strconv.ParseFloat(m.X, 64)
		if err != nil {
			t.Fatal(err)
		}
		xs[i] = x + 2 // marks are 4 wide, centred on their time
	}
	mid := float64(tl.Left+tl.Right) / 2
	if xs[0] != float64(tl.Left) || xs[2] != float64(tl.Right) || xs[1] < mid-1 || xs[1] > mid+1 {
		t.Fatalf("marks at %v, axis %d–%d", xs, tl.Left, tl.Right)
	}
	lanes := map[string]int{}
	for _, l := range tl.Lanes {
		lanes[l.Class] = l.Y
	}
	for i, want := range []string{verdictFresh, verdictMissing, verdictNone} {
		m := tl.Marks[i]
		y, _ := strconv.Atoi(m.Y)
		if m.Class != want || y+tlMarkH/2 != lanes[want] {
			t.Errorf("mark %d: %s at y %s, want %s in its lane (y %d)", i, m.Class, m.Y, want, lanes[want])
		}
	}
	if _, ok := lanes[verdictUnchecked]; ok {
		t.Error("a lane for a verdict no request had")
	}
	if tl.Ticks[0].Label != "1 min 0 s ago" || tl.Ticks[2].Label != "now" {
		t.Errorf("ticks %+v", tl.Ticks)
	}
}

func TestNodeWords(t *testing.T) {
	now := time.Date(2025, 5, 4, 12, 0, 42, 0, time.Local)
	since := now.Add(-42 * time.Second)
	replica := dbrouter.Health{Name: "replica1", Up: true, InRecovery: true}
	for _, tt := range []struct {
		name       string
		h          dbrouter.Health
		primary    bool
		sinceKnown bool
		want       []string
	}{
		{"replaying, caught up", replica, false, false, []string{"replaying", "no apply delay", "caught up: 0 bytes behind", "yes"}},
		{"paused, since known", with(replica, func(h *dbrouter.Health) {
			h.Paused, h.PauseState, h.LagBytes, h.Lag = true, "paused", 120, 1500*time.Millisecond
		}),
			false, true, []string{"paused since 12:00:00 (for 42 s)", "no apply delay", "behind by 120 bytes and 1.5 s", "yes"}},
		{"paused, since unknown", with(replica, func(h *dbrouter.Health) { h.Paused, h.PauseState = true, "paused" }),
			false, false, []string{"paused", "no apply delay", "caught up: 0 bytes behind", "yes"}},
		{"delayed", with(replica, func(h *dbrouter.Health) { h.ApplyDelay, h.LagBytes, h.Lag = 5*time.Second, 4096, 3*time.Second }),
			false, false, []string{"replaying", "apply delay 5 s (configured)", "behind by 4096 bytes and 3.0 s", "yes"}},
		{"lag unknown", with(replica, func(h *dbrouter.Health) { h.LagBytes, h.LagUnknown, h.Status = 64, true, dbrouter.Lagging }),
			false, false, []string{"replaying", "no apply delay", "behind by 64 bytes; for how long is unknown", "no: how far behind it is in time is not known yet"}},
		{"stopped", dbrouter.Health{Name: "replica2", Status: dbrouter.Down}, false, false, []string{"stopped or unreachable", "–", "–", "no: stopped or unreachable"}},
		{"primary", dbrouter.Health{Name: "primary", Up: true}, true, false, []string{"writes the WAL", "", "– (the reference)", "yes"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			replay, delay, behind, gets := nodeWords(tt.h, tt.primary, since, tt.sinceKnown, now)
			for i, got := range []string{replay, delay, behind, gets} {
				if !strings.HasPrefix(got, tt.want[i]) {
					t.Errorf("word %d: %q, want %q", i, got, tt.want[i])
				}
			}
			if tt.name == "paused, since unknown" && replay != "paused" {
				t.Errorf("replay %q: a pause of unknown start must not claim one", replay)
			}
		})
	}
}

func with(h dbrouter.Health, f func(*dbrouter.Health)) dbrouter.Health {
	f(&h)
	return h
}

// TestPausedSince: the lab knows when a pause started only if it saw the
// replica replaying before, or paused it itself; stale observations do
// not undo what a lever did.
func TestPausedSince(t *testing.T) {
	var h history
	t0 := time.Now()
	h.observeLocked("replica1", true, t0) // paused when first seen
	if _, ok := h.pausedSince("replica1"); ok {
		t.Fatal("a pause already on when first seen has a start")
	}
	h.observeLocked("replica1", false, t0.Add(time.Second))
	h.observeLocked("replica1", true, t0.Add(2*time.Second))
	h.observeLocked("replica1", true, t0.Add(3*time.Second))
	if at, ok := h.pausedSince("replica1"); !ok || !at.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("paused since %v (%v), want the first paused observation", at, ok)
	}

	h.paused("replica2", true, false, t0.Add(5*time.Second))
	h.observeLocked("replica2", false, t0.Add(4*time.Second)) // the tracker's poll from before the lever
	if at, ok := h.pausedSince("replica2"); !ok || !at.Equal(t0.Add(5*time.Second)) {
		t.Fatalf("lever pause: since %v (%v), want the lever's time", at, ok)
	}
	h.paused("replica2", true, true, t0.Add(9*time.Second)) // paused again: the start stays
	if at, _ := h.pausedSince("replica2"); !at.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("a second pause moved the start to %v", at)
	}
	h.paused("replica2", false, true, t0.Add(10*time.Second))
	if _, ok := h.pausedSince("replica2"); ok {
		t.Fatal("resumed, still paused since")
	}
}

// TestStrategyFacts pins the guarantees table to what the strategies do.
func TestStrategyFacts(t *testing.T) {
	rows := strategyTable(dbrouter.Strategies(), 20*time.Millisecond, 2*time.Second)
	got := map[string][4]string{}
	for _, r := range rows {
		got[r.Name] = [4]string{r.Own.Text, r.Shared.Text, r.Monotonic.Text, r.Load.Text}
	}
	timed := "only while lag stays under the delay (2 s)"
	for name, want := range map[string][4]string{
		"primary": {"yes", "yes", "yes", "all reads"},
		"random":  {"no", "no", "no", "none"},
		"pin-own": {"yes", "no", "no", "own data"},
		"sticky":  {"yes", "no (your replica may not have your own new comment yet)", "yes while your replica is up and under the lag limit", "own data"},
		"timed":   {timed, timed, "no", "reads for 2 s after each write"},
		"causal":  {"yes", "yes", "yes", "only when no replica has your position within the 20 ms wait"},
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
}

// TestExplainNamesThePrimaryMember: after a failover the panel says which
// member is the primary now, when it has a name of its own; a name the
// router made from an address stays out of it.
func TestExplainNamesThePrimaryMember(t *testing.T) {
	d := dbrouter.Decision{Node: "primary", Member: "node2", Strategy: dbrouter.Primary, Reason: dbrouter.ReasonPrimaryOnly}
	p := explain(nil, dbrouter.Primary, 20*time.Millisecond)
	p.Reads = []readView{explainRead(d, dbrouter.Primary, 20*time.Millisecond)}
	if p.Reads[0].Member != "node2" || !strings.HasPrefix(summary(p), "This page's data came from primary (node2): ") {
		t.Fatalf("member %q, summary %q", p.Reads[0].Member, summary(p))
	}
	for _, d := range []dbrouter.Decision{
		{Node: "primary", Member: "127.0.0.1:54320/quest", Strategy: dbrouter.Primary, Reason: dbrouter.ReasonPrimaryOnly},
		{Node: "replica1", Member: "replica1", Strategy: dbrouter.Causal, Reason: dbrouter.ReasonFresh},
	} {
		if v := explainRead(d, dbrouter.Causal, 20*time.Millisecond); v.Member != "" {
			t.Errorf("%s (%s) is shown as member %q", d.Node, d.Member, v.Member)
		}
	}
}
