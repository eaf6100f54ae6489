package server_test

// The hostile-input suite, its accounts half (issue 15): what a stranger
// can do to sign-in, to sessions and to the names other users read. Each
// test drives the real app on the package's cluster.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/app"
	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
	"quest/internal/testcluster"
)

// asServed keeps only the cluster and the key of an app's configuration:
// the sign-in and sign-up limits are then the defaults `quest serve`
// starts with, which startApp raises for the rest of the suite.
func asServed(cfg *app.Config) { *cfg = app.Config{Router: cfg.Router, SessionKey: cfg.SessionKey} }

// clientFrom is a client whose connections come from ip, a loopback
// address other than 127.0.0.1 (Linux routes all of 127/8 to lo): a
// visitor from another address.
func (a *testApp) clientFrom(t *testing.T, ip string) *client {
	t.Helper()
	c := a.client(t)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c.http.Transport = tr
	return c
}

// delayReplicas holds every replica's apply an hour behind until the test
// ends. Unlike a pause, the router keeps reading from a delayed replica
// (it looks fresh until lag builds up): a session lookup still finds what
// the primary has just deleted.
func delayReplicas(t *testing.T, a *testApp) {
	t.Helper()
	waitReplicated(t, a)
	for _, n := range a.router.Replicas() {
		if err := a.c.SetDelay(context.Background(), n.Name, time.Hour); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.c.SetDelay(context.Background(), n.Name, 0) })
	}
}

