package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/app"
	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
	"quest/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

var testKey = []byte("0123456789abcdef0123456789abcdef-test-key")

type testApp struct {
	URL    string
	router *dbrouter.Router
	store  *store.Store
	c      *cluster.Cluster
	app    *app.App
}

// newApp serves Quest, wired as `quest serve` wires it, with the given
// strategy on the package's cluster, on a free loopback port until the
// test ends.
func newApp(t *testing.T, s dbrouter.Strategy) *testApp {
	t.Helper()
	return startApp(t, s, nil)
}

// startApp serves Quest on the package's cluster with the given strategy
// and levers; each tweak may change the configuration first.
func startApp(t *testing.T, s dbrouter.Strategy, levers server.Levers, tweaks ...func(*app.Config)) *testApp {
	t.Helper()
	return startAppOn(t, testcluster.Get(t), s, levers, tweaks...)
}

// startAppOn is startApp on a cluster of the test's own. The app closes
// before cleanups registered earlier run, the cluster's removal among them.
func startAppOn(t *testing.T, c *cluster.Cluster, s dbrouter.Strategy, levers server.Levers, tweaks ...func(*app.Config)) *testApp {
	t.Helper()
	cfg := app.Config{
		Router:     dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), Strategy: s, PollInterval: 50 * time.Millisecond},
		SessionKey: testKey, LoginsPerMinutePerAddr: 10000, SignupsPerHourPerAddr: 10000, Levers: levers,
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	a, err := app.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start("127.0.0.1:0"); err != nil {
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return &testApp{URL: a.URL(), router: a.Router, store: a.Store, c: c, app: a}
}

// client is a browser-like client: a cookie jar, redirects not followed.
type client struct {
	t    *testing.T
	base string
	http *http.Client
}

// primary is a connection of the test's own to the primary, as the app's
// role, closed when the test ends.
func (a *testApp) primary(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), a.c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (a *testApp) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: a.URL, http: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type response struct {
	status int
	body   string
	header http.Header
}

func (c *client) do(req *http.Request) response {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: string(b), header: resp.Header}
}

func (c *client) get(path string) response {
	req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
	return c.do(req)
}

// tryPost posts a form and returns the status, or the transport error: for
// goroutines other than the test's, where t.Fatal must not be called.
func (c *client) tryPost(path string, form url.Values) (int, error) {
	resp, err := c.http.PostForm(c.base+path, form)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (c *client) post(path string, form url.Values, headers ...string) response {
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.do(req)
}

var userSeq atomic.Int64

// signup creates and signs in a fresh user; it returns the username.
func (c *client) signup() string {
	c.t.Helper()
	name := fmt.Sprintf("u%d_%d", time.Now().UnixNano()%1e9, userSeq.Add(1))
	r := c.post("/signup", url.Values{"username": {name}, "display_name": {"User " + name}, "password": {"correct horse"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/catalog" {
		c.t.Fatalf("signup: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	return name
}

func (c *client) login(name string) response {
	return c.post("/login", url.Values{"username": {name}, "password": {"correct horse"}})
}

func want(t *testing.T, r response, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d\n%s", r.status, status, r.body)
	}
	for _, s := range contains {
		if !strings.Contains(r.body, s) {
			t.Fatalf("page lacks %q\n%s", s, r.body)
		}
	}
}

var servedByRE = regexp.MustCompile(`^(none|(primary|replica\d)(,(primary|replica\d))*)$`)

func TestPagesAndServedBy(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	for _, p := range []string{"/", "/catalog", "/forum", "/login", "/signup", "/healthz"} {
		r := c.get(p)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d", p, r.status)
		}
		if h := r.header.Get("X-Quest-Served-By"); !servedByRE.MatchString(h) {
			t.Fatalf("GET %s: X-Quest-Served-By %q", p, h)
		}
	}
	r := c.get("/catalog")
	want(t, r, http.StatusOK, "Luke&#39;s green lightsaber", "Kylo Ren&#39;s crossguard", "How this page was read:")
	if h := r.header.Get("X-Quest-Served-By"); !strings.HasPrefix(h, "replica") {
		t.Fatalf("the catalog under causal was served by %q, want a replica", h)
	}
	if !strings.Contains(r.body, "· strategy causal</span>") {
		t.Fatal("the panel does not name the strategy")
	}
}

func TestAccountFlow(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	want(t, c.get("/wishlist"), http.StatusOK, "Your wishlist is empty")
	want(t, c.get("/profile"), http.StatusOK, "@"+name)

	r := c.post("/logout", nil)
	if r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.status)
	}
	if r := c.get("/wishlist"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login") {
		t.Fatalf("after logout /wishlist: %d %s", r.status, r.header.Get("Location"))
	}
	r = c.post("/login", url.Values{"username": {name}, "password": {"wrong password"}})
	want(t, r, http.StatusUnauthorized, "Wrong username or password.", `value="`+name+`"`)
	if r := c.login(name); r.status != http.StatusSeeOther {
		t.Fatalf("login: %d\n%s", r.status, r.body)
	}
	want(t, c.get("/wishlist"), http.StatusOK, "Your wishlist")

	// A taken username and a short password are shown next to the fields,
	// with the input kept.
	r = a.client(t).post("/signup", url.Values{"username": {name}, "display_name": {"Twin"}, "password": {"correct horse"}})
	want(t, r, http.StatusUnprocessableEntity, "That username is taken", `value="Twin"`)
	r = a.client(t).post("/signup", url.Values{"username": {"Bad Name!"}, "display_name": {""}, "password": {"short"}})
	want(t, r, http.StatusUnprocessableEntity, "Use 3–32 lowercase", "Display name is required.", "Use 8 to 72 characters.")
}

func TestSessionTokenRenewedOnSignIn(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	c.post("/logout", nil)
	u, _ := url.Parse(a.URL)
	before := sessionCookie(c, u)
	c.login(name)
	after := sessionCookie(c, u)
	if before == "" || after == "" || before == after {
		t.Fatalf("session token not renewed on sign-in: %q then %q", before, after)
	}
}

func sessionCookie(c *client, u *url.URL) string {
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == "quest_session" {
			return ck.Value
		}
	}
	return ""
}

