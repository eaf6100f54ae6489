package lab

import (
	"strconv"
	"strings"
	"time"
)

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
