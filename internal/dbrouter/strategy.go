package dbrouter

import (
	"fmt"
	"strings"
)

// Strategy is a way of choosing the node for a read.
type Strategy uint8

// The strategies, from the article and its peers.
const (
	// Primary sends every read to the primary: the baseline, always fresh,
	// no read scaling.
	Primary Strategy = iota
	// Random sends each read to a random replica, as the Django docs'
	// router does. Fails read-your-writes and monotonic reads under lag.
	Random
	// PinOwn reads the signed-in user's own data from the primary and the
	// rest from a random replica: the article's read-your-writes fix.
	PinOwn
	// Sticky is PinOwn, but shared reads always go to the one replica the
	// session's identity hashes to: the article's monotonic-reads fix.
	Sticky
	// Timed sends a session's reads to the primary for a while after it
	// writes (Rails' DatabaseSelector: 2 s; django-multidb-router: 15 s).
	Timed
	// Causal keeps reads on replicas and gives every session
	// read-your-writes and monotonic reads through WAL-position tokens.
	Causal
	// Yours is the workshop's strategy: its decision is chooseYours in
	// yours.go, which a learner edits (docs/workshop.md). It reads from the
	// primary until then.
	Yours
	numStrategies
)

var strategyNames = [numStrategies]string{"primary", "random", "pin-own", "sticky", "timed", "causal", "yours"}

// Strategies lists the six built-in strategies in order (not Yours, the
// workshop's exercise; ParseStrategy knows it).
func Strategies() []Strategy {
	s := make([]Strategy, Yours)
	for i := range s {
		s[i] = Strategy(i)
	}
	return s
}

func (s Strategy) String() string {
	if s < numStrategies {
		return strategyNames[s]
	}
	return fmt.Sprintf("strategy(%d)", s)
}

// ParseStrategy reads a strategy's name.
func ParseStrategy(name string) (Strategy, error) {
	for i, n := range strategyNames {
		if n == name {
			return Strategy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown strategy %q; choose one of %s", name, strings.Join(strategyNames[:], ", "))
}

// Intent says whose data a read is about, which some strategies route on.
type Intent uint8

const (
	// Shared data: the forum, the catalog, other users' pages.
	Shared Intent = iota
	// Own data: the signed-in user's own profile and wishlist.
	Own
	numIntents
)

func (i Intent) String() string {
	if i == Own {
		return "own"
	}
	return "shared"
}

// Reason says why a read went where it went. The set is fixed, so metrics
// labels stay bounded.
type Reason uint8

// The reasons.
const (
	ReasonPrimaryOnly  Reason = iota // the strategy reads from the primary only
	ReasonRandom                     // a random replica
	ReasonOwnData                    // own data, read from the primary
	ReasonSticky                     // the session's rendezvous replica
	ReasonRecentWrite                // the session wrote recently (timed)
	ReasonFresh                      // a replica already had the session's position (causal)
	ReasonWaited                     // a replica reached the position within the wait (causal)
	ReasonFallbackLag                // the preferred node lags too far: the next one
	ReasonFallbackDown               // the preferred node is down: the next one
	ReasonRetried                    // the first node failed during the read: retried on the next
	ReasonStale                      // nothing fresh enough could answer: possibly stale (causal, primary down)
	ReasonYours                      // the workshop's strategy chose this node (yours.go)
	numReasons
)

var reasonNames = [numReasons]string{"primary-only", "random", "own-data", "sticky", "recent-write",
	"fresh", "waited", "fallback-lag", "fallback-down", "retried", "stale", "yours"}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}
