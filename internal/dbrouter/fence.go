package dbrouter

import (
	"fmt"
	"strings"
)

// Fencing. A node that answers as a primary is not necessarily the one to
// write to: an old primary restarted after a failover comes back as a
// primary on the timeline it had, and every write it takes is lost when
// it is rewound into a standby of the promoted node. The router therefore
// never writes to a node on a timeline below the highest one a member
// claims — the timeline it last answered on as a primary. A claim lasts
// while its node is down (a promoted node that crashed for a second still
// outranks the old primary) and ends when the node answers as a standby
// (it was demoted, rewound or rebuilt) or leaves the membership. When the
// only primary left is below the fence, the router takes no writes and
// says "split brain" until one of those happens.

// setClaim records that member m answered as a primary on timeline tli.
func (t *tracker) setClaim(m *member, tli uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !m.removed {
		m.claim = tli
	}
}

// setHealth records what a poll saw of m, and with it m's claim: a node
// that answers as a primary claims its timeline, one that answers as a
// standby claims nothing, and one that does not answer keeps its claim.
// Called with t.mu held.
func (m *member) setHealth(h Health) {
	m.health = h
	switch {
	case h.Up && h.InRecovery:
		m.claim = 0 // demoted, rewound or rebuilt: its promotion no longer counts
	case h.Up:
		m.claim = h.Timeline
	}
}

// standbyTimeline sets h.Timeline for a standby: its walreceiver's, or the
// one it received last since this server started, or else the lower bound
// the poll read (its last restartpoint's or minimum recovery point's),
// marked guessed. Called from m's poll loop only.
func (t *tracker) standbyTimeline(m *member, h *Health, receiving *int32) {
	if receiving != nil && *receiving > 0 {
		m.received, m.receivedBy = uint32(*receiving), h.started // #nosec G115 -- positive
	}
	if m.received != 0 && m.receivedBy.Equal(h.started) {
		h.Timeline = m.received
		return
	}
	h.TimelineGuessed = true
}

// choosePrimary picks the node routing treats as the primary: the one
// that answered its last poll as not in recovery, on a timeline no lower
// than any member claims; of two, the one on the higher timeline, then
// the one that was the primary already. With none, the last primary keeps
// its slot, marked down or not a primary — or, when a primary below the
// fence is all there is, the node whose claim fences it, so that writes
// stop. Called with t.mu held.
func (t *tracker) choosePrimary() {
	t.fence = 0
	var claimant *member
	for _, m := range t.members {
		if m.claim > t.fence || (m.claim == t.fence && m.claim > 0 && m.health.Up && !claimant.health.Up) {
			t.fence, claimant = m.claim, m
		}
	}
	var best *member
	var primaries, superseded []*member
	for _, m := range t.members {
		h := m.health
		if !h.Up || h.InRecovery {
			continue
		}
		primaries = append(primaries, m)
		if h.Timeline < t.fence {
			superseded = append(superseded, m)
			continue
		}
		if !t.writer(&h) {
			continue // Patroni does not name it the leader: it keeps its slot, if it has it, but takes no writes
		}
		if best == nil || h.Timeline > best.health.Timeline || (h.Timeline == best.health.Timeline && m == t.primary) {
			best = m
		}
	}
	if best != nil && best != t.primary && t.primary != nil && t.hadPrimary {
		t.r.log.Warn("the primary changed", "was", t.primary.node.Name, "now", best.node.Name,
			"timeline", best.health.Timeline)
	}
	switch {
	case best != nil:
		t.primary, t.hadPrimary = best, true
	case len(superseded) > 0:
		t.primary = claimant // down: no writes
	}
	if t.primary == nil && len(t.members) > 0 {
		t.primary = t.members[0] // a placeholder until some node answers as the primary
	}
	t.reportSplitBrain(best, claimant, primaries, superseded)
	t.settleHistory()
}

// reportSplitBrain sets what the pages say of a split brain, and logs it
// once each time it changes. Called with t.mu held.
func (t *tracker) reportSplitBrain(best, claimant *member, primaries, superseded []*member) {
	on := func(ms []*member) string {
		var s []string
		for _, m := range ms {
			s = append(s, fmt.Sprintf("%s (timeline %d)", m.node.Name, m.health.Timeline))
		}
		return strings.Join(s, " and ")
	}
	text := ""
	switch {
	case len(superseded) > 0 && best != nil:
		text = fmt.Sprintf("split brain: %s still accepts writes, but %s was promoted onto timeline %d since; Quest writes only to %s",
			on(superseded), best.node.Name, best.health.Timeline, best.node.Name)
	case len(superseded) > 0:
		text = fmt.Sprintf("split brain: %s accepts writes, but %s was promoted onto timeline %d and does not answer; "+
			"Quest takes no writes until %s is back, or has been made a standby again (rewound or rebuilt)",
			on(superseded), claimant.node.Name, t.fence, claimant.node.Name)
	case len(primaries) > 1 && best != nil:
		text = fmt.Sprintf("split brain: %s all accept writes; Quest writes only to %s", on(primaries), best.node.Name)
	case len(primaries) > 1:
		text = fmt.Sprintf("split brain: %s all accept writes, and Patroni names none of them the leader; Quest takes no writes", on(primaries))
	}
	if text != t.splitBrain {
		t.splitBrain = text
		if text != "" {
			t.r.log.Error("SPLIT BRAIN: more than one node accepts writes", "what", text)
		} else {
			t.r.log.Info("split brain over: one node accepts writes")
		}
	}
}

// settleHistory takes the router's history back to the primary's timeline
// when no member claims the history's own any more: the promoted node was
// demoted, rewound or rebuilt (Patroni gave the leader key back to the
// old primary, or the promotion was a mistake), or it left the cluster.
// What was written on the abandoned timeline past its fork is lost, and
// sessions holding such a position are told so (resolve). Called with
// t.mu held.
func (t *tracker) settleHistory() {
	h := t.r.history.Load()
	if h == nil || t.primary == nil || t.fence >= h.timeline {
		return
	}
	p := t.primary.health
	if !p.Up || p.InRecovery || p.Timeline == 0 || p.Timeline >= h.timeline {
		return
	}
	top := uint64(0)
	if n := len(t.ring); n > 0 {
		top = t.ring[n-1].lsn // the furthest the abandoned timeline was seen to reach
	}
	back := h.stepBack(p.Timeline, top)
	if t.r.history.CompareAndSwap(h, back) {
		t.ring, t.ringFull = t.ring[:0], false
		t.r.log.Warn("TIMELINE REGRESSION: the primary is on an older timeline than the one it replaced, and nothing claims the newer any more; "+
			"writes made on the newer timeline past its fork are lost, and their sessions are told",
			"primary", t.primary.node.Name, "timeline", p.Timeline, "abandoned", h.timeline,
			"fork", FormatLSN(back.abandoned[h.timeline].fork))
	}
}

// SplitBrain says what the router knows of a split brain — the nodes that
// accept writes and their timelines, and which one Quest writes to if
// any — or "" when there is none.
func (r *Router) SplitBrain() string { return r.snap.Load().splitBrain }
