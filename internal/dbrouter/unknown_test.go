package dbrouter_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestWriteOfUnknownPosition crashes the primary (an immediate stop)
// between a write's COMMIT and the read of its WAL position. The write
// stands, but no one knows where it is in the WAL: the session's token
// becomes UnknownLSN, its reads carry the staleness flag while the primary
// is down, the first read after the restart goes to the primary and gives
// the token a real position, and reads then return to the replicas.
func TestWriteOfUnknownPosition(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS unknown_position (id bigserial PRIMARY KEY)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Start(context.Background(), "leader"); err != nil {
			t.Errorf("restart leader: %v", err)
		}
	})

	st := &dbrouter.State{Session: 1}
	sctx := dbrouter.WithState(ctx, st)
	var id int64
	dbrouter.SetAfterCommit(r, func() {
		if err := c.Stop(ctx, "leader", true); err != nil {
			t.Error(err)
		}
	})
	err := r.Write(sctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "INSERT INTO unknown_position DEFAULT VALUES RETURNING id").Scan(&id)
	})
	dbrouter.SetAfterCommit(r, nil)
	if err != nil {
		t.Fatalf("the committed write failed: %v", err)
	}
	if st.Token.LSN != dbrouter.UnknownLSN {
		t.Fatalf("token %s after a write of unknown position, want UnknownLSN", dbrouter.FormatLSN(st.Token.LSN))
	}
	if back, err := dbrouter.DecodeState(st.Encode()); err != nil || back.Token != st.Token {
		t.Fatalf("the cookie does not keep the unknown position: %+v, %v", back, err)
	}

	// read returns whether the session sees its row, and the decision.
	read := func() (bool, dbrouter.Decision) {
		t.Helper()
		tctx, trace := dbrouter.WithTrace(sctx)
		var found bool
		if err := r.ReadWith(tctx, dbrouter.Causal, dbrouter.Own, func(b *pgx.Batch) {
			found = false
			b.Queue("SELECT EXISTS (SELECT 1 FROM unknown_position WHERE id = $1)", id).QueryRow(func(row pgx.Row) error {
				return row.Scan(&found)
			})
		}); err != nil {
			t.Fatal(err)
		}
		d := trace.Decisions()
		return found, d[len(d)-1]
	}

	// The primary is down: a replica answers, flagged stale (it may or may
	// not have received the commit before the crash).
	if _, d := read(); d.Reason != dbrouter.ReasonStale || d.Node == "primary" {
		t.Errorf("with the primary down: %+v, want a stale read from a replica", d)
	}
	if st.Token.LSN != dbrouter.UnknownLSN {
		t.Fatalf("a stale read settled the unknown position")
	}

	if err := c.Start(ctx, "leader"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 20*time.Second, "the router to see the primary again", func() bool {
		return health(r, "primary").Up
	})
	found, d := read()
	if !found || d.Node != "primary" {
		t.Fatalf("first read after the restart: found=%v, %+v; want the row, from the primary", found, d)
	}
	if st.Token.LSN == dbrouter.UnknownLSN || st.Token.LSN == 0 {
		t.Fatalf("the primary's read did not settle the token: %s", dbrouter.FormatLSN(st.Token.LSN))
	}
	// The settled token is the primary's insert position, which may lie in
	// WAL not flushed yet (the restart's own records); any commit flushes
	// it, and the replicas then reach it.
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "SELECT txid_current()")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// The replicas reconnected after the restart and were far behind; the
	// router passes over a replica it saw behind the token and lagging, so
	// wait until its tracker has seen them catch up.
	testcluster.Eventually(t, 10*time.Second, "the tracker to see the replicas past the token", func() bool {
		return health(r, "replica1").Position >= st.Token.LSN && health(r, "replica2").Position >= st.Token.LSN
	})
	found, d = read()
	if !found || d.Node == "primary" {
		t.Errorf("once settled: found=%v, %+v; want the row, from a replica", found, d)
	}
}
