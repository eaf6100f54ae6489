package lab

import (
	"context"
	"slices"
	"strconv"
	"time"
)

// percentiles sorts latencies and returns their median and 99th
// percentile; none gives zeros.
func percentiles(latencies []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(latencies)
	n := len(latencies)
	if n == 0 {
		return 0, 0
	}
	return latencies[n/2], latencies[min(n-1, n*99/100)]
}

// millis is d in milliseconds, to the microsecond.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ms formats d in milliseconds with the given number of decimals: "1.25 ms".
func ms(d time.Duration, decimals int) string {
	return strconv.FormatFloat(millis(d), 'f', decimals, 64) + " ms"
}

// sleep pauses for d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
