// Package dbrouter owns Quest's connection pools — one per database node —
// and runs every query on the node its strategy picks: reads through Read,
// writes through Write. A background tracker polls the nodes for their
// role, health and replication lag: the primary is whichever node answers
// as not in recovery, so a promotion moves the writes. Routing itself only
// reads the tracker's last snapshot, so it adds no query to a request. The
// package knows pgx and nothing of HTTP.
package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// maxNodes bounds the nodes (the primary and its replicas), so routing
// works on fixed-size arrays and allocates nothing. It is a configuration
// limit: New refuses more URLs, and discovery leaves further Patroni
// members out, saying so in the log and on the status pages.
const maxNodes = 16

// Config configures a Router. Zero values mean the defaults.
//
// PrimaryURL and ReplicaURLs together list the nodes, in any order: which
// one is the primary is read from each node on every poll.
type Config struct {
	PrimaryURL  string
	ReplicaURLs []string
	MaxConns    int32 // per pool; default 10

	Strategy     Strategy      // in force at start (the zero value is Primary)
	TimedDelay   time.Duration // Timed: how long after a write reads stay on the primary; default 2 s
	PollInterval time.Duration // tracker; default 100 ms
	MaxLag       time.Duration // a replica further behind gets no reads; default 30 s
	MaxLagBytes  int64         // the same in bytes; default 64 MB

	// NodeTimeout bounds one attempt on one node: a read's batch, or a
	// write from BEGIN to its COMMIT and position. A node that stops
	// answering (a hung host, a SIGSTOPped server) holds a request no
	// longer: a read moves on to the next node, a write whose COMMIT was
	// in flight ends with ErrOutcomeUnknown, any other with ErrReadOnly.
	// Default 5 s: above any page's query here, below the HTTP server's
	// write timeout, and long past the tracker's own verdict (its probe
	// gives up after max(10 polls, 1 s) and marks the node down).
	NodeTimeout time.Duration

	// CausalWait bounds how long a causal read waits, in-band on a replica,
	// for the session's position; default 20 ms.
	CausalWait time.Duration
	// PreferFresh: causal skips the session's replica when it is further
	// behind than this while a fresher replica exists; default 1 s.
	PreferFresh time.Duration

	// PatroniURLs, when set, are Patroni REST APIs (any members', several
	// allowed: the first that answers is used). The router then asks
	// Patroni for the cluster's members every DiscoverInterval, adds the
	// ones it does not have and drops the ones Patroni no longer lists,
	// without a restart. A member's URL is PrimaryURL with the member's
	// host, port and name (as application_name): PrimaryURL gives the
	// credentials and database, and with ReplicaURLs the nodes to use
	// until Patroni first answers. Routing still follows each node's own
	// answers (pg_is_in_recovery, on every poll); what Patroni says of a
	// member is shown beside them (Health.Patroni).
	PatroniURLs      []string
	DiscoverInterval time.Duration // default 1 s

	// Rand picks random replicas; tests pass a seeded source to make
	// anomalies deterministic (reads then share it under a lock). Default:
	// math/rand/v2's top-level generator, per thread and lock-free.
	Rand *rand.Rand
	// Logger receives routing failures; default discards.
	Logger *slog.Logger
}

// Node is one database server with its pool.
type Node struct {
	// Name is the node's identity, whatever its role: its URL's
	// application_name when set (a Patroni member's name, when discovered),
	// else host:port/dbname. It seeds rendezvous hashing, so it must not
	// depend on the node's place in a list: adding or removing a replica
	// then moves only the sessions that must move. Pages show the primary
	// as "primary" (Router.Label).
	Name string

	pool   *pgxpool.Pool
	addr   string // host:port, to tell when discovery moves a member
	seed   uint64 // the node's rendezvous identity, from its name
	probe  *probe // the tracker's own connection to it
	counts *nodeCounters
	// conns counts the connections its pool has made: a causal read may
	// trust the tracker's replay position only if no connection was made
	// after the poll that read it began (see causalOnReplica).
	conns atomic.Uint64
}

