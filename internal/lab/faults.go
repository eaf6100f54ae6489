package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// FaultCluster is what the fault runs need of the local cluster.
type FaultCluster interface {
	Cluster
	Stop(ctx context.Context, node string, immediate bool) error
	Start(ctx context.Context, node string) error
	Kill(ctx context.Context, node string) error
	PrimaryURL() string
}

// App is a Quest instance the fault runs start and stop.
type App struct {
	URL  string
	Stop func()
}

// FaultConfig describes a fault run. The apps run the causal strategy.
type FaultConfig struct {
	Cluster FaultCluster
	// StartApp starts a Quest instance on the cluster; every instance shares
	// the session key, as instances behind one load balancer do.
	StartApp func(ctx context.Context) (App, error)
	Users    int           // default 6
	Think    time.Duration // default 50 ms
	Phase    time.Duration // each before/during/after phase; default 4 s
	Load     time.Duration // the sustained-load run; default 60 s; <0 skips it
	Progress io.Writer
}

// FaultRow is one scenario's outcome.
type FaultRow struct {
	Scenario    string
	Requests    int
	Failed      int // 5xx other than the read-only 503, transport errors, lost sign-ins
	ReadOnly    int // forms answered 503 "read-only right now" while the primary was down
	Stale       int // pages served with the staleness banner
	Anomalies   int // read-your-writes and monotonic failures on pages served as fresh
	StaleMisses int // the same on pages served with the staleness banner (announced)
	Acked       int // writes that got a success answer
	Lost        int // acknowledged writes missing on the primary afterwards
	P50, P99    time.Duration
	Notes       []string
	Elapsed     time.Duration
	phaseServed []map[string]int
}

// FaultResult is a whole fault run.
type FaultResult struct {
	Rows    []FaultRow
	Machine string
	Elapsed time.Duration
}

// load is a set of simulated users playing both stories against one or
// two app instances while a fault happens.
type load struct {
	cfg     FaultConfig
	urls    atomic.Pointer[[]string]
	users   []*user
	writer  *user
	thread  string
	phase   atomic.Int32
	mu      sync.Mutex
	row     FaultRow
	lat     []time.Duration
	acked   map[string]map[int]int // username → item → acknowledged adds
	comment int                    // acknowledged comments
}

var errorPageRE = regexp.MustCompile(`<h1>Read-only right now</h1>`)

func (l *load) baseFor(i int, n int) string {
	urls := *l.urls.Load()
	return urls[(i+n)%len(urls)]
}

// record notes one response. A GET that lands on /login lost its session.
func (l *load) record(p page, err error, isGet bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.row.Requests++
	switch {
	case err != nil:
		l.row.Failed++
		return
	case p.status == http.StatusServiceUnavailable && errorPageRE.MatchString(p.body):
		l.row.ReadOnly++
	case p.status >= 500:
		l.row.Failed++
	case isGet && p.status == http.StatusSeeOther && strings.HasPrefix(p.loc, "/login"):
		l.row.Failed++ // signed out: the session was lost
	}
	l.lat = append(l.lat, p.elapsed)
	phase := l.phase.Load()
	if phase >= 0 {
		for _, e := range parseRoute(p.route) {
			l.row.phaseServed[phase][e.node]++
		}
	}
	if pageStale(p) {
		l.row.Stale++
	}
}

// anomaly counts a read-your-writes or monotonic failure. A page that
// carried the staleness banner (the primary down, no replica fresh enough)
// announced it: that is counted apart. For any other the first one's route
// goes into the notes, to say which node and reason served it.
func (l *load) anomaly(p page, what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pageStale(p) {
		l.row.StaleMisses++
		return
	}
	if l.row.Anomalies == 0 {
		l.row.Notes = append(l.row.Notes, fmt.Sprintf("first anomaly: %s, served by %s", what, p.route))
	}
	l.row.Anomalies++
}

