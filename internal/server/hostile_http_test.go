package server_test

// The hostile-input suite's HTTP half (issue 15, points 6 to 9): the
// headers every response carries, the methods each route answers, bad
// static paths, clients that leave mid-request, and what visitors who are
// not admins learn about the cluster and the process.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"quest/internal/app"
	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/testcluster"
)

// checkSecurityHeaders fails the test unless h carries the headers every
// response owes a browser: a CSP with no inline script or style, no
// framing, no MIME sniffing, no referrer to other sites.
func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	var bad []string
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, d) {
			bad = append(bad, "a CSP without "+d)
		}
	}
	if strings.Contains(csp, "unsafe-") {
		bad = append(bad, "a CSP that allows unsafe sources")
	}
	for name, value := range map[string]string{
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "same-origin",
	} {
		if got := h.Get(name); got != value {
			bad = append(bad, fmt.Sprintf("%s %q, want %q", name, got, value))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%s: %s (Content-Security-Policy %q)", what, strings.Join(bad, "; "), csp)
	}
}

// TestSecurityHeaders: every kind of response — pages, error pages,
// static files, JSON, metrics, refusals — carries the security headers,
// and pages with a user's own data are neither stored nor shared by any
// cache.
func TestSecurityHeaders(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	anon := a.client(t)
	for _, p := range []string{"/", "/catalog", "/login", "/status", "/static/style.css", "/static/lab.js", "/healthz", "/metrics", "/no-such-page"} {
		r := anon.get(p)
		checkSecurityHeaders(t, "GET "+p, r.header)
	}
	r := anon.post("/catalog", nil)
	if r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /catalog: %d", r.status)
	}
	checkSecurityHeaders(t, "POST /catalog", r.header)

	c := a.client(t)
	c.signup()
	c.post("/wishlist", url.Values{"item_id": {"1"}})
	id := regexp.MustCompile(`/users/(\d+)`).FindStringSubmatch(c.get("/profile").body)
	if id == nil {
		t.Fatal("the profile page does not link the user's public page")
	}
	// Every page of a signed-in user names them and shows their session's
	// positions; /wishlist, /profile and their own public page show their
	// data.
	for _, p := range []string{"/wishlist", "/profile", "/users/" + id[1], "/", "/catalog", "/lab"} {
		r := c.get(p)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d", p, r.status)
		}
		checkSecurityHeaders(t, "signed in, GET "+p, r.header)
		cc := r.header.Get("Cache-Control")
		if !strings.Contains(cc, "no-store") || !strings.Contains(cc, "private") {
			t.Errorf("signed in, GET %s: Cache-Control %q, want private, no-store", p, cc)
		}
	}
}

