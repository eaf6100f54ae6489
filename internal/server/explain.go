package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"quest/internal/dbrouter"
)

// readView is one read of a page, explained for people: what it was for,
// which node answered and why, and where that node stood against the
// session's own position.
type readView struct {
	For      string // "your session" or "this page's data"
	Node     string
	Member   string // the primary's own name, when it has one ("node2"): which member is the primary now
	Strategy string
	Why      string // in words
	Verdict  string // one or two words: fresh, waited 1.2 ms, primary, may be missing your change, possibly stale
	You      string // the session's position: "0/30000A8", "none yet", "unknown"
	NodePos  string // the node's position for this read
	NodeWhen string // "at the read", or "at the tracker's last look" (up to a poll interval old)
	State    string // "replay paused", "apply delay 5 s", or ""
	Missing  string // set when the node was behind the session: the page may be missing its change
	SQL      []string
}

// pageReads is the panel every page shows: how it was read.
type pageReads struct {
	Reads    []readView
	Summary  string // one line
	Warn     bool   // some read may be missing the session's change, or be stale, or the change was lost
	Strategy string // the strategy in force for this session
	Own      bool   // the session chose its own strategy
}

// explain turns a request's trace into the panel's words. strategy is the
// one in force for the session; reads of another strategy are the session
// lookups, which always route causally.
func explain(t *dbrouter.Trace, strategy dbrouter.Strategy, wait time.Duration) pageReads {
	p := pageReads{Strategy: strategy.String()}
	for _, d := range t.Decisions() {
		if d.Write {
			continue
		}
		v := explainRead(d, strategy, wait)
		p.Warn = p.Warn || v.Missing != ""
		p.Reads = append(p.Reads, v)
	}
	p.Summary = summary(p)
	return p
}

// explainRead puts one read's decision into words.
func explainRead(d dbrouter.Decision, strategy dbrouter.Strategy, wait time.Duration) readView {
	v := readView{Node: d.Node, Strategy: d.Strategy.String(), SQL: d.SQL, For: "this page's data"}
	if d.Node == "primary" && d.Member != d.Node && named(d.Member) {
		v.Member = d.Member
	}
	if d.Strategy != strategy {
		v.For = "your session (who is signed in)"
	}
	v.You = position(d.SessionLSN)
	if d.NodeLSN != 0 {
		v.NodePos = dbrouter.FormatLSN(d.NodeLSN)
		v.NodeWhen = "at the read"
		if d.NodeLSNTracked {
			v.NodeWhen = "at the tracker's last look"
		}
	}
	switch {
	case d.Paused:
		v.State = "replay paused"
	case d.ApplyDelay > 0:
		v.State = "apply delay " + d.ApplyDelay.String()
	}
	v.Why, v.Verdict = why(d, wait)
	behind := d.Node != "primary" && d.SessionLSN != 0 && d.SessionLSN != dbrouter.UnknownLSN && d.NodeLSN != 0 && d.NodeLSN < d.SessionLSN
	switch {
	case d.Lost:
		// Not a replica behind: no node has the change, and none will.
		v.Why = "your last change is not in the new primary's history, so " + d.Node + " answered"
		v.Missing = "a change you made just before the primary changed may have been lost in a failover: it was saved on the old primary after the point where the new primary's history begins"
		v.Verdict = "change may be lost"
	case behind || d.Reason == dbrouter.ReasonStale:
		v.Missing = fmt.Sprintf("this page may be missing your last change: %s has replayed up to %s, your change is at %s",
			d.Node, v.NodePos, v.You)
		v.Verdict = "may be missing your change"
		if d.Reason == dbrouter.ReasonStale {
			v.Verdict = "possibly stale"
		}
	}
	return v
}

// named reports whether a member's name was given (a URL's
// application_name, as cluster URLs carry) rather than made by the router
// from host:port/dbname, which says nothing to a person beside "primary".
func named(member string) bool { return member != "" && !strings.Contains(member, "/") }

// position writes a session position for people.
func position(lsn uint64) string {
	switch lsn {
	case 0:
		return "none yet"
	case dbrouter.UnknownLSN:
		return "unknown (a change whose position was lost)"
	}
	return dbrouter.FormatLSN(lsn)
}

