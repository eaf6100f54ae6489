package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"quest/internal/dbrouter"
)

// The lab's failover side, for a Patroni cluster the app manages: who is
// the primary and what Patroni says of each member, the switchover, fail
// and start levers, and what they are doing.

// HALevers are the failover levers of a Patroni cluster the app manages;
// *cluster.Cluster is one when its HA() says so. Switchover and Start take
// seconds; the server runs them one at a time, never beside another lever
// on the same cluster (see clusterOps).
type HALevers interface {
	// Switchover hands the primary's role to the member to, through
	// Patroni, and returns once every running member follows it.
	Switchover(ctx context.Context, to string) (from, cand string, err error)
	// Fail crashes a member as a host crash would: SIGKILL of its Patroni
	// and PostgreSQL. It returns the member's name.
	Fail(ctx context.Context, name string) (string, error)
	// Start starts a member's Patroni and returns once it runs again.
	Start(ctx context.Context, name string) error
	// Refresh asks Patroni who leads now, so that the levers' handle knows
	// which members are replicas after a failover it did not cause.
	Refresh(ctx context.Context) error
}

// haTimeout bounds a failover lever: a switchover waits up to a minute for
// every member to follow the new primary, and a start as long for the
// member to stream again.
const haTimeout = 2 * time.Minute

// haWait is how long the request that pulled a failover lever waits for it
// before the page says it is in progress: below the HTTP server's write
// timeout (30 s), above a switchover's usual 5–7 s.
const haWait = 20 * time.Second

// leverWait is how long a replica lever waits for another one to finish.
const leverWait = 20 * time.Second

// haOp is a failover lever pulled from the lab: the one running, or the
// last one.
type haOp struct {
	Action string // "switchover", "fail", "start"
	Member string // the candidate, the crashed member, the started one
	From   string // the primary when it was pulled ("" for none)
	Began  time.Time
	Ended  time.Time // zero while it runs
	Said   string    // what happened, in words, once it ended well
	Err    error
}

// running reports whether the lever is still being pulled.
func (o haOp) running() bool { return !o.Began.IsZero() && o.Ended.IsZero() }

// what names the lever in words: "the switchover from node1 to node2".
func (o haOp) what() string {
	switch o.Action {
	case "switchover":
		if o.From == "" {
			return "the switchover to " + o.Member
		}
		return "the switchover from " + o.From + " to " + o.Member
	case "fail":
		return "the crash of " + o.Member
	}
	return "the start of " + o.Member
}

// haOpView is a failover lever as the lab shows it to everyone: its words
// carry no error detail (admins get that on the page and in the log).
type haOpView struct {
	Text    string `json:"text"`
	Running bool   `json:"running"`
	Failed  bool   `json:"failed"`
}

// haOpShown is how long the lab keeps saying what the last failover lever
// did.
const haOpShown = 10 * time.Minute