// TestBrowserEveryPageUnderTheCSP opens every page in Chromium — signed in
// as an admin of an app with levers, so /lab draws its levers, its
// timeline and, with its script, its live charts — and wants no CSP
// violation and no console error. Then it checks that the policy is in
// force: an inline script injected into the page does not run, and the
// browser reports the violation, so the check above can fail.
func TestBrowserEveryPageUnderTheCSP(t *testing.T) {
	a := startApp(t, dbrouter.Causal, testcluster.Get(t))
	name := fmt.Sprintf("cspadmin_%d_%d", time.Now().UnixNano()%1e9, userSeq.Add(1))
	hash, err := server.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.store.CreateUser(context.Background(), name, "CSP Admin", hash, true)
	if err != nil {
		t.Fatal(err)
	}
	other := a.client(t)
	other.signup()
	thread := other.post("/forum", url.Values{"title": {"A thread"}, "body": {"with a post"}}).header.Get("Location")

	ctx := browser(t)
	console := &consoleLog{}
	console.follow(ctx)
	tctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	err = chromedp.Do(tctx,
		chromedp.Navigate(a.URL+"/login"),
		chromedp.SendKeys(chromedp.CSS(`input[name=username]`), name),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse"),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`.grid`)),
		chromedp.Click(chromedp.CSS(`form[action="/wishlist"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`ul.wishlist`)),
	)
	if err != nil {
		t.Fatalf("sign in and add to the wishlist: %v", err)
	}
	pages := []string{"/", "/catalog", "/forum", thread, "/status", "/glossary", "/profile", fmt.Sprintf("/users/%d", id.ID), "/signup", "/login", "/no-such-page", "/lab"}
	for _, p := range pages {
		if err := chromedp.Do(tctx, chromedp.Navigate(a.URL+p), chromedp.WaitVisible(chromedp.CSS(`main h1, main h2`))); err != nil {
			t.Fatalf("open %s: %v", p, err)
		}
	}
	// The lab's script fetches /lab/state and draws both charts and the
	// legend (a CSS custom property set from script) once the history has
	// two samples.
	drawn := `document.querySelector("#lag-chart polyline") !== null && document.querySelector("#reads-chart rect") !== null && document.querySelector("#legend .key") !== null`
	// Asked from the test, not with chromedp.Poll: its predicate is built
	// with new Function, which the policy forbids.
	testcluster.Eventually(t, 20*time.Second, "the lab's charts drawn", func() bool {
		ok, err := chromedp.Run(tctx, chromedp.Evaluate[bool](drawn))
		return err == nil && ok
	})
	console.sync(t, tctx)
	for _, m := range console.messages() {
		if m.Source == "network" && strings.HasSuffix(m.URL, "/no-such-page") {
			continue // the 404 page's own status
		}
		if m.Type == chromedp.ConsoleError || m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
			t.Errorf("console on %s: %s", m.URL, m)
		}
	}

	ran, err := chromedp.Run(tctx, chromedp.Evaluate[bool](`(() => {
		const s = document.createElement("script");
		s.textContent = "window.injected = true";
		document.head.appendChild(s);
		return window.injected === true;
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Error("an injected inline script ran: no Content-Security-Policy is in force")
	}
	console.sync(t, tctx)
	reported := false
	for _, m := range console.messages() {
		reported = reported || strings.Contains(m.Text, "Content Security Policy")
	}
	if !reported {
		t.Error("the browser reported no CSP violation for the injected script")
	}
}

// consoleLog collects a Chromium tab's console messages.
type consoleLog struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
	n    int
}

// follow collects the messages of ctx's tab until ctx, the browser's,
// ends with the test.
func (c *consoleLog) follow(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
}

func (c *consoleLog) messages() []chromedp.ConsoleMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.msgs)
}

// sync logs a marker and waits for it: the browser sends a tab's events in
// order, so every message before it has arrived.
func (c *consoleLog) sync(t *testing.T, ctx context.Context) {
	t.Helper()
	c.n++
	mark := fmt.Sprintf("sync-%d", c.n)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`console.log("`+mark+`"), true`)); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the console's "+mark, func() bool {
		return slices.ContainsFunc(c.messages(), func(m chromedp.ConsoleMessage) bool { return m.Text == mark })
	})
}

// TestHeadAndStaticMethods: every GET route answers HEAD as it answers
// GET, without a body; static files answer GET and HEAD only, and every
// 405 says what is allowed.
func TestHeadAndStaticMethods(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	for _, p := range []string{"/", "/healthz", "/metrics", "/catalog", "/forum", "/static/style.css"} {
		get := c.get(p)
		head := c.do(mustRequest(t, http.MethodHead, a.URL+p))
		if head.status != get.status || head.status != http.StatusOK {
			t.Errorf("HEAD %s: %d, GET: %d; want 200 for both", p, head.status, get.status)
		}
		if head.body != "" {
			t.Errorf("HEAD %s sent a body", p)
		}
		if hc, gc := head.header.Get("Content-Type"), get.header.Get("Content-Type"); hc != gc {
			t.Errorf("HEAD %s: Content-Type %q, GET's %q", p, hc, gc)
		}
	}
	for _, m := range []string{http.MethodPut, http.MethodDelete, http.MethodTrace, http.MethodOptions, http.MethodConnect, http.MethodPost, http.MethodPatch} {
		resp, body := raw(t, a.URL, m, "/static/style.css")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /static/style.css: %d, Allow %q; want 405, Allow GET, HEAD", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
		if strings.Contains(body, "--bg") {
			t.Errorf("%s /static/style.css sent the stylesheet", m)
		}
	}
	for _, tt := range []struct{ method, path, allow string }{
		{http.MethodPost, "/catalog", "GET, HEAD"},
		{http.MethodGet, "/logout", "POST"},
		{http.MethodPut, "/signup", "GET, HEAD, POST"},
	} {
		r := c.do(mustRequest(t, tt.method, a.URL+tt.path))
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %s", tt.method, tt.path, r.status, r.header.Get("Allow"), tt.allow)
		}
	}
}

// mustRequest is http.NewRequest for a request without a body.
func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// raw sends one request line as written, on a connection of its own: Go's
// client rewrites a CONNECT's target and would take a 200 to CONNECT for a
// tunnel.
func raw(t *testing.T, base, method, path string) (*http.Response, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, path, u.Host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestBadStaticPathsAre4xx: escapes that decode to invalid UTF-8, and the
// directory itself, are "not found" — never a 500, never a listing.
func TestBadStaticPathsAre4xx(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	for _, p := range []string{"/static/%ff", "/static/%c0%ae", "/static/%80", "/static/a%ffb.css", "/static/%c0%ae%c0%ae/go.mod", "/static/..%2fgo.mod", "/static/", "/static/./"} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			resp, body := raw(t, a.URL, m, p)
			if resp.StatusCode < 400 || resp.StatusCode > 499 {
				t.Errorf("%s %s: %d, want a 4xx", m, p, resp.StatusCode)
			}
			if strings.Contains(body, "style.css") || strings.Contains(body, "lab.js") {
				t.Errorf("%s %s lists the directory:\n%s", m, p, body)
			}
		}
	}
}

