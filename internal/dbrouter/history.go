package dbrouter

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// history names one cluster's WAL history: its system identifier, the
// primary's current timeline, and where each ancestor timeline ended (its
// switch point). It is immutable once published.
type history struct {
	systemID uint64
	timeline uint32
	// ends maps an ancestor timeline to the last position the current
	// timeline shares with it: from the timeline's history file when the
	// app's role may read it, or from Patroni's /history; else the
	// furthest position the tracker saw the promoted node receive as a
	// standby — a lower bound, so a token is never wrongly kept, only at
	// worst wrongly called lost.
	ends map[uint32]uint64
	// guessed marks the ends that are the tracker's lower bound, which
	// discovery replaces with Patroni's exact ones when it can.
	guessed map[uint32]bool
	// abandoned are the newer timelines the router followed and then gave
	// up when the primary turned out to be an older one (settleHistory).
	abandoned map[uint32]abandonedTimeline
}

// abandonedTimeline is a timeline the current history does not have.
type abandonedTimeline struct {
	fork uint64 // the last position it shares with the current history (a lower bound)
	top  uint64 // the furthest position the router saw its primary reach, 0 if none
}

// inexact reports whether some ancestor's end is missing or guessed.
func (h *history) inexact() bool {
	for t := uint32(1); t < h.timeline; t++ {
		if _, known := h.ends[t]; !known || h.guessed[t] {
			return true
		}
	}
	return false
}

// withEnds returns a copy of h with these exact ends.
func (h *history) withEnds(ends map[uint32]uint64) *history {
	out := &history{systemID: h.systemID, timeline: h.timeline, ends: map[uint32]uint64{}, guessed: map[uint32]bool{},
		abandoned: h.abandoned}
	for t, end := range h.ends {
		out.ends[t] = end
		out.guessed[t] = h.guessed[t]
	}
	for t, end := range ends {
		if t < h.timeline {
			out.ends[t] = end
			delete(out.guessed, t)
		}
	}
	return out
}

// stepBack returns the history of an older timeline tli, which the
// primary is on again: the timelines from tli+1 on are abandoned. They
// share WAL with tli up to where tli ended in h, when h knows it; without
// that, everything they hold counts as lost. top is the furthest position
// the router saw on h's own timeline.
func (h *history) stepBack(tli uint32, top uint64) *history {
	out := &history{systemID: h.systemID, timeline: tli, ends: map[uint32]uint64{}, guessed: map[uint32]bool{},
		abandoned: map[uint32]abandonedTimeline{}}
	for t, a := range h.abandoned {
		out.abandoned[t] = a
	}
	for t, end := range h.ends {
		if t < tli {
			out.ends[t], out.guessed[t] = end, h.guessed[t]
		}
	}
	fork := h.ends[tli] // 0 when unknown: nothing of the abandoned timelines is kept
	for t := tli + 1; t <= h.timeline; t++ {
		a := abandonedTimeline{fork: fork}
		if t == h.timeline {
			a.top = top
		}
		out.abandoned[t] = a
	}
	return out
}

// at is the token of position lsn in this history.
func (h *history) at(lsn uint64) Token {
	return Token{SystemID: h.systemID, Timeline: h.timeline, LSN: lsn}
}

// followHistory moves the router's history to timeline tli, which a node
// answering as a primary is on, when that is newer than the history's (or
// there is none yet). standbyEnd is the furthest position the tracker saw
// that node reach as a standby of the current history, 0 if none.
func (r *Router) followHistory(ctx context.Context, conn *pgx.Conn, timeout time.Duration, tli uint32, standbyEnd uint64) {
	cur := r.history.Load()
	if conn == nil || tli == 0 || (cur != nil && tli <= cur.timeline) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	h := &history{timeline: tli, ends: map[uint32]uint64{}, guessed: map[uint32]bool{}}
	if err := conn.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&h.systemID); err != nil {
		r.log.Warn("could not read the cluster's system identifier", "err", err)
		return
	}
	if cur != nil && cur.systemID == h.systemID {
		h.abandoned = cur.abandoned
		for t, end := range cur.ends {
			h.ends[t], h.guessed[t] = end, cur.guessed[t]
		}
		if standbyEnd != 0 {
			h.ends[cur.timeline], h.guessed[cur.timeline] = standbyEnd, true
		}
	}
	if tli > 1 {
		var file []byte
		err := conn.QueryRow(ctx, `SELECT pg_read_binary_file(format('pg_wal/%s.history', lpad(upper(to_hex($1::int)), 8, '0')))`,
			int64(tli)).Scan(&file)
		if err == nil {
			h = h.withEnds(parseTimelineHistory(string(file)))
		} else if r.discovery == nil {
			r.log.Info("timeline history file not readable; using the switch point the tracker observed",
				"timeline", tli, "observed", FormatLSN(h.ends[tli-1]), "err", err)
		}
		// With Patroni, discovery asks its /history for what is missing.
	}
	if r.history.CompareAndSwap(cur, h) && cur != nil {
		r.log.Warn("the primary is on a new timeline", "timeline", tli, "was", cur.timeline)
	}
}