// Router routes reads and writes over the nodes.
type Router struct {
	strategy    atomic.Uint32
	timedDelay  time.Duration
	causalWait  time.Duration
	preferFresh time.Duration
	nodeTimeout time.Duration
	maxConns    int32
	// pollInterval bounds the error of the tracker's lag estimate.
	pollInterval time.Duration
	log          *slog.Logger

	// history is the cluster's system identifier, the primary's current
	// timeline and where its ancestors ended (see followHistory).
	history atomic.Pointer[history]

	randMu sync.Mutex
	rand   *rand.Rand // nil: the lock-free top-level generator (intn)

	snap    atomic.Pointer[snapshot]
	tracker *tracker
	counts  counters
	causal  causalCounters
	// discovery asks Patroni for the members; nil without PatroniURLs.
	discovery *discovery

	// testAfterCommit, set only by tests, runs between a write's COMMIT
	// and the read of its position: where a primary crash hurts most.
	testAfterCommit func()
}

// New creates the pools, polls every node once and starts the tracker. It
// does not fail for a node that is down: that node gets no reads until it
// comes up.
func New(ctx context.Context, cfg Config) (*Router, error) {
	if cfg.PrimaryURL == "" {
		return nil, errors.New("dbrouter: no primary URL")
	}
	if len(cfg.ReplicaURLs) > maxNodes-1 {
		return nil, fmt.Errorf("dbrouter: %d nodes; at most %d are supported", len(cfg.ReplicaURLs)+1, maxNodes)
	}
	if cfg.Strategy >= numStrategies {
		return nil, fmt.Errorf("dbrouter: unknown strategy %d", cfg.Strategy)
	}
	cfg = withDefaults(cfg)
	r := &Router{timedDelay: cfg.TimedDelay, causalWait: cfg.CausalWait, preferFresh: cfg.PreferFresh, nodeTimeout: cfg.NodeTimeout,
		pollInterval: cfg.PollInterval, log: cfg.Logger, rand: cfg.Rand, maxConns: cfg.MaxConns}
	r.strategy.Store(uint32(cfg.Strategy))
	t := &tracker{r: r, interval: cfg.PollInterval, maxBytes: cfg.MaxLagBytes, maxLag: cfg.MaxLag}
	r.tracker = t
	urls := append([]string{cfg.PrimaryURL}, cfg.ReplicaURLs...)
	seen := map[string]int{}
	var configs []*pgxpool.Config
	for i, u := range urls {
		pc, err := poolConfig(u, cfg.MaxConns)
		if err != nil {
			return nil, fmt.Errorf("dbrouter: node %d of %d: %w", i+1, len(urls), err)
		}
		name := replicaName(pc.ConnConfig)
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("dbrouter: node %d: %w", i+1, err)
		}
		if j, dup := seen[name]; dup {
			return nil, fmt.Errorf("dbrouter: nodes %d and %d are both named %q; give each URL its own application_name", j+1, i+1, name)
		}
		seen[name] = i
		configs = append(configs, pc)
	}
	var members []patroniMember
	var askErr error
	if len(cfg.PatroniURLs) > 0 {
		d, err := newDiscovery(r, cfg.PatroniURLs, configs[0], cfg.DiscoverInterval)
		if err != nil {
			return nil, err
		}
		r.discovery = d
		// Patroni's members, when it answers at once, are the nodes from
		// the start; the configured URLs are only the fallback.
		members, askErr = d.ask(ctx)
		if admitted := d.admit(members); askErr == nil && len(admitted) > 0 {
			configs = configs[:0]
			for _, m := range admitted {
				configs = append(configs, d.configFor(m))
			}
		}
	}
	for _, pc := range configs {
		if _, err := r.newNode(ctx, pc); err != nil {
			r.Close()
			return nil, err
		}
	}
	if r.discovery != nil {
		r.discovery.record(members, askErr)
	}
	t.mu.Lock()
	t.publish(time.Now()) // every node down until polled: no nil members
	t.mu.Unlock()
	t.start(ctx)
	if r.discovery != nil {
		r.discovery.start(t.ctx)
	}
	return r, nil
}

// checkName refuses a node name pages could not tell apart.
func checkName(name string) error {
	if name == "primary" {
		return errors.New(`named "primary", the name pages give the current primary; choose another application_name`)
	}
	return nil
}

