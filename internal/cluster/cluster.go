// Package cluster starts and stops a local PostgreSQL cluster — one leader
// and N streaming-replication followers — from the server binaries on the
// machine, and pulls its lag levers (pause replay, apply delay, stop and
// start a node). It is what `quest cluster` and every test that needs a
// real cluster use.
//
// With Config.HA it makes a Patroni cluster instead — etcd and members run
// by Patroni, which fails over, switches over and rewinds (ha.go) — and
// the same handle, its levers and its URLs follow Patroni's leader.
//
// A cluster lives in a state directory holding cluster.json: the nodes,
// their ports and data directories, the postmasters' pids and the roles'
// generated passwords. When the servers must run as another OS user than
// the caller (root cannot run PostgreSQL), the data directories live under
// /var/lib/quest/<hash of the state dir>, so a state dir under a 0700 home
// or temp dir still works.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Role names created on the leader.
const (
	SuperUser   = "postgres"
	AppRole     = "quest"
	ReplRole    = "quest_replicator"
	LeverRole   = "quest_lever"
	Database    = "quest"
	LeaderName  = "leader"
	stateFile   = "cluster.json"
	stateFormat = 1
)

// DefaultPort is the leader's port when none is given; followers take the
// ports after it.
const DefaultPort = 54320

// Config describes a cluster to bring up.
type Config struct {
	Dir      string    // state directory (required)
	Replicas int       // followers; 0 means 2
	Port     int       // leader's port, followers on Port+1…; 0 picks free ports
	User     string    // OS user for the servers when running as root; "" picks postgres or creates one
	BinDir   string    // PostgreSQL bin directory; "" searches with Search
	Search   Search    // where to look for the binaries when BinDir is empty
	Log      io.Writer // progress lines; nil discards them

	// HA makes a Patroni cluster instead: one etcd member and Replicas+1
	// PostgreSQL members, node1, node2, …, each run by its Patroni (ha.go).
	HA   bool
	Sync bool // with HA: bootstrap with Patroni's synchronous_mode on
	// DCS, with HA, is how Patroni talks to etcd: "etcd" (the v2 API) or
	// "etcd3"; "" picks by Patroni's version (see patroniDCS). Tests force
	// "etcd3" to play the leader-key take-back of Patroni 3.0.2.
	DCS string
}

// Node is one server of the cluster.
type Node struct {
	Name    string `json:"name"` // "leader", "replica1", …
	Port    int    `json:"port"`
	DataDir string `json:"data_dir"`
	PID     int    `json:"pid"` // last postmaster pid seen

	// Role is a Patroni member's role when last asked (RoleLeader,
	// RoleReplica, RoleSyncStandby); empty on a plain cluster.
	Role string `json:"role,omitempty"`
}

// Leader reports whether the node was created as the leader or, in a
// Patroni cluster, led when last asked.
func (n Node) Leader() bool { return n.Name == LeaderName || n.Role == RoleLeader }

// ReplicaName is the name of the i-th follower (from 1): "replica1". The
// launcher, the compose file, the replica URLs (application_name) and so
// the router's node names all use it.
func ReplicaName(i int) string { return fmt.Sprintf("replica%d", i) }

type passwords struct {
	Super string `json:"super"`
	App   string `json:"app"`
	Repl  string `json:"repl"`
	Lever string `json:"lever"`
}

// state is what cluster.json holds.
type state struct {
	Format    int       `json:"format"`
	Phase     string    `json:"phase"` // "creating" until every node streams, then "ready"
	Created   time.Time `json:"created"`
	BinDir    string    `json:"bin_dir"`
	User      osUser    `json:"user"`
	DataRoot  string    `json:"data_root"`
	SocketDir string    `json:"socket_dir"`
	Passwords passwords `json:"passwords"`
	Nodes     []Node    `json:"nodes"` // a Patroni cluster's: the last known leader first
	HA        *haState  `json:"ha,omitempty"`
}

// Cluster is a handle on a cluster recorded in a state directory.
type Cluster struct {
	dir string
	log io.Writer

	mu sync.Mutex // guards st's pids and the writing of cluster.json
	st state
}

// ErrNotCluster is returned by Open for a directory without a cluster.
var ErrNotCluster = errors.New("no Quest cluster here")

