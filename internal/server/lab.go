package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
	"quest/internal/store"
)

// Levers pull a cluster's lag levers: pause and resume replay, set the
// apply delay. They act through the cluster's lever role, never a
// superuser, so any cluster with that role has them (*levers.Replicas on
// any cluster, *cluster.Cluster on the local one).
type Levers interface {
	Pause(ctx context.Context, node string) error
	Resume(ctx context.Context, node string) error
	SetDelay(ctx context.Context, node string, d time.Duration) error
}

// Launcher stops and starts nodes: levers that are also a Launcher (the
// local launcher's *cluster.Cluster) get Stop and Start on /lab too.
type Launcher interface {
	Stop(ctx context.Context, node string, immediate bool) error
	Start(ctx context.Context, node string) error
}

// noLauncher says why /lab has no Stop and Start.
const noLauncher = "Stop and start need the local launcher (quest serve with the cluster of quest cluster up): on another cluster, stop and start a replica where it runs (quest cluster stop replica1, docker-compose stop replica1)."

// sample is one second of the lab's live chart.
type sample struct {
	T     int64              `json:"t"`     // Unix seconds
	Lag   map[string]float64 `json:"lag"`   // replica → seconds behind
	Reads map[string]int64   `json:"reads"` // node → reads served in that second
	// Primary is the member that took writes, "" when none did; Mark,
	// where it changed, says how in words ("failover: node1 → node2"):
	// the chart draws a line there.
	Primary string `json:"primary"`
	Mark    string `json:"mark,omitempty"`
}

// history keeps the last minutes of samples, and since when each replica
// has been paused as far as the app can tell.
type history struct {
	mu      sync.Mutex
	samples []sample
	last    map[string]int64

	// pausedAt is when a replica's pause was first seen (by the tracker's
	// poll, sampled every second) or pulled (by the lab's levers);
	// replaying records that the last observation was replaying, so a
	// pause seen next has a known start. A replica already paused when the
	// app started has no entry: since when is not known. seenAt is the
	// time of each replica's latest observation.
	pausedAt  map[string]time.Time
	replaying map[string]bool
	seenAt    map[string]time.Time

	// The primary in the last sample, and the last one there was, for
	// the chart's marks.
	sampled     bool
	prevPrimary string
	lastPrimary string
}

const historySize = 300 // five minutes

// record takes one sample from the router. switchover says a switchover
// was pulled just now, so a change of primary is not a failover.
func (h *history) record(r *dbrouter.Router, now time.Time, switchover bool) {
	reads := map[string]int64{}
	for _, d := range r.DecisionCounts() {
		reads[d.Node] += d.Count
	}
	health := r.Health()
	s := sample{T: now.Unix(), Lag: map[string]float64{}, Reads: map[string]int64{}, Primary: currentPrimary(health)}
	for i, hl := range health {
		if i > 0 {
			s.Lag[hl.Name] = hl.Lag.Seconds()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, hl := range health {
		if i > 0 && hl.Up {
			h.observeLocked(hl.Name, hl.Paused, hl.CheckedAt)
		}
	}
	for node, n := range reads {
		if h.last != nil {
			s.Reads[node] = n - h.last[node]
		}
	}
	h.last = reads
	if h.sampled {
		s.Mark = primaryMark(h.prevPrimary, h.lastPrimary, s.Primary, switchover)
	}
	h.sampled, h.prevPrimary = true, s.Primary
	if s.Primary != "" {
		h.lastPrimary = s.Primary
	}
	h.samples = append(h.samples, s)
	if len(h.samples) > historySize {
		h.samples = h.samples[len(h.samples)-historySize:]
	}
}

// observeLocked notes a replica's replay state as seen at at; h.mu is
// held. An observation older than one already noted is stale (the
// tracker's last poll can predate a lever the lab just pulled) and is
// ignored.
func (h *history) observeLocked(node string, paused bool, at time.Time) {
	if h.pausedAt == nil {
		h.pausedAt, h.replaying, h.seenAt = map[string]time.Time{}, map[string]bool{}, map[string]time.Time{}
	}
	if at.Before(h.seenAt[node]) {
		return
	}
	h.seenAt[node] = at
	if !paused {
		delete(h.pausedAt, node)
		h.replaying[node] = true
		return
	}
	if _, known := h.pausedAt[node]; !known && h.replaying[node] {
		h.pausedAt[node] = at
	}
	h.replaying[node] = false
}

// paused records that the lab's levers paused (or resumed) a replica's
// replay at now; wasPaused is whether it was paused before, as far as the
// router knew. A pause the lab starts has an exact start.
func (h *history) paused(node string, paused, wasPaused bool, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if paused && !wasPaused {
		h.observeLocked(node, false, now)
	}
	h.observeLocked(node, paused, now)
}

// pausedSince returns since when a replica has been paused, if known.
func (h *history) pausedSince(node string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.pausedAt[node]
	return t, ok
}

func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.samples)
}