// newNode makes a node's pool and probe and adds it to the tracker, which
// polls it before it gets any traffic. pc is not kept.
func (r *Router) newNode(ctx context.Context, pc *pgxpool.Config) (*Node, error) {
	pc = pc.Copy()
	name := replicaName(pc.ConnConfig)
	if pc.ConnConfig.RuntimeParams["application_name"] == "" {
		pc.ConnConfig.RuntimeParams["application_name"] = "quest"
	}
	n := &Node{Name: name, seed: nodeSeed(name), counts: r.counts.of(name),
		addr: fmt.Sprintf("%s:%d", pc.ConnConfig.Host, pc.ConnConfig.Port)}
	pc.ConnConfig.Tracer = &roundTripTracer{n: &n.counts.roundTrips}
	afterConnect := pc.AfterConnect
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		n.conns.Add(1)
		if afterConnect != nil {
			return afterConnect(ctx, c)
		}
		return nil
	}
	n.probe = newProbe(pc.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: %s: %w", name, err)
	}
	n.pool = pool
	if err := r.tracker.add(n); err != nil {
		pool.Close()
		return nil, fmt.Errorf("dbrouter: %s: %w", name, err)
	}
	return n, nil
}

func withDefaults(cfg Config) Config {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10
	}
	if cfg.TimedDelay <= 0 {
		cfg.TimedDelay = 2 * time.Second
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.MaxLag <= 0 {
		cfg.MaxLag = 30 * time.Second
	}
	if cfg.MaxLagBytes <= 0 {
		cfg.MaxLagBytes = 64 << 20
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = 5 * time.Second
	}
	if cfg.CausalWait <= 0 {
		cfg.CausalWait = 20 * time.Millisecond
	}
	if cfg.PreferFresh <= 0 {
		cfg.PreferFresh = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}

// NodeName is the name the router gives the node with this URL: its
// application_name, else host:port/dbname.
func NodeName(url string) (string, error) {
	cc, err := pgx.ParseConfig(url)
	if err != nil {
		return "", err
	}
	return replicaName(cc), nil
}

// replicaName is a node's identity: its application_name when the URL
// sets one, else host:port/dbname.
func replicaName(cc *pgx.ConnConfig) string {
	if n := cc.RuntimeParams["application_name"]; n != "" {
		return n
	}
	return fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)
}

// Stat returns the node's pool statistics, for metrics.
func (n *Node) Stat() *pgxpool.Stat { return n.pool.Stat() }

// Replicas returns the nodes other than the primary: the replicas, and
// any node down while it was not the primary.
func (r *Router) Replicas() []*Node { return r.Nodes()[1:] }

// Nodes returns every node, the primary first, then the others in
// configuration (or discovery) order.
func (r *Router) Nodes() []*Node {
	snap := r.snap.Load()
	return append([]*Node(nil), snap.members[:snap.n]...)
}

// Label is how pages, headers and metrics name node n now: "primary" for
// the primary (or, while there is none, the last one), else its Name.
func (r *Router) Label(n *Node) string {
	snap := r.snap.Load()
	if slot := snap.slotOf(n); slot >= 0 {
		return snap.nodes[slot].Name
	}
	return n.Name // no longer a member
}

// CausalWait is how long a causal read may wait in-band on a replica.
func (r *Router) CausalWait() time.Duration { return r.causalWait }

// TimedDelay is how long after a write the timed strategy reads from the
// primary.
func (r *Router) TimedDelay() time.Duration { return r.timedDelay }

// Strategy returns the strategy in force.
func (r *Router) Strategy() Strategy { return Strategy(r.strategy.Load()) } // #nosec G115 -- only SetStrategy stores, below numStrategies

// SetStrategy switches the strategy for every request from now on.
func (r *Router) SetStrategy(s Strategy) error {
	if s >= numStrategies {
		return fmt.Errorf("dbrouter: unknown strategy %d", s)
	}
	r.strategy.Store(uint32(s))
	return nil
}

// Close stops the tracker and discovery and closes every pool.
func (r *Router) Close() {
	if r.tracker != nil {
		r.tracker.close()
	}
}
