package server

import (
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// Sign-in and sign-up limits live in memory, per app instance: enough to
// blunt password guessing and account farming without a shared store. A
// stranger must not be able to make them hold much: every key is short (a
// validated username, an address), a refused request stores nothing,
// every table is capped, and a timer drops what has refilled.

// maxKeys caps each table. A key costs about 150 bytes, so a table holds
// at most a couple of megabytes, however many addresses a flood comes
// from.
const maxKeys = 10_000

// buckets is a table of token buckets, one per key, each refilled at
// perSec up to burst. A key that is missing has a full bucket, so a full
// bucket is dropped (prune) and a refused request need not store one.
type buckets struct {
	perSec float64
	burst  float64
	floor  float64 // how far below zero take may go (failure counts)
	m      map[string]bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newBuckets(n int, per time.Duration, floor float64) *buckets {
	return &buckets{perSec: float64(n) / per.Seconds(), burst: float64(n), floor: floor, m: map[string]bucket{}}
}

// level is key's tokens at now.
func (b *buckets) level(key string, now time.Time) float64 {
	e, ok := b.m[key]
	if !ok {
		return b.burst
	}
	return min(b.burst, e.tokens+now.Sub(e.at).Seconds()*b.perSec)
}

// add changes key's tokens by n (negative: take), within [floor, burst].
// A new key in a full table evicts an arbitrary other one: whoever can
// fill the table comes from so many addresses that the limits per
// address no longer hold them back anyway, and refusing new keys instead
// would refuse everyone else.
func (b *buckets) add(key string, n float64, now time.Time) {
	t := min(b.burst, max(-b.floor, b.level(key, now)+n))
	if _, ok := b.m[key]; !ok && len(b.m) >= maxKeys {
		for k := range b.m {
			delete(b.m, k)
			break
		}
	}
	b.m[key] = bucket{tokens: t, at: now}
}

// prune drops the keys whose buckets have refilled.
func (b *buckets) prune(now time.Time) {
	for k := range b.m {
		if b.level(k, now) >= b.burst {
			delete(b.m, k)
		}
	}
}

// Backoff for an account that failed too often: the first attempt after
// its free failures waits backoffBase, each further failure doubles the
// wait, up to backoffMax.
const (
	backoffBase = 200 * time.Millisecond
	backoffMax  = 2 * time.Second
)

// loginLimiter limits sign-in attempts. The hard limits refuse (429): per
// address, and per account and address, so a stranger cannot lock an
// owner out of their account. Per account, wherever the attempts come
// from, failures only slow sign-ins down (backoff): an owner whose
// account is under attack waits a moment, and gets in.
type loginLimiter struct {
	mu       sync.Mutex
	addrs    *buckets // attempts per address
	pairs    *buckets // attempts per account and address
	failures *buckets // failed attempts per account, for the backoff
}

// newLoginLimiter allows perPair attempts a minute for one account from
// one address, perAddr from one address, and perAccount failures a
// minute on one account before the backoff starts.
func newLoginLimiter(perPair, perAddr, perAccount int) *loginLimiter {
	return &loginLimiter{
		addrs: newBuckets(perAddr, time.Minute, 0),
		pairs: newBuckets(perPair, time.Minute, 0),
		// A count 16 below zero is well past backoffMax: deeper would
		// only make the account wait longer after the attack stops.
		failures: newBuckets(perAccount, time.Minute, 16),
	}
}

// admit takes one attempt for account (a validated username) from addr
// (addrKey). It reports whether the attempt may go on and, if so, how
// long it must wait first. A refused attempt stores nothing.
func (l *loginLimiter) admit(account, addr string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pair := account + " " + addr
	if l.addrs.level(addr, now) < 1 || l.pairs.level(pair, now) < 1 {
		return 0, false
	}
	l.addrs.add(addr, -1, now)
	l.pairs.add(pair, -1, now)
	if f := l.failures.level(account, now); f < 1 {
		// The free failures are used up: this is attempt number steps
		// past them (1 ≤ steps ≤ floor+1, so the shift cannot overflow).
		steps := int(math.Ceil(1 - f))
		wait = min(backoffMax, backoffBase<<(steps-1))
	}
	return wait, true
}

// succeeded gives back a successful attempt's tokens: the hard limits
// count failures, so people behind one address (a workshop behind NAT)
// may all sign in.
func (l *loginLimiter) succeeded(account, addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.add(addr, 1, now)
	l.pairs.add(account+" "+addr, 1, now)
}

// failed counts a wrong password against the account, for the backoff.
func (l *loginLimiter) failed(account string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures.add(account, -1, now)
}

func (l *loginLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.prune(now)
	l.pairs.prune(now)
	l.failures.prune(now)
}

// signupLimiter limits the accounts one address makes: each is a bcrypt
// and a row on the primary.
type signupLimiter struct {
	mu    sync.Mutex
	addrs *buckets
}

func newSignupLimiter(perHour int) *signupLimiter {
	return &signupLimiter{addrs: newBuckets(perHour, time.Hour, 0)}
}

// admit takes one sign-up for addr, or reports that there is none left.
// A refused sign-up stores nothing.
func (l *signupLimiter) admit(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs.level(addr, now) < 1 {
		return false
	}
	l.addrs.add(addr, -1, now)
	return true
}

func (l *signupLimiter) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.addrs.prune(now)
}

// pruneLimits drops the limiters' refilled entries; the server does it
// every so often, so a burst from many addresses is forgotten when it is
// over rather than at the next sign-in.
func (s *Server) pruneLimits(now time.Time) {
	s.logins.prune(now)
	s.signups.prune(now)
}

// addrKey is what the limits count a request against: its remote IP, or
// for IPv6 its /64, which one host or household usually gets whole. No
// proxy header is trusted.
func addrKey(r *http.Request) string {
	host := clientAddr(r)
	ip := net.ParseIP(host)
	if ip == nil || ip.To4() != nil {
		return host
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