// nodeState is one node on the lab page and in its JSON. The words are
// the page's: the JSON carries them so the live table says the same.
type nodeState struct {
	Name       string  `json:"name"`
	Member     string  `json:"member"`      // the node's own name, whatever its role
	Display    string  `json:"display"`     // how the members table names it: Member when it was named, else Name
	Role       string  `json:"role"`        // the router's slot: "primary" (or the last one, while none is) or "replica"
	RouterRole string  `json:"router_role"` // as the router's last poll saw it: primary, replica, unreachable
	Timeline   uint32  `json:"timeline"`    // 0 when unknown
	Up         bool    `json:"up"`
	Paused     bool    `json:"paused"`
	Position   string  `json:"position"`
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	LagUnknown bool    `json:"lag_unknown"`
	Router     string  `json:"router"` // the router's verdict: usable, down, lagging, …
	Reads      int64   `json:"reads"`

	ApplyDelayMS int64  `json:"apply_delay_ms"` // recovery_min_apply_delay, as configured
	Replay       string `json:"replay"`         // "replaying", "paused since 14:03:05 (for 42 s)", "stopped or unreachable"
	ApplyDelay   string `json:"apply_delay"`    // "apply delay 5 s (configured)", "no apply delay"
	Behind       string `json:"behind"`         // "behind by 120 bytes and 0.4 s", "caught up"
	GetsReads    string `json:"gets_reads"`     // the router's verdict in words

	// What Patroni says of the member, when anything asks it (see
	// patroniOf); Patroni is "" and PatroniState nil when nothing does.
	Patroni      string        `json:"patroni"` // "leader, running", "not listed"
	PatroniState *patroniState `json:"patroni_member,omitempty"`
}

// patroniState is dbrouter.Patroni in the lab's JSON.
type patroniState struct {
	Listed   bool   `json:"listed"`
	Role     string `json:"role"`
	State    string `json:"state"`
	Timeline uint32 `json:"timeline"`
	LagBytes int64  `json:"lag_bytes"` // -1 when unknown
}

type labState struct {
	Strategy string `json:"strategy"`
	Primary  string `json:"primary"` // the member taking writes, "" when none does
	// SplitBrain names the nodes that accept writes and their timelines,
	// and which one Quest writes to, if any; "" without a split brain.
	SplitBrain string      `json:"split_brain,omitempty"`
	Patroni    bool        `json:"patroni_known"` // the members carry what Patroni says
	HA         bool        `json:"ha"`            // the app manages a Patroni cluster
	Nodes      []nodeState `json:"nodes"`
	History    []sample    `json:"history"`
	HAOp       haOpView    `json:"ha_op"` // the failover lever running, or the last one
}

func (s *Server) labState() labState {
	reads := map[string]int64{}
	for _, d := range s.router.DecisionCounts() {
		reads[d.Node] += d.Count
	}
	now := time.Now()
	health := s.router.Health()
	st := labState{Strategy: s.router.Strategy().String(), History: s.history.snapshot(), Primary: currentPrimary(health),
		SplitBrain: s.router.SplitBrain(),
		Patroni:    s.patroniKnown(health), HA: s.ha != nil, HAOp: s.ops.current().view(now)}
	for i, h := range health {
		n := nodeState{Name: h.Name, Member: h.Member, Display: h.Name, Role: "replica", RouterRole: routerRole(h), Timeline: h.Timeline,
			Up: h.Up, Paused: h.Paused, Position: "–",
			LagBytes: h.LagBytes, LagSeconds: h.Lag.Seconds(), LagUnknown: h.LagUnknown, Router: h.Status.String(),
			Reads: reads[h.Name], ApplyDelayMS: h.ApplyDelay.Milliseconds()}
		if i == 0 {
			n.Role = "primary"
		}
		if named(h.Member) {
			n.Display = h.Member
		}
		if st.Patroni {
			p := s.patroniOf(h)
			n.Patroni = patroniWords(p)
			n.PatroniState = &patroniState{Listed: p.Listed, Role: p.Role, State: p.State, Timeline: p.Timeline, LagBytes: p.LagBytes}
			if n.Timeline == 0 && p.Listed {
				n.Timeline = p.Timeline // the node did not answer; Patroni's word is the best there is
			}
		}
		if h.Up {
			n.Position = dbrouter.FormatLSN(h.Position)
		}
		since, known := s.history.pausedSince(h.Name)
		n.Replay, n.ApplyDelay, n.Behind, n.GetsReads = nodeWords(h, i == 0, since, known, now)
		st.Nodes = append(st.Nodes, n)
	}
	return st
}

