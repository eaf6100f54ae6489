// Package lab is Quest's experiment: simulated users play the article's two
// stories over HTTP, as real clients would, against every routing strategy
// under every lag setting, and the results become a table of what each
// strategy costs and guarantees. It is a client of the server and pulls
// the local cluster's lag levers.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"quest/internal/dbrouter"
)

// Cluster is what the lab needs of the local cluster: its lag levers.
// *cluster.Cluster is one.
type Cluster interface {
	Pause(ctx context.Context, node string) error
	Resume(ctx context.Context, node string) error
	SetDelay(ctx context.Context, node string, d time.Duration) error
	WaitCaughtUp(ctx context.Context, timeout time.Duration) error
	ReplicaURLs() []string
}

// LagSetting is one way of making the replicas lag.
type LagSetting struct {
	Name  string
	Apply func(ctx context.Context, c Cluster) error
}

// DefaultSettings are the lag settings of a full run.
func DefaultSettings() []LagSetting {
	return []LagSetting{
		{"none", func(context.Context, Cluster) error { return nil }},
		{"replica1 200 ms behind", func(ctx context.Context, c Cluster) error {
			return c.SetDelay(ctx, "replica1", 200*time.Millisecond)
		}},
		{"replica1 5 s behind, replica2 fresh", func(ctx context.Context, c Cluster) error {
			return c.SetDelay(ctx, "replica1", 5*time.Second)
		}},
		{"every replica paused", func(ctx context.Context, c Cluster) error {
			for i := range c.ReplicaURLs() {
				if err := c.Pause(ctx, fmt.Sprintf("replica%d", i+1)); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// Config describes a run.
type Config struct {
	URL         string // the app
	Cluster     Cluster
	SetStrategy func(context.Context, dbrouter.Strategy) error
	// Row, if set, names a row that is not a Quest strategy (pgpool-II):
	// the run then has that one row and leaves the strategy alone.
	Row        string
	Strategies []dbrouter.Strategy
	Settings   []LagSetting  // nil means DefaultSettings; empty runs only the closed-loop cells
	Users      int           // simulated users; default 8
	Think      time.Duration // pause between a user's actions; default 100 ms
	CellTime   time.Duration // how long users act in each cell; default 8 s
	ClosedLoop time.Duration // the throughput cell per strategy; default 8 s; <0 skips it
	// Checks are when a user re-reads their wishlist after adding to it:
	// default at once, 1 s and 3 s later.
	Checks   []time.Duration
	Progress io.Writer
}

func (c *Config) defaults() {
	if c.Users <= 0 {
		c.Users = 8
	}
	if c.Think <= 0 {
		c.Think = 100 * time.Millisecond
	}
	if c.CellTime <= 0 {
		c.CellTime = 8 * time.Second
	}
	if c.ClosedLoop == 0 {
		c.ClosedLoop = 8 * time.Second
	}
	if len(c.Checks) == 0 {
		c.Checks = []time.Duration{0, time.Second, 3 * time.Second}
	}
	if len(c.Strategies) == 0 {
		c.Strategies = dbrouter.Strategies()
	}
	if c.Settings == nil {
		c.Settings = DefaultSettings()
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Cell is one strategy under one lag setting (or the closed-loop cell).
type Cell struct {
	Strategy     string
	Setting      string
	ClosedLoop   bool
	Proxy        bool // a row through a proxy: which node served is not known
	Requests     int
	Errors       int
	RYWChecks    []int // per check delay
	RYWFailures  []int
	MonoChecks   int
	MonoFailures int
	Reads        int // the strategy's read decisions seen in X-Quest-Route (not session lookups)
	PrimaryReads int
	StaleReads   int
	Waited       int           // causal reads that waited in-band
	WaitTotal    time.Duration // their total wait
	Streaks      int           // runs of 3+ consecutive page views served only by the primary
	P50, P99     time.Duration
	RPS          float64
	Elapsed      time.Duration
}

// PrimaryShare is the share of reads the primary served.
func (c Cell) PrimaryShare() float64 {
	if c.Reads == 0 {
		return 0
	}
	return float64(c.PrimaryReads) / float64(c.Reads)
}

// Result is a whole run.
type Result struct {
	Started  time.Time
	Elapsed  time.Duration
	Config   Config
	Cells    []Cell
	Machine  string
	Comments []string // extra lines printed under the table (pgpool's settings, say)

	Bench        []BenchResult // the query-level benchmark, with --via-pgpool
	BenchClients int
	BenchTime    time.Duration
}

// Run runs the experiment: for every strategy, every lag setting, then the
// closed-loop cell.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg.defaults()
	res := &Result{Started: time.Now(), Config: cfg}
	users, writer, err := signUp(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rows := cfg.Strategies
	names := make([]string, len(rows))
	for i, s := range rows {
		names[i] = s.String()
	}
	if cfg.Row != "" {
		rows, names = []dbrouter.Strategy{0}, []string{cfg.Row}
	}
	total := len(rows) * len(cfg.Settings)
	if cfg.ClosedLoop > 0 {
		total += len(rows)
	}
	n := 0
	defer resetLag(context.WithoutCancel(ctx), cfg.Cluster)
	for i, s := range rows {
		if cfg.Row == "" {
			if err := cfg.SetStrategy(ctx, s); err != nil {
				return nil, fmt.Errorf("switch to %s: %w", s, err)
			}
		}
		for _, setting := range cfg.Settings {
			n++
			if err := resetLag(ctx, cfg.Cluster); err != nil {
				return nil, err
			}
			if err := setting.Apply(ctx, cfg.Cluster); err != nil {
				return nil, fmt.Errorf("lag setting %q: %w", setting.Name, err)
			}
			cell, err := runCell(ctx, cfg, appStrategy(cfg, s), users, writer, false)
			if err != nil {
				return nil, err
			}
			cell.Strategy, cell.Setting, cell.Proxy = names[i], setting.Name, cfg.Row != ""
			res.Cells = append(res.Cells, cell)
			progress(cfg.Progress, n, total, cell)
		}
		if cfg.ClosedLoop > 0 {
			n++
			if err := resetLag(ctx, cfg.Cluster); err != nil {
				return nil, err
			}
			cell, err := runCell(ctx, cfg, appStrategy(cfg, s), users, writer, true)
			if err != nil {
				return nil, err
			}
			cell.Strategy, cell.Setting, cell.ClosedLoop, cell.Proxy = names[i], "none, closed loop", true, cfg.Row != ""
			res.Cells = append(res.Cells, cell)
			progress(cfg.Progress, n, total, cell)
		}
	}
	res.Elapsed = time.Since(res.Started)
	return res, nil
}

// appStrategy is the strategy the app runs in a row: a row that is not a
// Quest strategy (pgpool-II) runs the app with primary.
func appStrategy(cfg Config, s dbrouter.Strategy) string {
	if cfg.Row != "" {
		return dbrouter.Primary.String()
	}
	return s.String()
}

func progress(w io.Writer, n, total int, c Cell) {
	fmt.Fprintf(w, "[%2d/%d] %-8s × %-36s %5d requests, %4.0f req/s, read-your-writes failures %v, monotonic failures %d (%.1fs)\n",
		n, total, c.Strategy, c.Setting, c.Requests, c.RPS, c.RYWFailures, c.MonoFailures, c.Elapsed.Seconds())
}

// resetLag resumes every replica, removes every delay, and waits until the
// replicas have replayed what the primary had flushed.
func resetLag(ctx context.Context, c Cluster) error {
	for i := range c.ReplicaURLs() {
		name := fmt.Sprintf("replica%d", i+1)
		if err := c.Resume(ctx, name); err != nil {
			return err
		}
		if err := c.SetDelay(ctx, name, 0); err != nil {
			return err
		}
	}
	return c.WaitCaughtUp(ctx, time.Minute)
}

// user is one simulated browser.
type user struct {
	name   string
	client *http.Client
	base   string
	wishes map[int]int // item id → how many times this user added it
	rng    *rand.Rand
}

func newUser(base, name string, seed uint64) *user {
	jar, _ := cookiejar.New(nil)
	// #nosec G404 -- simulated users pick items; nothing secret depends on it
	return &user{name: name, base: base, wishes: map[int]int{}, rng: rand.New(rand.NewPCG(seed, 7)),
		client: &http.Client{
			Jar:           jar,
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
}

// page is one response, as the lab reads it.
type page struct {
	status  int
	body    string
	route   string
	elapsed time.Duration
	loc     string
}

func (u *user) do(ctx context.Context, method, path string, form url.Values) (page, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.base+path, body)
	if err != nil {
		return page{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	start := time.Now()
	resp, err := u.client.Do(req)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return page{}, err
	}
	return page{status: resp.StatusCode, body: string(b), route: resp.Header.Get("X-Quest-Route"),
		elapsed: time.Since(start), loc: resp.Header.Get("Location")}, nil
}

// signUp creates the run's users: half add to their wishlists, half read
// the forum, plus one writer of comments.
func signUp(ctx context.Context, cfg Config) ([]*user, *user, error) {
	run := time.Now().UnixNano() % 1e9
	var users []*user
	for i := 0; i <= cfg.Users; i++ {
		u := newUser(cfg.URL, fmt.Sprintf("lab%d_%d", run, i), uint64(run)+uint64(i))
		p, err := u.do(ctx, http.MethodPost, "/signup", url.Values{
			"username": {u.name}, "display_name": {"Lab user " + strconv.Itoa(i)}, "password": {"lab password " + u.name}})
		if err != nil {
			return nil, nil, fmt.Errorf("lab: sign up: %w", err)
		}
		if p.status != http.StatusSeeOther {
			return nil, nil, fmt.Errorf("lab: sign up %s: status %d", u.name, p.status)
		}
		users = append(users, u)
	}
	return users[:cfg.Users], users[cfg.Users], nil
}

// recorder collects one cell's measurements from all users.
type recorder struct {
	strategy  string // the app's strategy: reads of another (session lookups) are not the lesson
	mu        sync.Mutex
	cell      Cell
	latencies []time.Duration
	streak    map[*user]int
}

// routeEntry is one read behind a page, as its X-Quest-Route header tells
// it: "replica2:waited:causal:1.2ms".
type routeEntry struct {
	node, reason, strategy string
	wait                   time.Duration // in-band wait, when the read waited
}

// parseRoute reads a page's X-Quest-Route header; entries without a node
// and a reason are skipped.
func parseRoute(route string) []routeEntry {
	var out []routeEntry
	for _, entry := range strings.Split(route, ",") {
		parts := strings.Split(entry, ":")
		if len(parts) < 2 {
			continue
		}
		e := routeEntry{node: parts[0], reason: parts[1]}
		if len(parts) > 2 {
			e.strategy = parts[2]
		}
		if len(parts) > 3 {
			if v, ok := strings.CutSuffix(parts[3], "ms"); ok {
				if ms, err := strconv.ParseFloat(v, 64); err == nil {
					e.wait = time.Duration(ms * float64(time.Millisecond))
				}
			}
		}
		out = append(out, e)
	}
	return out
}

func (r *recorder) request(u *user, p page, err error, isPage bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cell.Requests++
	if err != nil || (p.status >= 500) {
		r.cell.Errors++
		return
	}
	r.latencies = append(r.latencies, p.elapsed)
	if p.route == "" {
		return
	}
	onlyPrimary, counted := true, false
	for _, e := range parseRoute(p.route) {
		if e.strategy != r.strategy {
			continue
		}
		counted = true
		r.cell.Reads++
		if e.node == "primary" {
			r.cell.PrimaryReads++
		} else {
			onlyPrimary = false
		}
		switch e.reason {
		case "stale":
			r.cell.StaleReads++
		case "waited":
			r.cell.Waited++
			r.cell.WaitTotal += e.wait
		}
	}
	if !isPage || !counted {
		return
	}
	if onlyPrimary {
		r.streak[u]++
		if r.streak[u] == 3 {
			r.cell.Streaks++
		}
	} else {
		r.streak[u] = 0
	}
}

func (r *recorder) ryw(check int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cell.RYWChecks[check]++
	if !ok {
		r.cell.RYWFailures[check]++
	}
}

func (r *recorder) mono(ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cell.MonoChecks++
	if !ok {
		r.cell.MonoFailures++
	}
}

var (
	wishRE     = regexp.MustCompile(`data-item="(\d+)" data-count="(\d+)"`)
	commentsRE = regexp.MustCompile(`data-comments="(\d+)"`)
)

// wishCount reads how many times the item is on the wishlist page.
func wishCount(body string, item int) int {
	for _, m := range wishRE.FindAllStringSubmatch(body, -1) {
		if id, _ := strconv.Atoi(m[1]); id == item {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	return 0
}

// check is a pending re-read of the wishlist.
type check struct {
	due      time.Time
	index    int
	item     int
	expected int
}

// runCell runs the two stories for one cell.
func runCell(ctx context.Context, cfg Config, strategy string, users []*user, writer *user, closed bool) (Cell, error) {
	rec := &recorder{strategy: strategy, streak: map[*user]int{}}
	rec.cell.RYWChecks = make([]int, len(cfg.Checks))
	rec.cell.RYWFailures = make([]int, len(cfg.Checks))
	think := cfg.Think
	length := cfg.CellTime
	if closed {
		think, length = 0, cfg.ClosedLoop
	}
	// The monotonic story's thread, fresh for every cell.
	p, err := writer.do(ctx, http.MethodPost, "/forum", url.Values{"title": {"Comments in order?"}, "body": {"comment #0"}})
	if err != nil || p.status != http.StatusSeeOther {
		return Cell{}, fmt.Errorf("lab: create thread: status %d, %v", p.status, err)
	}
	thread := p.loc
	start := time.Now()
	end := start.Add(length)
	var maxDelay time.Duration
	for _, d := range cfg.Checks {
		maxDelay = max(maxDelay, d)
	}
	var wg sync.WaitGroup
	run := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	pause := func() {
		if think > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(think):
			}
		}
	}
	half := len(users) / 2
	// Read-your-writes: add, read at once, re-read later.
	for _, u := range users[:half] {
		run(func() {
			var pending []check
			for ctx.Err() == nil {
				now := time.Now()
				// Re-reads that are due.
				keep := pending[:0]
				for _, c := range pending {
					if now.Before(c.due) {
						keep = append(keep, c)
						continue
					}
					p, err := u.do(ctx, http.MethodGet, "/wishlist", nil)
					rec.request(u, p, err, true)
					if err == nil && p.status == http.StatusOK {
						rec.ryw(c.index, wishCount(p.body, c.item) >= c.expected)
					}
				}
				pending = keep
				if now.After(end) {
					if len(pending) == 0 || closed {
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				item := 1 + u.rng.IntN(10)
				p, err := u.do(ctx, http.MethodPost, "/wishlist", url.Values{"item_id": {strconv.Itoa(item)}})
				rec.request(u, p, err, false)
				if err != nil || p.status != http.StatusSeeOther {
					pause()
					continue
				}
				u.wishes[item]++
				added := time.Now()
				p, err = u.do(ctx, http.MethodGet, "/wishlist", nil)
				rec.request(u, p, err, true)
				if err == nil && p.status == http.StatusOK {
					rec.ryw(0, wishCount(p.body, item) >= u.wishes[item])
				}
				if !closed {
					for i, d := range cfg.Checks[1:] {
						// A re-read due after the cell's drain is never made.
						if added.Add(d).Before(end.Add(maxDelay)) {
							pending = append(pending, check{due: added.Add(d), index: i + 1, item: item, expected: u.wishes[item]})
						}
					}
				}
				pause()
			}
		})
	}
	// Monotonic reads: re-read the thread; never fewer comments than before.
	for _, u := range users[half:] {
		run(func() {
			seen := 0
			for ctx.Err() == nil && time.Now().Before(end) {
				p, err := u.do(ctx, http.MethodGet, thread, nil)
				rec.request(u, p, err, true)
				if err == nil && (p.status == http.StatusOK || p.status == http.StatusNotFound) {
					n := 0 // a thread not replicated yet shows no comments
					if m := commentsRE.FindStringSubmatch(p.body); m != nil {
						n, _ = strconv.Atoi(m[1])
					}
					rec.mono(n >= seen)
					seen = max(seen, n)
				}
				pause()
			}
		})
	}
	// The writer appends numbered comments.
	run(func() {
		for k := 1; ctx.Err() == nil && time.Now().Before(end); k++ {
			p, err := writer.do(ctx, http.MethodPost, thread+"/comments", url.Values{"body": {"comment #" + strconv.Itoa(k)}})
			rec.request(writer, p, err, false)
			pause()
		}
	})
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Cell{}, err
	}
	c := rec.cell
	c.Elapsed = time.Since(start)
	c.RPS = float64(c.Requests) / min(c.Elapsed, length+maxDelay).Seconds()
	if closed {
		c.RPS = float64(c.Requests) / c.Elapsed.Seconds()
	}
	sort.Slice(rec.latencies, func(i, j int) bool { return rec.latencies[i] < rec.latencies[j] })
	if n := len(rec.latencies); n > 0 {
		c.P50 = rec.latencies[n/2]
		c.P99 = rec.latencies[min(n-1, n*99/100)]
	}
	if c.Requests > 0 && c.Errors == c.Requests {
		return c, errors.New("lab: every request failed; is the app up?")
	}
	return c, nil
}