// count runs a count(*) query on the primary, on a connection of its own.
func (a *testApp) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, a.c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLoginFloodHoldsNoMemory (15.1): sign-ins with 60 KB usernames, each
// different, all but the first 30 refused by the per-address limit, used
// to leave every username in the limiter's map. A username is validated
// before the limiter sees it, so a flood leaves nothing behind.
func TestLoginFloodHoldsNoMemory(t *testing.T) {
	a := startApp(t, dbrouter.Causal, nil, asServed)
	const n, size = 600, 60 << 10
	heap := func() int64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before := heap()
	var next, bad atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a.client(t)
			for i := next.Add(1); i <= n; i = next.Add(1) {
				name := fmt.Sprint(i, strings.Repeat("x", size))
				// Not c.post: t.Fatal must not run on this goroutine.
				status, err := c.tryPost("/login", url.Values{"username": {name}, "password": {"a guess"}})
				if err != nil || status < 400 || status > 499 {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.Fatalf("%d of %d sign-ins with a %d KB username got no 4xx", bad.Load(), n, size>>10)
	}
	// What 600 such usernames weigh is 36 MB; the rest of the heap moves
	// by a few.
	if grown := heap() - before; grown > 8<<20 {
		t.Fatalf("%d sign-ins with %d KB usernames left the heap %d MB larger: refused sign-ins are being kept", n, size>>10, grown>>20)
	}
}

// TestSignInNeverRedirectsOffSite (15.2): the page a sign-in returns to
// is a path on this site, whatever `next` says; browsers drop tabs and
// newlines from a Location and read a backslash as a slash, so "/\t/host"
// is "//host", another site.
func TestSignInNeverRedirectsOffSite(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	for _, next := range []string{
		"/\t/evil.example/phished.html",
		"/\n/evil.example", "/\r/evil.example", "\t//evil.example",
		"/\\evil.example", "\\\\evil.example", "/\t\\evil.example",
		"//evil.example", "///evil.example", "https://evil.example/", "javascript:alert(1)",
	} {
		// The sign-in page carries next in a hidden field…
		want(t, a.client(t).get("/login?next="+url.QueryEscape(next)), http.StatusOK, `name="next" value="/catalog"`)
		// …and the sign-in goes where that field says. One user per case:
		// each sign-in is an attempt on the account.
		c := a.client(t)
		name := c.signup()
		r := c.post("/login", url.Values{"username": {name}, "password": {"correct horse"}, "next": {next}})
		if loc := r.header.Get("Location"); r.status != http.StatusSeeOther || loc != "/catalog" {
			t.Errorf("signing in with next=%q: %d to %q, want 303 to /catalog", next, r.status, loc)
		}
	}
	// A path on this site is kept: the check does not send everyone home.
	c := a.client(t)
	name := c.signup()
	r := c.post("/login", url.Values{"username": {name}, "password": {"correct horse"}, "next": {"/forum?page=1"}})
	if loc := r.header.Get("Location"); loc != "/forum?page=1" {
		t.Fatalf("signing in with next=/forum?page=1 went to %q", loc)
	}
}

// TestStrangersCannotLockAnAccountOut (15.3): wrong passwords from other
// addresses used to lock the account's owner out. The hard limit is per
// account and address; an account under attack from many addresses is
// slowed down, not closed.
func TestStrangersCannotLockAnAccountOut(t *testing.T) {
	a := startApp(t, dbrouter.Causal, nil, asServed)
	owner := a.client(t)
	name := owner.signup()
	owner.post("/logout", nil)
	guess := url.Values{"username": {name}, "password": {"a wrong guess"}}

	// One stranger, one address: five tries, then 429, as before.
	stranger := a.clientFrom(t, "127.0.0.2")
	var got []int
	for range 8 {
		got = append(got, stranger.post("/login", guess).status)
	}
	if w := []int{401, 401, 401, 401, 401, 429, 429, 429}; !slices.Equal(got, w) {
		t.Fatalf("8 wrong passwords from one address: %v, want %v", got, w)
	}
	// The owner, from their own address, still gets in.
	if r := owner.login(name); r.status != http.StatusSeeOther {
		t.Fatalf("the owner after a stranger's 8 wrong passwords: %d, want 303\n%s", r.status, r.body)
	}
	owner.post("/logout", nil)

	// Strangers from more addresses: each is answered — slowed down, as
	// the account is under attack — and none is refused.
	var slowest time.Duration
	for i := 3; i <= 4; i++ {
		start := time.Now()
		r := a.clientFrom(t, fmt.Sprintf("127.0.0.%d", i)).post("/login", guess)
		if r.status != http.StatusUnauthorized {
			t.Fatalf("a wrong password from 127.0.0.%d: %d, want 401", i, r.status)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest < 200*time.Millisecond {
		t.Fatalf("the account had 7 wrong passwords, yet the slowest answer took %s: no backoff", slowest)
	}
	if r := owner.login(name); r.status != http.StatusSeeOther {
		t.Fatalf("the owner while the account is under attack: %d, want 303\n%s", r.status, r.body)
	}
}

// TestAnonymousLogoutWritesNothing (15.4): every anonymous POST /logout
// used to store a 7-day session row on the primary.
func TestAnonymousLogoutWritesNothing(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	const sessions = `SELECT count(*) FROM sessions`
	before := a.count(t, sessions)
	for range 20 {
		r := a.client(t).post("/logout", nil)
		if r.status != http.StatusSeeOther {
			t.Fatalf("anonymous logout: %d", r.status)
		}
		for _, ck := range r.header.Values("Set-Cookie") {
			if strings.HasPrefix(ck, "quest_session=") {
				t.Fatalf("an anonymous logout was given a session: %s", ck)
			}
		}
	}
	if after := a.count(t, sessions); after != before {
		t.Fatalf("20 anonymous logouts: %d session rows, then %d", before, after)
	}
}

// TestSignupIsLimitedPerAddress (15.4): sign-ups had no limit (each is a
// bcrypt and a row on the primary); now one address makes 20 an hour.
func TestSignupIsLimitedPerAddress(t *testing.T) {
	a := startApp(t, dbrouter.Causal, nil, asServed)
	prefix := fmt.Sprintf("farm%d_", time.Now().UnixNano()%1e9)
	statuses := map[int]int{}
	var refused response
	for i := range 25 {
		r := a.client(t).post("/signup", url.Values{"username": {fmt.Sprint(prefix, i)}, "display_name": {"Farmed"}, "password": {"correct horse"}})
		statuses[r.status]++
		if r.status == http.StatusTooManyRequests {
			refused = r
		}
	}
	if statuses[http.StatusSeeOther] != 20 || statuses[http.StatusTooManyRequests] != 5 {
		t.Fatalf("25 sign-ups from one address: %v, want 20 × 303 and 5 × 429", statuses)
	}
	want(t, refused, http.StatusTooManyRequests, "Too many new accounts")
	if n := a.count(t, `SELECT count(*) FROM users WHERE username LIKE $1`, prefix+"%"); n != 20 {
		t.Fatalf("%d accounts stored, want the 20 accepted", n)
	}
	// Another address is not held back by this one.
	a.clientFrom(t, "127.0.0.2").signup()
}

// TestAdminRightsComeFromTheDatabase (15.5): an admin demoted in the
// database used to keep switching strategies with the session that said
// "admin". With the replicas behind, the session is still found; the
// admin action still asks the primary.
func TestAdminRightsComeFromTheDatabase(t *testing.T) {
	for _, behind := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicas behind=%v", behind), func(t *testing.T) {
			a := newApp(t, dbrouter.Causal)
			name := fmt.Sprintf("demoted%d_%d", time.Now().UnixNano()%1e9, userSeq.Add(1))
			hash, err := server.HashPassword("correct horse")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.store.CreateUser(context.Background(), name, "Soon Not Admin", hash, true); err != nil {
				t.Fatal(err)
			}
			admin := a.client(t)
			if r := admin.login(name); r.status != http.StatusSeeOther {
				t.Fatalf("admin login: %d", r.status)
			}
			if behind {
				delayReplicas(t, a)
			}
			if _, err := a.primary(t).Exec(context.Background(), `UPDATE users SET is_admin = false WHERE username = $1`, name); err != nil {
				t.Fatal(err)
			}
			if behind {
				// The scenario: the session outlived the change on the replicas.
				want(t, admin.get("/lab"), http.StatusOK, `action="/lab/strategy"`)
			}
			want(t, admin.post("/lab/strategy", url.Values{"strategy": {"random"}}), http.StatusForbidden, "Only an admin")
			if s := a.router.Strategy(); s != dbrouter.Causal {
				t.Fatalf("a demoted admin switched the strategy to %s", s)
			}
		})
	}
}

