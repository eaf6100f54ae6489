package server_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"quest/internal/app"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// newLeverURLApp serves Quest as the Docker stack does: it does not
// manage the cluster, and pulls the levers through the lever role's URL.
// It returns a client signed in as an admin.
func newLeverURLApp(t *testing.T) (*testApp, *client) {
	t.Helper()
	c := testcluster.Get(t)
	a := startApp(t, dbrouter.Causal, nil, func(cfg *app.Config) {
		// The leader's host and port: each replica's replace them.
		if err := cfg.UseLeverURL(context.Background(), c.LeverURL(c.Nodes()[0])); err != nil {
			t.Fatal(err)
		}
	})
	leversOffAtCleanup(t, a)
	return a, a.admin(t)
}

func TestLabLeversThroughTheLeverURL(t *testing.T) {
	a, admin := newLeverURLApp(t)

	page := admin.get("/lab")
	want(t, page, http.StatusOK, `action="/lab/replicas/replica1/pause"`, `action="/lab/replicas/replica2/resume"`,
		`action="/lab/replicas/replica1/delay"`, "Stop and start need the local launcher", "docker-compose stop replica1")
	for _, absent := range []string{`action="/lab/replicas/replica1/stop"`, `action="/lab/replicas/replica1/start"`} {
		if strings.Contains(page.body, absent) {
			t.Errorf("/lab offers %s without the local launcher", absent)
		}
	}
	if anon := a.client(t).get("/lab"); strings.Contains(anon.body, "Stop and start need") {
		t.Error("/lab explains the admins' levers to someone who is not one")
	}

	if r := admin.post("/lab/replicas/replica1/pause", nil); r.status != http.StatusSeeOther {
		t.Fatalf("pause: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "the router to see replica1 paused", func() bool {
		return replica(t, a, "replica1").Paused
	})
	if r := admin.post("/lab/replicas/replica1/resume", nil); r.status != http.StatusSeeOther {
		t.Fatalf("resume: %d\n%s", r.status, r.body)
	}
	if r := admin.post("/lab/replicas/replica2/delay", url.Values{"delay_ms": {"300"}}); r.status != http.StatusSeeOther {
		t.Fatalf("delay: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "the router to see replica1 replaying and replica2's delay of 300 ms", func() bool {
		return !replica(t, a, "replica1").Paused && replica(t, a, "replica2").ApplyDelay == 300*time.Millisecond
	})
	want(t, admin.get("/lab"), http.StatusOK, "apply delay 300 ms (configured)")

	for _, action := range []string{"stop", "start"} {
		want(t, admin.post("/lab/replicas/replica1/"+action, nil), http.StatusNotFound, "Stop and start need the local launcher")
	}
	if h := replica(t, a, "replica1"); !h.Up {
		t.Fatal("replica1 is down after a refused stop")
	}
	want(t, admin.post("/lab/replicas/primary/pause", nil), http.StatusNotFound)
}

// TestLabScenariosThroughTheLeverURL plays the scenarios' set-up and the
// reset as on the Docker stack.
func TestLabScenariosThroughTheLeverURL(t *testing.T) {
	a, admin := newLeverURLApp(t)
	seedDemoUsers(t, a)

	if r := admin.post("/lab/scenarios/lightsaber", nil); r.status != http.StatusSeeOther {
		t.Fatalf("set up scenario 1: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "replay paused on every replica", func() bool {
		return leversAre(t, a, true, nil)
	})
	want(t, admin.get("/lab"), http.StatusOK, "Scenario 1 (Where is my lightsaber?) is set up: strategy random; replica1 replay paused", "paused since ")

	if r := admin.post("/lab/scenarios/comments", nil); r.status != http.StatusSeeOther {
		t.Fatalf("set up scenario 2: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "replica1 5 s behind by its apply delay, replica2 not, nothing paused", func() bool {
		return leversAre(t, a, false, map[string]time.Duration{"replica1": 5 * time.Second})
	})

	if r := admin.post("/lab/reset", nil); r.status != http.StatusSeeOther {
		t.Fatalf("reset: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "every lever off", func() bool {
		return leversAre(t, a, false, nil)
	})
	if s := a.router.Strategy(); s != dbrouter.Causal {
		t.Fatalf("after the reset the strategy is %s, want causal", s)
	}
	want(t, admin.get("/lab"), http.StatusOK, "Lab reset: replica1 replaying, no apply delay; replica2 replaying, no apply delay")
}

func TestLeverURLRefusedWhenWrong(t *testing.T) {
	c := testcluster.Get(t)
	wrong, _ := url.Parse(c.LeverURL(c.Nodes()[0]))
	wrong.User = url.UserPassword(wrong.User.Username(), "not-the-password")
	for _, tt := range []struct{ name, url, want string }{
		{"wrong password", wrong.String(), "refuses the lever role"},
		{"no role", "postgres://127.0.0.1/quest", "names no role"},
		{"not postgres", "mysql://quest_lever@db/quest", "not a postgres:// URL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := app.Config{Router: dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs()}}
			err := cfg.UseLeverURL(context.Background(), tt.url)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("the error shows the password: %v", err)
			}
			if cfg.Levers != nil {
				t.Fatal("levers set from a wrong URL")
			}
		})
	}
}