func TestWishlistCountsDuplicates(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	for range 2 {
		r := c.post("/wishlist", url.Values{"item_id": {"1"}})
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/wishlist" {
			t.Fatalf("add: %d %s", r.status, r.header.Get("Location"))
		}
	}
	r := c.get("/wishlist")
	want(t, r, http.StatusOK, "Luke&#39;s green lightsaber", "×2", "Added to your wishlist.")
	entry := regexp.MustCompile(`/wishlist/(\d+)/delete`).FindStringSubmatch(r.body)
	if entry == nil {
		t.Fatal("no remove button")
	}
	if r := c.post("/wishlist/"+entry[1]+"/delete", nil); r.status != http.StatusSeeOther {
		t.Fatalf("remove: %d", r.status)
	}
	r = c.get("/wishlist")
	if strings.Contains(r.body, "×2") || !strings.Contains(r.body, "Luke&#39;s green lightsaber") {
		t.Fatalf("after removing one of two:\n%s", r.body)
	}
}

func TestNobodyTouchesAnothersData(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	alice, bob := a.client(t), a.client(t)
	alice.signup()
	bob.signup()
	alice.post("/wishlist", url.Values{"item_id": {"2"}})
	entry := regexp.MustCompile(`/wishlist/(\d+)/delete`).FindStringSubmatch(alice.get("/wishlist").body)
	if entry == nil {
		t.Fatal("alice has no entry")
	}
	want(t, bob.post("/wishlist/"+entry[1]+"/delete", nil), http.StatusNotFound)
	want(t, alice.get("/wishlist"), http.StatusOK, "Vader&#39;s red lightsaber")

	// Bob's profile form changes Bob only; there is no route to edit Alice.
	aliceID := regexp.MustCompile(`/users/(\d+)`).FindStringSubmatch(alice.get("/profile").body)[1]
	want(t, bob.post("/profile", url.Values{"display_name": {"Bob"}, "bio": {"hi"}, "id": {aliceID}}), http.StatusSeeOther)
	if r := bob.post("/users/"+aliceID, url.Values{"display_name": {"pwned"}}); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /users/{id}: %d", r.status)
	}
	if r := alice.get("/profile"); strings.Contains(r.body, "pwned") || strings.Contains(r.body, `value="Bob"`) {
		t.Fatal("bob changed alice's profile")
	}

	// Anonymous visitors change nothing.
	anon := a.client(t)
	want(t, anon.post("/wishlist", url.Values{"item_id": {"3"}}), http.StatusUnauthorized)
	want(t, anon.post("/forum", url.Values{"title": {"t"}, "body": {"b"}}), http.StatusUnauthorized)
}