// why says in words why a read went where it went, and a short verdict.
func why(d dbrouter.Decision, wait time.Duration) (string, string) {
	waited := fmt.Sprintf("%.1f ms", float64(d.Wait.Microseconds())/1000)
	switch d.Reason {
	case dbrouter.ReasonPrimaryOnly:
		return "the primary strategy reads everything from the primary", "primary"
	case dbrouter.ReasonRandom:
		return d.Node + " was picked at random — it may not have your latest change", "random replica"
	case dbrouter.ReasonOwnData:
		return "your own data is read from the primary (" + d.Strategy.String() + ")", "primary"
	case dbrouter.ReasonSticky:
		return d.Node + " is your session's replica (sticky) — it may not have your own newest comment yet", "your replica"
	case dbrouter.ReasonRecentWrite:
		return "you changed something moments ago, so the primary answers for a while (timed)", "primary"
	case dbrouter.ReasonFresh:
		if d.SessionLSN == 0 {
			return d.Node + " answered; your session has no change to wait for yet", "fresh"
		}
		return d.Node + " had already replayed your last change", "fresh"
	case dbrouter.ReasonWaited:
		return d.Node + " replayed your last change after waiting " + waited, "waited " + waited
	case dbrouter.ReasonFallbackLag:
		if d.Node == "primary" && d.ShortOn != "" {
			return fmt.Sprintf("no replica had your change within %s (%s fell short), so the primary answered", wait, d.ShortOn), "primary"
		}
		if d.Node == "primary" && d.Strategy == dbrouter.Causal {
			return "no replica could reach your change in time (lagging, paused or unknown), so the primary answered", "primary"
		}
		return "the preferred replica lags past the limit, so " + d.Node + " answered", "fallback"
	case dbrouter.ReasonFallbackDown:
		return "the preferred replica is down, so " + d.Node + " answered", "fallback"
	case dbrouter.ReasonRetried:
		return "the first node failed during the read, so " + d.Node + " answered", "retried"
	case dbrouter.ReasonStale:
		return "the primary is unreachable and no replica has your change, so " + d.Node + " answered anyway", "possibly stale"
	}
	return d.Reason.String(), d.Reason.String()
}

// summary is the panel's one line: this page's data, where it came from.
func summary(p pageReads) string {
	var page []readView
	for _, v := range p.Reads {
		if v.For == "this page's data" {
			page = append(page, v)
		}
	}
	if len(page) == 0 {
		return "This page read no data of its own · strategy " + p.Strategy
	}
	v := page[len(page)-1]
	node := v.Node
	if v.Member != "" {
		node += " (" + v.Member + ")"
	}
	if v.Missing != "" {
		return "This page's data came from " + node + " — " + v.Missing + " · strategy " + p.Strategy
	}
	return "This page's data came from " + node + ": " + v.Why + " · strategy " + p.Strategy
}

// recentRequest is one page view in a session's recent history, for the
// lab's "your last requests".
type recentRequest struct {
	At    time.Time
	Path  string
	Reads []readView
}

// recentLog keeps the last requests of each session, in memory: a lab
// aid, per app instance, bounded in sessions and requests.
type recentLog struct {
	mu       sync.Mutex
	sessions map[uint64][]recentRequest
	order    []uint64 // oldest session first, for eviction
}

const (
	recentPerSession = 20
	recentSessions   = 1000
)

func (l *recentLog) add(session uint64, r recentRequest) {
	for i := range r.Reads {
		r.Reads[i].SQL = nil // the panel shows SQL; the history does not need it
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sessions == nil {
		l.sessions = map[uint64][]recentRequest{}
	}
	reqs, known := l.sessions[session]
	if !known {
		l.order = append(l.order, session)
		if len(l.order) > recentSessions {
			delete(l.sessions, l.order[0])
			l.order = l.order[1:]
		}
	}
	reqs = append(reqs, r)
	if len(reqs) > recentPerSession {
		reqs = reqs[len(reqs)-recentPerSession:]
	}
	l.sessions[session] = reqs
}

// last returns a session's recent requests, oldest first.
func (l *recentLog) last(session uint64) []recentRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]recentRequest(nil), l.sessions[session]...)
}

// glossary is the short glossary the panel links to.
var glossary = []struct{ Term, Meaning string }{
	{"WAL", "the write-ahead log: every change PostgreSQL makes is first written there, in order. Replicas receive it and replay it."},
	{"LSN", "log sequence number: a position in the WAL, written like 0/30000A8. A larger LSN is later."},
	{"replay", "a replica applying the WAL it received; its replay position is the LSN up to which its data matches the primary's."},
	{"lag", "how far a replica's replay is behind the primary, in bytes of WAL or in seconds."},
	{"your position", "the LSN of your session's last change, or of the newest data you have seen; a node that has replayed it has everything you saw."},
	{"primary", "the strategy that reads everything from the primary: always fresh, no read scaling."},
	{"random", "each read goes to a random replica (the Django docs' router): under lag you may miss your own change, and data may appear and vanish."},
	{"pin-own", "your own data (wishlist, profile) from the primary, the rest from a random replica: the article's read-your-writes fix."},
	{"sticky", "pin-own, and shared data always from your session's one replica: the article's monotonic-reads fix — but not read-your-writes on shared data like your own forum comment."},
	{"timed", "the primary for a while (2 s) after each of your changes, then a random replica (Rails): right only while lag stays under the delay."},
	{"causal", "a replica answers only once it has replayed your position, checked in the same round trip; else the primary: read-your-writes and monotonic reads, reads still on replicas."},
}

// handleGlossary shows the glossary.
func (s *Server) handleGlossary(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "glossary.html", glossary)
}
