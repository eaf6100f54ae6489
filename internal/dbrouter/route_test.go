package dbrouter

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"
)

// offlineRouter builds a router over named replicas without any database:
// enough for the routing decision, which reads only memory.
func offlineRouter(replicas ...string) *Router {
	r := &Router{timedDelay: 2 * time.Second, rand: rand.New(rand.NewPCG(1, 2)), log: slog.New(slog.DiscardHandler)}
	tr := &tracker{r: r, maxBytes: 64 << 20, maxLag: time.Minute}
	r.tracker = tr
	for i, name := range append([]string{"primary"}, replicas...) {
		n := &Node{Name: name, seed: nodeSeed(name), counts: r.counts.of(name), probe: &probe{kick: make(chan struct{}, 1)}}
		tr.members = append(tr.members, &member{node: n, health: Health{Name: name, Member: name, Up: true, InRecovery: i > 0}})
	}
	tr.primary = tr.members[0]
	tr.publish(time.Now())
	return r
}

// configured returns the i-th node in configuration order.
func (r *Router) configured(i int) *Node { return r.tracker.members[i].node }

func stickyNode(r *Router, session uint64) string {
	var p plan
	snap := r.snap.Load()
	r.decide(&State{Session: session}, Shared, Sticky, time.Now(), snap, &p)
	return snap.members[p.nodes[0]].Name
}

func TestRendezvousSpreadsEvenly(t *testing.T) {
	r := offlineRouter("replica1", "replica2", "replica3")
	const sessions = 10000
	counts := map[string]int{}
	for s := uint64(1); s <= sessions; s++ {
		counts[stickyNode(r, s)]++
	}
	even := float64(sessions) / 3
	for _, name := range []string{"replica1", "replica2", "replica3"} {
		if got := float64(counts[name]); got < even*0.95 || got > even*1.05 {
			t.Errorf("%s got %v sessions, want within 5%% of %.0f (all: %v)", name, got, even, counts)
		}
	}
}

func TestRendezvousMovesOnlyTheRemovedShare(t *testing.T) {
	three := offlineRouter("replica1", "replica2", "replica3")
	two := offlineRouter("replica1", "replica2")
	moved := 0
	for s := uint64(1); s <= 10000; s++ {
		before, after := stickyNode(three, s), stickyNode(two, s)
		if before != "replica3" && before != after {
			t.Fatalf("session %d moved from %s to %s though %s stayed", s, before, after, before)
		}
		if before == "replica3" {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("replica3 had no sessions to move")
	}
}

func TestDownReplicaShareSpreadsOverTheRest(t *testing.T) {
	r := offlineRouter("replica1", "replica2", "replica3")
	snap := *r.snap.Load()
	snap.nodes[3].Status = Down
	r.snap.Store(&snap)
	counts := map[string]int{}
	for s := uint64(1); s <= 10000; s++ {
		var p plan
		r.decide(&State{Session: s}, Shared, Sticky, time.Now(), &snap, &p)
		counts[snap.members[p.nodes[0]].Name]++
	}
	if counts["replica3"] != 0 {
		t.Fatalf("the down replica still got %d sessions", counts["replica3"])
	}
	if a, b := counts["replica1"], counts["replica2"]; a < 4750 || b < 4750 {
		t.Fatalf("the down replica's share did not spread evenly: %v", counts)
	}
}

func TestDecideFollowsEachStrategy(t *testing.T) {
	r := offlineRouter("replica1", "replica2")
	now := time.Now()
	recent := &State{Session: 7, LastWrite: now.Add(-time.Second)}
	old := &State{Session: 7, LastWrite: now.Add(-time.Minute)}
	tests := []struct {
		s       Strategy
		intent  Intent
		st      *State
		primary bool
		reason  Reason
	}{
		{Primary, Shared, old, true, ReasonPrimaryOnly},
		{Random, Own, old, false, ReasonRandom},
		{PinOwn, Own, old, true, ReasonOwnData},
		{PinOwn, Shared, old, false, ReasonRandom},
		{Sticky, Own, old, true, ReasonOwnData},
		{Sticky, Shared, old, false, ReasonSticky},
		{Sticky, Shared, nil, false, ReasonSticky},
		{Timed, Shared, recent, true, ReasonRecentWrite},
		{Timed, Own, old, false, ReasonRandom},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.s, tt.intent), func(t *testing.T) {
			var p plan
			r.decide(tt.st, tt.intent, tt.s, now, r.snap.Load(), &p)
			if gotPrimary := p.nodes[0] == 0; gotPrimary != tt.primary || p.reason != tt.reason {
				t.Fatalf("first node %s reason %s; want primary=%v reason %s", r.snap.Load().members[p.nodes[0]].Name, p.reason, tt.primary, tt.reason)
			}
			if p.n != 3 {
				t.Fatalf("plan has %d nodes, want every node as a fallback", p.n)
			}
		})
	}
}

func TestDecideWithPrimaryDown(t *testing.T) {
	r := offlineRouter("replica1", "replica2")
	snap := *r.snap.Load()
	snap.nodes[0] = Health{Name: "primary", Status: Down}
	snap.primaryDown = true
	for _, s := range Strategies() {
		var p plan
		r.decide(&State{Session: 3}, Own, s, time.Now(), &snap, &p)
		if p.nodes[0] == 0 {
			t.Errorf("%s sends own data to the down primary", s)
		}
		for _, i := range p.nodes[:p.n] {
			if i == 0 {
				t.Errorf("%s keeps the down primary among its candidates", s)
			}
		}
	}
}

// BenchmarkDecide measures the routing decision with 4 replicas.
func BenchmarkDecide(b *testing.B) {
	r := offlineRouter("replica1", "replica2", "replica3", "replica4")
	st := &State{Session: 42, LastWrite: time.Now().Add(-time.Minute)}
	for _, s := range Strategies() {
		b.Run(s.String(), func(b *testing.B) {
			b.ReportAllocs()
			now := time.Now()
			var p plan
			for b.Loop() {
				r.decide(st, Shared, s, now, r.snap.Load(), &p)
			}
		})
	}
}

// BenchmarkDecideParallel decides random reads from every P at once, as
// concurrent requests do: the default generator takes no lock; a
// configured source (Config.Rand, seeded by tests) is shared under one.
func BenchmarkDecideParallel(b *testing.B) {
	for _, src := range []struct {
		name string
		rand *rand.Rand
	}{{"default", nil}, {"seeded", rand.New(rand.NewPCG(1, 2))}} {
		r := offlineRouter("replica1", "replica2", "replica3", "replica4")
		r.rand = src.rand
		b.Run(src.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				st := &State{Session: 42}
				now := time.Now()
				var p plan
				for pb.Next() {
					r.decide(st, Shared, Random, now, r.snap.Load(), &p)
				}
			})
		})
	}
}

func TestFormatLSN(t *testing.T) {
	for _, lsn := range []uint64{0, 1, 0xF, 0x406D670, 0x16_B374D848, 0xFFFFFFFF, 0xFFFFFFFF_FFFFFFFF} {
		if got, want := FormatLSN(lsn), fmt.Sprintf("%X/%X", lsn>>32, lsn&0xFFFFFFFF); got != want {
			t.Errorf("FormatLSN(%#x) = %q, want %q", lsn, got, want)
		}
	}
}