func TestForum(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	r := c.post("/forum", url.Values{"title": {"Help adding items to my wishlist"}, "body": {"Where is my lightsaber?"}})
	loc := r.header.Get("Location")
	if r.status != http.StatusSeeOther || !regexp.MustCompile(`^/forum/\d+$`).MatchString(loc) {
		t.Fatalf("new thread: %d %q", r.status, loc)
	}
	nasty := `<script>alert("x")</script> O'Brien; DROP TABLE comments;--`
	r = c.post(loc+"/comments", url.Values{"body": {nasty}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("comment: %d\n%s", r.status, r.body)
	}
	page := c.get(loc)
	want(t, page, http.StatusOK, "Where is my lightsaber?", "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; O&#39;Brien; DROP TABLE comments;--")
	if strings.Contains(page.body, "<script>") {
		t.Fatal("a comment's markup reached the page unescaped")
	}
	if strings.Index(page.body, "Where is my lightsaber?") > strings.Index(page.body, "O&#39;Brien") {
		t.Fatal("comments are not oldest first")
	}
	want(t, c.get("/forum"), http.StatusOK, "Help adding items to my wishlist")

	// Errors next to the field, input kept.
	r = c.post("/forum", url.Values{"title": {""}, "body": {"kept body"}})
	want(t, r, http.StatusUnprocessableEntity, "Title is required.", "kept body")
	r = c.post(loc+"/comments", url.Values{"body": {strings.Repeat("x", 5001)}})
	want(t, r, http.StatusUnprocessableEntity, "at most 5000 characters")
}

func TestBadInputIsA4xx(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	tests := []struct {
		name   string
		path   string
		form   url.Values
		status int
	}{
		{"invalid UTF-8", "/forum", url.Values{"title": {"bad \xff"}, "body": {"x"}}, http.StatusBadRequest},
		{"NUL byte", "/forum", url.Values{"title": {"nul\x00"}, "body": {"x"}}, http.StatusBadRequest},
		{"huge body", "/forum", url.Values{"title": {"t"}, "body": {strings.Repeat("y", 100<<10)}}, http.StatusRequestEntityTooLarge},
		{"non-numeric item", "/wishlist", url.Values{"item_id": {"abc"}}, http.StatusBadRequest},
		{"negative item", "/wishlist", url.Values{"item_id": {"-4"}}, http.StatusBadRequest},
		{"unknown item", "/wishlist", url.Values{"item_id": {"999999999"}}, http.StatusNotFound},
		{"missing item", "/wishlist", url.Values{}, http.StatusBadRequest},
		{"huge entry id", "/wishlist/99999999999999999999/delete", nil, http.StatusNotFound},
		{"unknown thread", "/forum/999999999/comments", url.Values{"body": {"hello"}}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.post(tt.path, tt.form)
			if r.status != tt.status {
				t.Fatalf("POST %s: %d, want %d\n%s", tt.path, r.status, tt.status, r.body)
			}
			if !strings.Contains(r.body, "<h1>") {
				t.Fatal("no error page")
			}
		})
	}
	for _, p := range []string{"/forum/0", "/forum/-1", "/forum/abc", "/users/x", "/forum?page=0", "/forum?page=zz"} {
		if r := c.get(p); r.status < 400 || r.status >= 500 {
			t.Fatalf("GET %s: %d", p, r.status)
		}
	}
}

func TestCrossOriginPostsRefused(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	for _, h := range [][]string{{"Sec-Fetch-Site", "cross-site"}, {"Origin", "http://evil.example"}} {
		r := c.post("/wishlist", url.Values{"item_id": {"5"}}, h...)
		want(t, r, http.StatusForbidden, "another site")
	}
	if strings.Contains(c.get("/wishlist").body, "Mace Windu") {
		t.Fatal("a cross-origin post was stored")
	}
}

func TestTamperedCookiesMeanAnEmptyState(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	u, _ := url.Parse(a.URL)
	c.http.Jar.SetCookies(u, []*http.Cookie{
		{Name: "quest_consistency", Value: "AAAAforged", Path: "/"},
		{Name: "quest_session", Value: "forged-session-token", Path: "/"},
	})
	r := c.get("/wishlist")
	if r.status != http.StatusSeeOther {
		t.Fatalf("a forged session cookie was accepted: %d", r.status)
	}
	want(t, c.get("/catalog"), http.StatusOK)
	// The forged consistency cookie was replaced by an empty state: a new
	// anonymous identity (bit 62) and no last write — the user's sign-up
	// had set both. (The page's own reads may have set a token since.)
	var st dbrouter.State
	found := false
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name != "quest_consistency" {
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(ck.Value)
		if err != nil || len(b) < 16 {
			t.Fatalf("consistency cookie %q is not what the server writes", ck.Value)
		}
		if st, err = dbrouter.DecodeState(b[:len(b)-16]); err != nil {
			t.Fatalf("consistency cookie after the forgery: %v", err)
		}
		found = true
	}
	if !found {
		t.Fatal("the forged consistency cookie was not replaced")
	}
	if st.Session&(1<<62) == 0 || !st.LastWrite.IsZero() {
		t.Fatalf("state after a forged cookie: %+v; want a new anonymous identity and no last write", st)
	}
}