// nodeWords says a node's state in words for the lab: its replay, its
// configured apply delay, how far behind the primary it is, and whether
// the router sends it reads.
func nodeWords(h dbrouter.Health, primary bool, pausedSince time.Time, sinceKnown bool, now time.Time) (replay, delay, behind, gets string) {
	gets = "yes"
	switch h.Status {
	case dbrouter.Down:
		gets = "no: stopped or unreachable"
	case dbrouter.NotReplica:
		gets = "no: it takes writes too (split brain?)"
		switch {
		case h.Up && !h.InRecovery && h.PatroniLeaderErr != "":
			gets = "no, and no writes either: Patroni does not name it the leader (its agent is gone, or its leader key expired)"
		case primary:
			gets = "no: it is in recovery (a replica), so it takes no writes"
		}
	case dbrouter.Lagging:
		gets = "no: too far behind (past the router's lag limit)"
		if h.LagUnknown {
			gets = "no: how far behind it is in time is not known yet"
		}
	case dbrouter.Diverged:
		gets = "no: it replayed WAL the new primary never had (a write lost in a failover); rewind or rebuild it"
	case dbrouter.Superseded:
		gets = "no: it still takes writes on an older timeline than the primary's (split brain); rewind it into a standby"
	case dbrouter.WentBack:
		gets = "no: it restarted behind what it had replayed (a crash, or an older copy of its data); it gets reads once it has replayed past that again"
	case dbrouter.Unverified:
		gets = "no: it is on an older timeline, and not yet known to be on the new primary's history; it gets reads once it follows the primary"
	}
	if !h.Up {
		return "stopped or unreachable", "–", "–", gets
	}
	if primary {
		return "writes the WAL", "", "– (the reference)", gets
	}
	if !h.InRecovery {
		return "not replaying: not a replica", "–", "–", gets
	}
	replay = "replaying"
	if h.Paused {
		replay = "paused"
		if sinceKnown {
			replay = fmt.Sprintf("paused since %s (for %s)", pausedSince.Format("15:04:05"), roughly(now.Sub(pausedSince)))
		}
		if h.PauseState == "pause requested" {
			replay += " — pause requested, takes effect at the next WAL record"
		}
	}
	delay = "no apply delay"
	if h.ApplyDelay > 0 {
		delay = "apply delay " + seconds(h.ApplyDelay) + " (configured)"
	}
	switch {
	case h.LagUnknown:
		behind = fmt.Sprintf("behind by %d bytes; for how long is unknown (the replica is behind the first position the app saw on the primary)", h.LagBytes)
	case h.LagBytes == 0:
		behind = "caught up: 0 bytes behind"
	default:
		behind = fmt.Sprintf("behind by %d bytes and %.1f s", h.LagBytes, h.Lag.Seconds())
	}
	return replay, delay, behind, gets
}

// seconds writes a delay or lag for people: "5 s", "2.5 s", "300 ms".
func seconds(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d%time.Second == 0:
		return fmt.Sprintf("%d s", d/time.Second)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// roughly writes a span to the second: "42 s", "3 min 5 s", "2 h 10 min".
func roughly(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", d/time.Minute, (d%time.Minute)/time.Second)
	}
	return fmt.Sprintf("%d h %d min", d/time.Hour, (d%time.Hour)/time.Minute)
}

// labPage is the lab: the scenarios, the replicas, the strategies and
// what they guarantee, and the viewer's own recent requests.
type labPage struct {
	State      labState
	Scenarios  []scenarioView
	Facts      []strategyFacts
	Choices    []dbrouter.Strategy
	Default    string // the strategy "Reset lab" returns to
	ForYou     string // the strategy in force for the viewer
	Own        bool   // ForYou is the viewer's own choice
	Chosen     string // the viewer's stored choice, "" for none (shown even while choosing is off)
	AllowOwn   bool
	SignedIn   bool
	Admin      bool
	Levers     bool
	Launcher   bool   // the levers also stop and start nodes
	NoLauncher string // why they do not, when they do not
	HA         bool   // the app manages a Patroni cluster: the failover levers
	HAErr      string // why the last failover lever failed, for admins
	CausalWait string
	Recent     timeline
}

