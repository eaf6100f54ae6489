package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"quest/internal/app"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// fakeHA stands in for a Patroni cluster's failover levers on the
// package's plain cluster: it records what it is asked and touches
// nothing. A switchover waits for hold, when set.
type fakeHA struct {
	hold      chan struct{}
	refreshes atomic.Int64

	mu       sync.Mutex
	calls    []string
	startErr error
}

func (f *fakeHA) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeHA) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeHA) Switchover(ctx context.Context, to string) (string, string, error) {
	f.record("switchover " + to)
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return "", "", ctx.Err()
		}
	}
	return "leader", to, nil
}

func (f *fakeHA) Fail(_ context.Context, name string) (string, error) {
	f.record("fail " + name)
	return name, nil
}

func (f *fakeHA) Start(_ context.Context, name string) error {
	f.record("start " + name)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.startErr
}

func (f *fakeHA) failStarts(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.startErr = err
}

func (f *fakeHA) Refresh(context.Context) error {
	f.refreshes.Add(1)
	return nil
}

// startHAApp serves Quest on the package's cluster as on a Patroni
// cluster: the leader named "leader" (as serve names a Patroni leader),
// the cluster's replica levers, fake failover levers, and what Patroni
// says of each member from members.
func startHAApp(t *testing.T, ha *fakeHA, members map[string]dbrouter.Patroni) *testApp {
	t.Helper()
	return startApp(t, dbrouter.Causal, testcluster.Get(t), func(cfg *app.Config) {
		cfg.Router.PrimaryURL += "&application_name=leader"
		cfg.HA = ha
		cfg.PatroniMembers = func(context.Context) (map[string]dbrouter.Patroni, error) { return members, nil }
	})
}

// labStateJSON is /lab/state as the failover tests read it.
type labStateJSON struct {
	Primary string `json:"primary"`
	Nodes   []struct {
		Name       string `json:"name"`
		Display    string `json:"display"`
		RouterRole string `json:"router_role"`
		Timeline   uint32 `json:"timeline"`
		Patroni    string `json:"patroni"`
	} `json:"nodes"`
	HAOp struct {
		Text    string `json:"text"`
		Running bool   `json:"running"`
		Failed  bool   `json:"failed"`
	} `json:"ha_op"`
}

func labStateOf(t *testing.T, c *client) labStateJSON {
	t.Helper()
	var st labStateJSON
	if r := c.get("/lab/state"); json.Unmarshal([]byte(r.body), &st) != nil {
		t.Fatalf("/lab/state: %d\n%s", r.status, r.body)
	}
	return st
}

// TestLabMembersShowPatroni: /status and /lab name each member with the
// router's role, Patroni's role and state and the timeline, for everyone;
// a member Patroni does not list says so.
func TestLabMembersShowPatroni(t *testing.T) {
	a := startHAApp(t, &fakeHA{}, map[string]dbrouter.Patroni{
		"leader":   {Listed: true, Role: "leader", State: "running", Timeline: 1, LagBytes: -1},
		"replica1": {Listed: true, Role: "sync_standby", State: "streaming", Timeline: 1},
	})
	anon := a.client(t)
	// The Patroni view is asked at start, in the background: wait for it.
	testcluster.Eventually(t, 10*time.Second, "the lab to carry Patroni's words", func() bool {
		st := labStateOf(t, anon)
		return len(st.Nodes) == 3 && st.Nodes[0].Patroni == "leader, running" && st.Primary == "leader"
	})
	st := labStateOf(t, anon)
	for i, want := range []struct{ name, display, role, patroni string }{
		{"primary", "leader", "primary", "leader, running"},
		{"replica1", "replica1", "replica", "sync standby, streaming"},
		{"replica2", "replica2", "replica", "not listed"},
	} {
		n := st.Nodes[i]
		if n.Name != want.name || n.Display != want.display || n.RouterRole != want.role || n.Patroni != want.patroni || n.Timeline != 1 {
			t.Errorf("/lab/state node %d: %+v, want %+v on timeline 1", i, n, want)
		}
	}
	want(t, anon.get("/status"), http.StatusOK, `The primary is <strong id="primary">leader</strong>`,
		"<td>leader</td><td>running</td>", "<td>sync_standby</td><td>streaming</td>", "<td>not listed</td>")
	lab := anon.get("/lab")
	want(t, lab, http.StatusOK, `Patroni: <span data-field="patroni">leader, running</span>`, `data-primary="leader"`)
	if strings.Contains(lab.body, "/lab/members/") {
		t.Error("an anonymous visitor sees the failover levers")
	}
	want(t, anon.post("/lab/members/replica1/switchover", nil), http.StatusForbidden, "Only an admin")
}