func TestLoginRateLimit(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	c.post("/logout", nil)
	var last response
	for range 6 {
		last = c.post("/login", url.Values{"username": {name}, "password": {"guess"}})
	}
	want(t, last, http.StatusTooManyRequests, "Too many sign-in attempts")
}

// TestSignInThenPageUnderEveryStrategy: a sign-in followed at once by a
// page view stays signed in whatever the strategy — session lookups route
// causally — with replicas fresh and with replay paused after the account
// replicated.
func TestSignInThenPageUnderEveryStrategy(t *testing.T) {
	for _, paused := range []bool{false, true} {
		for _, s := range dbrouter.Strategies() {
			t.Run(fmt.Sprintf("%s/paused=%v", s, paused), func(t *testing.T) {
				a := newApp(t, s)
				c := a.client(t)
				name := c.signup()
				c.post("/logout", nil)
				if paused {
					waitReplicated(t, a)
					for _, n := range []string{"replica1", "replica2"} {
						if err := a.c.Pause(context.Background(), n); err != nil {
							t.Fatal(err)
						}
						t.Cleanup(func() { a.c.Resume(context.Background(), n) })
					}
				}
				if r := c.login(name); r.status != http.StatusSeeOther {
					t.Fatalf("login: %d", r.status)
				}
				want(t, c.get("/profile"), http.StatusOK, "@"+name)
			})
		}
	}
}