// pageStale reports whether any read behind the page was served possibly
// stale, which the page says with its banner.
func pageStale(p page) bool {
	for _, e := range parseRoute(p.route) {
		if e.reason == "stale" {
			return true
		}
	}
	return false
}

// run plays the stories until ctx ends.
func (l *load) run(ctx context.Context) {
	var wg sync.WaitGroup
	half := len(l.users) / 2
	for i, u := range l.users[:half] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				u.base = l.baseFor(i, n)
				item := 1 + u.rng.IntN(10)
				p, err := u.do(ctx, http.MethodPost, "/wishlist", url.Values{"item_id": {strconv.Itoa(item)}})
				if ctx.Err() != nil {
					return
				}
				l.record(p, err, false)
				if err == nil && p.status == http.StatusSeeOther {
					l.mu.Lock()
					l.acked[u.name][item]++
					want := l.acked[u.name][item]
					l.mu.Unlock()
					u.base = l.baseFor(i, n+1)
					p, err := u.do(ctx, http.MethodGet, "/wishlist", nil)
					if ctx.Err() != nil {
						return
					}
					l.record(p, err, true)
					if err == nil && p.status == http.StatusOK {
						if n := wishCount(p.body, item); n < want {
							l.anomaly(p, fmt.Sprintf("wishlist showed %d of %d adds", n, want))
						}
					}
				} else {
					// The primary is down: read the wishlist anyway.
					p, err := u.do(ctx, http.MethodGet, "/wishlist", nil)
					if ctx.Err() != nil {
						return
					}
					l.record(p, err, true)
				}
				sleep(ctx, l.cfg.Think)
			}
		}()
	}
	for i, u := range l.users[half:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := 0
			for n := 0; ctx.Err() == nil; n++ {
				u.base = l.baseFor(i, n)
				p, err := u.do(ctx, http.MethodGet, l.thread, nil)
				if ctx.Err() != nil {
					return
				}
				l.record(p, err, true)
				if err == nil && p.status == http.StatusOK {
					if m := commentsRE.FindStringSubmatch(p.body); m != nil {
						c, _ := strconv.Atoi(m[1])
						if c < seen {
							l.anomaly(p, fmt.Sprintf("thread showed %d comments after %d", c, seen))
						}
						seen = max(seen, c)
					}
				}
				sleep(ctx, l.cfg.Think)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			l.writer.base = l.baseFor(0, n)
			p, err := l.writer.do(ctx, http.MethodPost, l.thread+"/comments", url.Values{"body": {"fault comment " + strconv.Itoa(n)}})
			if ctx.Err() != nil {
				return
			}
			l.record(p, err, false)
			if err == nil && p.status == http.StatusSeeOther {
				l.mu.Lock()
				l.comment++
				l.mu.Unlock()
			}
			sleep(ctx, 2*l.cfg.Think)
		}
	}()
	wg.Wait()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// scenario runs the load through phases: before, during, after; between
// them the fault's steps run. It then checks every acknowledged write on
// the primary.
func (l *load) scenario(ctx context.Context, name string, steps ...func(ctx context.Context) error) (FaultRow, error) {
	l.row = FaultRow{Scenario: name}
	l.lat = nil
	for range len(steps) + 1 {
		l.row.phaseServed = append(l.row.phaseServed, map[string]int{})
	}
	l.phase.Store(0)
	start := time.Now()
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { l.run(lctx); close(done) }()
	var stepErr error
	for i, step := range steps {
		sleep(ctx, l.cfg.Phase)
		// While a step runs, and for a poll interval and a half after it,
		// reads are not attributed to a phase: requests already in flight
		// when a node died still come back from it.
		l.phase.Store(-1)
		if err := step(ctx); err != nil {
			stepErr = fmt.Errorf("%s: step %d: %w", name, i+1, err)
			break
		}
		sleep(ctx, transition)
		l.phase.Store(int32(i + 1))
	}
	sleep(ctx, l.cfg.Phase)
	cancel()
	<-done
	if stepErr != nil {
		return l.row, stepErr
	}
	row := l.row
	row.Elapsed = time.Since(start)
	sort.Slice(l.lat, func(i, j int) bool { return l.lat[i] < l.lat[j] })
	if n := len(l.lat); n > 0 {
		row.P50, row.P99 = l.lat[n/2], l.lat[min(n-1, n*99/100)]
	}
	acked, lost, err := l.verifyWrites(ctx)
	if err != nil {
		return row, err
	}
	row.Acked, row.Lost = acked, lost
	return row, nil
}

