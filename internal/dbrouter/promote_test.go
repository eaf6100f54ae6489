package dbrouter_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/store"
	"quest/internal/testcluster"
)

// promoteCluster starts a throwaway migrated cluster of its own (a leader
// and two followers): the test promotes one, which the package's shared
// cluster could not survive.
func promoteCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	testcluster.Get(t) // skips (or fails under CI) without PostgreSQL
	ctx := context.Background()
	c, err := testcluster.Start(ctx, "promote", 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Down(context.Background(), true) })
	if err := store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// readOwner is a read of how many notes owner has, as session st, with
// the decision that served it (and the SQL it ran).
func readOwner(t *testing.T, r *dbrouter.Router, s dbrouter.Strategy, st *dbrouter.State, table string, owner int64) (int, dbrouter.Decision) {
	t.Helper()
	ctx, trace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), st))
	trace.KeepSQL()
	var n int
	err := r.ReadWith(ctx, s, dbrouter.Own, func(b *pgx.Batch) {
		n = 0
		b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", owner).QueryRow(func(row pgx.Row) error {
			return row.Scan(&n)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	d := trace.Decisions()
	if len(d) != 1 {
		t.Fatalf("%d decisions, want 1", len(d))
	}
	return n, d[0]
}

// TestRouterFollowsAPromotion lists the nodes in scrambled order (a
// follower as DATABASE_URL), crashes the leader and promotes replica1:
// writes go nowhere while there is no primary, then to replica1 within a
// few poll intervals of its promotion; replica2, left following the dead
// leader past the fork, gets no reads. A session whose last write replica1
// had replayed keeps read-your-writes on the new timeline; a session whose
// last write was committed on the old leader after replica1 was cut off
// has lost it, and its next read goes to the new primary and says so.
func TestRouterFollowsAPromotion(t *testing.T) {
	c := promoteCluster(t)
	ctx := context.Background()
	nodes := c.Nodes() // leader, replica1, replica2
	urls := append([]string{c.ReplicaURLs()[0], c.PrimaryURL()}, c.ReplicaURLs()[1])
	const poll = 50 * time.Millisecond
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: urls[0], ReplicaURLs: urls[1:], PollInterval: poll})
	leaderName, err := dbrouter.NodeName(c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	member := func(name string) dbrouter.Health {
		for _, h := range r.Health() {
			if h.Member == name {
				return h
			}
		}
		t.Fatalf("no node %s", name)
		return dbrouter.Health{}
	}
	if h := r.Health()[0]; h.Member != leaderName || h.Name != "primary" {
		t.Fatalf("first node %s (%s), want the leader %s listed as primary", h.Member, h.Name, leaderName)
	}

	// Session kept: its write reaches replica1, and the tracker sees it there.
	table := newTableOn(t, r)
	kept := &dbrouter.State{Session: 1}
	writeAs(t, r, kept, table, 1)
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "the tracker sees replica1 replay the kept write", func() bool {
		return member(nodes[1].Name).Position >= kept.Token.LSN
	})

	// Session lost: replica1's walreceiver stops, then the leader commits.
	super1 := superConn(t, c, nodes[1].Name)
	if _, err := super1.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = ''"); err != nil {
		t.Fatal(err)
	}
	if _, err := super1.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "replica1's walreceiver stops", func() bool {
		var n int
		return super1.QueryRow(ctx, "SELECT count(*) FROM pg_stat_wal_receiver").Scan(&n) == nil && n == 0
	})
	lost := &dbrouter.State{Session: 2}
	writeAs(t, r, lost, table, 2)
	if r1 := replayOf(t, super1); r1 >= lost.Token.LSN {
		t.Fatalf("replica1 replayed %s, past the lost write's %s: the scenario did not happen",
			dbrouter.FormatLSN(r1), dbrouter.FormatLSN(lost.Token.LSN))
	}
	// replica2 still follows the leader: it gets the write the failover
	// will lose, and nobody re-points it afterwards.
	super2 := superConn(t, c, nodes[2].Name)
	testcluster.Eventually(t, 5*time.Second, "replica2 replays the write replica1 missed", func() bool {
		return replayOf(t, super2) >= lost.Token.LSN
	})
	before := kept.Token

	// No primary: writes are refused, reads go on.
	if err := c.Stop(ctx, cluster.LeaderName, true); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "the router sees the leader down", func() bool { return !r.Writable() })
	if err := r.Write(ctx, func(pgx.Tx) error { return nil }); !errors.Is(err, dbrouter.ErrReadOnly) {
		t.Fatalf("write with no primary: %v, want ErrReadOnly", err)
	}
	if n, d := readOwner(t, r, dbrouter.Causal, &dbrouter.State{Session: 3, Token: before}, table, 1); n != 1 || d.Node == "primary" {
		t.Fatalf("read with no primary: %d notes from %s", n, d.Node)
	}

	// Promotion: writes move to replica1 by themselves.
	if _, err := super1.Exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatal(err)
	}
	var promoted time.Time
	if err := super1.QueryRow(ctx, "SELECT now()").Scan(&promoted); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "writes work again", func() bool { return r.Writable() })
	if took := time.Since(promoted); took > 10*poll+time.Second {
		t.Errorf("writes came back %s after the promotion", took)
	}
	wctx, trace := dbrouter.WithTrace(ctx)
	if err := r.Write(wctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES (9, 'after')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if d := trace.Decisions(); len(d) != 1 || d[0].Member != nodes[1].Name || d[0].Node != "primary" {
		t.Fatalf("write served by %+v, want %s as primary", d, nodes[1].Name)
	}
	if h := r.Health()[0]; h.Member != nodes[1].Name || h.Timeline < 2 {
		t.Fatalf("primary %s on timeline %d, want %s on a new timeline", h.Member, h.Timeline, nodes[1].Name)
	}

	// replica2 replayed past the switch point: it holds the lost write,
	// which the primary's history does not, so it gets no reads. The app's
	// role cannot read the timeline history file, so the router knows the
	// switch point only as the furthest position it saw replica1 receive
	// as a standby, a lower bound: replica2 is past it, but whether it is
	// past the real switch point the router cannot tell, and it says so
	// rather than raise the "rewind or rebuild it" alarm.
	testcluster.Eventually(t, 5*time.Second, "replica2 is not known to be on the primary's history", func() bool {
		return member(nodes[2].Name).Status == dbrouter.Unverified
	})

	// The kept write, below the switch point, still routes causally: no
	// failover words, and the session sees it.
	st := &dbrouter.State{Session: kept.Session, Token: before}
	if n, d := readOwner(t, r, dbrouter.Causal, st, table, 1); n != 1 || d.Lost {
		t.Fatalf("kept session: %d notes from %s (lost %v), want its note and no loss", n, d.Node, d.Lost)
	}
	if st.Token.Timeline <= before.Timeline || st.Token.LSN < before.LSN {
		t.Errorf("kept session's token %+v did not move onto the new timeline from %+v", st.Token, before)
	}

	// The lost write: the next read goes to the new primary and says so,
	// whatever the strategy; the one after is a plain read again.
	for _, s := range []dbrouter.Strategy{dbrouter.Causal, dbrouter.Random} {
		st := &dbrouter.State{Session: lost.Session, Token: lost.Token}
		n, d := readOwner(t, r, s, st, table, 2)
		if !d.Lost || d.Node != "primary" || d.Member != nodes[1].Name || n != 0 {
			t.Fatalf("%s, lost session: %d notes from %s (%s), lost %v; want 0 from the new primary, flagged lost", s, n, d.Node, d.Member, d.Lost)
		}
		if _, d := readOwner(t, r, s, st, table, 2); d.Lost {
			t.Fatalf("%s: the read after still says the change was lost", s)
		}
	}

	// The lost session writes again before it reads: the write itself,
	// and the read after it, still say the earlier change may be gone,
	// and that read sees the new write.
	st = &dbrouter.State{Session: lost.Session, Token: lost.Token}
	wctx, wtrace := dbrouter.WithTrace(dbrouter.WithState(context.Background(), st))
	if err := r.Write(wctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES (2, 'again')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if d := wtrace.Decisions(); len(d) != 1 || !d[0].Lost {
		t.Fatalf("the write after a lost change: decisions %+v, want one flagged lost", d)
	}
	n, d := readOwner(t, r, dbrouter.Causal, st, table, 2)
	if !d.Lost || d.Node != "primary" || n != 1 {
		t.Fatalf("the read after writing again: %d notes from %s, lost %v; want the new note from the primary, flagged lost", n, d.Node, d.Lost)
	}
	if _, d := readOwner(t, r, dbrouter.Causal, st, table, 2); d.Lost {
		t.Fatal("the read after that still says the change was lost")
	}
}

// newTableOn creates a notes table through r.
func newTableOn(t *testing.T, r *dbrouter.Router) string {
	t.Helper()
	ctx := context.Background()
	name := "notes_promote"
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+name+" (id bigserial PRIMARY KEY, owner bigint NOT NULL, body text NOT NULL)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return name
}

// writeAs inserts a note for owner as session st, whose token moves to it.
func writeAs(t *testing.T, r *dbrouter.Router, st *dbrouter.State, table string, owner int64) {
	t.Helper()
	ctx := dbrouter.WithState(context.Background(), st)
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, 'note')", owner)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if st.Token.IsZero() {
		t.Fatal("the write left no token")
	}
}

// loggedRouter starts a router whose log the test prints if it fails,
// and closes it when the test ends.
func loggedRouter(t *testing.T, ctx context.Context, cfg dbrouter.Config) *dbrouter.Router {
	t.Helper()
	log := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	r, err := dbrouter.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			t.Logf("router log:\n%s", log.String())
		}
	})
	return r
}

// syncBuffer is a bytes.Buffer the router's poll loops may log into at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
