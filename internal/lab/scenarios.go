package lab

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"quest/internal/cluster"
	"quest/internal/poll"
)

// scenarios is the fault table, in the order it runs. The apps run with a
// 2 s lag limit.
func scenarios(cfg FaultConfig) []scenario {
	replica := cluster.ReplicaName(1)
	list := []scenario{
		{
			name: replica + " killed (SIGKILL), restarted",
			steps: []step{
				func(ctx context.Context, f *faultRun, _ *FaultRow) error {
					if err := f.cfg.Cluster.Kill(ctx, replica); err != nil {
						return err
					}
					// "While down" starts when the app's router has seen
					// the node go, not after a fixed pause. Until then the
					// killed postmaster's backends may still answer: one
					// notices the death when it next waits for its client,
					// which a connection kept busy can put off, and a
					// loaded machine can put the router's next poll off.
					if !f.awaitState(ctx, replica, "down", 10*time.Second) {
						return fmt.Errorf("the app did not mark %s down within 10 s of its kill", replica)
					}
					return nil
				},
				func(ctx context.Context, f *faultRun, _ *FaultRow) error { return f.cfg.Cluster.Start(ctx, replica) },
			},
			after: func(_ context.Context, _ *faultRun, row *FaultRow) error {
				s := row.PhaseReads
				row.Notes = append(row.Notes, fmt.Sprintf("%s's share of reads before / while down / after restart: %s / %s / %s",
					replica, share(s[0], replica), share(s[1], replica), share(s[2], replica)))
				return nil
			},
		},
		primaryRestart(false),
		primaryRestart(true),
		{
			name: replica + " paused past the 2 s lag limit",
			steps: []step{
				func(ctx context.Context, f *faultRun, _ *FaultRow) error { return f.cfg.Cluster.Pause(ctx, replica) },
				func(ctx context.Context, f *faultRun, row *FaultRow) error {
					row.Excluded = f.awaitState(ctx, replica, "lagging", 10*time.Second)
					return f.cfg.Cluster.Resume(ctx, replica)
				},
			},
			after: func(ctx context.Context, f *faultRun, row *FaultRow) error {
				row.TakenBack = f.awaitState(ctx, replica, "usable", 15*time.Second)
				row.Notes = append(row.Notes, fmt.Sprintf("excluded past the limit: %v; taken back once caught up: %v", row.Excluded, row.TakenBack))
				return nil
			},
		},
		{
			// A new instance comes up, users move to it, the old one shuts
			// down gracefully.
			name:  "app restarted, users signed in",
			steps: []step{restartApp},
			after: func(_ context.Context, _ *faultRun, row *FaultRow) error {
				row.Notes = append(row.Notes, "sessions live in PostgreSQL: no user was signed out")
				return nil
			},
		},
		{
			// Users switch instances at every request: only the cookie
			// carries their consistency state.
			name: "two app instances, users alternating",
			steps: []step{
				func(ctx context.Context, f *faultRun, _ *FaultRow) error {
					var err error
					if f.second, err = f.cfg.StartApp(ctx); err != nil {
						return err
					}
					f.story.urls.Store(&[]string{f.app.URL, f.second.URL})
					return nil
				},
				func(ctx context.Context, f *faultRun, _ *FaultRow) error {
					f.story.urls.Store(&[]string{f.app.URL})
					sleep(ctx, drain)
					f.second.Stop()
					return nil
				},
			},
		},
	}
	if cfg.Load > 0 {
		list = append(list, scenario{
			// The first half warms up: the app's pools grow to what the load
			// needs. Its gauges are read then and after the load: a leak
			// grows with the requests.
			name:  fmt.Sprintf("sustained load, %s", cfg.Load),
			phase: cfg.Load / 2,
			steps: []step{func(ctx context.Context, f *faultRun, row *FaultRow) error {
				g, err := f.gauges(ctx)
				row.Before = &g
				return err
			}},
			after: func(ctx context.Context, f *faultRun, row *FaultRow) error {
				g, err := f.gauges(ctx)
				if err != nil {
					return err
				}
				row.After = &g
				row.Notes = append(row.Notes, fmt.Sprintf("goroutines %.0f → %.0f, pool connections %.0f → %.0f (halfway, after), %.0f req/s",
					row.Before.Goroutines, row.After.Goroutines, row.Before.PoolConns, row.After.PoolConns,
					float64(row.Requests)/row.Elapsed.Seconds()))
				return nil
			},
		})
	}
	return list
}

// primaryRestart stops the primary, fast or immediately, and starts it
// again; the app is not restarted.
func primaryRestart(immediate bool) scenario {
	how := "fast"
	if immediate {
		how = "immediate"
	}
	return scenario{
		name: "primary stopped (" + how + "), restarted",
		steps: []step{
			func(ctx context.Context, f *faultRun, _ *FaultRow) error {
				return f.cfg.Cluster.Stop(ctx, cluster.LeaderName, immediate)
			},
			func(ctx context.Context, f *faultRun, row *FaultRow) error {
				began := time.Now()
				if err := f.cfg.Cluster.Start(ctx, cluster.LeaderName); err != nil {
					return err
				}
				if err := f.awaitWrites(ctx); err != nil {
					return err
				}
				row.WritesResumed = time.Since(began)
				return nil
			},
		},
		after: func(ctx context.Context, f *faultRun, row *FaultRow) error {
			row.Notes = append(row.Notes, fmt.Sprintf("writes worked again %.1f s after the restart began, without restarting the app",
				row.WritesResumed.Seconds()))
			return resetLag(ctx, f.cfg.Cluster)
		},
	}
}

// restartApp starts a new instance, sends users to it, and stops the old
// one as a load balancer would: after a drain, since a request that picked
// the old address a moment ago still reaches it; then the graceful
// shutdown finishes the ones in flight.
func restartApp(ctx context.Context, f *faultRun, _ *FaultRow) error {
	next, err := f.cfg.StartApp(ctx)
	if err != nil {
		return err
	}
	old := f.app
	f.app = next
	f.story.urls.Store(&[]string{next.URL})
	sleep(ctx, drain)
	old.Stop()
	return nil
}

// awaitState reports whether the app's router comes to see node in state
// within timeout.
func (f *faultRun) awaitState(ctx context.Context, node, state string, timeout time.Duration) bool {
	return poll.Until(ctx, timeout, 100*time.Millisecond, node+" "+state, func(ctx context.Context) (bool, error) {
		st, err := f.watcher.nodeStates(ctx, f.app.URL)
		return st[node] == state, err
	}) == nil
}

// awaitWrites waits, up to a minute, until a write goes through again.
func (f *faultRun) awaitWrites(ctx context.Context) error {
	return poll.Until(ctx, time.Minute, 50*time.Millisecond, "writes to work again", func(ctx context.Context) (bool, error) {
		if _, err := f.story.writer.post(ctx, f.app.URL+f.story.thread+"/comments", url.Values{"body": {"probe"}}); err != nil {
			return false, err
		}
		f.story.comments.Add(1)
		return true, nil
	})
}
