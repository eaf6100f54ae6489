package poll

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := Until(ctx, time.Second, time.Millisecond, "three calls", func(context.Context) (bool, error) {
		n++
		return n == 3, nil
	}); err != nil || n != 3 {
		t.Fatalf("Until: %v after %d calls, want nil after 3", err, n)
	}

	err := Until(ctx, 20*time.Millisecond, time.Millisecond, "never", func(context.Context) (bool, error) {
		return false, errors.New("connection refused")
	})
	if err == nil || !strings.Contains(err.Error(), "never") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("timeout error %q lacks the condition or its last error", err)
	}

	gone := errors.New("the server exited")
	calls := 0
	if err := Until(ctx, time.Hour, time.Millisecond, "a server that exited", func(context.Context) (bool, error) {
		calls++
		return false, Stop(gone)
	}); !errors.Is(err, gone) || calls != 1 {
		t.Fatalf("after Stop: %v after %d calls; want the error at once", err, calls)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	start := time.Now()
	if err := Until(cctx, time.Hour, time.Hour, "a cancelled wait", func(context.Context) (bool, error) { return false, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("with a cancelled context: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("Until did not honour the cancelled context")
	}
}
