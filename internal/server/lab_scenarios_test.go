package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
	"quest/internal/testcluster"
)

// leversOffAtCleanup resumes replay and removes the apply delay on every
// replica of the package's cluster when the test ends, whatever it did.
func leversOffAtCleanup(t *testing.T, a *testApp) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		for _, n := range a.router.Replicas() {
			if err := a.c.Resume(ctx, n.Name); err != nil {
				t.Errorf("cleanup: resume %s: %v", n.Name, err)
			}
			if err := a.c.SetDelay(ctx, n.Name, 0); err != nil {
				t.Errorf("cleanup: delay 0 on %s: %v", n.Name, err)
			}
		}
	})
}

// seedDemoUsers creates the accounts `quest seed` creates, which the demo
// forum thread is written by, unless they exist.
func seedDemoUsers(t *testing.T, a *testApp) {
	t.Helper()
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range store.DemoUsers {
		_, err := a.store.CreateUser(context.Background(), u.Username, u.DisplayName, hash, i == 0)
		if err != nil && !errors.Is(err, store.ErrUsernameTaken) {
			t.Fatal(err)
		}
	}
}

// replica returns what the router's tracker last saw of a replica.
func replica(t *testing.T, a *testApp, name string) dbrouter.Health {
	t.Helper()
	for _, h := range a.router.Health() {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no node %s", name)
	return dbrouter.Health{}
}

// levers reports whether every replica's levers are as want says: paused
// or not, and with the given apply delay (by replica name; missing is 0).
func leversAre(t *testing.T, a *testApp, paused bool, delays map[string]time.Duration) bool {
	t.Helper()
	for _, n := range a.router.Replicas() {
		h := replica(t, a, n.Name)
		if !h.Up || h.Paused != paused || h.ApplyDelay != delays[n.Name] {
			return false
		}
	}
	return true
}

func TestLabScenariosSetUpInOneClick(t *testing.T) {
	a, admin := newLabApp(t)
	leversOffAtCleanup(t, a)

	r := admin.post("/lab/scenarios/lightsaber", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/lab" {
		t.Fatalf("set up scenario 1: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	if s := a.router.Strategy(); s != dbrouter.Random {
		t.Fatalf("scenario 1 set strategy %s, want random", s)
	}
	testcluster.Eventually(t, 10*time.Second, "replay paused on every replica", func() bool {
		return leversAre(t, a, true, nil)
	})
	for _, n := range a.router.Replicas() {
		if !labNode(t, admin, n.Name).Paused {
			t.Fatalf("/lab/state does not show %s paused", n.Name)
		}
	}
	page := admin.get("/lab")
	want(t, page, http.StatusOK, "Scenario 1 (Where is my lightsaber?) is set up: strategy random", "paused since ")

	r = admin.post("/lab/scenarios/comments", nil)
	if r.status != http.StatusSeeOther {
		t.Fatalf("set up scenario 2: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "replica1 5 s behind by its apply delay, replica2 not, nothing paused", func() bool {
		return leversAre(t, a, false, map[string]time.Duration{"replica1": 5 * time.Second})
	})
	if s := a.router.Strategy(); s != dbrouter.Random {
		t.Fatalf("scenario 2 set strategy %s, want random", s)
	}
	want(t, admin.get("/lab"), http.StatusOK, "apply delay 5 s (configured)", `value="5000"`, "replaying")
	want(t, admin.get("/lab"), http.StatusOK, "Switch the lab to causal")

	want(t, admin.post("/lab/scenarios/split-brain", nil), http.StatusNotFound, "no scenario named")
}

func TestLabResetReturnsLeversStrategyAndData(t *testing.T) {
	a, admin := newLabApp(t)
	leversOffAtCleanup(t, a)
	seedDemoUsers(t, a)

	// Some mess: a wishlist entry, a thread, levers, a strategy, and
	// per-session strategies allowed with one chosen.
	user := a.client(t)
	user.signup()
	if r := user.post("/wishlist", url.Values{"item_id": {"1"}}); r.status != http.StatusSeeOther {
		t.Fatalf("add to wishlist: %d", r.status)
	}
	want(t, user.get("/wishlist"), http.StatusOK, "Luke&#39;s green lightsaber")
	if r := user.post("/forum", url.Values{"title": {"Not the article's thread"}, "body": {"mess"}}); r.status != http.StatusSeeOther {
		t.Fatalf("new thread: %d", r.status)
	}
	for _, p := range []struct {
		path string
		form url.Values
	}{
		{"/lab/scenarios/comments", nil},
		{"/lab/replicas/replica2/pause", nil},
		{"/lab/allow-own", url.Values{"allow": {"on"}}},
		{"/lab/strategy", url.Values{"strategy": {"sticky"}}},
	} {
		if r := admin.post(p.path, p.form); r.status != http.StatusSeeOther {
			t.Fatalf("POST %s: %d\n%s", p.path, r.status, r.body)
		}
	}
	if r := user.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}); r.status != http.StatusSeeOther {
		t.Fatalf("choose own strategy: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "the mess in the levers", func() bool {
		return replica(t, a, "replica1").ApplyDelay == 5*time.Second && replica(t, a, "replica2").Paused
	})

	r := admin.post("/lab/reset", nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/lab" {
		t.Fatalf("reset: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	want(t, admin.get("/lab"), http.StatusOK, "Lab reset: ", "strategy back to causal", "per-session strategies off", "demo data as seeded")
	if s := a.router.Strategy(); s != dbrouter.Causal {
		t.Fatalf("after reset the strategy is %s, want causal (the strategy at start)", s)
	}
	testcluster.Eventually(t, 10*time.Second, "every replica replaying with no apply delay", func() bool {
		return leversAre(t, a, false, nil)
	})
	// Per-session strategies are off: the user's choice no longer applies.
	if got := dataStrategy(t, user.get("/catalog")); got != "causal" {
		t.Fatalf("after reset the user's catalog read with %s, want causal: their own choice must no longer apply", got)
	}
	want(t, user.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}), http.StatusForbidden, "off right now")

	// The data: the wishlist entry is gone, the forum is the article's
	// thread alone, with its comments.
	testcluster.Eventually(t, 10*time.Second, "the user's wishlist to be empty", func() bool {
		return strings.Contains(user.get("/wishlist").body, "Your wishlist is empty")
	})
	forum := admin.get("/forum")
	threads := regexp.MustCompile(`href="(/forum/\d+)"`).FindAllStringSubmatch(forum.body, -1)
	if len(threads) != 1 || !strings.Contains(forum.body, "Help adding items to my wishlist") || strings.Contains(forum.body, "Not the article") {
		t.Fatalf("after reset the forum has %d threads, want the article's alone\n%s", len(threads), forum.body)
	}
	want(t, admin.get(threads[0][1]), http.StatusOK, "Now I have two?", "keep getting duplicates", "ya geezer")
}

