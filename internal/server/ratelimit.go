package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// loginLimiter limits sign-in attempts per account and per address, in
// memory: a per-instance limit is enough to blunt password guessing.
type loginLimiter struct {
	perAccount, perAddr int // attempts per minute

	mu       sync.Mutex
	accounts map[string]*limiterEntry
	addrs    map[string]*limiterEntry
	pruned   time.Time
}

type limiterEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLoginLimiter(perAccount, perAddr int) *loginLimiter {
	return &loginLimiter{perAccount: perAccount, perAddr: perAddr,
		accounts: map[string]*limiterEntry{}, addrs: map[string]*limiterEntry{}}
}

// allow reports whether one more attempt for the account from the address
// may proceed.
func (l *loginLimiter) allow(account, addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.pruned) > time.Minute {
		for _, m := range []map[string]*limiterEntry{l.accounts, l.addrs} {
			for k, e := range m {
				if now.Sub(e.seen) > 2*time.Minute {
					delete(m, k)
				}
			}
		}
		l.pruned = now
	}
	a := entry(l.addrs, addr, l.perAddr, now)
	u := entry(l.accounts, account, l.perAccount, now)
	// Both must have room; take from both only then.
	if a.lim.TokensAt(now) < 1 || u.lim.TokensAt(now) < 1 {
		return false
	}
	a.lim.AllowN(now, 1)
	u.lim.AllowN(now, 1)
	return true
}

func entry(m map[string]*limiterEntry, key string, perMinute int, now time.Time) *limiterEntry {
	e, ok := m[key]
	if !ok {
		e = &limiterEntry{lim: rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)}
		m[key] = e
	}
	e.seen = now
	return e
}
