package lab

import (
	"strconv"
	"strings"
	"time"

	"quest/internal/dbrouter"
)

// routeEntry is one read behind a page, as its X-Quest-Route header tells
// it: "replica2:waited:causal:1.2ms".
type routeEntry struct {
	node, reason, strategy string
	wait                   time.Duration // in-band wait, when the read waited
}

// parseRoute reads a page's X-Quest-Route header; entries without a node
// and a reason are skipped. A node's name may hold colons (a URL without
// application_name names its node host:port/dbname), so an entry is read
// from its end: the strategy is the last field or the one before the wait.
func parseRoute(route string) []routeEntry {
	var out []routeEntry
	for _, entry := range strings.Split(route, ",") {
		parts := strings.Split(entry, ":")
		if len(parts) < 2 {
			continue
		}
		var e routeEntry
		s := -1 // the strategy's field
		for i := max(2, len(parts)-2); i < len(parts); i++ {
			if _, err := dbrouter.ParseStrategy(parts[i]); err == nil {
				s = i
			}
		}
		if s < 0 {
			e.node, e.reason = strings.Join(parts[:len(parts)-1], ":"), parts[len(parts)-1]
			out = append(out, e)
			continue
		}
		e.node, e.reason, e.strategy = strings.Join(parts[:s-1], ":"), parts[s-1], parts[s]
		if s+1 < len(parts) {
			if v, ok := strings.CutSuffix(parts[s+1], "ms"); ok {
				if ms, err := strconv.ParseFloat(v, 64); err == nil {
					e.wait = time.Duration(ms * float64(time.Millisecond))
				}
			}
		}
		out = append(out, e)
	}
	return out
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