// Open loads the cluster recorded in dir.
func Open(dir string) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(abs, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (start one with: quest cluster up --dir %s)", abs, ErrNotCluster, dir)
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil || st.Format != stateFormat || len(st.Nodes) == 0 {
		return nil, fmt.Errorf("%s: %s is not a Quest cluster file", abs, stateFile)
	}
	c := &Cluster{dir: abs, st: st, log: io.Discard}
	if st.HA != nil {
		// Ask Patroni who leads now, so that PrimaryURL and ReplicaURLs
		// follow a failover; without an answer the last known roles stay.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c.refreshRoles(ctx)
	}
	return c, nil
}

// SetLog sends progress lines to w.
func (c *Cluster) SetLog(w io.Writer) {
	if w == nil {
		w = io.Discard
	}
	c.log = w
}

// Dir returns the state directory.
func (c *Cluster) Dir() string { return c.dir }

// Nodes returns the nodes, leader first.
func (c *Cluster) Nodes() []Node { return append([]Node(nil), c.st.Nodes...) }

// Node returns the named node. "primary" is accepted for the leader; in a
// Patroni cluster "leader" and "primary" name the member that led when
// last asked.
func (c *Cluster) Node(name string) (Node, error) {
	if name == "primary" {
		name = LeaderName
	}
	if c.st.HA != nil && name == LeaderName {
		if n := c.st.Nodes[0]; n.Leader() {
			return n, nil
		}
		return Node{}, fmt.Errorf("no member leads %s now (a failover under way?); see quest cluster status", c.dir)
	}
	names := make([]string, 0, len(c.st.Nodes))
	for _, n := range c.st.Nodes {
		if n.Name == name {
			return n, nil
		}
		names = append(names, n.Name)
	}
	return Node{}, fmt.Errorf("unknown node %q; this cluster has %s", name, strings.Join(names, ", "))
}

// URL returns a connection URL for the application role on a node.
func (c *Cluster) URL(n Node) string {
	return pgURL(AppRole, c.st.Passwords.App, n.Port, Database)
}

// PrimaryURL is the application's URL for the leader.
func (c *Cluster) PrimaryURL() string { return c.URL(c.st.Nodes[0]) }

// ReplicaURLs are the application's URLs for the followers, in order.
// Each names its follower in application_name, which the router takes as
// the replica's identity (see dbrouter.Node).
func (c *Cluster) ReplicaURLs() []string {
	var urls []string
	for _, n := range c.st.Nodes[1:] {
		urls = append(urls, c.URL(n)+"&application_name="+n.Name)
	}
	return urls
}

// LeverURL is the lever role's URL for a node.
func (c *Cluster) LeverURL(n Node) string {
	return pgURL(LeverRole, c.st.Passwords.Lever, n.Port, Database)
}

// SuperURL is the superuser's URL for a node; only tests and the launcher
// itself use it.
func (c *Cluster) SuperURL(n Node) string {
	return pgURL(SuperUser, c.st.Passwords.Super, n.Port, "postgres")
}

func pgURL(user, password string, port int, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: db, RawQuery: "sslmode=disable"}
	return u.String()
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, format+"\n", args...)
}

func (c *Cluster) save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := json.MarshalIndent(c.st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(c.dir, stateFile))
}

// dataRootFor picks where the data directories of the state dir live.
func dataRootFor(stateDir string, u osUser) string {
	if u.switches() {
		return filepath.Join("/var/lib/quest", hashOf(stateDir))
	}
	return filepath.Join(stateDir, "data")
}

// socketDirFor picks a short Unix socket directory the project owns.
// Socket paths are limited to about 107 bytes.
func socketDirFor(stateDir, dataRoot string, u osUser) string {
	if u.switches() {
		return filepath.Join(dataRoot, "run")
	}
	return filepath.Join(os.TempDir(), "quest-"+hashOf(stateDir))
}

func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func randomSecret() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// choosePorts returns the leader's and followers' ports, checking that each
// is free on 127.0.0.1. port 0 picks free ports.
func choosePorts(port, n int) ([]int, error) {
	if port < 0 || port > 65535-n {
		return nil, fmt.Errorf("port %d out of range; use 1024–%d, or 0 for free ports", port, 65535-n)
	}
	if port == 0 {
		return FreePorts(n)
	}
	ports := make([]int, n)
	for i := range ports {
		ports[i] = port + i
		if err := portFree(ports[i]); err != nil {
			return nil, err
		}
	}
	return ports, nil
}

// FreePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago (the kernel picked them).
func FreePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d on 127.0.0.1 is already in use; choose another base port with --port (or --port 0 for free ones)", port)
	}
	return l.Close()
}
