// Package poll waits for a condition: one helper for every "until this
// holds, or give up" loop in Quest, so each honours its context and says
// what it waited for when it gives up.
package poll

import (
	"context"
	"fmt"
	"time"
)

// Until calls cond every interval until it reports true, ctx ends, or
// timeout passes (0: no timeout beyond ctx's). An error from cond counts
// as "not yet" — a server still starting refuses connections — and the
// last one is reported if Until gives up. what names the condition in
// that error: "replica1 to catch up".
func Until(ctx context.Context, timeout, interval time.Duration, what string, cond func(context.Context) (bool, error)) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok && err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting for %s: %w (last: %w)", what, ctx.Err(), last)
			}
			if timeout > 0 && ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
			}
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}
