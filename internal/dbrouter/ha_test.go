package dbrouter_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/poll"
	"quest/internal/store"
	"quest/internal/testcluster"
)

// haTTL is Patroni's ttl in the clusters of quest cluster up --ha: how long
// the leader key outlives a crashed leader.
const haTTL = 10 * time.Second

// haLoad is what the light load saw.
type haLoad struct {
	reads, stale, lostReads  atomic.Int64
	lostWrites               atomic.Int64 // acknowledged writes the sessions were told were lost
	writes, refused, unknown atomic.Int64
	firstWriteAfter          atomic.Int64 // unix nanoseconds of the first write the new leader acknowledged
	mu                       sync.Mutex
	errs                     []string
	// short: per load session, the most notes a causal read, neither
	// stale nor flagged lost, fell short of what the session had written.
	short   [2]atomic.Int64
	ackedBy [2]atomic.Int64 // writes acknowledged, per load session
}

func (l *haLoad) fail(format string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, format+": "+err.Error())
	}
}

// TestRouterHAFailover is issue 14's quick real failover: a Patroni
// cluster of three members behind the router, under light load (two
// sessions writing and reading causally), its leader crashed (SIGKILL of
// its Patroni and PostgreSQL). No read may fail — while there is no
// primary they may be served possibly stale, and are counted apart —;
// writes are refused with ErrReadOnly (or ErrOutcomeUnknown) until Patroni
// promotes a replica, then work again within two poll intervals; and a
// token taken before the crash still gives read-your-writes on the new
// timeline (or, had the new leader missed the write, the router says it
// may have been lost).
func TestRouterHAFailover(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, see := haCluster(t, ctx, "ha-router")
	// The router gets what quest cluster env prints: DATABASE_URL, the
	// leader's, and REPLICA_URLS, each naming its member.
	const poll = 50 * time.Millisecond
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: poll})
	leaderName, err := dbrouter.NodeName(c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	table := "notes_ha"
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+table+" (id bigserial PRIMARY KEY, owner bigint NOT NULL, body text NOT NULL)")
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The session of the acceptance: one write, replayed by both replicas
	// before the crash (the tracker sees it there).
	kept := &dbrouter.State{Session: 1}
	writeAs(t, r, kept, table, 1)
	before := kept.Token
	testcluster.Eventually(t, 10*time.Second, "the replicas replay the session's write", func() bool {
		n := 0
		for _, h := range r.Health() {
			if h.Member != leaderName && h.Up && h.Position >= before.LSN {
				n++
			}
		}
		return n == 2
	})

	// Light load: two sessions, each writing a note and reading its notes
	// back causally, every 20 ms, until the test says stop (bounded).
	var load haLoad
	var crashedAt atomic.Int64
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func(owner int64) {
			defer wg.Done()
			st := &dbrouter.State{Session: uint64(owner)}
			acked := 0 // notes the session knows it has
			for n := 0; n < 3000 && lctx.Err() == nil; n++ {
				wctx, wtrace := dbrouter.WithTrace(dbrouter.WithState(lctx, st))
				err := r.Write(wctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES ($1, 'load')", owner)
					return err
				})
				switch {
				case err == nil:
					acked++
					load.writes.Add(1)
					load.ackedBy[owner-10].Add(1)
					// Writes are back: the first one acknowledged by
					// another node than the crashed leader.
					if d := wtrace.Decisions(); crashedAt.Load() != 0 && len(d) == 1 && d[0].Member != leaderName {
						load.firstWriteAfter.CompareAndSwap(0, time.Now().UnixNano())
					}
				case lctx.Err() != nil:
					return
				case errors.Is(err, dbrouter.ErrReadOnly):
					load.refused.Add(1)
				case errors.Is(err, dbrouter.ErrOutcomeUnknown):
					load.unknown.Add(1)
				default:
					load.fail("write", err)
				}
				if crashedAt.Load() == 0 && err != nil {
					load.fail("write before the crash", err)
				}

				rctx, trace := dbrouter.WithTrace(dbrouter.WithState(lctx, st))
				var got int
				err = r.ReadWith(rctx, dbrouter.Causal, dbrouter.Own, func(b *pgx.Batch) {
					got = 0
					b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", owner).QueryRow(func(row pgx.Row) error {
						return row.Scan(&got)
					})
				})
				if err != nil {
					if lctx.Err() != nil {
						return
					}
					load.fail("read", err)
				} else {
					load.reads.Add(1)
					d := trace.Decisions()
					switch {
					case len(d) != 1:
						load.fail("read", errors.New("not one decision"))
					case d[0].Lost:
						// A failover lost the session's last change,
						// and the router said so (from the new primary,
						// or with none yet from the freshest replica,
						// flagged stale): what it read is what the
						// session has now.
						load.lostReads.Add(1)
						if d[0].Reason == dbrouter.ReasonStale {
							load.stale.Add(1)
						}
						if got < acked {
							load.lostWrites.Add(int64(acked - got))
						}
						acked = got
					case d[0].Reason == dbrouter.ReasonStale:
						load.stale.Add(1)
					case got < acked:
						// A silent short read: reported below with what
						// the new leader holds.
						k := owner - 10
						if m := int64(acked - got); m > load.short[k].Load() {
							load.short[k].Store(m)
						}
					default:
						acked = got // an outcome-unknown write may have been saved
					}
				}
				select {
				case <-lctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
			}
		}(int64(10 + i))
	}
	defer func() { stop(); wg.Wait() }()
	// Every 20 ms, whether the router calls a member off the primary's
	// history: no member here replays anything the new leader lacks, so
	// any such verdict is a false alarm (a standby's timeline read from its
	// last restartpoint said so on 1,150–1,272 pages per crash before).
	var diverged atomic.Int64
	var divergedSeen sync.Map
	wctx, stopWatch := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for wctx.Err() == nil {
			for _, h := range r.Health() {
				if h.Status == dbrouter.Diverged {
					diverged.Add(1)
					divergedSeen.Store(h.Member, h.Timeline)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { stopWatch(); watch.Wait() }()
	time.Sleep(time.Second) // under load before the crash

	// The crash.
	crashed := time.Now()
	crashedAt.Store(crashed.UnixNano())
	failed, err := c.Fail(ctx, "leader")
	if err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "the router sees no primary", func() bool { return !r.Writable() })
	newLeader, err := c.WaitLeader(ctx, failed, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	see()
	// Writes come back by themselves: the load's first acknowledged write.
	testcluster.Eventually(t, haTTL, "a write of the load acknowledged after the crash", func() bool {
		return load.firstWriteAfter.Load() != 0
	})
	back := time.Unix(0, load.firstWriteAfter.Load())
	time.Sleep(time.Second) // the load goes on a little on the new timeline
	stop()
	wg.Wait()

	// The surviving replica follows the new leader, and the crashed one
	// rejoins: Patroni rewinds it and starts it as a standby, whose last
	// restartpoint is still on the old timeline.
	if err := c.Start(ctx, failed); err != nil {
		t.Fatal(err)
	}
	see()
	testcluster.Eventually(t, 30*time.Second, "both replicas usable", func() bool {
		h := r.Health()
		return len(h) == 3 && h[1].Status == dbrouter.Usable && h[2].Status == dbrouter.Usable
	})
	stopWatch()
	watch.Wait()
	if n := diverged.Load(); n > 0 {
		var who []string
		divergedSeen.Range(func(k, v any) bool { who = append(who, fmt.Sprintf("%s (timeline %d)", k, v)); return true })
		t.Errorf("%d samples called a member off the primary's history (%v): false alarms", n, who)
	}

	sinceCrash, sincePromotion := back.Sub(crashed), back.Sub(promoted)
	t.Logf("fail %s: %s promoted %.1fs after the crash; writes worked again %.1fs after the crash, %.2fs after the promotion was seen",
		failed, newLeader, promoted.Sub(crashed).Seconds(), sinceCrash.Seconds(), sincePromotion.Seconds())
	t.Logf("load: %d reads served (%d possibly stale, %d said a change was lost), %d writes acknowledged (%d of them lost in the failover), %d refused read-only, %d of unknown outcome",
		load.reads.Load(), load.stale.Load(), load.lostReads.Load(), load.writes.Load(), load.lostWrites.Load(), load.refused.Load(), load.unknown.Load())
	// Acknowledged writes lost: what each load session was told it wrote
	// against what the new primary holds.
	for k := range 2 {
		owner := int64(10 + k)
		var held int
		if err := r.ReadWith(ctx, dbrouter.Primary, dbrouter.Own, func(b *pgx.Batch) {
			b.Queue("SELECT count(*) FROM "+table+" WHERE owner = $1", owner).QueryRow(func(row pgx.Row) error { return row.Scan(&held) })
		}); err != nil {
			t.Fatal(err)
		}
		lost := load.ackedBy[k].Load() - int64(held)
		short := load.short[k].Load()
		t.Logf("session %d: %d writes acknowledged, %d on the new primary (%d lost); causal reads fell short by up to %d", owner, load.ackedBy[k].Load(), held, lost, short)
		if short > 0 {
			// Even a session that wrote again after the failover must be
			// told its earlier change is gone: never a silent short read.
			t.Errorf("session %d: a causal read fell %d notes short and did not say a change was lost (%d acknowledged writes lost)", owner, short, lost)
		}
	}
	for _, e := range load.errs {
		t.Errorf("load: %s", e)
	}
	if load.refused.Load()+load.unknown.Load() == 0 {
		t.Errorf("no write was refused while there was no primary")
	}
	// The load writes every 20 ms or so, plus its read: allow that besides
	// the router's two poll intervals, and a second for the stalls of make
	// test's parallel packages on two cores (alone it takes 0.02–0.04 s).
	// A router that waited for a reconnect backoff or a pool reset would
	// still be seconds late.
	if limit := 2*poll + time.Second; sincePromotion > limit {
		t.Errorf("writes worked again %s after the promotion was seen, more than %s", sincePromotion, limit)
	}
	if limit := haTTL + 2*poll; sinceCrash > limit {
		t.Logf("note: writes worked again %s after the crash, past Patroni's ttl + 2 poll intervals (%s), because the promotion itself took %s",
			sinceCrash.Round(100*time.Millisecond), limit, promoted.Sub(crashed).Round(100*time.Millisecond))
	}
	if sinceCrash > 2*haTTL {
		t.Errorf("writes worked again %s after the crash, more than twice Patroni's ttl", sinceCrash)
	}

	// The writes go to the new leader, on a new timeline.
	wctx, trace := dbrouter.WithTrace(ctx)
	if err := r.Write(wctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(wctx, "INSERT INTO "+table+" (owner, body) VALUES (9, 'after')")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	newName := newLeader // a replica before: its URL named it
	if d := trace.Decisions(); len(d) != 1 || d[0].Member != newName || d[0].Node != "primary" {
		t.Fatalf("write served by %+v, want %s as primary", d, newName)
	}
	if h := r.Health()[0]; h.Member != newName || h.Timeline <= before.Timeline {
		t.Fatalf("primary %s on timeline %d, want %s on a timeline after %d", h.Member, h.Timeline, newName, before.Timeline)
	}

	// The pre-failover token: does the new leader hold its write?
	nl, err := c.Node(newLeader)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := pgx.Connect(ctx, c.URL(nl))
	if err != nil {
		t.Fatal(err)
	}
	var has int
	err = direct.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE owner = 1").Scan(&has)
	direct.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := &dbrouter.State{Session: kept.Session, Token: before}
	n, d := readOwner(t, r, dbrouter.Causal, st, table, 1)
	if has == 1 {
		// Replayed before the crash: read-your-writes on the new timeline,
		// no failover words.
		if n != 1 || d.Lost {
			t.Fatalf("pre-failover token: %d notes from %s (lost %v), want its note and no loss", n, d.Member, d.Lost)
		}
		if st.Token.Timeline <= before.Timeline || st.Token.LSN < before.LSN {
			t.Errorf("the token %+v did not move onto the new timeline from %+v", st.Token, before)
		}
		t.Logf("pre-failover token (timeline %d): read its note on timeline %d from %s (%s)", before.Timeline, st.Token.Timeline, d.Node, d.Reason)
	} else {
		// The new leader missed it: the router must say it may be lost.
		if !d.Lost || d.Node != "primary" {
			t.Fatalf("pre-failover token, write missing on %s: read from %s, lost %v; want the primary, flagged lost", newLeader, d.Node, d.Lost)
		}
		t.Logf("pre-failover token: the new leader lacks its write; the router said it may have been lost")
	}
}

// settle waits, up to a minute, until Patroni says every member runs, so
// that the test's clean-up does not stop a member Patroni is restarting
// (after a demotion or a rewind); it only logs when they do not.
func settle(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	t.Helper()
	err := poll.Until(ctx, time.Minute, 200*time.Millisecond, "every member to run", func(ctx context.Context) (bool, error) {
		ms, err := c.Members(ctx)
		if err != nil {
			return false, nil
		}
		for _, m := range ms {
			if !m.Running() {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Logf("the cluster did not settle before the clean-up: %v", err)
	}
}

// haCluster brings up a Patroni cluster of three members (quest cluster
// up --ha), migrated, for the test, and tears it down after, checking that no
// process of it outlives the test. see records the cluster's current
// processes, for that check: call it again after members restart.
func haCluster(t *testing.T, ctx context.Context, name string) (c *cluster.Cluster, see func()) {
	t.Helper()
	return haClusterDCS(t, ctx, name, "")
}

// haClusterDCS is haCluster with Patroni talking to etcd as dcs says
// ("etcd", "etcd3", or "" for quest's choice).
func haClusterDCS(t *testing.T, ctx context.Context, name, dcs string) (c *cluster.Cluster, see func()) {
	t.Helper()
	dir, err := testcluster.NewDir(name)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, err = cluster.Up(ctx, cluster.Config{Dir: dir, Port: 0, HA: true, DCS: dcs, BinDir: os.Getenv("QUEST_PG_BIN")})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	var pids []int // every pid of the cluster, for the clean-up
	see = func() {
		if _, pid := c.Etcd(); pid > 0 {
			pids = append(pids, pid)
		}
		ms, _ := c.Members(ctx)
		for _, m := range ms {
			if m.PID > 0 {
				pids = append(pids, m.PID)
			}
		}
		for _, p := range c.Processes() {
			if p.Up {
				pids = append(pids, p.PID)
			}
		}
	}
	see()
	t.Cleanup(func() {
		c.Down(context.Background(), true)
		for _, pid := range pids {
			if cluster.Alive(pid) {
				t.Errorf("pid %d outlived the test; killing it", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	t.Logf("up --ha: %s", time.Since(began).Round(100*time.Millisecond))
	if err := store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard); err != nil {
		t.Fatal(err)
	}
	return c, see
}

// TestDeadPatroniAgentTakesNoWrites: the leader's Patroni agent dies
// (SIGKILL) while its PostgreSQL runs on, under writers. Patroni promotes
// a replica only when the leader key expires, about ttl later; meanwhile
// the old primary would take writes that the promotion then discards (59
// acknowledged writes lost in a run by hand before this check). The
// router follows Patroni's word — GET /primary on the member itself — so
// it takes no write there from the moment the agent is gone, and every
// write it acknowledged is on the new leader.
func TestDeadPatroniAgentTakesNoWrites(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, see := haCluster(t, ctx, "ha-agent")
	r := loggedRouter(t, ctx, dbrouter.Config{
		PrimaryURL: c.PrimaryURL(), PatroniURLs: c.PatroniURLs(),
		PollInterval: 50 * time.Millisecond, DiscoverInterval: 200 * time.Millisecond,
	})
	const table = "acks_agent"
	leader := r.Health()[0].Member
	w := startAckWriters(t, r, table, 4)
	testcluster.Eventually(t, 10*time.Second, "writes on the leader", func() bool { return w.ackedOn(leader) > 100 })

	ms, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agent := 0
	for _, m := range ms {
		if m.Name == leader {
			agent = m.PID
		}
	}
	if agent <= 0 {
		t.Fatalf("no Patroni pid for the leader %s in %+v", leader, ms)
	}
	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := w.next.Load()
	if !anyPostmasterOf(c, leader) {
		t.Fatal("the leader's PostgreSQL died with its agent: the scenario did not happen")
	}
	testcluster.Eventually(t, 5*time.Second, "the router to stop writing to the leader", func() bool { return !r.Writable() })
	stopped := w.next.Load()
	testcluster.Eventually(t, haTTL+20*time.Second, "writes on a new leader", func() bool {
		for _, m := range []string{ms[0].Name, ms[1].Name, ms[2].Name} {
			if m != leader && w.ackedOn(m) > 0 {
				return true
			}
		}
		return false
	})
	acks := w.finish()
	see()

	newLeader := r.Health()[0]
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// The replicas stream from the old primary until one is promoted, so
	// what it took before the router noticed is on the new leader too.
	lost := missing(acks, idsOn(t, c.PrimaryURL(), table))
	t.Logf("%d writes acknowledged; new leader %s; the router stopped writing to %s within %d issued writes of the agent's death",
		len(acks), newLeader.Member, leader, stopped-killed)
	if lost > 0 {
		t.Fatalf("%d acknowledged writes are not on the new leader", lost)
	}
}

// anyPostmasterOf reports whether member's PostgreSQL still runs.
func anyPostmasterOf(c *cluster.Cluster, member string) bool {
	for _, p := range c.Processes() {
		if p.Node.Name == member && p.Up {
			return true
		}
	}
	return false
}

// TestHungPatroniLeaderLosesNoWrite: the leader's PostgreSQL hangs
// (SIGSTOP of the postmaster and every backend; its Patroni runs on) under
// writers and causal readers until Patroni promotes a replica, then wakes.
// Patroni 3.0.2 over etcd's v3 API took the leader key back on waking and
// rewound the promoted replica, discarding what it had acknowledged (28 of
// 179 adds lost through the app in a scripted run; 1,171–1,473 in the
// runs that chose the default): quest cluster up --ha now picks the v2
// API for it. Every write the router acknowledged must be on the final
// leader, and no read may fail.
func TestHungPatroniLeaderLosesNoWrite(t *testing.T) {
	testcluster.Long(t)
	testcluster.NeedHA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, see := haCluster(t, ctx, "ha-hang")
	r := loggedRouter(t, ctx, dbrouter.Config{
		PrimaryURL: c.PrimaryURL(), PatroniURLs: c.PatroniURLs(),
		PollInterval: 50 * time.Millisecond, DiscoverInterval: 200 * time.Millisecond, NodeTimeout: 2 * time.Second,
	})
	const table = "acks_hang"
	leader := r.Health()[0].Member
	w := startAckWriters(t, r, table, 4)
	// Causal readers: one session each, reading the table's size.
	var reads, failedReads atomic.Int64
	var firstReadErr atomic.Value
	rctx, stopReads := context.WithCancel(ctx)
	var readers sync.WaitGroup
	for i := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			st := &dbrouter.State{Session: uint64(300 + i)}
			for rctx.Err() == nil {
				err := r.ReadWith(dbrouter.WithState(rctx, st), dbrouter.Causal, dbrouter.Shared, func(b *pgx.Batch) {
					b.Queue("SELECT count(*) FROM " + table).QueryRow(func(row pgx.Row) error { var n int; return row.Scan(&n) })
				})
				switch {
				case rctx.Err() != nil:
				case err != nil:
					failedReads.Add(1)
					firstReadErr.CompareAndSwap(nil, err.Error())
				default:
					reads.Add(1)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	defer func() { stopReads(); readers.Wait() }()
	testcluster.Eventually(t, 10*time.Second, "writes on the leader", func() bool { return w.ackedOn(leader) > 100 })

	thaw, err := c.Freeze(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	thawOnce := func() { once.Do(func() { thaw() }) }
	t.Cleanup(thawOnce)
	frozen := time.Now()
	testcluster.Eventually(t, 45*time.Second, "writes on a promoted replica", func() bool {
		for _, h := range r.Health() {
			if h.Member != leader && w.ackedOn(h.Member) > 0 {
				return true
			}
		}
		return false
	})
	promotedAfter := time.Since(frozen)
	time.Sleep(time.Second) // the new leader takes writes for a moment
	thawOnce()
	thawed := time.Now()
	// Settled: one primary that takes writes, for a few seconds of writes
	// after the wake.
	testcluster.Eventually(t, 60*time.Second, "the cluster settles with writes going on", func() bool {
		return time.Since(thawed) > 5*time.Second && r.Writable() && r.SplitBrain() == ""
	})
	acks := w.finish()
	stopReads()
	readers.Wait()
	settle(t, ctx, c)
	see()

	final := r.Health()[0].Member
	n, err := c.Node(final)
	if err != nil {
		t.Fatal(err)
	}
	lost := missing(acks, idsOn(t, c.URL(n), table))
	t.Logf("hung %s: a replica took writes %.1fs after the hang; %d writes acknowledged, %d lost; %d reads, %d failed (%v); final leader %s",
		leader, promotedAfter.Seconds(), len(acks), lost, reads.Load(), failedReads.Load(), firstReadErr.Load(), final)
	if lost > 0 {
		t.Errorf("%d acknowledged writes are not on the final leader %s", lost, final)
	}
	if failedReads.Load() > 0 {
		t.Errorf("%d reads failed (first: %v)", failedReads.Load(), firstReadErr.Load())
	}
}