func (o haOp) view(now time.Time) haOpView {
	switch {
	case o.Began.IsZero() || (!o.running() && now.Sub(o.Ended) > haOpShown):
		return haOpView{}
	case o.running():
		return haOpView{Running: true, Text: fmt.Sprintf("%s is in progress (started %s ago).", capitalize(o.what()), roughly(now.Sub(o.Began)))}
	case o.Err != nil:
		return haOpView{Failed: true, Text: fmt.Sprintf("%s — %s failed.", o.Ended.Format("15:04:05"), capitalize(o.what()))}
	}
	return haOpView{Text: o.Ended.Format("15:04:05") + " — " + o.Said}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// clusterOps lets one lever at a time act on the cluster the app manages.
// The cluster handle is not safe for use while a switchover or a start
// rewrites its roles, and two levers racing on one cluster teach nobody
// anything. A failover lever holds the token for seconds, in the
// background; a replica lever waits a little for it, or is refused while a
// failover lever runs. No mutex is held while a lever is pulled.
type clusterOps struct {
	token chan struct{} // holds one value while a lever acts

	mu   sync.Mutex
	last *haOp // the failover lever running, or the last one; nil before the first
}

func (o *clusterOps) init() { o.token = make(chan struct{}, 1) }

// errBusy is a lever refused because another is being pulled.
func (o *clusterOps) errBusy() error {
	if last := o.current(); last.running() {
		return problem(http.StatusConflict, fmt.Sprintf("%s is in progress (started %s ago): try again once it is done — the lab says when.",
			capitalize(last.what()), roughly(time.Since(last.Began))))
	}
	return problem(http.StatusConflict, "Another lever is being pulled on the cluster right now: try again in a moment.")
}

// acquire waits for the cluster, for a replica lever: at once refused
// while a failover lever runs, else after at most leverWait. The caller
// calls release.
func (o *clusterOps) acquire(ctx context.Context) (release func(), err error) {
	if o.current().running() {
		return nil, o.errBusy()
	}
	t := time.NewTimer(leverWait)
	defer t.Stop()
	select {
	case o.token <- struct{}{}:
		return func() { <-o.token }, nil
	case <-t.C:
		return nil, o.errBusy()
	case <-ctx.Done():
		return nil, problem(http.StatusConflict, "The lever was not pulled: the request ended while another lever was being pulled.")
	}
}

// begin takes the cluster for a failover lever, without waiting, and
// records it as running. The lever's goroutine calls finish with the
// returned handle; done is closed then.
func (o *clusterOps) begin(op haOp) (h *haOp, done chan struct{}, ok bool) {
	select {
	case o.token <- struct{}{}:
	default:
		return nil, nil, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	h = &op
	o.last = h
	return h, make(chan struct{}), true
}

// finish records how the failover lever h ended, frees the cluster, then
// closes done.
func (o *clusterOps) finish(h *haOp, done chan struct{}, said string, err error, at time.Time) {
	o.mu.Lock()
	h.Said, h.Err, h.Ended = said, err, at
	o.mu.Unlock()
	<-o.token
	close(done)
}

// result returns failover lever h as it stands.
func (o *clusterOps) result(h *haOp) haOp {
	o.mu.Lock()
	defer o.mu.Unlock()
	return *h
}

// current returns the failover lever running, or the last one; the zero
// haOp before the first.
func (o *clusterOps) current() haOp {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil {
		return haOp{}
	}
	return *o.last
}

// switchover reports whether a switchover runs or ended within the last
// half minute: a change of primary then is its doing, not a failover.
func (o *clusterOps) switchover(now time.Time) bool {
	op := o.current()
	return op.Action == "switchover" && (op.running() || now.Sub(op.Ended) < 30*time.Second)
}

// patroniCache is the last answer of Config.PatroniMembers.
type patroniCache struct {
	members atomic.Pointer[map[string]dbrouter.Patroni]
}

func (c *patroniCache) get(member string) (dbrouter.Patroni, bool) {
	m := c.members.Load()
	if m == nil {
		return dbrouter.Patroni{}, false
	}
	p, ok := (*m)[member]
	return p, ok
}

// askPatroni asks Patroni about every member once (the server does so
// every second), so that pages answer from memory.
func (s *Server) askPatroni(ctx context.Context, ask func(context.Context) (map[string]dbrouter.Patroni, error)) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	members, err := ask(actx)
	cancel()
	if members != nil {
		s.patroni.members.Store(&members)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Debug("ask Patroni", "err", err)
	}
}

// patroniOf is what Patroni says of a node: the router's own discovery
// first, which works for any deployment; else what the cluster the app
// manages says.
func (s *Server) patroniOf(h dbrouter.Health) dbrouter.Patroni {
	if h.Patroni.Listed {
		return h.Patroni
	}
	if p, ok := s.patroni.get(h.Member); ok {
		return p
	}
	return h.Patroni
}

// patroniKnown reports whether anything tells the pages what Patroni says:
// the router's discovery, or the cluster the app manages. Without, the
// pages leave Patroni out.
func (s *Server) patroniKnown(health []dbrouter.Health) bool {
	if s.patroni.members.Load() != nil {
		return true
	}
	for _, h := range health {
		if h.Patroni.Listed {
			return true
		}
	}
	return false
}

// patroniWords says what Patroni says of a member: "leader, running",
// "sync standby, streaming", "not listed".
func patroniWords(p dbrouter.Patroni) string {
	if !p.Listed {
		return "not listed"
	}
	role := strings.ReplaceAll(p.Role, "_", " ")
	if role == "" {
		role = "no role"
	}
	if p.State == "" {
		return role
	}
	return role + ", " + p.State
}

// routerRole is a node's role as the router's last poll saw it.
func routerRole(h dbrouter.Health) string {
	switch {
	case !h.Up:
		return "unreachable"
	case h.InRecovery:
		return "replica"
	}
	return "primary"
}

// currentPrimary is the member the router's last poll found taking
// writes, "" while none does.
func currentPrimary(health []dbrouter.Health) string {
	if len(health) > 0 && health[0].Up && !health[0].InRecovery {
		return health[0].Member
	}
	return ""
}

// primaryMark labels the live chart's sample where the primary changed:
// cur is this sample's primary ("" for none), prev the previous sample's,
// last the last primary there was; "" when nothing changed.
func primaryMark(prev, last, cur string, switchover bool) string {
	switch {
	case cur == prev:
		return ""
	case cur == "":
		return "no primary"
	case last == "":
		return cur + " is the primary"
	case last == cur:
		return cur + " is the primary again"
	case switchover:
		return "switchover: " + last + " → " + cur
	}
	return "failover: " + last + " → " + cur
}

// memberNames are the members the router knows, and any other that
// Patroni lists, sorted.
func (s *Server) memberNames(health []dbrouter.Health) []string {
	var names []string
	for _, h := range health {
		names = append(names, h.Member)
	}
	if m := s.patroni.members.Load(); m != nil {
		for name := range *m {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// handleLabMember pulls a failover lever: switch over to a member, crash
// (fail) a member, or start one. It waits up to haWait for the lever; a
// longer one goes on in the background, and the lab says when it is done.
func (s *Server) handleLabMember(w http.ResponseWriter, r *http.Request) {
	if s.ha == nil {
		s.serverError(w, r, problem(http.StatusNotFound, "This app instance does not manage a Patroni cluster (quest cluster up --ha), so it has no failover levers."))
		return
	}
	member, action := chi.URLParam(r, "member"), chi.URLParam(r, "action")
	switch action {
	case "switchover", "fail", "start":
	default:
		s.serverError(w, r, problem(http.StatusNotFound, "Unknown lever "+strconv.Quote(action)+": a member is switched over to, failed or started."))
		return
	}
	health := s.router.Health()
	if names := s.memberNames(health); !slices.Contains(names, member) {
		s.serverError(w, r, problem(http.StatusNotFound, fmt.Sprintf("There is no member named %s; this cluster has %s.", strconv.Quote(member), strings.Join(names, ", "))))
		return
	}
	if _, err := parseForm(r); err != nil {
		s.serverError(w, r, err)
		return
	}
	if s.ops.current().running() {
		// Said first: while a switchover runs there is often no primary,
		// and that is not what the admin needs to hear.
		s.serverError(w, r, s.ops.errBusy())
		return
	}
	primary := currentPrimary(health)
	if action == "switchover" {
		switch primary {
		case "":
			s.serverError(w, r, problem(http.StatusConflict, "No member is the primary right now (a failover under way?): a switchover hands the primary's role over, so wait until one leads."))
			return
		case member:
			s.serverError(w, r, problem(http.StatusConflict, member+" is the primary already: switch over to a replica."))
			return
		}
	}
	op := haOp{Action: action, Member: member, From: primary, Began: time.Now()}
	h, done, ok := s.ops.begin(op)
	if !ok {
		s.serverError(w, r, s.ops.errBusy())
		return
	}
	ctx := r.Context()
	s.log.InfoContext(ctx, "failover lever pulled", "action", action, "member", member, "primary", primary, "by", currentUser(r).Username)
	s.background.Add(1)
	go s.runHA(h, done)

	t := time.NewTimer(haWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.flash(w, capitalize(op.what())+" is in progress: the lab says when it is done.")
		http.Redirect(w, r, "/lab", http.StatusSeeOther)
		return
	case <-ctx.Done():
		return // the browser left; the lever goes on, and the lab says how it ended
	}
	res := s.ops.result(h)
	if res.Err != nil {
		s.serverError(w, r, problem(http.StatusConflict, fmt.Sprintf("%s did not work: %v", capitalize(op.what()), res.Err)))
		return
	}
	s.flash(w, res.Said)
	http.Redirect(w, r, "/lab", http.StatusSeeOther)
}

// runHA pulls a failover lever in the background, bounded by haTimeout and
// by the server's Close, not by the request: a switchover stopped halfway
// because a browser left would leave the cluster to sort itself out.
func (s *Server) runHA(h *haOp, done chan struct{}) {
	defer s.background.Done()
	op := s.ops.result(h)
	ctx, cancel := context.WithTimeout(s.backgroundCtx, haTimeout)
	defer cancel()
	var said string
	var err error
	defer func() {
		// A panic in the cluster's code must not take the app down, nor
		// leave the cluster taken for ever.
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error: %v", p)
		}
		if err != nil {
			s.log.Warn("failover lever failed", "action", op.Action, "member", op.Member, "err", err)
		} else {
			s.log.Info("failover lever done", "action", op.Action, "member", op.Member, "took", time.Since(op.Began).Round(100*time.Millisecond))
		}
		s.ops.finish(h, done, said, err, time.Now())
	}()
	switch op.Action {
	case "switchover":
		var from, to string
		if from, to, err = s.ha.Switchover(ctx, op.Member); err == nil {
			said = fmt.Sprintf("Switchover from %s to %s done in %s: %s is the primary, %s follows it as a replica.",
				from, to, tookSince(op.Began), to, from)
		}
	case "fail":
		var name string
		if name, err = s.ha.Fail(ctx, op.Member); err == nil {
			if name == op.From {
				said = name + " crashed (SIGKILL of its Patroni and PostgreSQL); Patroni will promote a replica in about 10 s, once the leader key expires. Start brings " + name + " back as a replica."
			} else {
				said = name + " crashed (SIGKILL of its Patroni and PostgreSQL); it was not the primary, so the primary stays. Start brings it back."
			}
		}
	case "start":
		if err = s.ha.Start(ctx, op.Member); err == nil {
			said = fmt.Sprintf("%s started in %s: it runs again — as a replica when another member leads (Patroni rewinds a crashed primary first).", op.Member, tookSince(op.Began))
		}
	default:
		err = errors.New("unknown lever " + op.Action)
	}
}

// tookSince says how long since began, to the tenth of a second: "5.2 s".
func tookSince(began time.Time) string {
	return fmt.Sprintf("%.1f s", time.Since(began).Seconds())
}

// takeCluster takes the cluster for replica levers (see clusterOps) and,
// on a Patroni cluster, tells the levers' handle who leads now: a failover
// it did not cause (Patroni's own, or one from the command line) would
// leave it pausing a "replica" that leads. Without Patroni's answer the
// levers' own checks still refuse the primary. The caller calls release.
func (s *Server) takeCluster(ctx context.Context) (release func(), err error) {
	release, err = s.ops.acquire(ctx)
	if err != nil {
		return nil, err
	}
	if s.ha != nil {
		if err := s.ha.Refresh(ctx); err != nil {
			s.log.WarnContext(ctx, "ask Patroni who leads before a lever", "err", err)
		}
	}
	return release, nil
}