// verifyWrites checks every acknowledged write against the primary: each
// user's wishlist has at least the acknowledged adds of each item, and the
// thread at least the acknowledged comments.
func (l *load) verifyWrites(ctx context.Context) (acked, lost int, err error) {
	conn, err := pgx.Connect(ctx, l.cfg.Cluster.PrimaryURL())
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, items := range l.acked {
		for item, n := range items {
			var have int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM wishlist_entries w JOIN users u ON u.id = w.user_id
				WHERE u.username = $1 AND w.item_id = $2`, name, item).Scan(&have); err != nil {
				return 0, 0, err
			}
			acked += n
			lost += max(0, n-have)
		}
	}
	id, _ := strconv.Atoi(strings.TrimPrefix(l.thread, "/forum/"))
	var have int
	if err := conn.QueryRow(ctx, `SELECT count(*) - 1 FROM comments WHERE thread_id = $1`, id).Scan(&have); err != nil {
		return 0, 0, err
	}
	acked += l.comment
	lost += max(0, l.comment-have)
	return acked, lost, nil
}

// share says what part of a phase's reads a node served.
func share(m map[string]int, node string) string {
	total := 0
	for _, n := range m {
		total += n
	}
	if total == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f %%", 100*float64(m[node])/float64(total))
}

// labState reads an app's /lab/state.
func labState(ctx context.Context, base string) (map[string]string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/lab/state", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st struct {
		Nodes []struct {
			Name   string `json:"name"`
			Router string `json:"router"`
		} `json:"nodes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range st.Nodes {
		out[n.Name] = n.Router
	}
	return out, nil
}

// metric reads one unlabelled sample, or the sum of a labelled family,
// from an app's /metrics.
func metric(ctx context.Context, base, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	sum, found := 0.0, false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err == nil {
				sum += v
				found = true
			}
		}
	}
	if !found {
		return 0, fmt.Errorf("no %s in /metrics", name)
	}
	return sum, nil
}