// TestSignInSeesAccountsChangedElsewhere: an account made, or a password
// reset, by another process (`quest seed`, say) carries no token a browser
// could hold. With every replica behind, a fresh browser signs in with the
// new account at once, and a reset password stops the old one at once:
// credentials are checked on the primary, whatever the strategy.
func TestSignInSeesAccountsChangedElsewhere(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	waitReplicated(t, a)
	// Delayed rather than paused: the router skips a paused replica, but
	// one an hour behind on new commits looks fresh until lag builds up.
	for _, n := range []string{"replica1", "replica2"} {
		if err := a.c.SetDelay(context.Background(), n, time.Hour); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.c.SetDelay(context.Background(), n, 0) })
	}
	elsewhere := store.New(a.router) // no session state: another process
	name := fmt.Sprintf("seeded%d_%d", time.Now().UnixNano()%1e9, userSeq.Add(1))
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := elsewhere.CreateUser(context.Background(), name, "Seeded", hash, false); err != nil {
		t.Fatal(err)
	}
	if r := a.client(t).login(name); r.status != http.StatusSeeOther {
		t.Fatalf("signing in with an account made elsewhere: %d, want 303", r.status)
	}
	hash, err = server.HashPassword("battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if err := elsewhere.SetPassword(context.Background(), name, hash); err != nil {
		t.Fatal(err)
	}
	if r := a.client(t).login(name); r.status != http.StatusUnauthorized {
		t.Fatalf("the old password after a reset: %d, want 401", r.status)
	}
	r := a.client(t).post("/login", url.Values{"username": {name}, "password": {"battery staple"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("the new password after a reset: %d, want 303", r.status)
	}
}

func waitReplicated(t *testing.T, a *testApp) {
	t.Helper()
	if err := a.c.WaitCaughtUp(context.Background(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestReadOnlyWhilePrimaryDown(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	c.post("/wishlist", url.Values{"item_id": {"6"}})
	c.post("/logout", nil)
	c.login(name)
	waitReplicated(t, a)
	if err := a.c.Stop(context.Background(), "leader", false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.c.Start(context.Background(), "leader") })

	// Read pages keep working from the replicas, still signed in.
	want(t, c.get("/catalog"), http.StatusOK, "Obi-Wan")
	r := c.get("/wishlist")
	want(t, r, http.StatusOK, "Obi-Wan&#39;s blue lightsaber")
	if strings.Contains(r.header.Get("X-Quest-Served-By"), "primary") {
		t.Fatal("a read went to the stopped primary")
	}
	// Every form answers 503, read-only right now.
	for _, p := range []struct {
		path string
		form url.Values
	}{
		{"/wishlist", url.Values{"item_id": {"1"}}},
		{"/forum", url.Values{"title": {"t"}, "body": {"b"}}},
		{"/profile", url.Values{"display_name": {"x"}}},
	} {
		want(t, c.post(p.path, p.form), http.StatusServiceUnavailable, "Read-only right now")
	}
	// Signing in writes the session: the error page is the whole answer.
	c2 := a.client(t)
	r = c2.login(name)
	want(t, r, http.StatusServiceUnavailable, "Read-only right now")
	if r.header.Get("Location") != "" {
		t.Fatal("the failed sign-in still redirected")
	}
}

// TestHostileInputNeverA5xx sends every form and route bad input — wrong
// methods, invalid UTF-8, NUL bytes, oversized and missing fields, odd ids
// — and wants a 4xx with a page saying why, and nothing stored.
func TestHostileInputNeverA5xx(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	primary := a.primary(t)
	counts := func() string {
		var w, th, cm int
		err := primary.QueryRow(context.Background(),
			`SELECT (SELECT count(*) FROM wishlist_entries), (SELECT count(*) FROM threads), (SELECT count(*) FROM comments)`).Scan(&w, &th, &cm)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(w, th, cm)
	}
	r := c.post("/forum", url.Values{"title": {"target"}, "body": {"a thread to aim at"}})
	thread := r.header.Get("Location")
	before := counts()
	big := strings.Repeat("z", 70<<10)
	posts := []string{"/signup", "/login", "/profile", "/wishlist", "/wishlist/1/delete", "/forum", thread + "/comments"}
	bad := []url.Values{
		{"username": {"\xff\xfe"}, "display_name": {"\xff"}, "password": {"\xff"}, "title": {"\xff"}, "body": {"\xff"}, "bio": {"\xff"}, "item_id": {"\xff"}},
		{"username": {"a\x00b"}, "display_name": {"\x00"}, "password": {"\x00"}, "title": {"\x00"}, "body": {"\x00"}, "bio": {"\x00"}, "item_id": {"1\x00"}},
		{"title": {big}, "body": {big}},
	}
	for _, p := range posts {
		for i, form := range bad {
			r := c.post(p, form)
			if r.status < 400 || r.status > 499 || !strings.Contains(r.body, "<h1>") {
				t.Errorf("POST %s with bad form %d: %d", p, i, r.status)
			}
		}
	}
	for _, m := range []struct{ method, path string }{
		{http.MethodGet, "/logout"}, {http.MethodPost, "/catalog"}, {http.MethodDelete, "/wishlist"},
		{http.MethodPut, thread}, {http.MethodPatch, "/profile"}, {http.MethodGet, "/wishlist/1/delete"},
		{http.MethodGet, "/forum/1/comments"}, {http.MethodPost, "/lab/state"},
	} {
		req, _ := http.NewRequest(m.method, a.URL+m.path, nil)
		if r := c.do(req); r.status != http.StatusMethodNotAllowed && r.status != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 405 or 404", m.method, m.path, r.status)
		}
	}
	for _, p := range []string{"/forum/99999999999999999999", "/users/-0", "/users/1e3", "/forum/1?page=-2", "/forum?page=99999999999", "/%ff", "/users/%00"} {
		if r := c.get(p); r.status < 400 || r.status > 499 {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
	if after := counts(); after != before {
		t.Fatalf("bad input stored something: rows %s → %s", before, after)
	}
}

func TestExpiredSessionMeansSignedOut(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	c.signup()
	want(t, c.get("/wishlist"), http.StatusOK)
	u, _ := url.Parse(a.URL)
	token := sessionCookie(c, u)
	if _, err := a.primary(t).Exec(context.Background(), `UPDATE sessions SET expiry = now() - interval '1 minute' WHERE token = $1`, token); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, a)
	if r := c.get("/wishlist"); r.status != http.StatusSeeOther {
		t.Fatalf("an expired session still signs in: %d", r.status)
	}
}

func TestLoginRateLimitHoldsUnderABurst(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	var mu sync.Mutex
	statuses := map[int]int{}
	var errs []error
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Not c.post: t.Fatal must not run on this goroutine.
			status, err := a.client(t).tryPost("/login", url.Values{"username": {name}, "password": {"a wrong guess"}})
			mu.Lock()
			if err != nil {
				errs = append(errs, err)
			}
			statuses[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d sign-ins failed to get an answer; first: %v", len(errs), errs[0])
	}
	if statuses[http.StatusUnauthorized] > 5 || statuses[http.StatusTooManyRequests] < 15 || len(statuses) > 2 {
		t.Fatalf("a burst of 20 wrong passwords: %v; want at most 5 tried, the rest 429", statuses)
	}
}
