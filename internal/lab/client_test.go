package lab

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMetricReadsTheTextFormat(t *testing.T) {
	body := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 27\n" +
		"# TYPE quest_pool_total_conns gauge\nquest_pool_total_conns{node=\"primary\"} 3\nquest_pool_total_conns{node=\"replica1\"} 4\n" +
		"# TYPE quest_reads_total counter\nquest_reads_total{node=\"replica1\"} 10\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			w.Write([]byte(body))
		default:
			http.Error(w, "broken", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	b := newBrowser("", 0)
	ctx := context.Background()
	for name, want := range map[string]float64{"go_goroutines": 27, "quest_pool_total_conns": 7, "quest_reads_total": 10} {
		if got, err := b.metric(ctx, srv.URL, name); err != nil || got != want {
			t.Errorf("metric(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := b.metric(ctx, srv.URL, "quest_missing"); err == nil || !strings.Contains(err.Error(), "no quest_missing") {
		t.Errorf("a missing metric: %v", err)
	}
	if _, err := b.metric(ctx, srv.URL+"/broken", "go_goroutines"); err == nil {
		t.Error("a /metrics answering 500 read as a value")
	}
	body = "go_goroutines twenty\n"
	if _, err := b.metric(ctx, srv.URL, "go_goroutines"); err == nil {
		t.Error("an unparseable /metrics read as a value")
	}
}