// RunFaults runs every fault scenario under load and checks, after each,
// that no acknowledged write is missing.
func RunFaults(ctx context.Context, cfg FaultConfig) (*FaultResult, error) {
	if cfg.Users <= 0 {
		cfg.Users = 6
	}
	if cfg.Think <= 0 {
		cfg.Think = 50 * time.Millisecond
	}
	if cfg.Phase <= 0 {
		cfg.Phase = 4 * time.Second
	}
	if cfg.Load == 0 {
		cfg.Load = time.Minute
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	began := time.Now()
	c := cfg.Cluster
	defer resetLag(context.WithoutCancel(ctx), c)
	app, err := cfg.StartApp(ctx)
	if err != nil {
		return nil, err
	}
	stopApp := app.Stop
	defer func() { stopApp() }()
	users, writer, err := signUp(ctx, Config{URL: app.URL, Users: cfg.Users})
	if err != nil {
		return nil, err
	}
	l := &load{cfg: cfg, users: users, writer: writer, acked: map[string]map[int]int{}}
	l.urls.Store(&[]string{app.URL})
	for _, u := range users {
		l.acked[u.name] = map[int]int{}
	}
	p, err := writer.do(ctx, http.MethodPost, "/forum", url.Values{"title": {"Faults"}, "body": {"first"}})
	if err != nil || p.status != http.StatusSeeOther {
		return nil, fmt.Errorf("faults: create thread: status %d, %v", p.status, err)
	}
	l.thread = p.loc
	res := &FaultResult{}
	add := func(row FaultRow, err error) error {
		if err != nil {
			return err
		}
		res.Rows = append(res.Rows, row)
		fmt.Fprintf(cfg.Progress, "faults: %-40s %5d requests, %d failed, %d read-only, %d anomalies, %d/%d writes lost (%.1fs)\n",
			row.Scenario, row.Requests, row.Failed, row.ReadOnly, row.Anomalies, row.Lost, row.Acked, row.Elapsed.Seconds())
		return nil
	}
	reset := func() error { return resetLag(ctx, c) }

	// A follower killed with SIGKILL, then restarted.
	row, err := l.scenario(ctx, "replica1 killed (SIGKILL), restarted",
		func(ctx context.Context) error { return c.Kill(ctx, "replica1") },
		func(ctx context.Context) error { return c.Start(ctx, "replica1") })
	if err == nil {
		s := row.phaseServed
		row.Notes = append(row.Notes, fmt.Sprintf("replica1's share of reads before / while down / after restart: %s / %s / %s",
			share(s[0], "replica1"), share(s[1], "replica1"), share(s[2], "replica1")))
	}
	if err := add(row, err); err != nil {
		return res, err
	}

	// The primary stopped, fast and immediate.
	for _, immediate := range []bool{false, true} {
		how := "fast"
		if immediate {
			how = "immediate"
		}
		var resumed time.Duration
		row, err := l.scenario(ctx, "primary stopped ("+how+"), restarted",
			func(ctx context.Context) error { return c.Stop(ctx, "leader", immediate) },
			func(ctx context.Context) error {
				t0 := time.Now()
				if err := c.Start(ctx, "leader"); err != nil {
					return err
				}
				var err error
				resumed, err = writesResume(ctx, l, t0)
				return err
			})
		if err == nil {
			row.Notes = append(row.Notes, fmt.Sprintf("writes worked again %.1f s after the restart began, without restarting the app", resumed.Seconds()))
		}
		if err := add(row, err); err != nil {
			return res, err
		}
		if err := reset(); err != nil {
			return res, err
		}
	}

	// One replica paused for longer than the lag limit (the apps run with
	// a 2 s limit).
	var excluded, takenBack bool
	row, err = l.scenario(ctx, "replica1 paused past the 2 s lag limit",
		func(ctx context.Context) error { return c.Pause(ctx, "replica1") },
		func(ctx context.Context) error {
			st, err := labState(ctx, app.URL)
			excluded = err == nil && st["replica1"] == "lagging"
			return c.Resume(ctx, "replica1")
		})
	if err == nil {
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && !takenBack {
			st, err := labState(ctx, app.URL)
			takenBack = err == nil && st["replica1"] == "usable"
			sleep(ctx, 100*time.Millisecond)
		}
		row.Notes = append(row.Notes, fmt.Sprintf("excluded past the limit: %v; taken back once caught up: %v", excluded, takenBack))
	}
	if err := add(row, err); err != nil {
		return res, err
	}

	// The app restarted while users are signed in: a new instance comes up,
	// users move to it, the old one shuts down gracefully.
	row, err = l.scenario(ctx, "app restarted, users signed in",
		func(ctx context.Context) error {
			next, err := cfg.StartApp(ctx)
			if err != nil {
				return err
			}
			old := stopApp
			app, stopApp = next, next.Stop
			l.urls.Store(&[]string{next.URL})
			// Drain, as a load balancer does before it stops an instance:
			// a request that picked the old address a moment ago still
			// reaches it. Then the graceful shutdown finishes in-flight ones.
			sleep(ctx, drain)
			old()
			return nil
		})
	if err == nil {
		row.Notes = append(row.Notes, "sessions live in PostgreSQL: no user was signed out")
	}
	if err := add(row, err); err != nil {
		return res, err
	}

	// Two instances, users switching between them at every request: only
	// the cookie carries their consistency state.
	var second App
	row, err = l.scenario(ctx, "two app instances, users alternating",
		func(ctx context.Context) error {
			var err error
			if second, err = cfg.StartApp(ctx); err != nil {
				return err
			}
			l.urls.Store(&[]string{app.URL, second.URL})
			return nil
		},
		func(ctx context.Context) error {
			l.urls.Store(&[]string{app.URL})
			sleep(ctx, drain)
			second.Stop()
			return nil
		})
	if err := add(row, err); err != nil {
		return res, err
	}

	// Sustained load: no errors, goroutines and pools stable.
	if cfg.Load > 0 {
		g0, _ := metric(ctx, app.URL, "go_goroutines")
		c0, _ := metric(ctx, app.URL, "quest_pool_total_conns")
		saved := l.cfg.Phase
		l.cfg.Phase = cfg.Load
		row, err := l.scenario(ctx, fmt.Sprintf("sustained load, %s", cfg.Load))
		l.cfg.Phase = saved
		if err == nil {
			g1, _ := metric(ctx, app.URL, "go_goroutines")
			c1, _ := metric(ctx, app.URL, "quest_pool_total_conns")
			row.Notes = append(row.Notes, fmt.Sprintf("goroutines %.0f → %.0f, pool connections %.0f → %.0f, %.0f req/s",
				g0, g1, c0, c1, float64(row.Requests)/row.Elapsed.Seconds()))
		}
		if err := add(row, err); err != nil {
			return res, err
		}
	}
	res.Elapsed = time.Since(began)
	return res, nil
}

// transition is how long after a fault's step reads go unattributed:
// one and a half of the tracker's 100 ms poll intervals.
const transition = 150 * time.Millisecond

// drain is how long an instance keeps serving after users stop being sent
// to it.
const drain = 500 * time.Millisecond

// writesResume waits until a write goes through again and says how long
// after t0 that was.
func writesResume(ctx context.Context, l *load, t0 time.Time) (time.Duration, error) {
	probe := l.writer
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		probe.base = l.baseFor(0, 0)
		p, err := probe.do(ctx, http.MethodPost, l.thread+"/comments", url.Values{"body": {"probe"}})
		if err == nil && p.status == http.StatusSeeOther {
			l.mu.Lock()
			l.comment++
			l.mu.Unlock()
			return time.Since(t0), nil
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return 0, fmt.Errorf("writes did not resume within a minute of restarting the primary")
}

// Markdown writes the fault table.
func (r *FaultResult) Markdown(w io.Writer) {
	fmt.Fprintln(w, "| scenario | requests | failed | read-only 503 | stale reads | anomalies | acknowledged writes checked (so far) | lost | p50 | p99 | notes |")
	fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
	for _, row := range r.Rows {
		notes := row.Notes
		if row.StaleMisses > 0 {
			notes = append(notes, fmt.Sprintf("%d stale-bannered page(s) lacked a write or went back", row.StaleMisses))
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s |\n", row.Scenario, row.Requests, row.Failed,
			row.ReadOnly, row.Stale, row.Anomalies, row.Acked, row.Lost, ms(row.P50), ms(row.P99), strings.Join(notes, "; "))
	}
	fmt.Fprintf(w, "\nEvery scenario under the causal strategy, users adding to their wishlists and re-reading them, re-reading a thread a writer appends to. Failed: 5xx other than the read-only page, transport errors, users signed out. Stale reads: pages served with the staleness banner (the primary down and no replica fresh enough); anomalies: read-your-writes or monotonic failures on pages served without it. Run took %s on %s.\n",
		r.Elapsed.Round(time.Second), r.Machine)
}
