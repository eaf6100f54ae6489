// Package poll waits for a condition: one helper for every "until this
// holds, or give up" loop in Quest, so each honours its context and says
// what it waited for when it gives up.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Stop wraps an error after which the condition cannot come true (the
// process being waited for has exited): Until returns it at once.
func Stop(err error) error { return stopError{err} }

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// Until calls cond every interval until it reports true, ctx ends, or
// timeout passes (0: no timeout beyond ctx's). An error from cond counts
// as "not yet" — a server still starting refuses connections — and the
// last one is reported if Until gives up; an error wrapped by Stop ends
// the wait at once. what names the condition in errors: "replica1 to
// catch up".
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
		var stop stopError
		if errors.As(err, &stop) {
			return stop.err
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
