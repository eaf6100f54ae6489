package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"quest/internal/dbrouter"
	"quest/templates"
)

func TestPrimaryMark(t *testing.T) {
	for _, tt := range []struct {
		name            string
		prev, last, cur string
		switchover      bool
		want            string
	}{
		{"no change", "node1", "node1", "node1", false, ""},
		{"still none", "", "node1", "", false, ""},
		{"the primary went away", "node1", "node1", "", false, "no primary"},
		{"promoted after a gap", "", "node1", "node2", false, "failover: node1 → node2"},
		{"handed over without a gap", "node1", "node1", "node2", false, "failover: node1 → node2"},
		{"a switchover's", "", "node1", "node2", true, "switchover: node1 → node2"},
		{"back after a gap", "", "node1", "node1", false, "node1 is the primary again"},
		{"the first primary the app sees", "", "", "node2", false, "node2 is the primary"},
	} {
		if got := primaryMark(tt.prev, tt.last, tt.cur, tt.switchover); got != tt.want {
			t.Errorf("%s: primaryMark(%q, %q, %q, %v) = %q, want %q", tt.name, tt.prev, tt.last, tt.cur, tt.switchover, got, tt.want)
		}
	}
}

func TestPatroniWords(t *testing.T) {
	for _, tt := range []struct {
		p    dbrouter.Patroni
		want string
	}{
		{dbrouter.Patroni{Listed: true, Role: "leader", State: "running", Timeline: 2}, "leader, running"},
		{dbrouter.Patroni{Listed: true, Role: "sync_standby", State: "streaming"}, "sync standby, streaming"},
		{dbrouter.Patroni{Listed: true, State: "starting"}, "no role, starting"},
		{dbrouter.Patroni{Listed: true, Role: "replica"}, "replica"},
		{dbrouter.Patroni{}, "not listed"},
	} {
		if got := patroniWords(tt.p); got != tt.want {
			t.Errorf("patroniWords(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

// TestPatroniOfPrefersTheRouter: what the router's discovery says of a
// member wins over what the managed cluster says; the cluster's word fills
// in for a member the router does not list.
func TestPatroniOfPrefersTheRouter(t *testing.T) {
	s := &Server{}
	fromRouter := dbrouter.Patroni{Listed: true, Role: "replica", State: "streaming", Timeline: 3}
	if got := s.patroniOf(dbrouter.Health{Member: "node1", Patroni: fromRouter}); got != fromRouter {
		t.Fatalf("without the cluster's view: %+v", got)
	}
	if got := s.patroniOf(dbrouter.Health{Member: "node1"}); got.Listed {
		t.Fatalf("nothing lists node1, yet %+v", got)
	}
	if s.patroniKnown([]dbrouter.Health{{Member: "node1"}}) {
		t.Fatal("Patroni known with neither discovery nor a cluster")
	}
	fromCluster := map[string]dbrouter.Patroni{"node1": {Listed: true, Role: "leader", State: "running", Timeline: 2}}
	s.patroni.members.Store(&fromCluster)
	if got := s.patroniOf(dbrouter.Health{Member: "node1", Patroni: fromRouter}); got != fromRouter {
		t.Fatalf("the cluster's view overrode the router's: %+v", got)
	}
	if got := s.patroniOf(dbrouter.Health{Member: "node1"}); got != fromCluster["node1"] {
		t.Fatalf("the cluster's view did not fill in: %+v", got)
	}
	if !s.patroniKnown(nil) {
		t.Fatal("Patroni not known with the cluster's view")
	}
}

func TestHAOpWords(t *testing.T) {
	began := time.Date(2025, 5, 4, 14, 3, 0, 0, time.Local)
	op := haOp{Action: "switchover", Member: "node2", From: "node1", Began: began}
	if v := op.view(began.Add(3 * time.Second)); !v.Running || v.Text != "The switchover from node1 to node2 is in progress (started 3 s ago)." {
		t.Errorf("running: %+v", v)
	}
	done := op
	done.Ended, done.Said = began.Add(5*time.Second), "Switchover from node1 to node2 done in 5.0 s."
	if v := done.view(done.Ended); v.Running || v.Failed || v.Text != "14:03:05 — Switchover from node1 to node2 done in 5.0 s." {
		t.Errorf("done: %+v", v)
	}
	if v := done.view(done.Ended.Add(haOpShown + time.Second)); v.Text != "" {
		t.Errorf("still shown long after: %+v", v)
	}
	failed := haOp{Action: "start", Member: "node3", Began: began, Ended: began.Add(time.Second), Err: errors.New("boom at /var/lib/quest")}
	if v := failed.view(failed.Ended); !v.Failed || v.Text != "14:03:01 — The start of node3 failed." {
		t.Errorf("failed: %+v (the public words must not carry the error)", v)
	}
	if v := (haOp{}).view(began); v != (haOpView{}) {
		t.Errorf("no lever pulled yet: %+v", v)
	}
}

// TestClusterOpsOneAtATime: while a failover lever runs, a replica lever
// and a second failover lever are refused at once, with words that say
// what runs; once it ends, both may go.
func TestClusterOpsOneAtATime(t *testing.T) {
	var o clusterOps
	o.init()
	h, done, ok := o.begin(haOp{Action: "switchover", Member: "node2", From: "node1", Began: time.Now()})
	if !ok {
		t.Fatal("the first failover lever was refused")
	}
	if _, _, ok := o.begin(haOp{Action: "fail", Member: "node3", Began: time.Now()}); ok {
		t.Fatal("a second failover lever ran beside the first")
	}
	began := time.Now()
	_, err := o.acquire(context.Background())
	var p *problemError
	if !errors.As(err, &p) || p.status != http.StatusConflict || !strings.Contains(p.msg, "The switchover from node1 to node2 is in progress") {
		t.Fatalf("a replica lever during a switchover: %v", err)
	}
	if time.Since(began) > time.Second {
		t.Fatalf("the refusal took %s: it should be at once", time.Since(began))
	}
	if !o.switchover(time.Now()) {
		t.Fatal("a running switchover is not reported")
	}
	o.finish(h, done, "done", nil, time.Now())
	select {
	case <-done:
	default:
		t.Fatal("finish did not close done")
	}
	if got := o.result(h); got.Said != "done" || got.running() {
		t.Fatalf("result after finish: %+v", got)
	}
	release, err := o.acquire(context.Background())
	if err != nil {
		t.Fatalf("a replica lever after the switchover: %v", err)
	}
	if _, _, ok := o.begin(haOp{Action: "fail", Member: "node3", Began: time.Now()}); ok {
		t.Fatal("a failover lever ran beside a replica lever")
	}
	release()
	if _, _, ok := o.begin(haOp{Action: "fail", Member: "node3", Began: time.Now()}); !ok {
		t.Fatal("the cluster stayed taken after release")
	}
	if o.switchover(time.Now()) {
		t.Fatal("a fail counted as a switchover")
	}
}

// TestMembersTablesShowPatroni renders /lab and /status from constructed
// state: each member's router role, Patroni's role and state, its
// timeline; the failover levers for admins only, each row's for its role;
// no Patroni columns when nothing says what Patroni thinks.
func TestMembersTablesShowPatroni(t *testing.T) {
	pages, err := parsePages(templates.FS)
	if err != nil {
		t.Fatal(err)
	}
	render := func(page string, data any) string {
		t.Helper()
		var buf bytes.Buffer
		if err := pages[page].ExecuteTemplate(&buf, "base", view{Data: data}); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	nodes := []nodeState{
		{Name: "primary", Member: "node2", Display: "node2", Role: "primary", RouterRole: "primary", Timeline: 2, Up: true,
			Patroni: "leader, running", PatroniState: &patroniState{Listed: true, Role: "leader", State: "running", Timeline: 2, LagBytes: -1}},
		{Name: "node1", Member: "node1", Display: "node1", Role: "replica", RouterRole: "replica", Timeline: 2, Up: true, LagBytes: 120,
			Patroni: "replica, streaming", PatroniState: &patroniState{Listed: true, Role: "replica", State: "streaming", Timeline: 2, LagBytes: 120}},
		{Name: "node3", Member: "node3", Display: "node3", Role: "replica", RouterRole: "unreachable",
			Patroni: "not listed", PatroniState: &patroniState{}},
	}
	state := labState{Strategy: "causal", Primary: "node2", Patroni: true, HA: true, Nodes: nodes,
		HAOp: haOpView{Running: true, Text: "The switchover from node1 to node2 is in progress (started 2 s ago)."}}

	admin := render("lab.html", labPage{State: state, Admin: true, SignedIn: true, Levers: true, HA: true})
	for _, want := range []string{
		`data-primary="node2"`,
		`<strong data-field="display">node2</strong><br><span class="hint"><span data-field="router-role">primary</span> · timeline <span data-field="timeline">2</span></span><br><span class="hint">Patroni: <span data-field="patroni">leader, running</span>`,
		`<span data-field="router-role">replica</span> · timeline <span data-field="timeline">2</span></span><br><span class="hint">Patroni: <span data-field="patroni">replica, streaming</span>`,
		`<span data-field="router-role">unreachable</span></span><br><span class="hint">Patroni: <span data-field="patroni">not listed</span>`,
		`action="/lab/members/node2/fail"`,
		`action="/lab/members/node1/switchover"`, `action="/lab/members/node1/fail"`,
		`action="/lab/members/node3/start"`,
		`action="/lab/replicas/node1/pause"`,
		`class="ha-op running"`, "The switchover from node1 to node2 is in progress",
	} {
		if !strings.Contains(admin, want) {
			t.Errorf("the admin's lab lacks %s", want)
		}
	}
	for _, unwanted := range []string{`action="/lab/members/node2/switchover"`, `action="/lab/members/node3/switchover"`, `action="/lab/replicas/node1/start"`} {
		if strings.Contains(admin, unwanted) {
			t.Errorf("the admin's lab has %s", unwanted)
		}
	}
	anon := render("lab.html", labPage{State: state, HA: true, Levers: true})
	if strings.Contains(anon, "/lab/members/") || !strings.Contains(anon, "leader, running") {
		t.Error("an anonymous visitor's lab has the failover levers, or lacks Patroni's words")
	}

	status := render("status.html", statusPage{Strategy: "causal", Primary: "node2", Patroni: true, Router: nodes})
	for _, want := range []string{
		`The primary is <strong id="primary">node2</strong>`,
		"<th>Patroni role</th><th>Patroni state</th>",
		`<td><strong>node2</strong></td>`, `<span class="badge primary">primary</span>`, "<td>leader</td><td>running</td>",
		`<span class="badge replica">replica</span>`, "<td>replica</td><td>streaming</td>", "120 B · 0.00 s", "Patroni: 120 B",
		`<span class="badge unreachable">unreachable</span>`, "<td>not listed</td><td>–</td>",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("/status lacks %s", want)
		}
	}

	plain := state
	plain.Patroni, plain.HA, plain.Nodes = false, false, []nodeState{{Name: "primary", Member: "127.0.0.1:5432/quest", Display: "primary", Role: "primary", RouterRole: "primary", Up: true}}
	for page, html := range map[string]string{
		"lab":    render("lab.html", labPage{State: plain, Admin: true, Levers: true}),
		"status": render("status.html", statusPage{Primary: "127.0.0.1:5432/quest", Router: plain.Nodes}),
	} {
		if strings.Contains(html, "Patroni") || strings.Contains(html, "/lab/members/") {
			t.Errorf("%s without Patroni speaks of it", page)
		}
	}
}
