package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/testcluster"
)

// TestBrowserWorkshop plays the workshop in Chromium, with two browser
// contexts — two cookie jars, as an admin's window and an attendee's
// private window: the admin sets each scenario up from /lab, a new user
// signs up and plays it, and the pages must say in words what happened.
// Screenshots go to .quest/test-output/browser/workshop-*.png.
func TestBrowserWorkshop(t *testing.T) {
	a := startApp(t, dbrouter.Causal, testcluster.Get(t))
	ctx := context.Background()
	t.Cleanup(func() {
		for _, n := range []string{"replica1", "replica2"} {
			a.c.Resume(context.Background(), n)
			a.c.SetDelay(context.Background(), n, 0)
		}
	})
	seedDemoUsers(t, a) // Reset lab puts the article's thread back, by them
	adminName := fmt.Sprintf("ws_admin_%d", time.Now().UnixNano()%1e9)
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	adminUser, err := a.store.CreateUser(ctx, adminName, "Workshop Admin", hash, true)
	if err != nil {
		t.Fatal(err)
	}
	thread, err := a.store.CreateThread(ctx, adminUser.ID, "Help adding items to my wishlist", "I added a lightsaber and it wasn't there.")
	if err != nil {
		t.Fatal(err)
	}
	out := outputDir(t)
	b := browser(t)
	admin, cancelA := chromedp.NewContext(b, chromedp.WithNewBrowserContext())
	defer cancelA()
	user, cancelU := chromedp.NewContext(b, chromedp.WithNewBrowserContext())
	defer cancelU()
	admin, cancelAT := context.WithTimeout(admin, 90*time.Second)
	defer cancelAT()
	user, cancelUT := context.WithTimeout(user, 90*time.Second)
	defer cancelUT()

	run := func(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(ctx context.Context, sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	shot := func(ctx context.Context, name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(out, "workshop-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// submit clicks a form's button and waits for the page the form leads
	// to: the old document is marked, and the wait ends on a new one.
	submit := func(ctx context.Context, what, sel string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.questOld = true`)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		run(ctx, what, chromedp.Click(chromedp.CSS(sel)))
		// Evaluating while the page navigates fails: ask again.
		testcluster.Eventually(t, 15*time.Second, what+": the next page", func() bool {
			loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.questOld === undefined && document.readyState === "complete"`))
			return err == nil && loaded
		})
	}
	click := submit
	strategy := func(want dbrouter.Strategy) {
		t.Helper()
		testcluster.Eventually(t, 5*time.Second, "the lab's strategy to be "+want.String(), func() bool { return a.router.Strategy() == want })
	}

	// The admin signs in and opens the lab; the attendee signs up in their
	// own window.
	run(admin, "admin signs in",
		chromedp.Navigate(a.URL+"/login?next=/lab"),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), adminName),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse"))
	submit(admin, "sign in", `form[action="/login"] button`)
	run(admin, "the lab", chromedp.WaitVisible(chromedp.CSS(`form[action="/lab/scenarios/lightsaber"]`)))
	attendee := fmt.Sprintf("ws_user_%d", time.Now().UnixNano()%1e9)
	run(user, "attendee fills in the sign-up form",
		chromedp.Navigate(a.URL+"/signup"),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), attendee),
		chromedp.SendKeys(chromedp.CSS(`input[name=display_name]`), "Attendee"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse"))
	submit(user, "sign up", `form[action="/signup"] button`)
	waitReplicated(t, a)

	// Scenario 1 under random: replay paused, the lightsaber is missing,
	// and the panel says so with both positions.
	click(admin, "set up scenario 1", `form[action="/lab/scenarios/lightsaber"] button`)
	strategy(dbrouter.Random)
	testcluster.Eventually(t, 10*time.Second, "both replicas paused", func() bool {
		h := a.router.Health()
		return h[1].Paused && h[2].Paused
	})
	shot(admin, "lab-scenario1")
	click(user, "add Luke's lightsaber", `form[action="/wishlist"] button`)
	if main := text(user, "main"); strings.Contains(main, "Luke's green lightsaber") {
		t.Fatalf("under random with replay paused the lightsaber is on the wishlist:\n%s", main)
	}
	panel := text(user, "#how-read-summary")
	for _, want := range []string{"this page may be missing your last change", "has replayed up to", "your change is at"} {
		if !strings.Contains(panel, want) {
			t.Fatalf("the wishlist's panel under random says %q; want %q", panel, want)
		}
	}
	shot(user, "scenario1-random-wishlist")

	// The same under causal: the lightsaber is there, and the panel says why.
	click(admin, "switch the lab to causal", `form.inline-form[action="/lab/strategy"] button`)
	strategy(dbrouter.Causal)
	run(user, "back to the catalog", chromedp.Navigate(a.URL+"/catalog"), chromedp.WaitVisible(chromedp.CSS(`.grid`)))
	click(user, "add it again", `form[action="/wishlist"] button`)
	if main := text(user, "main"); !strings.Contains(main, "Luke's green lightsaber") {
		t.Fatalf("under causal the lightsaber is missing:\n%s", main)
	}
	if panel := text(user, "#how-read-summary"); !strings.Contains(panel, "primary answered") && !strings.Contains(panel, "replayed your last change") {
		t.Fatalf("the panel under causal does not say why: %q", panel)
	}
	shot(user, "scenario1-causal-wishlist")

	// Scenario 2 under sticky: replica1 5 s behind; the thread's panel
	// carries sticky's caveat about your own new comment.
	click(admin, "set up scenario 2", `form[action="/lab/scenarios/comments"] button`)
	testcluster.Eventually(t, 10*time.Second, "replica1's 5 s apply delay", func() bool {
		h := a.router.Health()
		return h[1].ApplyDelay == 5*time.Second && !h[1].Paused && !h[2].Paused
	})
	run(admin, "choose sticky", chromedp.Click(chromedp.CSS(`form.strategies[action="/lab/strategy"] input[value=sticky]`)))
	submit(admin, "switch the lab to sticky", `form.strategies[action="/lab/strategy"] button`)
	strategy(dbrouter.Sticky)
	if lab := text(admin, "main"); !strings.Contains(lab, "your own new comment does not show for about 5 s") {
		t.Fatalf("the lab page does not carry sticky's caveat:\n%s", lab)
	}
	run(user, "open the thread", chromedp.Navigate(fmt.Sprintf("%s/forum/%d", a.URL, thread)), chromedp.WaitVisible(chromedp.CSS(`textarea[name=body]`)))
	run(user, "write a comment", chromedp.SendKeys(chromedp.CSS(`textarea[name=body]`), "Where is my lightsaber? — "+attendee))
	submit(user, "post the comment", `form[action$="/comments"] button`)
	// The caveat is in the panel's rows (folded: TextContent, not Text).
	panel, err = chromedp.Run(user, chromedp.TextContent(chromedp.CSS("#how-read")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(panel, "may not have your own newest comment yet") {
		t.Fatalf("the thread's panel under sticky lacks the caveat: %q", panel)
	}
	shot(user, "scenario2-sticky-thread")

	// Per-session strategies: the attendee picks primary; the admin's
	// pages stay on the lab's strategy (sticky).
	click(admin, "allow per-session strategies", `form[action="/lab/allow-own"] button`)
	run(user, "choose primary for my session",
		chromedp.Navigate(a.URL+"/lab"),
		chromedp.Click(chromedp.CSS(`form[action="/lab/own-strategy"] input[value=primary]`)))
	submit(user, "use it for my session", `form.strategies[action="/lab/own-strategy"] button`)
	run(user, "the attendee's catalog", chromedp.Navigate(a.URL+"/catalog"), chromedp.WaitVisible(chromedp.CSS(`.grid`)))
	run(admin, "the admin's catalog", chromedp.Navigate(a.URL+"/catalog"), chromedp.WaitVisible(chromedp.CSS(`.grid`)))
	if p := text(user, "#how-read-summary"); !strings.HasSuffix(strings.TrimSpace(p), "strategy primary") {
		t.Fatalf("the attendee chose primary, but their panel says %q", p)
	}
	if p := text(admin, "#how-read-summary"); !strings.HasSuffix(strings.TrimSpace(p), "strategy sticky") {
		t.Fatalf("the attendee's choice changed the admin's pages: %q", p)
	}
	shot(user, "own-strategy-catalog")

	// Reset lab: levers off, the default strategy, the demo data back.
	run(admin, "reset the lab", chromedp.Navigate(a.URL+"/lab"))
	click(admin, "reset", `form[action="/lab/reset"] button`)
	strategy(dbrouter.Causal)
	testcluster.Eventually(t, 10*time.Second, "every lever off", func() bool {
		h := a.router.Health()
		return !h[1].Paused && !h[2].Paused && h[1].ApplyDelay == 0 && h[2].ApplyDelay == 0
	})
	shot(admin, "lab-after-reset")
	// The reset is the admin's write: the attendee's session has not seen
	// it, so causal may serve their next page from a replica that has not
	// replayed it yet. Once replicated, everyone sees it.
	waitReplicated(t, a)
	run(user, "the attendee's wishlist after the reset", chromedp.Navigate(a.URL+"/wishlist"), chromedp.WaitReady(chromedp.CSS("main")))
	if main := text(user, "main"); !strings.Contains(main, "Your wishlist is empty") {
		t.Fatalf("after Reset lab the wishlist is not empty:\n%s", main)
	}
	if p := text(user, "#how-read-summary"); !strings.HasSuffix(strings.TrimSpace(p), "strategy causal") {
		t.Fatalf("after Reset lab the attendee's own choice still applies: %q", p)
	}
}
