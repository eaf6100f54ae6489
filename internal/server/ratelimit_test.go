package server

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestLoginLimiterRefusedAttemptsStoreNothing(t *testing.T) {
	l := newLoginLimiter(5, 2, 5)
	now := time.Now()
	for _, account := range []string{"luke", "leia"} {
		if _, ok := l.admit(account, "192.0.2.1", now); !ok {
			t.Fatalf("%s refused", account)
		}
	}
	for i := range 100 {
		if _, ok := l.admit(fmt.Sprint("user", i), "192.0.2.1", now); ok {
			t.Fatal("the address's third attempt in a minute went through")
		}
	}
	if a, p := len(l.addrs.m), len(l.pairs.m); a != 1 || p != 2 {
		t.Fatalf("after 2 attempts and 100 refusals: %d addresses, %d account+address pairs held; want 1 and 2", a, p)
	}
}

func TestLoginLimiterTablesAreCapped(t *testing.T) {
	l := newLoginLimiter(5, 30, 5)
	now := time.Now()
	for i := range maxKeys + 500 {
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if _, ok := l.admit("han", addr, now); !ok {
			t.Fatalf("a new address (%s) was refused", addr)
		}
		l.failed(fmt.Sprint("u", i), now)
	}
	for name, b := range map[string]*buckets{"addresses": l.addrs, "pairs": l.pairs, "failures": l.failures} {
		if len(b.m) > maxKeys {
			t.Errorf("%s: %d keys, over the cap of %d", name, len(b.m), maxKeys)
		}
	}
}

// TestLoginLimiterBacksOffPerAccount: past its free failures an account's
// attempts wait, longer with each failure up to backoffMax, from every
// address — none is refused for it — and a quiet minute forgives five.
func TestLoginLimiterBacksOffPerAccount(t *testing.T) {
	l := newLoginLimiter(5, 30, 5)
	now := time.Now()
	var waits []time.Duration
	for i := range 10 {
		wait, ok := l.admit("leia", fmt.Sprintf("192.0.2.%d", i), now)
		if !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		waits = append(waits, wait)
		l.failed("leia", now)
	}
	want := []time.Duration{0, 0, 0, 0, 0, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 2 * time.Second}
	for i := range want {
		if waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
	if wait, _ := l.admit("han", "192.0.2.1", now); wait != 0 {
		t.Fatalf("another account waits %s", wait)
	}
	if wait, _ := l.admit("leia", "192.0.2.98", now.Add(time.Minute)); wait != backoffBase {
		t.Fatalf("after a quiet minute (five failures forgiven) the wait is %s, want %s", wait, backoffBase)
	}
	if wait, _ := l.admit("leia", "192.0.2.99", now.Add(2*time.Minute)); wait != 0 {
		t.Fatalf("after two quiet minutes (all ten failures forgiven) the wait is %s", wait)
	}
}

func TestLoginLimiterSuccessesAreGivenBack(t *testing.T) {
	l := newLoginLimiter(5, 30, 5)
	now := time.Now()
	for i := range 40 {
		if _, ok := l.admit("luke", "192.0.2.1", now); !ok {
			t.Fatalf("successful sign-in %d refused", i+1)
		}
		l.succeeded("luke", "192.0.2.1", now)
	}
}

// TestPruneLimitsRunsUntilClose: the background pruning drops refilled
// entries on its own, and stops with the server's background context.
func TestPruneLimitsRunsUntilClose(t *testing.T) {
	s := &Server{logins: newLoginLimiter(5, 30, 5), signups: newSignupLimiter(20)}
	long := time.Now().Add(-2 * time.Hour) // every bucket has refilled since
	s.logins.admit("luke", "192.0.2.1", long)
	s.logins.failed("luke", long)
	s.signups.admit("192.0.2.1", long)
	ctx, cancel := context.WithCancel(context.Background())
	s.every(ctx, 5*time.Millisecond, false, s.pruneLimits)
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.logins.mu.Lock()
		n := len(s.logins.addrs.m) + len(s.logins.pairs.m) + len(s.logins.failures.m)
		s.logins.mu.Unlock()
		s.signups.mu.Lock()
		n += len(s.signups.addrs.m)
		s.signups.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left after 10 s of pruning", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	done := make(chan struct{})
	go func() { s.background.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pruning goroutine did not stop with its context")
	}
}

func TestAddrKeyGroupsIPv6By64(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:4000":                      "192.0.2.7",
		"[2001:db8:1:2:aaaa::1]:4000":         "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff:ffff:ffff:1]:443": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.7]:80":               "::ffff:192.0.2.7",
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := addrKey(r); got != want {
			t.Errorf("addrKey(%s) = %q, want %q", remote, got, want)
		}
	}
}
