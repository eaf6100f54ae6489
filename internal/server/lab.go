package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
)

// Levers pull the local cluster's lag levers; *cluster.Cluster is one.
// They act through the cluster's lever role, never a superuser.
type Levers interface {
	Pause(ctx context.Context, node string) error
	Resume(ctx context.Context, node string) error
	SetDelay(ctx context.Context, node string, d time.Duration) error
	Stop(ctx context.Context, node string, immediate bool) error
	Start(ctx context.Context, node string) error
}

// sample is one second of the lab's live chart.
type sample struct {
	T     int64              `json:"t"`     // Unix seconds
	Lag   map[string]float64 `json:"lag"`   // replica → seconds behind
	Reads map[string]int64   `json:"reads"` // node → reads served in that second
}

// history keeps the last minutes of samples.
type history struct {
	mu      sync.Mutex
	samples []sample
	last    map[string]int64
}

const historySize = 300 // five minutes

// record takes one sample from the router.
func (h *history) record(r *dbrouter.Router, now time.Time) {
	reads := map[string]int64{}
	for _, d := range r.DecisionCounts() {
		reads[d.Node] += d.Count
	}
	s := sample{T: now.Unix(), Lag: map[string]float64{}, Reads: map[string]int64{}}
	for i, hl := range r.Health() {
		if i > 0 {
			s.Lag[hl.Name] = hl.Lag.Seconds()
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for node, n := range reads {
		if h.last != nil {
			s.Reads[node] = n - h.last[node]
		}
	}
	h.last = reads
	h.samples = append(h.samples, s)
	if len(h.samples) > historySize {
		h.samples = h.samples[len(h.samples)-historySize:]
	}
}

func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.samples)
}

func (s *Server) sampleHistory(ctx context.Context) {
	defer s.background.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.history.record(s.router, now)
		}
	}
}

// nodeState is one node on the lab page and in its JSON.
type nodeState struct {
	Name       string  `json:"name"`
	Role       string  `json:"role"`
	Up         bool    `json:"up"`
	Paused     bool    `json:"paused"`
	Position   string  `json:"position"`
	LagBytes   int64   `json:"lag_bytes"`
	LagSeconds float64 `json:"lag_seconds"`
	Router     string  `json:"router"` // the router's verdict: usable, down, lagging, …
	Reads      int64   `json:"reads"`
}

type labState struct {
	Strategy string      `json:"strategy"`
	Nodes    []nodeState `json:"nodes"`
	History  []sample    `json:"history"`
}

func (s *Server) labState() labState {
	reads := map[string]int64{}
	for _, d := range s.router.DecisionCounts() {
		reads[d.Node] += d.Count
	}
	st := labState{Strategy: s.router.Strategy().String(), History: s.history.snapshot()}
	for i, h := range s.router.Health() {
		role := "replica"
		if i == 0 {
			role = "primary"
		}
		pos := "–"
		if h.Up {
			pos = dbrouter.FormatLSN(h.Position)
		}
		st.Nodes = append(st.Nodes, nodeState{Name: h.Name, Role: role, Up: h.Up, Paused: h.Paused, Position: pos,
			LagBytes: h.LagBytes, LagSeconds: h.Lag.Seconds(), Router: h.Status.String(), Reads: reads[h.Name]})
	}
	return st
}

type labPage struct {
	State      labState
	Strategies []dbrouter.Strategy
	Admin      bool
	Levers     bool
}

// handleLab shows the lab: everyone can look, admins change things. It is
// a page about the cluster: its own reads go to the tracker, not through
// the router.
func (s *Server) handleLab(w http.ResponseWriter, r *http.Request) {
	u := currentUser(r)
	s.render(w, r, http.StatusOK, "lab.html", labPage{
		State: s.labState(), Strategies: dbrouter.Strategies(), Admin: u != nil && u.IsAdmin, Levers: s.levers != nil,
	})
}

// handleLabState is the lab's live data, polled every second.
func (s *Server) handleLabState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(s.labState())
}

// requireAdmin refuses the lab's levers to everyone but admins.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u := currentUser(r); u == nil || !u.IsAdmin {
			s.serverError(w, r, problem(http.StatusForbidden, "Only an admin can change the lab's settings. Everyone can watch."))
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
	s.flash(w, fmt.Sprintf("Reads now use the %s strategy — for every user of this app instance.", strategy))
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

// maxLabDelay bounds the lab's apply-delay control.
const maxLabDelay = 10 * time.Second

func (s *Server) handleLabLever(w http.ResponseWriter, r *http.Request) {
	if s.levers == nil {
		s.serverError(w, r, problem(http.StatusNotFound, "This app instance does not manage a local cluster, so it has no levers."))
		return
	}
	node, action := chi.URLParam(r, "node"), chi.URLParam(r, "action")
	known := false
	for _, n := range s.router.Replicas() {
		known = known || n.Name == node
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
	case "stop":
		err, msg = s.levers.Stop(ctx, node, false), node+" stopped."
	case "start":
		err, msg = s.levers.Start(ctx, node), node+" started."
	default:
		s.serverError(w, r, problem(http.StatusNotFound, "Unknown lever "+strconv.Quote(action)+"."))
		return
	}
	if err != nil {
		s.log.WarnContext(ctx, "lever failed", "node", node, "action", action, "err", err)
		s.serverError(w, r, problem(http.StatusConflict, "That did not work: "+err.Error()))
		return
	}
	s.log.InfoContext(ctx, "lever pulled", "node", node, "action", action, "by", currentUser(r).Username)
	s.flash(w, msg)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}
