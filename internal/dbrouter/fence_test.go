package dbrouter

import (
	"errors"
	"testing"
	"time"
)

// fenceRouter is an offline router over a leader and two replicas whose
// history is timeline 1 of cluster 7, and a function that records one
// round of polls (one Health per node, in configuration order).
func fenceRouter(t *testing.T) (*Router, func(states ...Health) *snapshot) {
	r := offlineRouter("replica1", "replica2")
	r.history.Store(&history{systemID: 7, timeline: 1, ends: map[uint32]uint64{}, guessed: map[uint32]bool{}})
	tr := r.tracker
	set := func(states ...Health) *snapshot {
		t.Helper()
		tr.mu.Lock()
		defer tr.mu.Unlock()
		for i, h := range states {
			n := r.configured(i)
			h.Name, h.Member = n.Name, n.Name
			tr.members[i].setHealth(h)
		}
		tr.choosePrimary()
		tr.publish(time.Now())
		return r.snap.Load()
	}
	return r, set
}

func primaryOn(tli uint32, pos uint64) Health { return Health{Up: true, Timeline: tli, Position: pos} }
func standbyOn(tli uint32, pos uint64) Health {
	return Health{Up: true, InRecovery: true, Timeline: tli, Position: pos}
}

// follow moves r's history onto a newer timeline as followHistory does,
// with the switch point of the one before.
func follow(r *Router, tli uint32, end uint64) {
	cur := r.history.Load()
	h := &history{systemID: 7, timeline: tli, ends: map[uint32]uint64{}, guessed: map[uint32]bool{}, abandoned: cur.abandoned}
	for k, v := range cur.ends {
		h.ends[k] = v
	}
	h.ends[tli-1] = end
	r.history.Store(h)
}

// TestFenceKeepsWritesOffASupersededPrimary plays the split brain of a
// restarted old primary: replica1 promoted onto timeline 2, the old leader
// back as a primary on timeline 1, then replica1 away for a moment. The
// old leader must take no write, and no read meant for the primary.
func TestFenceKeepsWritesOffASupersededPrimary(t *testing.T) {
	r, set := fenceRouter(t)
	leader, replica1 := r.configured(0), r.configured(1)
	if snap := set(primaryOn(1, 100), standbyOn(1, 100), standbyOn(1, 100)); r.fenced(snap, nil) != nil || snap.splitBrain != "" {
		t.Fatalf("healthy cluster: fenced %v, split brain %q", r.fenced(snap, nil), snap.splitBrain)
	}
	// The leader crashes; replica1 is promoted.
	follow(r, 2, 150)
	snap := set(Health{}, primaryOn(2, 200), standbyOn(1, 140))
	if snap.members[0] != replica1 || r.fenced(snap, nil) != nil {
		t.Fatalf("after the promotion: slot 0 %s, fenced %v", snap.members[0].Name, r.fenced(snap, nil))
	}
	// The old leader comes back as a primary on timeline 1.
	snap = set(primaryOn(1, 160), primaryOn(2, 300), standbyOn(1, 140))
	if snap.members[0] != replica1 || r.fenced(snap, nil) != nil {
		t.Fatalf("two primaries: writes go to %s (fenced %v), want replica1", snap.members[0].Name, r.fenced(snap, nil))
	}
	if s := snap.nodes[snap.slotOf(leader)].Status; s != Superseded || snap.splitBrain == "" {
		t.Fatalf("two primaries: the old leader is %v, split brain %q", s, snap.splitBrain)
	}
	// replica1 stops answering for a poll: still no write on timeline 1.
	snap = set(primaryOn(1, 170), Health{Err: "blip"}, standbyOn(1, 140))
	err := r.fenced(snap, nil)
	if !errors.Is(err, ErrSplitBrain) || !errors.Is(err, ErrReadOnly) {
		t.Fatalf("new primary away: fenced %v, want a split brain refusal", err)
	}
	if snap.members[0] != replica1 || !snap.primaryDown {
		t.Fatalf("new primary away: slot 0 is %s (down %v), want replica1, down", snap.members[0].Name, snap.primaryDown)
	}
	var p plan
	r.decide(&State{}, Shared, Primary, time.Now(), snap, &p)
	for _, i := range p.nodes[:p.n] {
		if snap.members[i] == leader {
			t.Fatalf("a read meant for the primary may go to the superseded leader: plan %v", p.nodes[:p.n])
		}
	}
	// replica1 is back: writes go on there.
	if snap = set(primaryOn(1, 170), primaryOn(2, 310), standbyOn(1, 140)); r.fenced(snap, nil) != nil || snap.members[0] != replica1 {
		t.Fatalf("new primary back: slot 0 %s, fenced %v", snap.members[0].Name, r.fenced(snap, nil))
	}
	// The operator rewinds the old leader into a standby of replica1.
	snap = set(standbyOn(2, 310), primaryOn(2, 320), standbyOn(2, 320))
	if snap.splitBrain != "" || r.fenced(snap, nil) != nil {
		t.Fatalf("after the rewind: split brain %q, fenced %v", snap.splitBrain, r.fenced(snap, nil))
	}
	if got := r.history.Load().timeline; got != 2 {
		t.Fatalf("history on timeline %d, want 2", got)
	}
}

