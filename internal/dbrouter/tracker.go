package dbrouter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// tracker polls every node in the background and publishes snapshots. It
// has one connection of its own per node, used by that node's poll loop
// alone: request traffic, however heavy, never queues the polls, and
// status pages read the snapshot instead of asking the nodes.
type tracker struct {
	r        *Router
	interval time.Duration
	maxBytes int64
	maxLag   time.Duration

	// ctx lives from start until close; each member's loop runs under a
	// child of it that ends when the member is dropped.
	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	members     []*member // in configuration (or discovery) order
	started     bool      // the loops run: a member added now starts its own
	replication []ReplicationRow
	replErr     string
	patroniURL  string
	patroniErr  string
	ring        []primarySample // ordered by lsn
	ringFull    bool            // samples were dropped from the ring's start
	lastSeen    time.Time       // last poll that reached the primary
	primary     *member         // the member in slot 0
	hadPrimary  bool            // some node has answered as the primary
	fence       uint32          // the highest timeline a member claims (see choosePrimary)
	splitBrain  string          // what the pages say of a split brain; "" without one

	done sync.WaitGroup
}

// member is one node as the tracker keeps it.
type member struct {
	node    *Node
	health  Health
	removed bool               // dropped by discovery: its polls publish nothing
	stop    context.CancelFunc // ends its poll loop
	// claim is the timeline the node last answered on as a primary, kept
	// while it is down and cleared once it answers as a standby: a
	// promoted node that crashed still fences the timelines below its own.
	claim uint32
	// replayed is the furthest a standby was seen to replay on timeline
	// replayedOn, and floor what a restart behind it must replay past
	// before the node gets reads again (see noteReplay).
	replayed, floor uint64
	replayedOn      uint32
	// received is the timeline its walreceiver last received, and
	// receivedBy the postmaster start it was seen under: a standby's
	// timeline while its walreceiver is down (see Health.Timeline).
	received   uint32
	receivedBy time.Time
}

func (t *tracker) start(ctx context.Context) {
	t.ctx, t.cancel = context.WithCancel(context.WithoutCancel(ctx))
	ctx = t.ctx
	t.mu.Lock()
	members := append([]*member(nil), t.members...)
	t.mu.Unlock()
	// One first round before routing starts, so a fresh router does not
	// send everything to the primary for an interval: the first configured
	// node first (usually the primary, whose position is the oldest sample
	// the lag estimate can use); then the others. A replica behind that sample has an unknown lag; one a
	// few WAL records behind catches up within milliseconds, so it is
	// asked again a few times before routing starts without it.
	t.pollOnce(ctx, members[0])
	var first sync.WaitGroup
	for _, m := range members[1:] {
		first.Add(1)
		go func() {
			defer first.Done()
			t.pollOnce(ctx, m)
			for k := 0; k < 5 && t.lagUnknown(m.node); k++ {
				time.Sleep(10 * time.Millisecond)
				t.pollOnce(ctx, m)
			}
		}()
	}
	first.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.started = true
	for _, m := range t.members {
		t.startLoop(m, false)
	}
}

// startLoop starts member m's poll loop: each node has its own, so a node
// that hangs delays no other. now polls at once (a member added at run
// time). Called with t.mu held.
func (t *tracker) startLoop(m *member, now bool) {
	ctx, stop := context.WithCancel(t.ctx)
	m.stop = stop
	p := m.node.probe
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		defer p.close()
		if now {
			t.pollOnce(ctx, m)
		}
		tick := time.NewTicker(t.interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-p.kick:
			}
			t.pollOnce(ctx, m)
		}
	}()
}

// add makes n a member. Until its first poll it counts as down, so it
// gets no traffic.
func (t *tracker) add(n *Node) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.members) == maxNodes {
		return fmt.Errorf("at most %d nodes are supported", maxNodes)
	}
	m := &member{node: n, health: Health{Name: n.Name, Member: n.Name, Err: "not polled yet"}}
	t.members = append(t.members, m)
	if t.primary == nil {
		t.primary = m // a placeholder until some node answers as the primary
	}
	if t.started {
		t.startLoop(m, true)
		t.publish(time.Now())
	}
	return nil
}

// remove drops the member called name. Unless force is set, it keeps the
// one in slot 0: the last primary keeps its slot until another node
// answers as the primary. Its pool closes after grace, so that reads
// already routed to it finish.
func (t *tracker) remove(name string, grace time.Duration, force bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := slices.IndexFunc(t.members, func(m *member) bool { return m.node.Name == name })
	if k < 0 || (t.members[k] == t.primary && !force) {
		return false
	}
	m := t.members[k]
	t.members = slices.Delete(t.members, k, k+1)
	if m == t.primary {
		t.primary = nil
		t.choosePrimary()
	}
	m.removed = true
	if m.stop != nil {
		m.stop()
	}
	t.publish(time.Now())
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		select {
		case <-time.After(grace):
		case <-t.ctx.Done():
		}
		m.node.pool.Close()
	}()
	return true
}