// handleLab shows the lab: everyone can look, admins change things. It is
// a page about the cluster: its own reads go to the tracker, not through
// the router.
func (s *Server) handleLab(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	u := currentUser(r)
	choices := dbrouter.Strategies()
	page := labPage{
		State: s.labState(), Scenarios: s.scenarioViews(), Facts: strategyTable(choices, s.router.CausalWait(), s.router.TimedDelay()),
		Choices: choices, Default: s.defaultStrategy.String(), ForYou: s.router.StrategyFor(ctx).String(),
		Chosen: s.sessions.GetString(ctx, keyStrategy), AllowOwn: s.allowOwn.Load(),
		SignedIn: u != nil, Admin: u != nil && u.IsAdmin, Levers: s.levers != nil, Launcher: s.launcher != nil, NoLauncher: noLauncher, HA: s.ha != nil, CausalWait: seconds(s.router.CausalWait()),
	}
	if op := s.ops.current(); page.Admin && op.Err != nil && page.State.HAOp.Failed {
		page.HAErr = op.Err.Error()
	}
	page.Own = page.AllowOwn && page.Chosen != ""
	if st := dbrouter.StateFrom(ctx); st != nil {
		page.Recent = buildTimeline(s.recent.last(st.Session), time.Now())
	}
	s.render(w, r, http.StatusOK, "lab.html", page)
}

// handleLabState is the lab's live data, polled every second.
func (s *Server) handleLabState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s.labState())
}

// requireAdmin refuses the lab's levers to everyone but admins. Whether
// the user is an admin is asked of the primary at every admin action, not
// of the session, which remembers it from the sign-in for 7 days: a right
// revoked since must not linger. Admin actions are few.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := problem(http.StatusForbidden, "Only an admin can change the lab's settings. Everyone can watch.")
		u := currentUser(r)
		if u == nil {
			s.serverError(w, r, refuse)
			return
		}
		admin, err := s.store.IsAdmin(r.Context(), u.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			s.serverError(w, r, store.ErrUserGone)
			return
		case err != nil:
			s.serverError(w, r, err)
			return
		case !admin:
			s.serverError(w, r, refuse)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) handleLabStrategy(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	strategy, err := dbrouter.ParseStrategy(f.Get("strategy"))
	if err != nil {
		s.serverError(w, r, problem(http.StatusBadRequest, err.Error()))
		return
	}
	s.router.SetStrategy(strategy)
	s.log.InfoContext(r.Context(), "strategy switched", "strategy", strategy.String(), "by", currentUser(r).Username)
	msg := fmt.Sprintf("Reads now use the %s strategy — for every user of this app instance.", strategy)
	if s.allowOwn.Load() {
		msg = fmt.Sprintf("Reads now use the %s strategy — for every user of this app instance who has not chosen their own.", strategy)
	}
	s.flash(w, msg)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

// maxLabDelay bounds the lab's apply-delay control.
const maxLabDelay = 10 * time.Second

func (s *Server) handleLabLever(w http.ResponseWriter, r *http.Request) {
	if s.levers == nil {
		s.serverError(w, r, problem(http.StatusNotFound, "This app instance has no levers: it neither manages the local cluster nor has the lever role's URL (--lever-url)."))
		return
	}
	node, action := chi.URLParam(r, "node"), chi.URLParam(r, "action")
	var before dbrouter.Health // what the router knew of the replica before the lever
	known := false
	for _, h := range s.router.Health()[1:] {
		if h.Name == node {
			known, before = true, h
		}
	}
	if !known {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no replica named "+strconv.Quote(node)+"."))
		return
	}
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	ctx := r.Context()
	release, err := s.takeCluster(ctx)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	defer release()
	var msg string
	switch action {
	case "pause":
		err, msg = s.levers.Pause(ctx, node), "Replay paused on "+node+"."
	case "resume":
		err, msg = s.levers.Resume(ctx, node), "Replay resumed on "+node+"."
	case "delay":
		ms, convErr := strconv.Atoi(f.Get("delay_ms"))
		if convErr != nil || ms < 0 || time.Duration(ms)*time.Millisecond > maxLabDelay {
			s.serverError(w, r, problem(http.StatusBadRequest, "The apply delay is a number of milliseconds from 0 to 10000."))
			return
		}
		err, msg = s.levers.SetDelay(ctx, node, time.Duration(ms)*time.Millisecond), fmt.Sprintf("%s now applies WAL %d ms after commit.", node, ms)
	case "stop", "start":
		if s.launcher == nil {
			s.serverError(w, r, problem(http.StatusNotFound, noLauncher))
			return
		}
		if action == "stop" {
			err, msg = s.launcher.Stop(ctx, node, false), node+" stopped."
		} else {
			err, msg = s.launcher.Start(ctx, node), node+" started."
		}
	default:
		s.serverError(w, r, problem(http.StatusNotFound, "Unknown lever "+strconv.Quote(action)+"."))
		return
	}
	if err != nil {
		s.log.WarnContext(ctx, "lever failed", "node", node, "action", action, "err", err)
		s.serverError(w, r, problem(http.StatusConflict, "That did not work: "+err.Error()))
		return
	}
	switch action {
	case "pause", "resume":
		s.history.paused(node, action == "pause", before.Paused, time.Now())
	}
	s.log.InfoContext(ctx, "lever pulled", "node", node, "action", action, "by", currentUser(r).Username)
	s.flash(w, msg)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}
