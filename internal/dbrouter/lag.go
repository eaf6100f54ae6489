package dbrouter

import (
	"sort"
	"time"
)

// primarySample records when the poller first saw the primary's flush
// position at lsn, and when it last saw the position before it.
type primarySample struct {
	lsn       uint64
	firstSeen time.Time
	prevSeen  time.Time
}

// ringSize bounds the primary samples kept: one per change of position.
const ringSize = 4096

// addSample records the primary's flush position at time now.
func (t *tracker) addSample(lsn uint64, now time.Time) {
	n := len(t.ring)
	switch {
	case n > 0 && lsn < t.ring[n-1].lsn:
		// A different history (a new cluster behind the same URL): start over.
		t.ring, t.ringFull = t.ring[:0], false
	case n > 0 && lsn == t.ring[n-1].lsn:
		t.lastSeen = now
		return
	}
	prev := t.lastSeen
	if prev.IsZero() || len(t.ring) == 0 {
		prev = now
	}
	if len(t.ring) == ringSize {
		t.ringFull = true
		copy(t.ring, t.ring[1:])
		t.ring = t.ring[:ringSize-1]
	}
	t.ring = append(t.ring, primarySample{lsn: lsn, firstSeen: now, prevSeen: prev})
	t.lastSeen = now
}

// lagTime estimates how long ago the primary first passed replay: 0 when
// the replica has everything the poller saw. Between two polls the
// crossing is interpolated by position, which is exact under a steady
// write rate and errs towards more lag after an idle spell. known is false
// when replay is older than every sample: the primary passed it before
// the tracker started (or before the oldest sample kept), and the result
// is only a lower bound.
func (t *tracker) lagTime(replay uint64, at time.Time) (lag time.Duration, known bool) {
	n := len(t.ring)
	if n == 0 || replay >= t.ring[n-1].lsn {
		return 0, true
	}
	k := sort.Search(n, func(j int) bool { return t.ring[j].lsn > replay })
	s := t.ring[k]
	crossed := s.firstSeen
	known = true
	if k > 0 {
		prevLSN := t.ring[k-1].lsn
		span := s.firstSeen.Sub(s.prevSeen)
		frac := float64(replay-prevLSN) / float64(s.lsn-prevLSN)
		crossed = s.prevSeen.Add(time.Duration(frac * float64(span)))
	} else {
		known = false
		if t.ringFull {
			crossed = s.prevSeen
		}
	}
	if d := at.Sub(crossed); d > 0 {
		return d, known
	}
	return 0, known
}

// noteReplay keeps what a standby has replayed across its restarts: a
// standby that comes back (a new postmaster) behind what it replayed
// before on the same timeline has gone back in time, and until it replays
// past that again it serves data older than it did, which a session on it
// may already have seen. h.Floor says so; publish excludes it. Called with
// t.mu held, before m takes h.
func (t *tracker) noteReplay(m *member, h *Health) {
	if !h.Up || !h.InRecovery || h.TimelineGuessed && h.Timeline != m.replayedOn {
		h.Floor = m.floor
		return
	}
	switch {
	case h.Timeline != m.replayedOn:
		m.replayed, m.replayedOn, m.floor = h.Position, h.Timeline, 0 // a new history: nothing to compare
	case h.Position < m.replayed && !h.started.Equal(m.health.started) && m.floor < m.replayed:
		m.floor = m.replayed
		t.r.log.Warn("a replica came back behind what it had replayed; no reads until it catches up",
			"node", m.node.Name, "was", FormatLSN(m.replayed), "now", FormatLSN(h.Position))
	case m.floor != 0 && h.Position >= m.floor:
		m.floor = 0
		t.r.log.Info("a replica that went back in time has caught up", "node", m.node.Name)
	}
	m.replayed = max(m.replayed, h.Position)
	h.Floor = m.floor
}