// TestLabFailoverLevers: the failover levers refuse what they cannot do
// with a 4xx that says why; a switchover in progress is said on the lab,
// holds off the other levers, and ends in a flash that says it is done; a
// lever that fails is a 409, never a 500.
func TestLabFailoverLevers(t *testing.T) {
	ha := &fakeHA{hold: make(chan struct{})}
	a := startHAApp(t, ha, map[string]dbrouter.Patroni{})
	admin := a.admin(t)
	anon := a.client(t)
	want(t, admin.get("/lab"), http.StatusOK, `action="/lab/members/leader/fail"`, `action="/lab/members/replica1/switchover"`, `action="/lab/members/replica2/fail"`)

	want(t, admin.post("/lab/members/node9/fail", nil), http.StatusNotFound, "There is no member named &#34;node9&#34;; this cluster has leader, replica1, replica2.")
	want(t, admin.post("/lab/members/replica1/explode", nil), http.StatusNotFound, "Unknown lever")
	want(t, admin.post("/lab/members/leader/switchover", nil), http.StatusConflict, "leader is the primary already")
	if calls := ha.called(); len(calls) != 0 {
		t.Fatalf("refused levers reached the cluster: %v", calls)
	}

	// A switchover that takes a while: in progress on the lab, the other
	// levers refused meanwhile.
	status := make(chan int, 1)
	go func() {
		code, err := admin.tryPost("/lab/members/replica1/switchover", nil)
		if err != nil {
			t.Error(err)
		}
		status <- code
	}()
	testcluster.Eventually(t, 10*time.Second, "the lab to say the switchover is in progress", func() bool {
		op := labStateOf(t, anon).HAOp
		return op.Running && strings.Contains(op.Text, "The switchover from leader to replica1 is in progress")
	})
	want(t, a.admin(t).post("/lab/replicas/replica2/pause", nil), http.StatusConflict, "The switchover from leader to replica1 is in progress")
	want(t, a.admin(t).post("/lab/members/replica2/fail", nil), http.StatusConflict, "The switchover from leader to replica1 is in progress")
	want(t, a.admin(t).post("/lab/members/leader/switchover", nil), http.StatusConflict, "The switchover from leader to replica1 is in progress")
	close(ha.hold)
	select {
	case code := <-status:
		if code != http.StatusSeeOther {
			t.Fatalf("the switchover answered %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the switchover's request did not end once the switchover did")
	}
	want(t, admin.get("/lab"), http.StatusOK, `<div class="flash" role="status">Switchover from leader to replica1 done in`)
	if op := labStateOf(t, anon).HAOp; op.Running || !strings.Contains(op.Text, "Switchover from leader to replica1 done") {
		t.Errorf("after the switchover the lab says %+v", op)
	}

	// Fail: the words say what Patroni does next, by whether it led.
	if r := admin.post("/lab/members/leader/fail", nil); r.status != http.StatusSeeOther {
		t.Fatalf("fail leader: %d\n%s", r.status, r.body)
	}
	want(t, admin.get("/lab"), http.StatusOK, "leader crashed (SIGKILL of its Patroni and PostgreSQL); Patroni will promote a replica in about 10 s")
	if r := admin.post("/lab/members/replica2/fail", nil); r.status != http.StatusSeeOther {
		t.Fatalf("fail replica2: %d\n%s", r.status, r.body)
	}
	want(t, admin.get("/lab"), http.StatusOK, "replica2 crashed (SIGKILL of its Patroni and PostgreSQL); it was not the primary")

	// A lever that fails is a conflict with the cluster's words; the lab
	// then says it failed, with the reason for admins only.
	ha.failStarts(errors.New("replica2's Patroni did not start"))
	want(t, admin.post("/lab/members/replica2/start", nil), http.StatusConflict, "The start of replica2 did not work: replica2&#39;s Patroni did not start")
	want(t, admin.get("/lab"), http.StatusOK, "The start of replica2 failed.", "Why: replica2&#39;s Patroni did not start")
	if lab := anon.get("/lab"); strings.Contains(lab.body, "did not start") {
		t.Error("an anonymous visitor sees the failed lever's error")
	}
	if got, want := strings.Join(ha.called(), "; "), "switchover replica1; fail leader; fail replica2; start replica2"; got != want {
		t.Errorf("the cluster was asked: %s; want %s", got, want)
	}

	// The replica levers ask Patroni who leads first, then act.
	t.Cleanup(func() { a.c.Resume(context.Background(), "replica2") })
	before := ha.refreshes.Load()
	if r := admin.post("/lab/replicas/replica2/pause", nil); r.status != http.StatusSeeOther {
		t.Fatalf("pause after the failover levers: %d\n%s", r.status, r.body)
	}
	if ha.refreshes.Load() == before {
		t.Error("a replica lever did not refresh the cluster's roles first")
	}
	if r := admin.post("/lab/replicas/replica2/resume", nil); r.status != http.StatusSeeOther {
		t.Fatalf("resume: %d", r.status)
	}
}

// TestLabWithoutHAHasNoFailoverLevers: an app that manages a plain
// cluster, or none, answers the failover levers with a 404 that says why.
func TestLabWithoutHAHasNoFailoverLevers(t *testing.T) {
	_, admin := newLabApp(t)
	want(t, admin.post("/lab/members/replica1/switchover", nil), http.StatusNotFound, "does not manage a Patroni cluster")
	if lab := admin.get("/lab"); strings.Contains(lab.body, "/lab/members/") || strings.Contains(lab.body, "Patroni") {
		t.Error("the lab of a plain cluster offers failover levers or speaks of Patroni")
	}
}
