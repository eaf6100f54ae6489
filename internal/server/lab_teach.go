package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
)

// The lab's teaching side: what each strategy guarantees, the scenarios
// an admin sets up in one click, the reset, and the strategy an attendee
// may choose for their own session.

// fact is one cell of the guarantees table: its words, and a class that
// colours it (yes, no, partly; "" for the load column).
type fact struct{ Text, Class string }

var (
	factYes = fact{"yes", "yes"}
	factNo  = fact{"no", "no"}
)

func partly(text string) fact { return fact{text, "partly"} }

// strategyFacts is one row of the lab's table: what a strategy does and
// what it guarantees.
type strategyFacts struct {
	Name      string
	Does      string
	Own       fact // read-your-writes on your own data (your wishlist)
	Shared    fact // read-your-writes on shared data (your own forum comment)
	Monotonic fact // monotonic reads: nothing you saw vanishes
	Load      fact // reads the primary serves
}

// strategyTable is the guarantees table, one row per strategy in the
// order of choices. causalWait is how long a causal read waits in-band.
func strategyTable(choices []dbrouter.Strategy, causalWait, timedDelay time.Duration) []strategyFacts {
	timed := partly("only while lag stays under the delay (" + seconds(timedDelay) + ")")
	facts := map[dbrouter.Strategy]strategyFacts{
		dbrouter.Primary: {Does: "Every read goes to the primary. Always fresh; the replicas serve nothing.",
			Own: factYes, Shared: factYes, Monotonic: factYes, Load: fact{Text: "all reads"}},
		dbrouter.Random: {Does: "Each read goes to a random replica (the Django docs' router).",
			Own: factNo, Shared: factNo, Monotonic: factNo, Load: fact{Text: "none"}},
		dbrouter.PinOwn: {Does: "Your own data (wishlist, profile) from the primary; everything else from a random replica.",
			Own: factYes, Shared: factNo, Monotonic: factNo, Load: fact{Text: "own data"}},
		dbrouter.Sticky: {Does: "Like pin-own, but shared data always from the one replica your session hashes to.",
			Own: factYes, Shared: fact{"no (your replica may not have your own new comment yet)", "no"},
			Monotonic: partly("yes while your replica is up and under the lag limit"), Load: fact{Text: "own data"}},
		dbrouter.Timed: {Does: "For " + seconds(timedDelay) + " after each of your changes your reads go to the primary, then to a random replica (Rails).",
			Own: timed, Shared: timed, Monotonic: factNo, Load: fact{Text: "reads for " + seconds(timedDelay) + " after each write"}},
		dbrouter.Causal: {Does: "A replica answers only once it has replayed your position (checked in the same round trip); otherwise the primary.",
			Own: factYes, Shared: factYes, Monotonic: factYes,
			Load: fact{Text: "only when no replica has your position within the " + seconds(causalWait) + " wait"}},
	}
	rows := make([]strategyFacts, 0, len(choices))
	for _, s := range choices {
		f, ok := facts[s]
		if !ok {
			unknown := fact{Text: "–"}
			f = strategyFacts{Does: "Not described here: see the glossary.", Own: unknown, Shared: unknown, Monotonic: unknown, Load: unknown}
		}
		f.Name = s.String()
		rows = append(rows, f)
	}
	return rows
}

// leverSetting is where a scenario wants one replica's levers.
type leverSetting struct {
	Paused bool
	Delay  time.Duration
}

func (l leverSetting) words() string {
	switch {
	case l.Paused && l.Delay > 0:
		return "replay paused, apply delay " + seconds(l.Delay)
	case l.Paused:
		return "replay paused"
	case l.Delay > 0:
		return "apply delay " + seconds(l.Delay) + ", replaying"
	}
	return "replaying, no apply delay"
}

// scenario is one card on the lab: a strategy and a lever setting per
// replica, set up in one click.
type scenario struct {
	ID       string
	Number   int
	Title    string
	Strategy dbrouter.Strategy
	// lever is the setting for the i-th replica (0 is replica1).
	lever func(i int) leverSetting
}

// scenarioDelay is scenario 2's apply delay on the first replica: longer
// than timed's window, short enough to watch.
const scenarioDelay = 5 * time.Second

