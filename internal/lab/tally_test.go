package lab

import (
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestTallySortsResponsesAndChecks(t *testing.T) {
	u := newBrowser("u", 1)
	tl := newTally("causal", 2, 2)
	fresh := page{status: http.StatusOK, route: "replica1:fresh:causal", elapsed: time.Millisecond}
	stale := page{status: http.StatusOK, route: "replica2:stale:causal", elapsed: 3 * time.Millisecond}
	tl.response(u, fresh, nil, true)
	tl.response(u, stale, nil, true)
	tl.response(u, page{status: http.StatusServiceUnavailable, body: "<h1>Read-only right now</h1>"}, nil, false)
	tl.response(u, page{status: http.StatusServiceUnavailable, body: "<h1>Your change may have been saved</h1>"}, nil, false)
	tl.response(u, page{status: http.StatusInternalServerError, body: "<h1>Internal Server Error</h1>"}, nil, false)
	tl.response(u, page{status: http.StatusSeeOther, loc: "/login?next=/wishlist"}, nil, true)
	tl.response(u, page{}, errors.New("connection refused"), true)
	tl.setPhase(1)
	tl.response(u, page{status: http.StatusOK, route: "primary:fallback-lag:causal,replica1:fresh:sticky"}, nil, true)

	if tl.requests != 8 || tl.failed != 3 || tl.readOnly != 1 || tl.unknown != 1 || tl.stalePages != 1 || len(tl.latencies) != 7 {
		t.Errorf("requests %d, failed %d, read-only %d, unknown %d, stale pages %d, latencies %d; want 8, 3, 1, 1, 1, 7",
			tl.requests, tl.failed, tl.readOnly, tl.unknown, tl.stalePages, len(tl.latencies))
	}
	if tl.firstFail != "first failure: 500 Internal Server Error" {
		t.Errorf("first failure %q", tl.firstFail)
	}
	// The sticky read is a session lookup's, not the strategy's decision.
	if tl.reads != 3 || tl.primaryReads != 1 || tl.staleReads != 1 {
		t.Errorf("reads %d, on the primary %d, stale %d; want 3, 1, 1", tl.reads, tl.primaryReads, tl.staleReads)
	}
	if tl.served[0]["replica1"] != 1 || tl.served[1]["replica1"] != 1 || tl.served[1]["primary"] != 1 {
		t.Errorf("reads by phase: %v", tl.served)
	}

	tl.readBack(0, fresh, 2, 2, "")
	tl.readBack(1, stale, 1, 2, "") // announced by the banner
	tl.readBack(1, fresh, 0, 1, "")
	tl.monotonic(fresh, 3, 4)
	if tl.rywChecks[0] != 1 || tl.rywChecks[1] != 2 || tl.rywFailures[1] != 2 || tl.monoChecks != 1 || tl.monoFailures != 1 {
		t.Errorf("read-your-writes %v/%v, monotonic %d/%d", tl.rywFailures, tl.rywChecks, tl.monoFailures, tl.monoChecks)
	}
	if tl.anomalies != 2 || tl.staleMisses != 1 || len(tl.firstAnomalies) != 2 || tl.firstAnomalies[0] != "wishlist showed 0 of 1 adds, served by replica1:fresh:causal" {
		t.Errorf("anomalies %d, stale misses %d, first %q", tl.anomalies, tl.staleMisses, tl.firstAnomalies)
	}
	if n := tl.notes(); len(n) < 1 || !strings.HasPrefix(n[0], "first 2 anomalies: wishlist showed 0 of 1 adds") {
		t.Errorf("notes %q", n)
	}
}

func TestPercentiles(t *testing.T) {
	if p50, p99 := percentiles(nil); p50 != 0 || p99 != 0 {
		t.Errorf("no latencies: %s, %s", p50, p99)
	}
	var lat []time.Duration
	for i := 200; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if p50, p99 := percentiles(lat); p50 != 101*time.Millisecond || p99 != 199*time.Millisecond {
		t.Errorf("1..200 ms: p50 %s, p99 %s", p50, p99)
	}
}

// TestTallyCountsLostChangesApart: a page that says the session's change
// may have been lost in a failover counts as such, and a read-back short
// on it is a lost change announced, not an anomaly; forms the app took are
// timed by phase, and failed page views are counted apart.
func TestTallyCountsLostChangesApart(t *testing.T) {
	u := newBrowser("u", 1)
	tl := newTally("causal", 1, 2)
	lost := page{status: http.StatusOK, route: "primary:primary-only:causal", lost: true}
	tl.response(u, lost, nil, true)
	tl.readBack(0, lost, 1, 2, "")
	tl.monotonic(lost, 5, 7)
	tl.response(u, page{status: http.StatusSeeOther, loc: "/wishlist", elapsed: 4 * time.Millisecond, lost: true}, nil, false)
	tl.response(u, page{status: http.StatusSeeOther, loc: "/login"}, nil, false) // signed out: not a write taken
	tl.response(u, page{}, errors.New("connection reset"), true)
	tl.response(u, page{}, errors.New("connection reset"), false)
	tl.setPhase(-1)
	tl.response(u, page{status: http.StatusSeeOther, loc: "/wishlist", elapsed: time.Second}, nil, false) // between phases
	tl.setPhase(1)
	tl.response(u, page{status: http.StatusSeeOther, loc: "/forum/1", elapsed: 6 * time.Millisecond}, nil, false)

	if tl.lostPages != 1 || tl.lostForms != 1 || tl.lostMisses != 2 || tl.anomalies != 0 || tl.staleMisses != 0 {
		t.Errorf("lost pages %d, forms %d, lost misses %d, anomalies %d, stale misses %d; want 1, 1, 2, 0, 0",
			tl.lostPages, tl.lostForms, tl.lostMisses, tl.anomalies, tl.staleMisses)
	}
	// A redirect that said so reaches no one: the page after, saying
	// nothing, is an anomaly, told with what came before it.
	tl.readBack(0, page{status: http.StatusOK, route: "primary:fallback-down:causal"}, 6, 7, " (after a lost-flagged redirect)")
	if tl.anomalies != 1 || tl.firstAnomalies[0] != "wishlist showed 6 of 7 adds (after a lost-flagged redirect), served by primary:fallback-down:causal" {
		t.Errorf("anomalies %d: %q", tl.anomalies, tl.firstAnomalies)
	}
	if tl.failed != 2 || tl.failedGets != 1 {
		t.Errorf("failed %d, of them page views %d; want 2, 1", tl.failed, tl.failedGets)
	}
	if len(tl.writes[0]) != 1 || tl.writes[0][0] != 4*time.Millisecond || len(tl.writes[1]) != 1 || tl.writes[1][0] != 6*time.Millisecond {
		t.Errorf("writes by phase: %v; want [4ms] [6ms]", tl.writes)
	}
}

// TestAcceptLoss: after a page from the primary says a change may have
// been lost, the user expects what it shows; a page that was also served
// possibly stale does not count, since it may lack adds that are not lost.
func TestAcceptLoss(t *testing.T) {
	u := newBrowser("u", 1)
	u.wishes = map[int]int{3: 2, 5: 1, 7: 1}
	body := `<li data-item="3" data-count="1"></li><li data-item="7" data-count="2"></li>`
	u.acceptLoss(page{body: body, route: "replica1:stale:causal", lost: true})
	u.acceptLoss(page{body: body, route: "primary:primary-only:causal"})
	if len(u.lost) != 0 {
		t.Fatalf("a stale page, or one that said nothing, was taken as a loss: %v", u.lost)
	}
	u.acceptLoss(page{body: body, route: "primary:primary-only:causal", lost: true})
	if want := map[int]int{3: 1, 5: 1, 7: 0}; !maps.Equal(u.lost, want) {
		t.Errorf("lost %v, want %v", u.lost, want)
	}
	if u.wishes[3] != 2 {
		t.Errorf("acknowledged adds changed: %v", u.wishes)
	}
}
