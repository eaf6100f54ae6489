package lab

import (
	"reflect"
	"testing"
	"time"
)

func TestParseRoute(t *testing.T) {
	for _, tc := range []struct {
		route string
		want  []routeEntry
	}{
		{"", nil},
		{"replica2:fresh:causal", []routeEntry{{node: "replica2", reason: "fresh", strategy: "causal"}}},
		{"primary:fallback-lag:causal,replica1:waited:sticky:1.5ms", []routeEntry{
			{node: "primary", reason: "fallback-lag", strategy: "causal"},
			{node: "replica1", reason: "waited", strategy: "sticky", wait: 1500 * time.Microsecond},
		}},
		{"replica1:stale:causal:x", []routeEntry{{node: "replica1", reason: "stale", strategy: "causal"}}},
		{"garbage,replica1:random", []routeEntry{{node: "replica1", reason: "random"}}},
		// A node named by its URL, which set no application_name.
		{"127.0.0.1:5432/quest:waited:causal:0.8ms,primary:primary-only:causal", []routeEntry{
			{node: "127.0.0.1:5432/quest", reason: "waited", strategy: "causal", wait: 800 * time.Microsecond},
			{node: "primary", reason: "primary-only", strategy: "causal"},
		}},
		{"127.0.0.1:5432/quest:stale:causal", []routeEntry{{node: "127.0.0.1:5432/quest", reason: "stale", strategy: "causal"}}},
	} {
		if got := parseRoute(tc.route); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseRoute(%q) = %+v, want %+v", tc.route, got, tc.want)
		}
	}
	if !pageStale(page{route: "primary:primary-only:causal,replica2:stale:causal"}) || pageStale(page{route: "replica2:fresh:causal"}) {
		t.Error("pageStale misreads a route")
	}
}