// memberAddrs returns each member's address (host:port) by name.
func (t *tracker) memberAddrs() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]string, len(t.members))
	for _, m := range t.members {
		out[m.node.Name] = m.node.addr
	}
	return out
}

// setPatroni records what discovery last learned: which API answered (or
// why none did) and, when it answered, what Patroni says of each member.
func (t *tracker) setPatroni(url, errText string, byName map[string]Patroni) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.patroniURL, t.patroniErr = url, errText
	if byName != nil {
		for _, m := range t.members {
			m.health.Patroni = byName[m.node.Name]
		}
	}
	t.publish(time.Now())
}

// lagUnknown reports whether node n's lag is unknown in the last snapshot.
func (t *tracker) lagUnknown(n *Node) bool {
	snap := t.r.snap.Load()
	slot := snap.slotOf(n)
	return slot >= 0 && snap.nodes[slot].LagUnknown
}

// kick asks for node n to be polled now, without waiting: a request saw
// one of its connections fail, and whether the node itself is gone is
// for the probe to tell.
func (t *tracker) kick(n *Node) {
	select {
	case n.probe.kick <- struct{}{}:
	default:
	}
}

// close stops every loop and closes every pool.
func (t *tracker) close() {
	if t.cancel != nil {
		t.cancel()
	}
	t.done.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range t.members {
		m.node.probe.close() // the probes of a router whose start never ran
		m.node.pool.Close()
	}
}

// publish recomputes every node's lag and exclusion and swaps in a new
// snapshot. Called with t.mu held.
func (t *tracker) publish(now time.Time) {
	snap := &snapshot{n: len(t.members), replication: t.replication, replErr: t.replErr,
		patroniURL: t.patroniURL, patroniErr: t.patroniErr, splitBrain: t.splitBrain}
	if t.primary != nil {
		snap.nodes[0], snap.members[0] = t.primary.health, t.primary.node
	}
	next := 1
	for _, m := range t.members {
		if m != t.primary {
			snap.nodes[next], snap.members[next] = m.health, m.node
			next++
		}
	}
	primary := &snap.nodes[0]
	primary.Name = "primary"
	snap.primaryDown = !primary.Up || primary.InRecovery || !t.writer(primary)
	if !primary.Up {
		primary.Status = Down
	} else if primary.InRecovery || !t.writer(primary) {
		primary.Status = NotReplica
	}
	// The reference position: the primary's, or with the primary gone the
	// freshest replica's, so the replicas are never all excluded.
	ref := primary.Position
	if snap.primaryDown {
		ref = 0
		for i := 1; i < snap.n; i++ {
			if n := snap.nodes[i]; n.Up && n.InRecovery && n.Position > ref {
				ref = n.Position
			}
		}
	}
	hist := t.r.history.Load()
	for i := 1; i < snap.n; i++ {
		n := &snap.nodes[i]
		switch {
		case !n.Up:
			n.Status = Down
			continue
		case !n.InRecovery && n.Timeline < t.fence:
			n.Status = Superseded
			continue
		case !n.InRecovery:
			n.Status = NotReplica
			continue
		}
		if s := offHistory(hist, n); s != Usable {
			n.Status = s
			continue
		}
		if n.Floor != 0 && n.Position < n.Floor {
			n.Status = WentBack
			continue
		}
		if ref > n.Position {
			n.LagBytes = int64(ref - n.Position)
		}
		if !snap.primaryDown {
			var known bool
			n.Lag, known = t.lagTime(n.Position, n.CheckedAt)
			n.LagUnknown = !known
		} else if n.LagBytes > 0 {
			n.Lag = now.Sub(t.lastSeen) // at least as long as the primary has been gone
		}
		if n.LagBytes > t.maxBytes || n.Lag > t.maxLag || n.LagUnknown {
			n.Status = Lagging
		}
	}
	t.r.snap.Store(snap)
}

// markDown records that node n could not be reached on a fresh
// connection (a request's connect failed): it gets no reads, and the
// primary no writes, until a poll reaches it again. Its pooled
// connections are dropped with it.
func (t *tracker) markDown(n *Node, err error) {
	n.pool.Reset()
	t.mu.Lock()
	defer t.mu.Unlock()
	k := slices.IndexFunc(t.members, func(m *member) bool { return m.node == n })
	if k < 0 {
		return // dropped meanwhile
	}
	m := t.members[k]
	m.setHealth(Health{Name: n.Name, Member: n.Name, CheckedAt: time.Now(), Err: err.Error(), Patroni: m.health.Patroni})
	t.choosePrimary()
	t.publish(time.Now())
}
