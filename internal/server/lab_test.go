package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/testcluster"
)

// newLabApp serves Quest with the cluster's levers and returns a client
// signed in as an admin.
func newLabApp(t *testing.T) (*testApp, *client) {
	t.Helper()
	a := startApp(t, dbrouter.Causal, testcluster.Get(t))
	return a, a.admin(t)
}

// admin creates an admin account and returns a client signed in as it.
func (a *testApp) admin(t *testing.T) *client {
	t.Helper()
	name := fmt.Sprintf("admin_%d_%d", time.Now().UnixNano()%1e9, userSeq.Add(1))
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.store.CreateUser(context.Background(), name, "Lab Admin", hash, true); err != nil {
		t.Fatal(err)
	}
	admin := a.client(t)
	if r := admin.login(name); r.status != http.StatusSeeOther {
		t.Fatalf("admin login: %d", r.status)
	}
	return admin
}

func TestLabEveryoneLooksAdminsChange(t *testing.T) {
	a, admin := newLabApp(t)
	anon := a.client(t)
	want(t, anon.get("/lab"), http.StatusOK, "Where is my lightsaber?", "Comments out of order", `data-node="replica2"`)
	want(t, anon.post("/lab/strategy", url.Values{"strategy": {"random"}}), http.StatusForbidden, "Only an admin")
	user := a.client(t)
	user.signup()
	want(t, user.post("/lab/replicas/replica1/pause", nil), http.StatusForbidden)
	if a.router.Strategy() != dbrouter.Causal {
		t.Fatal("a non-admin changed the strategy")
	}

	page := admin.get("/lab")
	want(t, page, http.StatusOK, "every user of this app instance", `action="/lab/replicas/replica1/delay"`)
	r := admin.post("/lab/strategy", url.Values{"strategy": {"sticky"}})
	if r.status != http.StatusSeeOther || a.router.Strategy() != dbrouter.Sticky {
		t.Fatalf("admin switch: %d, strategy %s", r.status, a.router.Strategy())
	}
	want(t, admin.post("/lab/strategy", url.Values{"strategy": {"fastest"}}), http.StatusBadRequest, "unknown strategy")

	// Levers: pause, observe, resume; bad input is a 4xx.
	t.Cleanup(func() {
		a.c.Resume(context.Background(), "replica1")
		a.c.SetDelay(context.Background(), "replica1", 0)
	})
	if r := admin.post("/lab/replicas/replica1/pause", nil); r.status != http.StatusSeeOther {
		t.Fatalf("pause: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "the lab to show replica1 paused", func() bool {
		return labNode(t, anon, "replica1").Paused
	})
	if r := admin.post("/lab/replicas/replica1/resume", nil); r.status != http.StatusSeeOther {
		t.Fatalf("resume: %d", r.status)
	}
	if r := admin.post("/lab/replicas/replica1/delay", url.Values{"delay_ms": {"300"}}); r.status != http.StatusSeeOther {
		t.Fatalf("delay: %d\n%s", r.status, r.body)
	}
	for _, bad := range []string{"-1", "10001", "soon", ""} {
		want(t, admin.post("/lab/replicas/replica1/delay", url.Values{"delay_ms": {bad}}), http.StatusBadRequest, "0 to 10000")
	}
	want(t, admin.post("/lab/replicas/replica9/pause", nil), http.StatusNotFound)
	want(t, admin.post("/lab/replicas/primary/pause", nil), http.StatusNotFound)
	want(t, admin.post("/lab/replicas/replica1/explode", nil), http.StatusNotFound)
}

type labNodeJSON struct {
	Name       string  `json:"name"`
	Paused     bool    `json:"paused"`
	LagSeconds float64 `json:"lag_seconds"`
	Reads      int64   `json:"reads"`
}

func labNode(t *testing.T, c *client, name string) labNodeJSON {
	t.Helper()
	r := c.get("/lab/state")
	var st struct {
		Strategy string        `json:"strategy"`
		Nodes    []labNodeJSON `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("/lab/state: %v\n%s", err, r.body)
	}
	for _, n := range st.Nodes {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("/lab/state has no %s", name)
	return labNodeJSON{}
}

func TestStatusAndMetrics(t *testing.T) {
	a, _ := newLabApp(t)
	c := a.client(t)
	c.get("/catalog") // a read to count
	want(t, c.get("/status"), http.StatusOK, "pg_stat_replication", "quest_replicator", "replica2")
	req, _ := http.NewRequest(http.MethodGet, a.URL+"/status", nil)
	req.Header.Set("Accept", "application/json")
	r := c.do(req)
	var st struct {
		Replication []struct {
			AppName string
			State   string
		} `json:"pg_stat_replication"`
		Router []labNodeJSON `json:"router"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, r.body)
	}
	if len(st.Replication) != 2 || st.Replication[0].AppName != "replica1" || st.Replication[0].State != "streaming" || len(st.Router) != 3 {
		t.Fatalf("status JSON: %+v", st)
	}
	m := c.get("/metrics").body
	for _, want := range []string{
		`quest_http_requests_total{route="/catalog",status="200"}`,
		`quest_reads_total{intent="shared",node="replica`,
		`quest_replica_lag_seconds{node="replica1"}`,
		`quest_pool_total_conns{node="primary"}`,
		`quest_causal_checks_failed_total`,
		`quest_strategy{strategy="causal"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