// TestFenceStepsBackWhenTheNewerPrimaryIsDemoted plays a timeline
// regression (Patroni hands the leader key back to a primary that woke
// from a hang, and demotes the one promoted meanwhile; or a replica
// promoted by mistake is rebuilt): the router writes to the old primary
// again once nothing claims the newer timeline, and sessions that wrote
// on it past the fork are told their change is lost — also after the
// timeline's number is used again by a later promotion.
func TestFenceStepsBackWhenTheNewerPrimaryIsDemoted(t *testing.T) {
	r, set := fenceRouter(t)
	leader := r.configured(0)
	set(primaryOn(1, 100), standbyOn(1, 100), standbyOn(1, 100))
	follow(r, 2, 150)
	snap := set(primaryOn(1, 160), primaryOn(2, 300), standbyOn(1, 140))
	if snap.members[0] != r.configured(1) {
		t.Fatalf("writes go to %s, want replica1 on timeline 2", snap.members[0].Name)
	}
	// replica1 is demoted and follows the old leader again.
	snap = set(primaryOn(1, 400), standbyOn(1, 390), standbyOn(1, 390))
	if snap.members[0] != leader || r.fenced(snap, nil) != nil || snap.splitBrain != "" {
		t.Fatalf("after the demotion: slot 0 %s, fenced %v, split brain %q", snap.members[0].Name, r.fenced(snap, nil), snap.splitBrain)
	}
	h := r.history.Load()
	if h.timeline != 1 || h.abandoned[2].fork != 150 {
		t.Fatalf("history %d, abandoned %v; want back on 1 with timeline 2 abandoned at its fork 150", h.timeline, h.abandoned)
	}
	for i := 1; i < snap.n; i++ {
		if !snap.usable(i) {
			t.Fatalf("replica %s is %v after the regression, want usable", snap.members[i].Name, snap.nodes[i].Status)
		}
	}
	resolve := func(tok Token) (Token, bool) { return r.resolve(&State{Token: tok}) }
	if tok, lost := resolve(Token{7, 2, 120}); lost || tok != (Token{7, 1, 120}) {
		t.Fatalf("a write before the fork: %+v lost %v, want kept on timeline 1", tok, lost)
	}
	if tok, lost := resolve(Token{7, 2, 250}); !lost || tok.LSN != UnknownLSN {
		t.Fatalf("a write on the abandoned timeline: %+v lost %v, want lost", tok, lost)
	}
	// A later promotion gets timeline 2 again, forking at 500.
	follow(r, 2, 500)
	if tok, lost := resolve(Token{7, 2, 250}); !lost {
		t.Fatalf("the abandoned write after the id was used again: %+v lost %v, want lost", tok, lost)
	}
	if tok, lost := resolve(Token{7, 2, 600}); lost || tok.LSN != UnknownLSN {
		t.Fatalf("a position either timeline 2 may hold: %+v lost %v, want only the primary to vouch", tok, lost)
	}
	h = r.history.Load()
	a := h.abandoned[2]
	a.top = 300
	h.abandoned = map[uint32]abandonedTimeline{2: a}
	if tok, lost := resolve(Token{7, 2, 600}); lost || tok != (Token{7, 2, 600}) {
		t.Fatalf("a position past all the abandoned timeline reached: %+v lost %v, want it as it is", tok, lost)
	}
}

// TestWriteRefusedForASessionOnANewerTimeline: a session that has seen
// timeline 3 (on another app instance) writes nowhere older.
func TestWriteRefusedForASessionOnANewerTimeline(t *testing.T) {
	r, set := fenceRouter(t)
	snap := set(primaryOn(1, 100), standbyOn(1, 100), standbyOn(1, 100))
	if err := r.fenced(snap, &State{Token: Token{7, 3, 10}}); !errors.Is(err, ErrSplitBrain) {
		t.Fatalf("token on timeline 3, primary on 1: %v, want a split brain refusal", err)
	}
	if err := r.fenced(snap, &State{Token: Token{8, 3, 10}}); err != nil {
		t.Fatalf("a token of another cluster: %v, want no refusal", err)
	}
}

func TestOffHistory(t *testing.T) {
	h := &history{systemID: 7, timeline: 3, ends: map[uint32]uint64{1: 100, 2: 200}, guessed: map[uint32]bool{2: true}}
	for _, c := range []struct {
		name string
		n    Health
		want Status
	}{
		{"on the primary's timeline", Health{Timeline: 3, Position: 900}, Usable},
		{"below the fork", Health{Timeline: 1, Position: 90}, Usable},
		{"past a known fork", Health{Timeline: 1, Position: 150}, Diverged},
		{"past a known fork, timeline from a restartpoint", Health{Timeline: 1, Position: 150, TimelineGuessed: true}, Unverified},
		{"past a guessed fork", Health{Timeline: 2, Position: 250}, Unverified},
		{"below a guessed fork", Health{Timeline: 2, Position: 150}, Usable},
	} {
		if got := offHistory(h, &c.n); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if got := offHistory(h, &Health{Timeline: 4, Position: 10}); got != Unverified {
		t.Errorf("on a newer timeline: %v, want unverified", got)
	}
	h.abandoned = map[uint32]abandonedTimeline{4: {fork: 5}}
	if got := offHistory(h, &Health{Timeline: 4, Position: 10}); got != Diverged {
		t.Errorf("on a timeline the router abandoned: %v, want diverged", got)
	}
	if got := offHistory(h, &Health{Timeline: 3, Position: 10, TimelineGuessed: true}); got != Unverified {
		t.Errorf("on the primary's timeline by its restartpoint, past an abandoned fork: %v, want unverified", got)
	}
	if got := offHistory(h, &Health{Timeline: 3, Position: 4, TimelineGuessed: true}); got != Usable {
		t.Errorf("on the primary's timeline by its restartpoint, before an abandoned fork: %v, want usable", got)
	}
	h.ends = map[uint32]uint64{}
	if got := offHistory(h, &Health{Timeline: 2, Position: 10}); got != Unverified {
		t.Errorf("a router that knows no fork: %v, want unverified", got)
	}
}
