package server_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
	"quest/internal/testcluster"
)

// TestBrowserHAFailover plays the failover levers in Chromium on a real
// Patroni cluster, wired as `quest serve --dir` wires one: an admin
// crashes the primary from /lab; Patroni promotes a replica; the live
// chart marks the failover, the page says the primary changed, and the
// panel names the new primary. The crashed member is started again, its
// replica levers work, and a switchover hands the primary's role back.
// Screenshots go to .quest/test-output/browser/ha-*.png. About 35 s:
// bringing the cluster up, Patroni's 10 s ttl, a rewind, a switchover.
func TestBrowserHAFailover(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	b := browser(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dir, err := testcluster.NewDir("ha-browser")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cluster.Up(ctx, cluster.Config{Dir: dir, Port: 0, HA: true, BinDir: os.Getenv("QUEST_PG_BIN")})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	// The test watches through a handle of its own: the app's rewrites its
	// roles while a lever runs.
	watch, err := cluster.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int // every process of the cluster seen, for the clean-up
	see := func() {
		if _, pid := watch.Etcd(); pid > 0 {
			pids = append(pids, pid)
		}
		ms, _ := watch.Members(ctx)
		for _, m := range ms {
			pids = append(pids, m.PID)
		}
		for _, p := range watch.Processes() {
			pids = append(pids, p.PID)
		}
	}
	see()
	t.Cleanup(func() {
		if c, err := cluster.Open(dir); err == nil {
			c.Down(context.Background(), true)
		}
		for _, pid := range pids {
			if pid > 0 && cluster.Alive(pid) {
				t.Errorf("pid %d outlived the test; killing it", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	if err := store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	a := startAppOn(t, c, dbrouter.Causal, nil, func(cfg *app.Config) { cfg.ManageCluster(c) }).app
	first := c.Nodes()[0].Name
	primary := func() string {
		h := a.Router.Health()[0]
		if h.Up && !h.InRecovery {
			return h.Member
		}
		return ""
	}
	testcluster.Eventually(t, 10*time.Second, "the router to see "+first+" as the primary", func() bool { return primary() == first })

	adminName := fmt.Sprintf("ha_admin_%d", time.Now().UnixNano()%1e9)
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store.CreateUser(ctx, adminName, "HA Admin", hash, true); err != nil {
		t.Fatal(err)
	}

	out := outputDir(t)
	admin, cancelA := context.WithTimeout(b, 2*time.Minute)
	defer cancelA()
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(admin, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(admin, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	// submit clicks a form's button and waits for the page it leads to
	// (the old document is marked; the wait ends on a new one).
	submit := func(what, sel string, within time.Duration) {
		t.Helper()
		eval(`window.questOld = true, ""`)
		run(what, chromedp.Click(chromedp.CSS(sel)))
		testcluster.Eventually(t, within, what+": the next page", func() bool {
			loaded, err := chromedp.Run(admin, chromedp.Evaluate[bool](`window.questOld === undefined && document.readyState === "complete"`))
			return err == nil && loaded
		})
	}
	flash := func() string { return eval(`(document.querySelector(".flash") || {}).textContent || ""`) }
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(admin, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(out, "ha-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	marks := func() string {
		return eval(`Array.from(document.querySelectorAll("#lag-chart .primary-mark-label")).map((e) => e.textContent).join("|")`)
	}

	run("the admin signs in",
		chromedp.Navigate(a.URL()+"/login?next=/lab"),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), adminName),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse"))
	submit("sign in", `form[action="/login"] button`, 15*time.Second)
	testcluster.Eventually(t, 10*time.Second, "the lab to show Patroni's word on "+first, func() bool {
		return strings.Contains(eval(`document.querySelector("#nodes").textContent`), "Patroni: leader, running")
	})
	shot("lab-before")

	// Fail the primary: the flash says what Patroni will do; then Patroni
	// promotes a replica, and the open page marks it.
	crashed := time.Now()
	submit("fail "+first, `form[action="/lab/members/`+first+`/fail"] button`, 15*time.Second)
	if f := flash(); !strings.Contains(f, first+" crashed (SIGKILL of its Patroni and PostgreSQL); Patroni will promote a replica in about 10 s") {
		t.Fatalf("after Fail the flash says %q", f)
	}
	var second string
	testcluster.Eventually(t, 30*time.Second, "Patroni to promote a replica", func() bool {
		second = primary()
		return second != "" && second != first
	})
	t.Logf("%s promoted %.1f s after the crash of %s", second, time.Since(crashed).Seconds(), first)
	mark := "failover: " + first + " → " + second
	testcluster.Eventually(t, 10*time.Second, "the chart to mark "+mark, func() bool { return strings.Contains(marks(), mark) })
	// The page came after the crash: it may have been drawn with first as
	// the primary, or with none.
	testcluster.Eventually(t, 5*time.Second, "the page to say the primary changed", func() bool {
		return strings.Contains(eval(`document.getElementById("roles-changed").hidden ? "" : document.getElementById("roles-changed").textContent`),
			"The primary is "+second+" now")
	})
	shot("lab-failover")

	// The panel names the new primary.
	a.Router.SetStrategy(dbrouter.Primary)
	run("the catalog, read from the primary", chromedp.Navigate(a.URL()+"/catalog"), chromedp.WaitVisible(chromedp.CSS(".grid")))
	if s := eval(`document.getElementById("how-read-summary").textContent`); !strings.Contains(s, "came from primary ("+second+")") {
		t.Errorf("after the failover the panel says %q", s)
	}
	a.Router.SetStrategy(dbrouter.Causal)

	// Start the crashed member: it comes back as a replica, and its
	// replica levers work.
	run("the lab", chromedp.Navigate(a.URL()+"/lab"), chromedp.WaitVisible(chromedp.CSS("#nodes")))
	submit("start "+first, `form[action="/lab/members/`+first+`/start"] button`, 40*time.Second)
	if f := flash(); !strings.Contains(f, first+" started in") {
		t.Fatalf("after Start the flash says %q", f)
	}
	see()
	testcluster.Eventually(t, 10*time.Second, "the router to see "+first+" replaying", func() bool {
		return slices.ContainsFunc(a.Router.Health(), func(h dbrouter.Health) bool { return h.Member == first && h.Up && h.InRecovery })
	})
	run("the lab", chromedp.Navigate(a.URL()+"/lab"), chromedp.WaitVisible(chromedp.CSS("#nodes")))
	submit("pause "+first, `form[action="/lab/replicas/`+first+`/pause"] button`, 15*time.Second)
	if f := flash(); f != "Replay paused on "+first+"." {
		t.Fatalf("pause on %s, a replica now: %q", first, f)
	}
	submit("resume "+first, `form[action="/lab/replicas/`+first+`/resume"] button`, 15*time.Second)
	if f := flash(); f != "Replay resumed on "+first+"." {
		t.Fatalf("resume on %s: %q", first, f)
	}

	// Hand the primary's role back, planned.
	submit("switch over to "+first, `form[action="/lab/members/`+first+`/switchover"] button`, 40*time.Second)
	if f := flash(); !strings.Contains(f, "Switchover from "+second+" to "+first+" done in") {
		t.Fatalf("after the switchover the flash says %q", f)
	}
	see()
	mark = "switchover: " + second + " → " + first
	testcluster.Eventually(t, 10*time.Second, "the chart to mark "+mark, func() bool { return strings.Contains(marks(), mark) })
	if p := primary(); p != first {
		t.Errorf("after the switchover the router's primary is %q, want %s", p, first)
	}
	shot("lab-switchover")
}