// TestClientThatLeavesIsNotA500: a client that disconnects while its
// request waits on the database is counted apart (499, as nginx does) and
// logged below ERROR — so nobody can inflate the error rate by hanging up.
func TestClientThatLeavesIsNotA500(t *testing.T) {
	logs := &lockedBuffer{}
	a := startApp(t, dbrouter.Primary, nil, func(cfg *app.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	// Hold the catalog's table, so the request is surely in flight, in
	// the database, when its client leaves.
	tx, err := a.primary(t).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if _, err := tx.Exec(ctx, `LOCK TABLE items IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	reqCtx, leave := context.WithCancel(ctx)
	defer leave()
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, a.URL+"/catalog", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// Watched from another connection: pg_stat_activity is a snapshot
	// taken once per transaction.
	watch := a.primary(t)
	testcluster.Eventually(t, 10*time.Second, "the catalog's read waiting for the lock", func() bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%FROM items%'`).Scan(&n)
		return err == nil && n > 0
	})
	leave()
	if err := <-errc; err == nil {
		t.Fatal("the request got an answer while its table was locked")
	}
	c := a.client(t)
	var metrics string
	testcluster.Eventually(t, 10*time.Second, "the abandoned request counted", func() bool {
		metrics = c.get("/metrics").body
		return strings.Contains(metrics, `quest_http_requests_total{route="/catalog",`)
	})
	if !strings.Contains(metrics, `quest_http_requests_total{route="/catalog",status="499"} 1`) || strings.Contains(metrics, `route="/catalog",status="5`) {
		t.Errorf("the abandoned request is not counted as one 499:\n%s", grepLines(metrics, `route="/catalog"`))
	}
	text := logs.String()
	if strings.Contains(text, "level=ERROR") {
		t.Errorf("a client that left was logged as an error:\n%s", grepLines(text, "level=ERROR"))
	}
	if !regexp.MustCompile(`level=INFO msg=request method=GET path=/catalog status=499 `).MatchString(text) {
		t.Errorf("no request line with status 499:\n%s", text)
	}
}

