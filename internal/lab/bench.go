package lab

import (
	"context"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// benchQuery is the read both sides of the query-level benchmark run: the
// catalog page's query.
const benchQuery = `SELECT id, name, wielder, color, description FROM items ORDER BY id`

// BenchResult is one measurement of one row of the query-level benchmark.
type BenchResult struct {
	Name     string
	Queries  int
	Errors   int
	QPS      float64
	P50, P99 time.Duration
}

// scanItems reads the catalog rows, as the app does.
func scanItems(rows pgx.Rows) error {
	for rows.Next() {
		var id int64
		var name, wielder, color, desc string
		if err := rows.Scan(&id, &name, &wielder, &color, &desc); err != nil {
			return err
		}
	}
	return rows.Err()
}

// bench runs query from clients goroutines for d after a short warm-up.
func bench(ctx context.Context, name string, clients int, d time.Duration, query func(ctx context.Context, client int) error) BenchResult {
	warm := min(d/4, 500*time.Millisecond)
	start := time.Now()
	measureFrom, end := start.Add(warm), start.Add(warm+d)
	var mu sync.Mutex
	var lat []time.Duration
	res := BenchResult{Name: name}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		// The row's name labels its samples in a CPU profile
		// (go tool pprof -tagfocus row=random).
		go pprof.Do(ctx, pprof.Labels("row", name), func(ctx context.Context) {
			defer wg.Done()
			var mine []time.Duration
			errs := 0
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				err := query(ctx, c)
				if t0.Before(measureFrom) {
					continue
				}
				if err != nil {
					errs++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			res.Errors += errs
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Queries = len(lat)
	res.QPS = float64(len(lat)) / d.Seconds()
	res.P50, res.P99 = percentiles(lat)
	return res
}

// benchPool measures the same reads through a plain pool (pgpool-II's port).
func benchPool(ctx context.Context, name string, pool *pgxpool.Pool, clients int, d time.Duration) BenchResult {
	return bench(ctx, name, clients, d, func(ctx context.Context, _ int) error {
		rows, err := pool.Query(ctx, benchQuery)
		if err != nil {
			return err
		}
		defer rows.Close()
		return scanItems(rows)
	})
}