var scenarios = []scenario{
	{ID: "lightsaber", Number: 1, Title: "Where is my lightsaber?", Strategy: dbrouter.Random,
		lever: func(int) leverSetting { return leverSetting{Paused: true} }},
	{ID: "comments", Number: 2, Title: "Comments out of order", Strategy: dbrouter.Random,
		lever: func(i int) leverSetting {
			if i == 0 {
				return leverSetting{Delay: scenarioDelay}
			}
			return leverSetting{}
		}},
}

// scenarioView is a scenario as its card shows it.
type scenarioView struct {
	ID, Title string
	Number    int
	Sets      string // what "Set up" does, in words
}

func (s *Server) scenarioViews() []scenarioView {
	var views []scenarioView
	for _, sc := range scenarios {
		parts := []string{"strategy " + sc.Strategy.String()}
		for i, n := range s.router.Replicas() {
			parts = append(parts, n.Name+": "+sc.lever(i).words())
		}
		views = append(views, scenarioView{ID: sc.ID, Title: sc.Title, Number: sc.Number, Sets: strings.Join(parts, "; ")})
	}
	return views
}

// setLevers moves every replica's levers to want(i): a stopped replica is
// started first, then the apply delay set, then replay paused or resumed.
// It goes on past a replica that fails and returns what it did and what
// failed, in words.
func (s *Server) setLevers(ctx context.Context, want func(i int) leverSetting) (done, failed []string) {
	health := s.router.Health()
	for i, n := range s.router.Replicas() {
		l := want(i)
		var before dbrouter.Health
		if i+1 < len(health) {
			before = health[i+1]
		}
		up := before.Up
		if err := s.setLever(ctx, n.Name, before, l); err != nil {
			s.log.WarnContext(ctx, "lever failed", "node", n.Name, "err", err)
			failed = append(failed, n.Name+": "+err.Error())
			continue
		}
		did := n.Name + " " + l.words()
		if !up && s.launcher != nil {
			did = n.Name + " started, " + l.words()
		}
		done = append(done, did)
	}
	return done, failed
}

func (s *Server) setLever(ctx context.Context, node string, before dbrouter.Health, l leverSetting) error {
	if !before.Up && s.launcher != nil {
		if err := s.launcher.Start(ctx, node); err != nil {
			return err
		}
	}
	if err := s.levers.SetDelay(ctx, node, l.Delay); err != nil {
		return err
	}
	if l.Paused {
		if err := s.levers.Pause(ctx, node); err != nil {
			return err
		}
	} else if err := s.levers.Resume(ctx, node); err != nil {
		return err
	}
	s.history.paused(node, l.Paused, before.Up && before.Paused, time.Now())
	return nil
}

// leverCommands says how to pull want's levers by hand, for an app that
// does not manage the cluster.
func (s *Server) leverCommands(want func(i int) leverSetting) string {
	var cmds []string
	for i, n := range s.router.Replicas() {
		l := want(i)
		cmds = append(cmds, fmt.Sprintf("quest cluster delay %s %dms", n.Name, l.Delay.Milliseconds()))
		if l.Paused {
			cmds = append(cmds, "quest cluster pause "+n.Name)
		} else {
			cmds = append(cmds, "quest cluster resume "+n.Name)
		}
	}
	return strings.Join(cmds, "; ")
}

// handleLabSetup sets a scenario up: the strategy and every replica's
// levers, in one click.
func (s *Server) handleLabSetup(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "scenario")
	var sc *scenario
	for i := range scenarios {
		if scenarios[i].ID == id {
			sc = &scenarios[i]
		}
	}
	if sc == nil {
		s.serverError(w, r, problem(http.StatusNotFound, "There is no scenario named "+strconv.Quote(id)+"."))
		return
	}
	ctx := r.Context()
	if s.levers != nil {
		// The cluster first: refused while a switchover runs, the
		// scenario changes nothing, the strategy included.
		release, err := s.takeCluster(ctx)
		if err != nil {
			s.serverError(w, r, err)
			return
		}
		defer release()
	}
	s.router.SetStrategy(sc.Strategy)
	msg := fmt.Sprintf("Scenario %d (%s) is set up: strategy %s", sc.Number, sc.Title, sc.Strategy)
	if s.levers == nil {
		msg += ". This app instance has no levers (it does not manage the local cluster and has no --lever-url), so it pulled none: pull them yourself (" + s.leverCommands(sc.lever) + ")"
	} else {
		done, failed := s.setLevers(ctx, sc.lever)
		if len(failed) > 0 {
			s.serverError(w, r, problem(http.StatusConflict, fmt.Sprintf("Scenario %d is only partly set up. The strategy is %s; %s. These levers did not move: %s.",
				sc.Number, sc.Strategy, orNone(done), strings.Join(failed, "; "))))
			return
		}
		msg += "; " + strings.Join(done, "; ")
	}
	msg += "."
	if s.allowOwn.Load() {
		msg += ` Attendees who chose a strategy for their own session keep it: they pick "use the lab's strategy" to follow along.`
	}
	s.log.InfoContext(ctx, "lab scenario set up", "scenario", sc.ID, "by", currentUser(r).Username)
	s.flash(w, msg)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