// parseTimelineHistory reads a timeline history file: one line per
// ancestor, "timeline<TAB>switch point<TAB>reason".
func parseTimelineHistory(file string) map[uint32]uint64 {
	ends := map[uint32]uint64{}
	for _, line := range strings.Split(file, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		tli, err1 := strconv.ParseUint(f[0], 10, 32)
		end, err2 := ParseLSN(f[1])
		if err1 == nil && err2 == nil {
			ends[uint32(tli)] = end
		}
	}
	return ends
}

// resolve returns the session's token in the current history: the token
// itself when it is on the current timeline; rebased onto it when it is on
// an ancestor at or below that ancestor's switch point, which the current
// timeline shares; UnknownLSN, which only the primary settles, when it is
// on an older timeline whose switch point this router does not know (it
// started after the promotion and could read no history): whether the
// write survived is then unknown, and the primary knows what did; the zero
// token when it names another cluster or a timeline this router has not
// seen yet. lost reports a token beyond its ancestor's switch point: WAL
// the current history does not have, a write the failover lost; the token
// is then UnknownLSN too.
func (r *Router) resolve(st *State) (tok Token, lost bool) {
	h := r.history.Load()
	if st == nil || st.Token.IsZero() || h == nil || st.Token.SystemID != h.systemID {
		return Token{}, false
	}
	t := st.Token
	if a, abandoned := h.abandoned[t.Timeline]; abandoned {
		if tok, lost, settled := h.onAbandoned(t, a); settled {
			return tok, lost
		}
	}
	switch {
	case t.Timeline == h.timeline:
		return t, false
	case t.Timeline > h.timeline:
		return Token{}, false
	default:
		end, known := h.ends[t.Timeline]
		switch {
		case !known:
			return h.at(UnknownLSN), false
		case t.LSN <= end:
			return h.at(t.LSN), false
		default:
			return h.at(UnknownLSN), true
		}
	}
}

// onAbandoned resolves token t on a timeline the router abandoned (a): up
// to the fork it is on the current history; past it, lost — unless the
// current history reuses the timeline's id (PostgreSQL numbers a new
// timeline after the newest history file it finds, and a rewound node may
// have none of the abandoned one's). Then a position before the reused
// timeline began is the abandoned one's, and lost; one past everything
// the abandoned one reached is the current one's (settled false: resolve
// goes on as for any token); in between, only the primary can tell.
func (h *history) onAbandoned(t Token, a abandonedTimeline) (tok Token, lost, settled bool) {
	if t.LSN <= a.fork {
		return h.at(t.LSN), false, true
	}
	_, ancestor := h.ends[t.Timeline]
	if t.Timeline != h.timeline && !ancestor {
		return h.at(UnknownLSN), true, true
	}
	begin, known := uint64(0), t.Timeline == 1
	if !known {
		begin, known = h.ends[t.Timeline-1]
	}
	switch {
	case known && t.LSN < begin:
		return h.at(UnknownLSN), true, true
	case known && a.top != 0 && a.top < begin:
		return Token{}, false, false
	default:
		return h.at(UnknownLSN), false, true
	}
}

// isLost reports whether the session's last change is one a failover may
// have lost (see resolve).
func (r *Router) isLost(st *State) bool {
	_, lost := r.resolve(st)
	return lost
}

// token returns the session's token in the current history (see resolve).
func (r *Router) token(st *State) Token {
	t, _ := r.resolve(st)
	return t
}

// advance moves the session's token to lsn, if that is later.
func (r *Router) advance(st *State, lsn uint64) {
	h := r.history.Load()
	if st == nil || h == nil || lsn == 0 {
		return
	}
	cur, lost := r.resolve(st)
	if lost {
		return // only a read on the primary settles a lost token (causalOnPrimary)
	}
	if lsn > cur.LSN || (lsn == cur.LSN && st.Token.Timeline != h.timeline) {
		st.Token = h.at(lsn)
		st.changed = true
	}
}

// offHistory tells whether standby n may hold WAL the primary's history
// lacks. A standby on the primary's timeline does not. One on a newer
// timeline does: Diverged when the router abandoned that timeline (it
// awaits its rewind), else Unverified (it follows a primary the router has
// not seen). One on an older timeline does when it is past where that
// timeline ended: Diverged when it is past a known end by a timeline it
// surely is on; Unverified when it is past an end the router only
// guessed, or on a timeline it may have left since its last restartpoint,
// or when the end is not known at all (a router started after the
// promotion) — no reads until it is seen on the primary's timeline, but
// no alarm either.
func offHistory(h *history, n *Health) Status {
	switch {
	case h == nil || n.Timeline == 0:
		return Usable
	case n.Timeline > h.timeline:
		if _, abandoned := h.abandoned[n.Timeline]; abandoned {
			return Diverged
		}
		return Unverified
	}
	if n.TimelineGuessed {
		// Its real timeline may be newer than the guess: one the router
		// abandoned, whose WAL it would then hold past the fork.
		for t, a := range h.abandoned {
			if t > n.Timeline && n.Position > a.fork {
				return Unverified
			}
		}
	}
	if n.Timeline == h.timeline {
		return Usable
	}
	end, known := h.ends[n.Timeline]
	switch {
	case !known:
		return Unverified
	case n.Position <= end:
		return Usable
	case h.guessed[n.Timeline] || n.TimelineGuessed:
		return Unverified
	default:
		return Diverged
	}
}
