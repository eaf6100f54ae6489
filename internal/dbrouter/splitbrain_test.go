package dbrouter_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// ackWriters insert numbered rows through the router until stopped, and
// remember which ids the router acknowledged, and on which member.
type ackWriters struct {
	next atomic.Int64
	mu   sync.Mutex
	acks map[int64]string // id → member that took it
	stop chan struct{}
	once sync.Once
	done sync.WaitGroup
}

// startAckWriters creates table and starts n writers on it; they stop at
// finish, or when the test ends.
func startAckWriters(t *testing.T, r *dbrouter.Router, table string, n int) *ackWriters {
	t.Helper()
	ctx := context.Background()
	if err := r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE "+table+" (id bigint PRIMARY KEY)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	w := &ackWriters{acks: map[int64]string{}, stop: make(chan struct{})}
	t.Cleanup(func() { w.finish() })
	for range n {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				id := w.next.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				ctx, trace := dbrouter.WithTrace(ctx)
				err := r.Write(ctx, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO "+table+" (id) VALUES ($1)", id)
					return err
				})
				cancel()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				w.mu.Lock()
				w.acks[id] = trace.Decisions()[0].Member
				w.mu.Unlock()
			}
		}()
	}
	return w
}

// finish stops the writers and returns what they had acknowledged.
func (w *ackWriters) finish() map[int64]string {
	w.once.Do(func() { close(w.stop) })
	w.done.Wait()
	return w.acks
}

// memberHealth returns the router's view of the member called name (its
// own name, whatever its role), or the zero Health if it has none.
func memberHealth(r *dbrouter.Router, name string) dbrouter.Health {
	for _, h := range r.Health() {
		if h.Member == name {
			return h
		}
	}
	return dbrouter.Health{}
}

// idsOn returns the ids the table holds on the node at url.
func idsOn(t *testing.T, url, table string) map[int64]bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM "+table)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	kept := make(map[int64]bool, len(ids))
	for _, id := range ids {
		kept[id] = true
	}
	return kept
}

// missing counts the acknowledged ids kept lacks.
func missing(acks map[int64]string, kept map[int64]bool) int {
	n := 0
	for id := range acks {
		if !kept[id] {
			n++
		}
	}
	return n
}

// ackedOn counts the acknowledged writes member took.
func (w *ackWriters) ackedOn(member string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.acks {
		if m == member {
			n++
		}
	}
	return n
}

// TestSplitBrainTakesNoWriteOnTheOldPrimary: under writers, the leader
// stops, replica1 is promoted, the old leader starts again as a primary
// on timeline 1, and then replica1 is away for a moment. Every write the
// router acknowledged must be on replica1, the primary of timeline 2: the
// old leader's are lost at its rewind. (Before fencing, the router took
// the old leader as the primary as soon as replica1 missed one poll: 337
// acknowledged rows landed there in a run of the same by hand.)
func TestSplitBrainTakesNoWriteOnTheOldPrimary(t *testing.T) {
	c := promoteCluster(t)
	ctx := context.Background()
	nodes := c.Nodes() // leader, replica1, replica2
	r := loggedRouter(t, ctx, dbrouter.Config{PrimaryURL: c.PrimaryURL(), ReplicaURLs: c.ReplicaURLs(), PollInterval: 50 * time.Millisecond})
	const table = "acks_split"
	w := startAckWriters(t, r, table, 4)
	if err := c.WaitCaughtUp(ctx, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	leader, err := dbrouter.NodeName(c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	replica1 := nodes[1].Name
	testcluster.Eventually(t, 5*time.Second, "writes on the leader", func() bool { return w.ackedOn(leader) > 0 })

	if err := c.Stop(ctx, cluster.LeaderName, true); err != nil {
		t.Fatal(err)
	}
	// Writes issued before this may be lost with the leader's last WAL:
	// replication is asynchronous. Those after it are the router's doing.
	stopped := w.next.Load()
	testcluster.Eventually(t, 5*time.Second, "the router sees the leader down", func() bool { return !r.Writable() })
	super1 := superConn(t, c, replica1)
	if _, err := super1.Exec(ctx, "SELECT pg_promote()"); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "writes on replica1", func() bool { return w.ackedOn(replica1) > 0 })

	// The old leader is back, a primary on timeline 1.
	if err := c.Start(ctx, cluster.LeaderName); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 10*time.Second, "the router sees the old leader as a primary again", func() bool {
		h := memberHealth(r, leader)
		return h.Up && !h.InRecovery
	})
	testcluster.Eventually(t, 5*time.Second, "a split brain on the status pages", func() bool { return r.SplitBrain() != "" })
	if h := memberHealth(r, leader); h.Status != dbrouter.Superseded {
		t.Errorf("the old leader is %v, want %v", h.Status, dbrouter.Superseded)
	}

	// replica1 is away for a moment.
	onReplica1 := w.ackedOn(replica1)
	if err := c.Stop(ctx, replica1, true); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 5*time.Second, "the router sees replica1 down", func() bool { return !memberHealth(r, replica1).Up })
	time.Sleep(time.Second) // the writers keep trying meanwhile
	if err := c.Start(ctx, replica1); err != nil {
		t.Fatal(err)
	}
	testcluster.Eventually(t, 15*time.Second, "writes on replica1 again", func() bool { return w.ackedOn(replica1) > onReplica1 })
	acks := w.finish()

	// Every acknowledged write must be on replica1.
	kept := idsOn(t, c.URL(nodes[1]), table)
	lost, crashed := 0, 0
	for id := range acks {
		switch {
		case kept[id]:
		case id <= stopped:
			crashed++
		default:
			lost++
		}
	}
	t.Logf("%d writes acknowledged, %d on replica1's timeline; %d acknowledged before the leader stopped did not reach replica1 (asynchronous replication)",
		len(acks), len(kept), crashed)
	if lost > 0 {
		t.Fatalf("%d writes acknowledged after the leader stopped are not on the new primary", lost)
	}
}