func orNone(done []string) string {
	if len(done) == 0 {
		return "no lever moved"
	}
	return strings.Join(done, "; ")
}

// handleLabReset puts the lab back as it started: every lever off, the
// strategy at start, per-session strategies off, the demo data as seeded.
func (s *Server) handleLabReset(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var said, failed []string
	if s.levers == nil {
		said = append(said, "no lever touched (this app instance has no levers: no local cluster, no --lever-url)")
	} else {
		release, err := s.takeCluster(ctx)
		if err != nil {
			s.serverError(w, r, err)
			return
		}
		done, bad := s.setLevers(ctx, func(int) leverSetting { return leverSetting{} })
		release()
		if len(done) > 0 {
			said = append(said, strings.Join(done, "; "))
		}
		failed = append(failed, bad...)
	}
	s.router.SetStrategy(s.defaultStrategy)
	s.allowOwn.Store(false)
	said = append(said, "strategy back to "+s.defaultStrategy.String(), "per-session strategies off")
	dataErr := s.store.ResetDemo(ctx)
	if dataErr == nil {
		said = append(said, "demo data as seeded (every wishlist emptied, the forum back to the article's thread; accounts kept)")
	} else {
		s.log.WarnContext(ctx, "reset demo data", "err", dataErr)
		failed = append(failed, "the demo data: "+dataErr.Error())
	}
	s.log.InfoContext(ctx, "lab reset", "failed", len(failed), "by", currentUser(r).Username)
	if len(failed) > 0 {
		status := http.StatusConflict
		if dataErr != nil {
			status, _ = statusOf(dataErr)
		}
		s.serverError(w, r, problem(status, "The lab is only partly reset: "+strings.Join(said, "; ")+". Not reset: "+strings.Join(failed, "; ")+"."))
		return
	}
	s.flash(w, "Lab reset: "+strings.Join(said, "; ")+".")
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

// handleLabAllowOwn lets attendees choose a strategy for their own
// session, or stops them.
func (s *Server) handleLabAllowOwn(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	var msg string
	switch f.Get("allow") {
	case "on":
		s.allowOwn.Store(true)
		msg = "Each attendee may now choose a strategy for their own session, here on /lab."
	case "off":
		s.allowOwn.Store(false)
		msg = "Per-session strategies are off: everyone's reads use the lab's strategy, " + s.router.Strategy().String() + "."
	default:
		s.serverError(w, r, problem(http.StatusBadRequest, "Per-session strategies are either on or off."))
		return
	}
	s.log.InfoContext(r.Context(), "per-session strategies", "allow", f.Get("allow"), "by", currentUser(r).Username)
	s.flash(w, msg)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

// labsChoice is the per-session form's value for "use the lab's strategy".
const labsChoice = "lab"

// handleLabOwnStrategy stores the strategy a signed-in user chose for
// their own session, when the lab allows it; "lab" removes the choice.
func (s *Server) handleLabOwnStrategy(w http.ResponseWriter, r *http.Request) {
	if !s.allowOwn.Load() {
		s.serverError(w, r, problem(http.StatusForbidden, "Choosing a strategy for your own session is off right now: an admin can allow it on /lab."))
		return
	}
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	ctx := r.Context()
	name := f.Get("strategy")
	if name == labsChoice {
		s.sessions.Remove(ctx, keyStrategy)
		s.flash(w, "Your reads use the lab's strategy again: "+s.router.Strategy().String()+".")
		http.Redirect(w, r, "/lab", http.StatusSeeOther)
		return
	}
	st, err := dbrouter.ParseStrategy(name)
	if err != nil {
		s.serverError(w, r, problem(http.StatusBadRequest, err.Error()+`, or "lab" for the lab's strategy`))
		return
	}
	s.sessions.Put(ctx, keyStrategy, st.String())
	s.flash(w, "Your session now reads with "+st.String()+" — yours only: everyone else's pages are unaffected.")
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}
