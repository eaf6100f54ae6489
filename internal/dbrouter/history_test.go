package dbrouter

import (
	"testing"
	"time"
)

func TestParseTimelineHistory(t *testing.T) {
	file := "1\t0/3000060\tno recovery target specified\n\n2\t1/A0\tafter a switchover\n"
	got := parseTimelineHistory(file)
	if len(got) != 2 || got[1] != 0x3000060 || got[2] != 1<<32|0xA0 {
		t.Fatalf("parsed %v", got)
	}
}

// TestResolveAcrossTimelines: a token on an ancestor timeline is kept at
// or below the switch point, lost beyond it, left to the primary when the
// ancestor's switch point is unknown, and empty for another cluster.
func TestResolveAcrossTimelines(t *testing.T) {
	r := &Router{}
	r.history.Store(&history{systemID: 7, timeline: 3, ends: map[uint32]uint64{1: 100, 2: 200}})
	for _, tt := range []struct {
		tok  Token
		want Token
		lost bool
	}{
		{Token{7, 3, 250}, Token{7, 3, 250}, false},
		{Token{7, 2, 200}, Token{7, 3, 200}, false},
		{Token{7, 1, 50}, Token{7, 3, 50}, false},
		{Token{7, 2, 201}, Token{7, 3, UnknownLSN}, true},
		{Token{7, 1, UnknownLSN}, Token{7, 3, UnknownLSN}, true},
		{Token{7, 4, 10}, Token{}, false},
		{Token{8, 3, 10}, Token{}, false},
	} {
		got, lost := r.resolve(&State{Token: tt.tok})
		if got != tt.want || lost != tt.lost {
			t.Errorf("resolve(%+v) = %+v, %v; want %+v, %v", tt.tok, got, lost, tt.want, tt.lost)
		}
	}
	r.history.Store(&history{systemID: 7, timeline: 3, ends: map[uint32]uint64{2: 200}})
	if got, lost := r.resolve(&State{Token: Token{7, 1, 50}}); got != (Token{7, 3, UnknownLSN}) || lost {
		t.Errorf("a token of an ancestor of unknown end: %+v, %v; want UnknownLSN (the primary settles it), not lost", got, lost)
	}
}

// TestChoosePrimaryFollowsRoles: the primary is whichever node answers as
// not in recovery; of two, the higher timeline; a former primary back in
// recovery is a usable replica; with none, the last primary keeps slot 0
// and writes stop.
func TestPatroniHistory(t *testing.T) {
	// Patroni's /history: [timeline, switch LSN as a number, reason, time, new leader].
	body := `[[1, 50331808, "no recovery target specified", "2026-11-26T23:30:14+00:00", "node3"], [2, 4294967456, "", "", "node1"]]`
	got, err := parsePatroniHistory([]byte(body))
	if err != nil || len(got) != 2 || got[1] != 50331808 || got[2] != 1<<32|0xA0 {
		t.Fatalf("parsed %v, %v", got, err)
	}
	if _, err := parsePatroniHistory([]byte(`{"x":1}`)); err == nil {
		t.Fatal("a body that is not Patroni's history was accepted")
	}
	h := &history{systemID: 7, timeline: 3, ends: map[uint32]uint64{2: 150}, guessed: map[uint32]bool{2: true}}
	if !h.inexact() {
		t.Fatal("timeline 1 unknown, 2 guessed: inexact")
	}
	h = h.withEnds(got)
	if h.inexact() || h.ends[1] != 50331808 || h.ends[2] != 1<<32|0xA0 {
		t.Fatalf("after Patroni's history: ends %v guessed %v", h.ends, h.guessed)
	}
}

func TestChoosePrimaryFollowsRoles(t *testing.T) {
	r := offlineRouter("replica1", "replica2")
	tr := r.tracker
	set := func(states ...Health) *snapshot {
		t.Helper()
		for i, h := range states {
			n := r.configured(i)
			h.Name, h.Member = n.Name, n.Name
			tr.members[i].setHealth(h)
		}
		tr.choosePrimary()
		tr.publish(time.Now())
		return r.snap.Load()
	}
	primary := Health{Up: true, Timeline: 1, Position: 100}
	standby := Health{Up: true, InRecovery: true, Position: 100}
	snap := set(primary, standby, standby)
	if snap.members[0].Name != "primary" || snap.primaryDown {
		t.Fatalf("slot 0 is %s (down %v), want the configured primary", snap.members[0].Name, snap.primaryDown)
	}
	// The primary dies: nobody takes writes, the replicas keep reads.
	snap = set(Health{}, standby, standby)
	if !snap.primaryDown || snap.members[0].Name != "primary" || !snap.usable(1) || !snap.usable(2) {
		t.Fatalf("with no primary: slot 0 %s, down %v, replicas usable %v %v", snap.members[0].Name, snap.primaryDown, snap.usable(1), snap.usable(2))
	}
	// replica2 is promoted; the old primary comes back in recovery.
	snap = set(standby, standby, Health{Up: true, Timeline: 2, Position: 100})
	if snap.members[0].Name != "replica2" || snap.primaryDown || snap.nodes[0].Name != "primary" {
		t.Fatalf("after the promotion slot 0 is %s (%s), down %v", snap.members[0].Name, snap.nodes[0].Name, snap.primaryDown)
	}
	if snap.members[1] != r.configured(0) || !snap.usable(1) {
		t.Fatalf("the old primary back in recovery: slot 1 %s usable %v", snap.members[1].Name, snap.usable(1))
	}
	// Split brain: the configured primary takes writes on timeline 1 when
	// replica2 is promoted onto timeline 2; the higher timeline wins over
	// the incumbent.
	if snap = set(primary, standby, standby); snap.members[0] != r.configured(0) {
		t.Fatalf("slot 0 is %s, want the configured primary back", snap.members[0].Name)
	}
	snap = set(primary, standby, Health{Up: true, Timeline: 2, Position: 100})
	if snap.members[0].Name != "replica2" {
		t.Fatalf("split brain: writes go to %s, want the higher timeline's replica2", snap.members[0].Name)
	}
	if snap.usable(snap.slotOf(r.configured(0))) {
		t.Fatal("split brain: the other primary gets reads")
	}
}
