package dbrouter_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestTimelineRegressionIsToldAndRecovered plays Patroni 3.0.2 over etcd's
// v3 API, which quest cluster up --ha no longer chooses for it: the
// leader's PostgreSQL hangs until a replica is promoted, then wakes, its
// Patroni takes the leader key back and the promoted replica is demoted
// and rewound. What the promoted replica acknowledged is gone, and no
// router can prevent that; it must tell. The session that wrote there is
// told on its next read that its change may have been lost; a session
// whose write predates the hang keeps it, untold; the router writes to
// the woken leader again without a restart, and the third member gets
// reads again (before: no banner, and every replica "off the primary's
// history" until the app restarted).
func TestTimelineRegressionIsToldAndRecovered(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, see := haClusterDCS(t, ctx, "ha-regress", "etcd3")
	r := loggedRouter(t, ctx, dbrouter.Config{
		PrimaryURL: c.PrimaryURL(), PatroniURLs: c.PatroniURLs(),
		PollInterval: 50 * time.Millisecond, DiscoverInterval: 200 * time.Millisecond, NodeTimeout: 2 * time.Second,
	})
	table := newTableOn(t, r)
	leader := r.Health()[0].Member
	kept := &dbrouter.State{Session: 1}
	writeAs(t, r, kept, table, 1)
	testcluster.Eventually(t, 10*time.Second, "the replicas replay the kept write", func() bool {
		n := 0
		for _, h := range r.Health()[1:] {
			if h.Position >= kept.Token.LSN {
				n++
			}
		}
		return n == 2
	})

	thaw, err := c.Freeze(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thawOnce := func() { once.Do(func() { thaw() }) }
	t.Cleanup(thawOnce)
	testcluster.Eventually(t, 45*time.Second, "a promoted replica takes writes", func() bool {
		return r.Writable() && r.Health()[0].Member != leader
	})
	promoted := r.Health()[0].Member
	lost := &dbrouter.State{Session: 2}
	wctx, trace := dbrouter.WithTrace(dbrouter.WithState(ctx, lost))
	if err := r.Write(wctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES (2, 'on the promoted replica')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if d := trace.Decisions(); len(d) != 1 || d[0].Member != promoted {
		t.Fatalf("the write went to %+v, want %s", d, promoted)
	}

	thawOnce()
	testcluster.Eventually(t, 60*time.Second, "the woken leader takes writes again", func() bool {
		return r.Writable() && r.Health()[0].Member == leader
	})
	see()
	if n, d := readOwner(t, r, dbrouter.Causal, lost, table, 2); !d.Lost || n != 0 {
		t.Errorf("the session whose write the regression discarded: %d notes from %s, told lost: %v; want 0, told", n, d.Node, d.Lost)
	}
	if n, d := readOwner(t, r, dbrouter.Causal, &dbrouter.State{Session: 1, Token: kept.Token}, table, 1); d.Lost || n != 1 {
		t.Errorf("the session whose write predates the hang: %d notes from %s, told lost: %v; want its note, untold", n, d.Node, d.Lost)
	}
	st := &dbrouter.State{Session: 3}
	writeAs(t, r, st, table, 3)
	// The third member, which followed the promoted replica for a while,
	// gets reads again. The promoted one holds WAL the woken leader never
	// had until Patroni rewinds it: off the primary's history, rightly.
	testcluster.Eventually(t, 30*time.Second, "the third member gets reads again", func() bool {
		for _, h := range r.Health()[1:] {
			if h.Member != promoted && h.Member != leader && h.Status == dbrouter.Usable {
				return true
			}
		}
		return false
	})
	for _, h := range r.Health()[1:] {
		if h.Member == promoted && h.Status != dbrouter.Usable && h.Status != dbrouter.Diverged {
			t.Errorf("the demoted %s is %v: want usable once rewound, or off the primary's history until then", promoted, h.Status)
		}
	}
	settle(t, ctx, c)
	see()
	if n, d := readOwner(t, r, dbrouter.Causal, st, table, 3); n != 1 {
		t.Errorf("a write after the regression (token %+v): read %d notes, decision %+v; health %+v", st.Token, n, d, r.Health())
		for _, name := range []string{"node1", "node2", "node3"} {
			nd, _ := c.Node(name)
			conn, err := pgx.Connect(ctx, c.URL(nd))
			if err != nil {
				t.Logf("%s: %v", name, err)
				continue
			}
			var rec bool
			var replay, tli, cp, status, cnt string
			err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text,''), coalesce((SELECT received_tli::text||' '||status||' '||coalesce(latest_end_lsn::text,'') FROM pg_stat_wal_receiver),'none'),
				(SELECT timeline_id::text FROM pg_control_checkpoint()), (SELECT min_recovery_end_timeline::text||' '||min_recovery_end_lsn::text FROM pg_control_recovery()), (SELECT count(*)::text FROM `+table+` WHERE owner=3)`).Scan(&rec, &replay, &tli, &cp, &status, &cnt)
			t.Logf("%s: recovery %v replay %s receiver %s checkpoint tli %s minrec %s notes %s err %v", name, rec, replay, tli, cp, status, cnt, err)
			conn.Close(ctx)
		}
	}
}
