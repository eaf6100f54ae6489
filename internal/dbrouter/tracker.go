package dbrouter

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Exclusion says why a node gets no reads.
type Exclusion uint8

// The exclusions.
const (
	Usable     Exclusion = iota
	Down                 // unreachable, or failed during a read
	NotReplica           // a "replica" that is not in recovery
	Lagging              // beyond the lag limit
)

func (e Exclusion) String() string {
	return [...]string{"usable", "down", "not a replica", "lagging"}[e]
}

// Health is what the tracker last saw of one node.
type Health struct {
	Name       string
	Up         bool
	InRecovery bool
	Position   uint64 // flush position on the primary, replay position on a replica
	Receive    uint64 // a replica's receive position
	Paused     bool   // a replica's replay is paused (or its pause requested)
	LagBytes   int64  // reference position − replay position
	Lag        time.Duration
	Excluded   Exclusion
	CheckedAt  time.Time
	Err        string
}

// snapshot is the routing table the poller publishes; the request path
// only ever reads one, through an atomic pointer.
type snapshot struct {
	nodes       [maxNodes]Health // 0 is the primary
	primaryDown bool
}

func (s *snapshot) usable(i int) bool { return s.nodes[i].Excluded == Usable }

// primarySample records when the poller first saw the primary's flush
// position at lsn, and when it last saw the position before it.
type primarySample struct {
	lsn       uint64
	firstSeen time.Time
	prevSeen  time.Time
}

// ringSize bounds the primary samples kept: one per change of position.
const ringSize = 4096

// tracker polls every node in the background and publishes snapshots.
type tracker struct {
	r        *Router
	interval time.Duration
	maxBytes int64
	maxLag   time.Duration
	pools    []*pgxpool.Pool // the tracker's own small pools, one per node

	mu       sync.Mutex
	health   []Health
	ring     []primarySample // ordered by lsn
	lastSeen time.Time       // last poll that reached the primary

	stop context.CancelFunc
	done sync.WaitGroup
}

// pollQuery branches on pg_is_in_recovery() in the same statement:
// pg_last_wal_replay_lsn() is not NULL on a primary that went through crash
// recovery.
const pollQuery = `
	SELECT pg_is_in_recovery(),
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END`

func (t *tracker) start(ctx context.Context) {
	ctx, t.stop = context.WithCancel(context.WithoutCancel(ctx))
	// One first round before routing starts, so a fresh router does not
	// send everything to the primary for an interval.
	var first sync.WaitGroup
	for i := range t.pools {
		first.Add(1)
		go func() {
			defer first.Done()
			t.pollOnce(ctx, i)
		}()
	}
	first.Wait()
	// Each node has its own loop: a node that hangs delays no other.
	for i := range t.pools {
		t.done.Add(1)
		go func() {
			defer t.done.Done()
			tick := time.NewTicker(t.interval)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					t.pollOnce(ctx, i)
				}
			}
		}()
	}
}

func (t *tracker) close() {
	if t.stop != nil {
		t.stop()
	}
	t.done.Wait()
	for _, p := range t.pools {
		p.Close()
	}
}