func TestLabNonAdminsCannotSetUpOrReset(t *testing.T) {
	a, _ := newLabApp(t)
	leversOffAtCleanup(t, a)
	anon, user := a.client(t), a.client(t)
	user.signup()
	for _, p := range []struct {
		path string
		form url.Values
	}{
		{"/lab/scenarios/lightsaber", nil},
		{"/lab/scenarios/comments", nil},
		{"/lab/reset", nil},
		{"/lab/allow-own", url.Values{"allow": {"on"}}},
	} {
		want(t, anon.post(p.path, p.form), http.StatusForbidden, "Only an admin")
		want(t, user.post(p.path, p.form), http.StatusForbidden, "Only an admin")
	}
	if s := a.router.Strategy(); s != dbrouter.Causal {
		t.Fatalf("a non-admin changed the strategy to %s", s)
	}
	for _, n := range a.router.Replicas() {
		if h := replica(t, a, n.Name); h.Paused || h.ApplyDelay != 0 {
			t.Fatalf("a non-admin moved %s's levers: %+v", n.Name, h)
		}
	}
	want(t, user.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}), http.StatusForbidden, "off right now")
}

// dataRoute is the X-Quest-Route entry of a page's own data read
// (node:reason:strategy[:wait]): the last read, after the session lookup.
func dataRoute(t *testing.T, r response) string {
	t.Helper()
	route := r.header.Get("X-Quest-Route")
	reads := strings.Split(route, ",")
	if r.status != http.StatusOK || route == "" {
		t.Fatalf("status %d, X-Quest-Route %q", r.status, route)
	}
	return reads[len(reads)-1]
}