// TestPasswordResetEndsSessions (15.5): a password reset — `quest seed`
// resets the admin's this way — used to leave the account's sessions
// signed in, on every device.
func TestPasswordResetEndsSessions(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	c := a.client(t)
	name := c.signup()
	other := a.client(t) // the same user on another device
	if r := other.login(name); r.status != http.StatusSeeOther {
		t.Fatalf("login: %d", r.status)
	}
	hash, err := server.HashPassword("battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.New(a.router).SetPassword(context.Background(), name, hash); err != nil {
		t.Fatal(err)
	}
	waitReplicated(t, a)
	for i, dev := range []*client{c, other} {
		if r := dev.get("/wishlist"); r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/login") {
			t.Fatalf("device %d after the password reset: /wishlist answered %d %s, want a redirect to sign in", i+1, r.status, r.header.Get("Location"))
		}
	}
	if r := c.post("/login", url.Values{"username": {name}, "password": {"battery staple"}}); r.status != http.StatusSeeOther {
		t.Fatalf("the new password: %d", r.status)
	}
	want(t, c.get("/wishlist"), http.StatusOK)
}

// TestDeletedUserIsSignedOut (15.5): a session whose user was deleted got
// a 500 on POST /forum (the thread's author no longer exists). Now the
// deletion ends the user's sessions, and a session a replica still holds
// is signed out at its first write.
func TestDeletedUserIsSignedOut(t *testing.T) {
	for _, behind := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicas behind=%v", behind), func(t *testing.T) {
			a := newApp(t, dbrouter.Causal)
			c := a.client(t)
			name := c.signup()
			want(t, c.post("/wishlist", url.Values{"item_id": {"2"}}), http.StatusSeeOther) // a row that goes with the user
			if behind {
				delayReplicas(t, a)
			}
			if _, err := a.primary(t).Exec(context.Background(), `DELETE FROM users WHERE username = $1`, name); err != nil {
				t.Fatal(err)
			}
			if behind {
				// The scenario: the session outlived the deletion on the replicas.
				want(t, c.get("/profile"), http.StatusOK, "@"+name)
			} else {
				waitReplicated(t, a)
			}
			title := "still here? " + name
			r := c.post("/forum", url.Values{"title": {title}, "body": {"Am I?"}})
			if behind {
				want(t, r, http.StatusUnauthorized, "no longer exists", "signed out")
			} else {
				want(t, r, http.StatusUnauthorized, "Please sign in first.")
			}
			if n := a.count(t, `SELECT count(*) FROM threads WHERE title = $1`, title); n != 0 {
				t.Fatalf("%d threads stored for a deleted user", n)
			}
			if r := c.get("/wishlist"); r.status != http.StatusSeeOther {
				t.Fatalf("the deleted user's session still opens /wishlist: %d", r.status)
			}
		})
	}
}

