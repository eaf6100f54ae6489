package dbrouter_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// TestCommitWhoseContextEndsIsAnUnknownOutcome: the request's context
// ends while COMMIT waits (here for a synchronous standby that does not
// exist), so the change is durable on the primary but nobody hears so.
// That is an unknown outcome, as a broken connection is: the page must
// say the change may have been saved, and the session's next read comes
// from the primary. (Before, such a write returned the bare context error
// and left the token as it was: 41 of 99 committed writes went that way
// in a run with a server deadline.)
func TestCommitWhoseContextEndsIsAnUnknownOutcome(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	leader := superConn(t, c, "leader")
	setOnNode(t, leader, "synchronous_standby_names", "quest_nobody")

	st := &dbrouter.State{Session: 98}
	sctx := dbrouter.WithState(ctx, st)
	wctx, cancel := context.WithCancel(sctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- r.Write(wctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES (98, 'saved?')")
			return err
		})
	}()
	testcluster.Eventually(t, 10*time.Second, "COMMIT to wait for the synchronous standby", func() bool {
		var pid int
		return leader.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' LIMIT 1`).Scan(&pid) == nil
	})
	cancel()
	checkUnknownOutcome(t, sctx, r, <-done, st, table, 98)
}

// TestCausalPrimaryReadSurvivesADroppedConnection: a causal read that
// only the primary may serve (its session's last write has an unknown
// position) meets a pooled connection whose backend was terminated. One
// dead connection is not a dead primary: the read runs again there on a
// live connection, rather than on a replica flagged possibly stale (10 of
// 10 such reads before).
func TestCausalPrimaryReadSurvivesADroppedConnection(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := causalRouter(t, c, dbrouter.Config{MaxConns: 2})
	table := newTable(t, r)
	leader := superConn(t, c, "leader")
	st := &dbrouter.State{Session: 97}
	sctx := dbrouter.WithState(ctx, st)
	insert(t, sctx, r, table, 97, "mine")
	for i := range 10 {
		st.Token.LSN = dbrouter.UnknownLSN // only the primary vouches
		if n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Own, table, 97); node != "primary" || n != 1 {
			t.Fatalf("round %d, warm-up: %d rows from %s", i, n, node)
		}
		// The read's connection is idle in the pool now: end its backend.
		var ended int
		if err := leader.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			 WHERE usename = 'quest' AND application_name <> 'quest-tracker' AND backend_type = 'client backend'`).Scan(&ended); err != nil || ended == 0 {
			t.Fatalf("round %d: terminated %d backends: %v", i, ended, err)
		}
		st.Token.LSN = dbrouter.UnknownLSN
		n, node := count(t, sctx, r, dbrouter.Causal, dbrouter.Own, table, 97)
		if node != "primary" || n != 1 {
			t.Fatalf("round %d, after one primary connection died: %d rows from %s; want the primary", i, n, node)
		}
	}
}

// TestWriteRacingAPromotionKeepsItsTimeline: a promotion is seen between a
// write's COMMIT and the read of its position (the hook moves the router's
// history onto the next timeline there). The write committed on the old
// timeline, so its token must name the old one: stamped with the new, a
// write that the old primary's rewind discards would look current, and
// nobody would be told. (Before: stamped with the new timeline.)
func TestWriteRacingAPromotionKeepsItsTimeline(t *testing.T) {
	c := testcluster.Get(t)
	ctx := context.Background()
	r := newRouter(t, c, dbrouter.Config{})
	table := newTable(t, r)
	before := &dbrouter.State{Session: 94}
	insert(t, dbrouter.WithState(ctx, before), r, table, 94, "before")
	st := &dbrouter.State{Session: 94, Token: before.Token}
	// The new timeline forks past everything here: the session's earlier
	// position stays on it, and only the racing write's stamp is in question.
	dbrouter.SetAfterCommit(r, func() { dbrouter.ForgeNewerTimeline(r, 1<<62) })
	insert(t, dbrouter.WithState(ctx, st), r, table, 94, "racing")
	if st.Token.Timeline != before.Token.Timeline || st.Token.LSN <= before.Token.LSN {
		t.Fatalf("the racing write's token %+v (before it %+v); want its own position on timeline %d, where it committed", st.Token, before.Token, before.Token.Timeline)
	}
}
