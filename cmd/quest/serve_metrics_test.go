package main

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"quest/internal/testcluster"
)

// TestServeMetricsAddr: --metrics-addr ($QUEST_METRICS_ADDR) gives
// /metrics a listener of its own, which serve names on start; the app's
// own address then answers 404 for /metrics.
func TestServeMetricsAddr(t *testing.T) {
	c := testcluster.Get(t)
	env := map[string]string{"QUEST_DIR": c.Dir(), "QUEST_METRICS_ADDR": "127.0.0.1:0"}
	if _, _, err := quest(t, env, "migrate", "up"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, out, logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v\n%s", err, logs.lines(""))
		}
	}()
	line := regexp.MustCompile(`(?m)^metrics for Prometheus: (http://127\.0\.0\.1:\d+/metrics) \(not on (http://localhost:\d+)\)$`)
	var m []string
	testcluster.Eventually(t, 20*time.Second, "serve's metrics line", func() bool {
		m = line.FindStringSubmatch(out.lines(""))
		return m != nil
	})
	if body := get(t, m[1]); !strings.Contains(body, "quest_strategy") {
		t.Errorf("%s lacks the app's metrics", m[1])
	}
	resp, err := http.Get(m[2] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the app's address with --metrics-addr: %d, want 404", resp.StatusCode)
	}
}
