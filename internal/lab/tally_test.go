package lab

import (
	"errors"
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

	tl.readBack(0, fresh, 2, 2)
	tl.readBack(1, stale, 1, 2) // announced by the banner
	tl.readBack(1, fresh, 0, 1)
	tl.monotonic(fresh, 3, 4)
	if tl.rywChecks[0] != 1 || tl.rywChecks[1] != 2 || tl.rywFailures[1] != 2 || tl.monoChecks != 1 || tl.monoFailures != 1 {
		t.Errorf("read-your-writes %v/%v, monotonic %d/%d", tl.rywFailures, tl.rywChecks, tl.monoFailures, tl.monoChecks)
	}
	if tl.anomalies != 2 || tl.staleMisses != 1 || !strings.Contains(tl.firstAnomaly, "wishlist showed 0 of 1 adds, served by replica1:fresh:causal") {
		t.Errorf("anomalies %d, stale misses %d, first %q", tl.anomalies, tl.staleMisses, tl.firstAnomaly)
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