// dataStrategy is the strategy a page's own data was read with.
func dataStrategy(t *testing.T, r response) string {
	t.Helper()
	f := strings.Split(dataRoute(t, r), ":")
	if len(f) < 3 {
		t.Fatalf("X-Quest-Route %q", r.header.Get("X-Quest-Route"))
	}
	return f[2]
}

func TestLabOwnStrategyPerSession(t *testing.T) {
	a, admin := newLabApp(t)
	leversOffAtCleanup(t, a)
	if r := admin.post("/lab/strategy", url.Values{"strategy": {"random"}}); r.status != http.StatusSeeOther {
		t.Fatalf("lab strategy: %d", r.status)
	}
	alice, bob, anon := a.client(t), a.client(t), a.client(t)
	alice.signup()
	bob.signup()

	want(t, alice.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}), http.StatusForbidden, "off right now")
	want(t, admin.post("/lab/allow-own", url.Values{"allow": {"maybe"}}), http.StatusBadRequest, "either on or off")
	if r := admin.post("/lab/allow-own", url.Values{"allow": {"on"}}); r.status != http.StatusSeeOther {
		t.Fatalf("allow own: %d\n%s", r.status, r.body)
	}
	want(t, anon.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}), http.StatusUnauthorized, "Please sign in")
	want(t, alice.post("/lab/own-strategy", url.Values{"strategy": {"fastest"}}), http.StatusBadRequest, "unknown strategy")
	want(t, alice.post("/lab/own-strategy", url.Values{"strategy": {""}}), http.StatusBadRequest, "unknown strategy")
	if r := alice.post("/lab/own-strategy", url.Values{"strategy": {"primary"}}); r.status != http.StatusSeeOther {
		t.Fatalf("alice chooses primary: %d\n%s", r.status, r.body)
	}

	// Alice's pages read with primary; Bob's with the lab's random.
	page := alice.get("/catalog")
	if got := dataRoute(t, page); got != "primary:primary-only:primary" {
		t.Fatalf("alice's catalog under her own primary: %s", got)
	}
	want(t, page, http.StatusOK, "You chose <strong>primary</strong> for your own session.")
	want(t, alice.get("/lab"), http.StatusOK, "your own choice, for your session only", `value="primary" checked`)
	page = bob.get("/catalog")
	if got := dataStrategy(t, page); got != "random" {
		t.Fatalf("bob's catalog, with no choice of his own, read with %s, want the lab's random", got)
	}
	want(t, page, http.StatusOK, "Strategy in force: <strong>random</strong>")
	want(t, bob.get("/lab"), http.StatusOK, "Reads for you use the lab's strategy: <strong id=\"strategy\">random</strong>")

	// "Use the lab's strategy" removes the choice; so does turning
	// per-session strategies off.
	if r := alice.post("/lab/own-strategy", url.Values{"strategy": {"lab"}}); r.status != http.StatusSeeOther {
		t.Fatalf("alice back to the lab's: %d", r.status)
	}
	if got := dataStrategy(t, alice.get("/catalog")); got != "random" {
		t.Fatalf("alice back on the lab's strategy read with %s, want random", got)
	}
	if r := alice.post("/lab/own-strategy", url.Values{"strategy": {"causal"}}); r.status != http.StatusSeeOther {
		t.Fatalf("alice chooses causal: %d", r.status)
	}
	if got := dataStrategy(t, alice.get("/catalog")); got != "causal" {
		t.Fatalf("alice on her own causal read with %s", got)
	}
	if r := admin.post("/lab/allow-own", url.Values{"allow": {"off"}}); r.status != http.StatusSeeOther {
		t.Fatalf("allow off: %d", r.status)
	}
	if got := dataStrategy(t, alice.get("/catalog")); got != "random" {
		t.Fatalf("per-session strategies off, alice's catalog read with %s, want the lab's random", got)
	}
	want(t, alice.get("/lab"), http.StatusOK, "You chose <strong>causal</strong> earlier")
}

// delayInput finds replica2's apply-delay input and its value.
var delayInput = regexp.MustCompile(`(?s)action="/lab/replicas/replica2/delay".*?name="delay_ms"[^>]*value="(\d+)"`)