// TestNamesNeedVisibleCharactersAndNoBidiControls (15.11): names and
// titles made of zero-width or non-breaking spaces, names that reverse
// the text around them, and the staff's names used to be accepted.
func TestNamesNeedVisibleCharactersAndNoBidiControls(t *testing.T) {
	a := newApp(t, dbrouter.Causal)
	bad := []struct{ name, why string }{
		{"\u200b\u200b\u200b", "you can see"},  // zero-width spaces
		{"\u00a0\u200b\u00a0", "you can see"},  // no-break and zero-width spaces
		{"\u200d\u2060\ufeff", "you can see"},  // joiners and a byte order mark
		{"evil\u202egnp.exe", "bidirectional"}, // right-to-left override
		{"\u2067Luke\u2069", "bidirectional"},  // right-to-left isolate
		{"Quest Admin", "reserved"},            // the seeded admin's name
		{"quest  admin", "reserved"},           // …in other clothes
		{"QUEST\u00a0ADMIN", "reserved"},
		{"Quest\u200bAdmin", "reserved"},
		{"admin", "reserved"}, // the seeded admin's username
	}
	for i, b := range bad {
		uname := fmt.Sprintf("badname%d_%d_%d", time.Now().UnixNano()%1e6, userSeq.Add(1), i)
		r := a.client(t).post("/signup", url.Values{"username": {uname}, "display_name": {b.name}, "password": {"correct horse"}})
		want(t, r, http.StatusUnprocessableEntity, b.why)
		if n := a.count(t, `SELECT count(*) FROM users WHERE username = $1`, uname); n != 0 {
			t.Fatalf("signing up as %q stored the account", b.name)
		}
	}

	// The same rules on the profile; the name stays as it was.
	c := a.client(t)
	name := c.signup()
	for _, b := range bad {
		want(t, c.post("/profile", url.Values{"display_name": {b.name}, "bio": {""}}), http.StatusUnprocessableEntity, b.why)
	}
	if n := a.count(t, `SELECT count(*) FROM users WHERE username = $1 AND display_name = $2`, name, "User "+name); n != 1 {
		t.Fatal("a refused display name changed the profile")
	}

	// Thread titles and posts need something to see; titles take no
	// bidirectional controls.
	for _, p := range []struct{ title, body, why string }{
		{"\u00a0\u200b\u00a0", "a body", "you can see"},
		{"\u200b", "a body", "you can see"},
		{"\u202eevil", "a body", "bidirectional"},
		{"A fine title", "\u200b\u200b", "you can see"},
	} {
		want(t, c.post("/forum", url.Values{"title": {p.title}, "body": {p.body}}), http.StatusUnprocessableEntity, p.why)
		if n := a.count(t, `SELECT count(*) FROM threads WHERE title = $1`, p.title); n != 0 {
			t.Fatalf("the thread %q was stored", p.title)
		}
	}

	// Names in any script, and names that merely contain a staff word,
	// are fine.
	for _, good := range []string{"Ærwyn Ó Briain", "محمد", "李小龍", "Admin Fan", "O'Brien 🚀"} {
		if r := c.post("/profile", url.Values{"display_name": {good}, "bio": {""}}); r.status != http.StatusSeeOther {
			t.Fatalf("the display name %q: %d\n%s", good, r.status, r.body)
		}
	}
}

// TestAFutureLastWriteIsBoundedToNow (15.12): a consistency cookie —
// forged, which takes the signing key — that claims a write in the
// future kept its session on the primary under timed for as long as it
// claimed. The claim is bounded to now: the session is on the primary
// for one timed delay, as after a real write, then back on the replicas.
func TestAFutureLastWriteIsBoundedToNow(t *testing.T) {
	a := startApp(t, dbrouter.Timed, nil, func(cfg *app.Config) { cfg.Router.TimedDelay = 500 * time.Millisecond })
	c := a.client(t)
	u, _ := url.Parse(a.URL)
	forged := dbrouter.State{Session: 1<<62 | 42, LastWrite: time.Now().Add(24 * time.Hour)}
	c.http.Jar.SetCookies(u, []*http.Cookie{{Name: "quest_consistency", Value: signCookie("quest_consistency", forged.Encode()), Path: "/"}})
	want(t, c.get("/catalog"), http.StatusOK)
	if st := consistencyState(t, c, u); st.LastWrite.After(time.Now()) {
		t.Fatalf("after a page view the cookie still claims a write at %s", st.LastWrite.Format(time.RFC3339))
	}
	testcluster.Eventually(t, 10*time.Second, "the catalog to be read from a replica again", func() bool {
		return strings.HasPrefix(c.get("/catalog").header.Get("X-Quest-Served-By"), "replica")
	})
}

// signCookie signs value as the server does (HMAC-SHA256 over the purpose
// and the value, truncated to 16 bytes), with the suite's key: a forgery
// by someone who holds the key.
func signCookie(purpose string, value []byte) string {
	m := hmac.New(sha256.New, testKey)
	m.Write([]byte(purpose))
	m.Write(value)
	return base64.RawURLEncoding.EncodeToString(append(value, m.Sum(nil)[:16]...))
}

// consistencyState decodes the consistency cookie the client holds.
func consistencyState(t *testing.T, c *client, u *url.URL) dbrouter.State {
	t.Helper()
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name != "quest_consistency" {
			continue
		}
		b, err := base64.RawURLEncoding.DecodeString(ck.Value)
		if err != nil || len(b) < 16 {
			t.Fatalf("consistency cookie %q is not what the server writes", ck.Value)
		}
		st, err := dbrouter.DecodeState(b[:len(b)-16])
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	t.Fatal("no consistency cookie")
	return dbrouter.State{}
}
