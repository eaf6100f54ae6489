package dbrouter_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

func TestBadPatroniURLIsRefused(t *testing.T) {
	for _, u := range []string{"ftp://127.0.0.1:8008", "http://", "http://127.0.0.1:8008/?x=1"} {
		_, err := dbrouter.New(context.Background(), dbrouter.Config{
			PrimaryURL:  "postgres://quest@127.0.0.1:1/quest",
			PatroniURLs: []string{u},
		})
		if err == nil || !strings.Contains(err.Error(), "want http://host:port") {
			t.Errorf("PatroniURLs %q: err %v, want a clear refusal", u, err)
		}
	}
}

// members returns the router's node names, sorted.
func members(r *dbrouter.Router) []string {
	var names []string
	for _, h := range r.Health() {
		names = append(names, h.Member)
	}
	slices.Sort(names)
	return names
}

// TestRouterDiscoversPatroniMembers gives the router only the leader's
// URL, for credentials and database, and Patroni's REST APIs (the first
// of them dead): the nodes are Patroni's members, named as Patroni names
// them. A replica whose host crashes leaves Patroni's list and the
// router's, moving only its own sessions; brought back, it rejoins
// without a restart of the router and gets its sessions back.
func TestRouterDiscoversPatroniMembers(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, see := haCluster(t, ctx, "ha-discover")
	r := loggedRouter(t, ctx, dbrouter.Config{
		PrimaryURL:       c.PrimaryURL(),
		PatroniURLs:      append([]string{"http://127.0.0.1:1"}, c.PatroniURLs()...),
		PollInterval:     50 * time.Millisecond,
		DiscoverInterval: 200 * time.Millisecond,
	})

	ms, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	want := ""
	for _, m := range ms {
		all = append(all, m.Name)
		if m.Role == cluster.RoleLeader {
			want = m.Name
		}
	}
	slices.Sort(all)
	if got := members(r); !slices.Equal(got, all) {
		t.Fatalf("nodes %v, want Patroni's members %v", got, all)
	}
	leader := r.Health()[0]
	if leader.Patroni.Role != "leader" || !leader.Patroni.Listed || leader.Member != want {
		t.Fatalf("primary %s, Patroni says %+v; want %s, Patroni's leader", leader.Member, leader.Patroni, want)
	}
	if v := r.Inspect(); v.PatroniURL != c.PatroniURLs()[0] || v.PatroniErr != "" {
		t.Fatalf("discovery answered from %q (problem %q), want the first live API %s", v.PatroniURL, v.PatroniErr, c.PatroniURLs()[0])
	}
	testcluster.Eventually(t, 10*time.Second, "both replicas usable", func() bool {
		h := r.Health()
		return len(h) == 3 && h[1].Status == dbrouter.Usable && h[2].Status == dbrouter.Usable
	})

	const sessions = 2000
	sticky := make([]string, sessions)
	for s := range sessions {
		sticky[s] = dbrouter.StickyNode(r, uint64(s+1))
	}

	// A replica's host crashes: Patroni lists it until its member key
	// expires (ttl), then the router drops it.
	gone := r.Health()[2].Member
	if _, err := c.Fail(ctx, gone); err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	testcluster.Eventually(t, haTTL+10*time.Second, gone+" dropped", func() bool {
		return !slices.Contains(members(r), gone)
	})
	t.Logf("%s dropped %.1fs after its crash", gone, time.Since(crashed).Seconds())
	moved := 0
	for s := range sessions {
		now := dbrouter.StickyNode(r, uint64(s+1))
		switch {
		case sticky[s] == gone:
			moved++
		case now != sticky[s]:
			t.Fatalf("session %d moved from %s to %s, though only %s left", s+1, sticky[s], now, gone)
		}
	}
	if moved == 0 {
		t.Fatalf("no session was on %s: the check above proved nothing", gone)
	}

	// Back: Patroni lists it again, and it gets its sessions back.
	if err := c.Start(ctx, gone); err != nil {
		t.Fatal(err)
	}
	see()
	back := time.Now()
	testcluster.Eventually(t, 30*time.Second, gone+" back and usable", func() bool {
		for _, h := range r.Health() {
			if h.Member == gone {
				return h.Status == dbrouter.Usable && h.Patroni.Listed
			}
		}
		return false
	})
	t.Logf("%s usable again %.1fs after its start; %d of %d sessions had moved", gone, time.Since(back).Seconds(), moved, sessions)
	for s := range sessions {
		if now := dbrouter.StickyNode(r, uint64(s+1)); now != sticky[s] {
			t.Fatalf("session %d is on %s, was on %s before %s left and came back", s+1, now, sticky[s], gone)
		}
	}
	// And a read of one of its sessions is served there.
	s := slices.Index(sticky, gone) + 1
	rctx, trace := dbrouter.WithTrace(dbrouter.WithState(ctx, &dbrouter.State{Session: uint64(s)}))
	if err := r.ReadWith(rctx, dbrouter.Sticky, dbrouter.Shared, func(b *pgx.Batch) {
		b.Queue("SELECT 1").QueryRow(func(row pgx.Row) error { var one int; return row.Scan(&one) })
	}); err != nil {
		t.Fatal(err)
	}
	if d := trace.Decisions(); len(d) != 1 || d[0].Member != gone {
		t.Fatalf("session %d's read: %+v, want it served by %s", s, d, gone)
	}

	// A session's write before the switchover, on the first timeline.
	table := newTableOn(t, r)
	kept := &dbrouter.State{Session: 5}
	writeAs(t, r, kept, table, 5)
	before := kept.Token

	// A planned switchover: writes follow to the new leader, and the old
	// one, now a replica, stays a member.
	from, to, err := c.Switchover(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "writes go to "+to, func() bool {
		h := r.Health()[0]
		return h.Member == to && r.Writable()
	})
	wctx, wtrace := dbrouter.WithTrace(ctx)
	if err := r.Write(wctx, func(tx pgx.Tx) error { _, err := tx.Exec(wctx, "SELECT 1"); return err }); err != nil {
		t.Fatal(err)
	}
	if d := wtrace.Decisions(); len(d) != 1 || d[0].Member != to {
		t.Fatalf("write after the switchover from %s: %+v, want it on %s", from, d, to)
	}
	if !slices.Contains(members(r), from) {
		t.Fatalf("the old leader %s left the nodes %v", from, members(r))
	}

	// An app instance started after the switchover cannot read the
	// timeline history file (the app's role may not): it takes the switch
	// point from Patroni's /history, and the session's token from before
	// keeps read-your-writes on a replica, with no failover words.
	r2 := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), PatroniURLs: c.PatroniURLs(),
		PollInterval: 50 * time.Millisecond, DiscoverInterval: 200 * time.Millisecond})
	var last dbrouter.Decision
	testcluster.Eventually(t, 5*time.Second, "the pre-switchover token served by a replica", func() bool {
		st := &dbrouter.State{Session: kept.Session, Token: before}
		n, d := readOwner(t, r2, dbrouter.Causal, st, table, 5)
		if n != 1 || d.Lost {
			t.Fatalf("pre-switchover token through a new router: %d notes from %s, lost %v; want its note, not lost", n, d.Node, d.Lost)
		}
		last = d
		return d.Node != "primary"
	})
	t.Logf("pre-switchover token (timeline %d) through a router started after it: served by %s (%s)", before.Timeline, last.Member, last.Reason)
}