func TestLabShowsTheConfiguredApplyDelay(t *testing.T) {
	a, admin := newLabApp(t)
	leversOffAtCleanup(t, a)
	if r := admin.post("/lab/replicas/replica2/delay", url.Values{"delay_ms": {"2500"}}); r.status != http.StatusSeeOther {
		t.Fatalf("delay: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "the lab to show replica2's apply delay", func() bool {
		body := admin.get("/lab").body
		return strings.Contains(body, "apply delay 2.5 s (configured)") && delayInput.FindStringSubmatch(body) != nil &&
			delayInput.FindStringSubmatch(body)[1] == "2500"
	})
	var st struct {
		Nodes []struct {
			Name         string `json:"name"`
			ApplyDelayMS int64  `json:"apply_delay_ms"`
			ApplyDelay   string `json:"apply_delay"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(admin.get("/lab/state").body), &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Name == "replica2" && (n.ApplyDelayMS != 2500 || n.ApplyDelay != "apply delay 2.5 s (configured)") {
			t.Fatalf("/lab/state for replica2: %+v", n)
		}
	}
}

func TestLabWithoutLeversSaysSo(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	seedDemoUsers(t, a)
	admin := a.admin(t)
	want(t, admin.get("/lab"), http.StatusOK, "no lever is touched")
	if r := admin.post("/lab/scenarios/lightsaber", nil); r.status != http.StatusSeeOther {
		t.Fatalf("set up: %d\n%s", r.status, r.body)
	}
	want(t, admin.get("/lab"), http.StatusOK, "has no levers (it does not manage the local cluster and has no --lever-url), so it pulled none", "quest cluster pause replica1")
	if s := a.router.Strategy(); s != dbrouter.Random {
		t.Fatalf("strategy %s, want random", s)
	}
	if r := admin.post("/lab/reset", nil); r.status != http.StatusSeeOther {
		t.Fatalf("reset: %d\n%s", r.status, r.body)
	}
	want(t, admin.get("/lab"), http.StatusOK, "no lever touched (this app instance has no levers: no local cluster, no --lever-url)", "strategy back to causal")
	if s := a.router.Strategy(); s != dbrouter.Causal {
		t.Fatalf("strategy %s after reset, want causal", s)
	}
}

// TestLabYourLastRequests plays scenario 1 and finds it on the lab's
// timeline: the wishlist read from a paused replica is marked as maybe
// missing the change, with both positions; another session's history is
// its own.
func TestLabYourLastRequests(t *testing.T) {
	a, admin := newLabApp(t)
	leversOffAtCleanup(t, a)
	user := a.client(t)
	user.signup()
	want(t, user.get("/lab"), http.StatusOK, "No page views in this session yet")
	user.get("/catalog")
	want(t, user.get("/lab"), http.StatusOK, `<svg class="timeline"`, "<code>/catalog</code>", "<code>/lab</code>")
	waitReplicated(t, a)
	if r := admin.post("/lab/scenarios/lightsaber", nil); r.status != http.StatusSeeOther {
		t.Fatalf("set up: %d\n%s", r.status, r.body)
	}
	testcluster.Eventually(t, 10*time.Second, "replay paused on every replica", func() bool {
		for _, n := range a.router.Replicas() {
			if h := replica(t, a, n.Name); h.PauseState != "paused" {
				return false
			}
		}
		return true
	})
	if r := user.post("/wishlist", url.Values{"item_id": {"1"}}); r.status != http.StatusSeeOther {
		t.Fatalf("add: %d", r.status)
	}
	wl := user.get("/wishlist")
	want(t, wl, http.StatusOK, "this page may be missing your last change")
	if strings.Contains(wl.body, "Luke&#39;s green lightsaber") {
		t.Fatal("under random with replay paused, the wishlist has the lightsaber: the scenario did not happen")
	}

	lab := user.get("/lab")
	want(t, lab, http.StatusOK, `class="mark missing"`, "<code>/wishlist</code>", `<span class="verdict missing">may be missing your change</span>`)
	// The wishlist row shows both positions: the user's change, and the
	// replica's older replay position.
	row := regexp.MustCompile(`(?s)<tr class="missing">.*?</tr>`).FindString(lab.body)
	if n := len(regexp.MustCompile(`<code>[0-9A-F]+/[0-9A-F]+</code>`).FindAllString(row, -1)); n != 2 {
		t.Fatalf("the wishlist row shows %d positions, want the user's and the replica's\n%s", n, row)
	}

	// The admin's history is the admin's own.
	if body := admin.get("/lab").body; strings.Contains(body, "<code>/wishlist</code>") {
		t.Fatal("the admin's lab shows the user's requests")
	}
}