// grepLines returns the lines of text that hold s.
func grepLines(text, s string) string {
	var out []string
	for line := range strings.Lines(text) {
		if strings.Contains(line, s) {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}

// lockedBuffer is a buffer a logger and the test share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestVisitorsSeeNoConnectionErrors: a node the router cannot reach is
// "node unreachable" to anyone but an admin, on / and /status and in
// /status's JSON — the driver's error names the database user, the
// database, the host and the port. Admins and the log keep the detail.
func TestVisitorsSeeNoConnectionErrors(t *testing.T) {
	c := testcluster.Get(t)
	deadAddr := freeAddr(t)
	dead := withHost(t, c.ReplicaURLs()[0], deadAddr, "replica9")
	logs := &lockedBuffer{}
	a := startApp(t, dbrouter.Causal, nil, func(cfg *app.Config) {
		cfg.Router.ReplicaURLs = append(cfg.Router.ReplicaURLs, dead)
		cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	testcluster.Eventually(t, 10*time.Second, "the dead replica polled", func() bool {
		for _, n := range a.router.Inspect().Nodes {
			if n.Name == "replica9" && strings.Contains(n.Err, deadAddr) {
				return true
			}
		}
		return false
	})
	leaks := []string{deadAddr, "user=", "database=", "refused", "dial"}
	anon := a.client(t)
	user := a.client(t)
	user.signup()
	for who, cl := range map[string]*client{"anonymous": anon, "signed in": user} {
		r := cl.get("/")
		noLeak(t, who+" GET /", r.body, leaks)
		want(t, r, http.StatusOK, "node unreachable")
		r = cl.get("/status")
		want(t, r, http.StatusOK)
		noLeak(t, who+" GET /status", r.body, leaks)
		r = cl.do(jsonRequest(t, a.URL+"/status"))
		if !json.Valid([]byte(r.body)) || !strings.Contains(r.body, "node unreachable") {
			t.Errorf("%s: /status as JSON does not say node unreachable:\n%s", who, r.body)
		}
		noLeak(t, who+" GET /status (JSON)", r.body, leaks)
	}
	admin := a.admin(t)
	want(t, admin.get("/"), http.StatusOK, deadAddr)
	want(t, admin.do(jsonRequest(t, a.URL+"/status")), http.StatusOK, deadAddr)
	if !strings.Contains(logs.String(), deadAddr) {
		t.Errorf("the log does not say why replica9 is unreachable:\n%s", logs.String())
	}

	// With the primary unreachable, pg_stat_replication cannot be read
	// either: the reason is the same connection error. (Named, as a node
	// without an application_name is called by its host, port and
	// database — its name, not an error.)
	deadPrimary := withHost(t, c.PrimaryURL(), deadAddr, "node0")
	b := startApp(t, dbrouter.Causal, nil, func(cfg *app.Config) { cfg.Router.PrimaryURL = deadPrimary })
	testcluster.Eventually(t, 10*time.Second, "the dead primary polled", func() bool {
		return strings.Contains(b.router.Inspect().ReplErr, deadAddr)
	})
	anon = b.client(t)
	r := anon.get("/")
	noLeak(t, "primary down, GET /", r.body, leaks)
	want(t, r, http.StatusOK, "node unreachable")
	r = anon.get("/status")
	want(t, r, http.StatusOK)
	noLeak(t, "primary down, GET /status", r.body, leaks)
	noLeak(t, "primary down, GET /status (JSON)", anon.do(jsonRequest(t, b.URL+"/status")).body, leaks)
}

// jsonRequest asks for /status's JSON form.
func jsonRequest(t *testing.T, url string) *http.Request {
	req := mustRequest(t, http.MethodGet, url)
	req.Header.Set("Accept", "application/json")
	return req
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// withHost returns the connection URL raw pointed at addr and named name
// (its application_name).
func withHost(t *testing.T, raw, addr, name string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	q := u.Query()
	q.Set("application_name", name)
	q.Set("connect_timeout", strconv.Itoa(2))
	u.RawQuery = q.Encode()
	return u.String()
}

// noLeak fails the test if body holds any of leaks.
func noLeak(t *testing.T, what, body string, leaks []string) {
	t.Helper()
	for _, l := range leaks {
		if strings.Contains(body, l) {
			t.Errorf("%s shows %q:\n%s", what, l, grepLines(body, l))
		}
	}
}

// TestMetricsOnlyFromThisMachine: /metrics describes the process (memory,
// file descriptors, goroutines) and the cluster; it answers requests from
// loopback only, and not those a proxy on this machine forwards.
func TestMetricsOnlyFromThisMachine(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	want(t, c.get("/metrics"), http.StatusOK, "quest_strategy", "process_resident_memory_bytes")
	// Another host: what net/http sets RemoteAddr to for one, through the
	// app's real handler (the tests listen on loopback only).
	for _, remote := range []string{"192.0.2.7:51000", "[2001:db8::7]:51000", "[::ffff:192.0.2.7]:51000"} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			req := httptest.NewRequest(m, "/metrics", nil)
			req.RemoteAddr = remote
			rec := httptest.NewRecorder()
			a.app.Server.ServeHTTP(rec, req)
			if rec.Code != http.StatusForbidden || strings.Contains(rec.Body.String(), "quest_") {
				t.Errorf("%s /metrics from %s: %d\n%.300s", m, remote, rec.Code, rec.Body.String())
			}
		}
	}
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
		req := mustRequest(t, http.MethodGet, a.URL+"/metrics")
		req.Header.Set(h, "192.0.2.7")
		if r := c.do(req); r.status != http.StatusForbidden || strings.Contains(r.body, "quest_") {
			t.Errorf("/metrics forwarded by a proxy (%s): %d", h, r.status)
		}
	}
}

// TestMetricsAddrMovesMetrics: with a listener of their own, the metrics
// leave the main listener — 404 there, even from loopback — and the
// metrics listener serves /metrics and nothing else.
func TestMetricsAddrMovesMetrics(t *testing.T) {
	a := startApp(t, dbrouter.Causal, nil, func(cfg *app.Config) { cfg.MetricsAddr = "127.0.0.1:0" })
	c := a.client(t)
	if r := c.get("/metrics"); r.status != http.StatusNotFound || strings.Contains(r.body, "quest_") {
		t.Errorf("/metrics on the main listener: %d, want 404", r.status)
	}
	base := "http://" + a.app.MetricsAddr().String()
	m := &client{t: t, base: base, http: http.DefaultClient}
	want(t, m.get("/metrics"), http.StatusOK, "quest_strategy", "process_resident_memory_bytes")
	if r := m.do(mustRequest(t, http.MethodHead, base+"/metrics")); r.status != http.StatusOK {
		t.Errorf("HEAD /metrics on the metrics listener: %d", r.status)
	}
	for _, p := range []string{"/", "/catalog", "/status", "/static/style.css"} {
		if r := m.get(p); r.status != http.StatusNotFound {
			t.Errorf("GET %s on the metrics listener: %d, want 404", p, r.status)
		}
	}
	if r := m.post("/metrics", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics on the metrics listener: %d, want 405", r.status)
	}
}
