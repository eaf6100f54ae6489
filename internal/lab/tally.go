package lab

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// tally counts what the users saw while the story played. A lab cell and
// a fault row are two readings of it.
type tally struct {
	strategy string        // the app's strategy: reads of another (session lookups) are not its decisions
	elapsed  time.Duration // how long the story played (a fault scenario's)

	mu         sync.Mutex
	requests   int
	failed     int // transport errors, 5xx other than the read-only page, page views sent to sign in
	failedGets int // … of them page views (reads)
	readOnly   int // forms answered 503 "read-only right now"
	unknown    int // forms answered 503 "may have been saved": the connection broke during COMMIT
	firstFail  string
	latencies  []time.Duration
	stalePages int // pages with a read served possibly stale (the banner)
	lostPages  int // pages saying the session's change may have been lost in a failover
	lostForms  int // form answers (redirects, which browsers follow without showing) saying so
	// The strategy's read decisions.
	reads, primaryReads, staleReads, waited int
	waitTotal                               time.Duration
	streaks                                 int // runs of 3+ page views served only by the primary
	streak                                  map[*browser]int
	// Reads by node, and the latencies of acknowledged forms (writes), in
	// each phase of a fault scenario; phase -1: not counted.
	phase  int
	served []map[string]int
	writes [][]time.Duration
	// Read-your-writes checks by re-read, monotonic checks, and failures.
	rywChecks, rywFailures   []int
	monoChecks, monoFailures int
	// Failed checks on pages served as fresh, on pages with the staleness
	// banner, and on pages saying a change may have been lost.
	anomalies, staleMisses, lostMisses int
	firstAnomalies                     []string // the first few, to say what went wrong
}

func newTally(strategy string, rereads, phases int) *tally {
	t := &tally{strategy: strategy, streak: map[*browser]int{},
		rywChecks: make([]int, rereads), rywFailures: make([]int, rereads)}
	for range phases {
		t.served = append(t.served, map[string]int{})
	}
	t.writes = make([][]time.Duration, phases)
	return t
}

var (
	readOnlyRE = regexp.MustCompile(`<h1>Read-only right now</h1>`)
	unknownRE  = regexp.MustCompile(`<h1>Your change may have been saved</h1>`)
	titleRE    = regexp.MustCompile(`<h1>([^<]*)</h1>`)
)

// fail counts a failed request, keeping the first one's description;
// isPage says it was a page view. Called with t.mu held.
func (t *tally) fail(what string, isPage bool) {
	t.failed++
	if isPage {
		t.failedGets++
	}
	if t.firstFail == "" {
		t.firstFail = "first failure: " + what
	}
}

// response records one request; page says it was a page view (a GET).
func (t *tally) response(u *browser, p page, err error, isPage bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requests++
	if err != nil {
		t.fail(err.Error(), isPage)
		return
	}
	switch {
	case p.status == http.StatusServiceUnavailable && readOnlyRE.MatchString(p.body):
		t.readOnly++
	case p.status == http.StatusServiceUnavailable && unknownRE.MatchString(p.body):
		t.unknown++
	case p.status >= 500:
		title := ""
		if m := titleRE.FindStringSubmatch(p.body); m != nil {
			title = " " + m[1]
		}
		t.fail(fmt.Sprintf("%d%s", p.status, title), isPage)
	case isPage && p.status == http.StatusSeeOther && strings.HasPrefix(p.loc, "/login"):
		t.fail("signed out", isPage) // the session was lost
	case !isPage && p.status == http.StatusSeeOther && !strings.HasPrefix(p.loc, "/login") && t.phase >= 0 && t.phase < len(t.writes):
		t.writes[t.phase] = append(t.writes[t.phase], p.elapsed) // a form the app took
	}
	t.latencies = append(t.latencies, p.elapsed)
	switch {
	case p.lost && isPage:
		t.lostPages++
	case p.lost:
		t.lostForms++
	}
	onlyPrimary, decided, stale := true, false, false
	for _, e := range parseRoute(p.route) {
		if t.phase >= 0 && t.phase < len(t.served) {
			t.served[t.phase][e.node]++
		}
		stale = stale || e.reason == "stale"
		if e.strategy != t.strategy {
			continue
		}
		decided = true
		t.reads++
		if e.node == "primary" {
			t.primaryReads++
		} else {
			onlyPrimary = false
		}
		switch e.reason {
		case "stale":
			t.staleReads++
		case "waited":
			t.waited++
			t.waitTotal += e.wait
		}
	}
	if stale {
		t.stalePages++
	}
	if !isPage || !decided {
		return
	}
	if !onlyPrimary {
		t.streak[u] = 0
		return
	}
	if t.streak[u]++; t.streak[u] == 3 {
		t.streaks++
	}
}

// readBack records a read-your-writes check: the wishlist page showed have
// of the wants acknowledged adds. context, if any, says more of a failure.
func (t *tally) readBack(index int, p page, have, wants int, context string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rywChecks[index]++
	if have < wants {
		t.rywFailures[index]++
		t.anomaly(p, fmt.Sprintf("wishlist showed %d of %d adds%s", have, wants, context))
	}
}

// monotonic records a monotonic-reads check: the thread showed have
// comments after the reader had seen seen.
func (t *tally) monotonic(p page, have, seen int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.monoChecks++
	if have < seen {
		t.monoFailures++
		t.anomaly(p, fmt.Sprintf("thread showed %d comments after %d", have, seen))
	}
}

// maxAnomalies is how many anomalies a tally describes.
const maxAnomalies = 3

// anomaly sorts a failed check: a page that said the session's change may
// have been lost in a failover, or that carried the staleness banner (the
// primary down, no replica fresh enough), announced it. For the first
// other one the route is kept, to say which node and reason served it.
func (t *tally) anomaly(p page, what string) {
	if p.lost {
		t.lostMisses++
		return
	}
	if pageStale(p) {
		t.staleMisses++
		return
	}
	if len(t.firstAnomalies) < maxAnomalies {
		t.firstAnomalies = append(t.firstAnomalies, fmt.Sprintf("%s, served by %s", what, p.route))
	}
	t.anomalies++
}

// setPhase attributes the reads that follow to a phase (-1: to none).
func (t *tally) setPhase(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase = i
}