func (t *tracker) pollOnce(ctx context.Context, i int) {
	timeout := max(10*t.interval, time.Second)
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var inRecovery bool
	var pos, recv *string
	var pause string
	err := t.pools[i].QueryRow(qctx, pollQuery).Scan(&inRecovery, &pos, &recv, &pause)
	now := time.Now()
	if ctx.Err() != nil {
		return
	}
	h := Health{Name: t.r.nodes[i].Name, CheckedAt: now}
	if err != nil {
		h.Err = err.Error()
	} else {
		h.Up = true
		h.InRecovery = inRecovery
		h.Paused = inRecovery && pause != "not paused"
		if pos != nil {
			h.Position, _ = ParseLSN(*pos)
		}
		if recv != nil {
			h.Receive, _ = ParseLSN(*recv)
		}
	}
	if h.Up && t.r.history.Load() == nil {
		t.r.loadHistory(qctx, t.pools[i])
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i == 0 && h.Up && !h.InRecovery {
		t.addSample(h.Position, now)
	}
	if t.health[i].Up && !h.Up {
		// Gone down: its pooled connections are most likely broken, and
		// each would fail a read once the node is back (see forget).
		t.r.nodes[i].Pool.Reset()
	}
	t.health[i] = h
	t.publish(now)
}

// addSample records the primary's flush position at time now.
func (t *tracker) addSample(lsn uint64, now time.Time) {
	n := len(t.ring)
	switch {
	case n > 0 && lsn < t.ring[n-1].lsn:
		// A different history (a new cluster behind the same URL): start over.
		t.ring = t.ring[:0]
	case n > 0 && lsn == t.ring[n-1].lsn:
		t.lastSeen = now
		return
	}
	prev := t.lastSeen
	if prev.IsZero() || len(t.ring) == 0 {
		prev = now
	}
	if len(t.ring) == ringSize {
		copy(t.ring, t.ring[1:])
		t.ring = t.ring[:ringSize-1]
	}
	t.ring = append(t.ring, primarySample{lsn: lsn, firstSeen: now, prevSeen: prev})
	t.lastSeen = now
}

// lagTime estimates how long ago the primary first passed replay: 0 when
// the replica has everything the poller saw. Between two polls the
// crossing is interpolated by position, which is exact under a steady
// write rate and errs towards more lag after an idle spell.
func (t *tracker) lagTime(replay uint64, at time.Time) time.Duration {
	n := len(t.ring)
	if n == 0 || replay >= t.ring[n-1].lsn {
		return 0
	}
	k := sort.Search(n, func(j int) bool { return t.ring[j].lsn > replay })
	s := t.ring[k]
	crossed := s.firstSeen
	if k > 0 {
		prevLSN := t.ring[k-1].lsn
		span := s.firstSeen.Sub(s.prevSeen)
		frac := float64(replay-prevLSN) / float64(s.lsn-prevLSN)
		crossed = s.prevSeen.Add(time.Duration(frac * float64(span)))
	}
	if d := at.Sub(crossed); d > 0 {
		return d
	}
	return 0
}

// publish recomputes every node's lag and exclusion and swaps in a new
// snapshot. Called with t.mu held.
func (t *tracker) publish(now time.Time) {
	snap := &snapshot{}
	copy(snap.nodes[:], t.health)
	primary := &snap.nodes[0]
	snap.primaryDown = !primary.Up || primary.InRecovery
	if !primary.Up {
		primary.Excluded = Down
	} else if primary.InRecovery {
		primary.Excluded = NotReplica
	}
	// The reference position: the primary's, or with the primary gone the
	// freshest replica's, so the replicas are never all excluded.
	ref := primary.Position
	if snap.primaryDown {
		ref = 0
		for i := 1; i < len(t.health); i++ {
			if n := snap.nodes[i]; n.Up && n.InRecovery && n.Position > ref {
				ref = n.Position
			}
		}
	}
	for i := 1; i < len(t.health); i++ {
		n := &snap.nodes[i]
		switch {
		case !n.Up:
			n.Excluded = Down
			continue
		case !n.InRecovery:
			n.Excluded = NotReplica
			continue
		}
		if ref > n.Position {
			n.LagBytes = int64(ref - n.Position)
		}
		if !snap.primaryDown {
			n.Lag = t.lagTime(n.Position, n.CheckedAt)
		} else if n.LagBytes > 0 {
			n.Lag = now.Sub(t.lastSeen) // at least as long as the primary has been gone
		}
		if n.LagBytes > t.maxBytes || n.Lag > t.maxLag {
			n.Excluded = Lagging
		}
	}
	t.r.snap.Store(snap)
}

// forget drops what the tracker knows of node i after a read on it failed:
// it gets no reads until a poll reaches it again.
//
// The node's pool is reset too: a node that failed once has most likely
// broken every pooled connection (a crash, a restart), and each of them
// would otherwise fail one more read on its way out. Connections in use
// are closed when they are released.
func (t *tracker) forget(i int, err error) {
	t.r.nodes[i].Pool.Reset()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.health[i] = Health{Name: t.r.nodes[i].Name, CheckedAt: time.Now(), Err: err.Error()}
	t.publish(time.Now())
}

// ParseLSN reads a WAL position written as PostgreSQL prints it, "16/B374D848".
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	return h<<32 | l, nil
}

// FormatLSN writes a WAL position as PostgreSQL prints it.
func FormatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, lsn&0xFFFFFFFF)
}

// Health returns what the tracker last saw of every node, primary first.
func (r *Router) Health() []Health {
	snap := r.snap.Load()
	return append([]Health(nil), snap.nodes[:len(r.nodes)]...)
}
