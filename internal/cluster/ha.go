package cluster

// A Patroni cluster (quest cluster up --ha) is one etcd member and
// Replicas+1 PostgreSQL members, node1, node2, …, each run by its own
// Patroni, which bootstraps, replicates, fails over and rewinds on its own.
// Everything listens on 127.0.0.1 and runs as the server user. From the
// base port P (--port):
//
//	PostgreSQL     node1 P, node2 P+1, node3 P+2, …
//	Patroni REST   node1 P+10, node2 P+11, node3 P+12, …
//	etcd           clients P+20, peers P+21
//
// The data root holds, per member, its data directory (node1/), its
// Patroni configuration (node1.patroni.json: JSON, which Patroni reads as
// the YAML it is), its log (node1.log: Patroni's and PostgreSQL's lines)
// and its pgpass file; and etcd's data (etcd/) and log (etcd.log).
// Patroni and etcd run in the data root; Patroni starts PostgreSQL itself,
// detached, so a member's postmaster is not Patroni's child.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"quest/internal/poll"
)

// Patroni's timing, in seconds. ttl is how long the leader key outlives a
// leader that stopped renewing it: after a crash a replica is promoted
// about ttl seconds later. Patroni runs its HA loop every loop_wait, and
// retries etcd and PostgreSQL for retry_timeout before it demotes. Patroni
// asks for loop_wait + 2 × retry_timeout ≤ ttl, so that a leader cut off
// from etcd demotes itself before its key expires and another is promoted.
const (
	haTTL          = 10
	haLoopWait     = 1
	haRetryTimeout = 4
)

// PatroniTTL is haTTL as a duration: what a failover's wait is measured
// against (the lab's HA fault runs).
const PatroniTTL = haTTL * time.Second

// Offsets from the base port of the Patroni REST APIs and of etcd.
const (
	restOffset = 10
	etcdOffset = 20
)

// Patroni's member roles, as its REST API names them.
const (
	RoleLeader      = "leader"
	RoleReplica     = "replica"
	RoleSyncStandby = "sync_standby"
)

// haSettings are settings a Patroni member has on top of sharedSettings.
// A replica retries its primary every wal_retrieve_retry_interval (5s by
// default): after a bootstrap or a failover its slot on the new primary
// appears a Patroni loop later, so a short interval saves seconds.
var haSettings = []string{"wal_retrieve_retry_interval = '1s'"}

// MemberName is the name of the i-th member (from 1) of a Patroni cluster:
// "node1". Patroni's name, the replication slot and application_name all
// use it.
func MemberName(i int) string { return fmt.Sprintf("node%d", i) }

// ErrNoHATools is returned when patroni or etcd is not installed.
var ErrNoHATools = errors.New("an HA cluster needs Patroni and etcd")

const haInstallHint = "Debian/Ubuntu: sudo apt-get install patroni etcd-server (Quest starts its own; the packages' services are not needed); " +
	"elsewhere: pip install 'patroni[etcd3]' psycopg2-binary, and etcd 3.4 or newer from its releases"

// haState is what cluster.json holds about a Patroni cluster on top of the
// nodes (the members' PostgreSQL ports, data directories and postmasters).
type haState struct {
	Scope      string     `json:"scope"` // Patroni's cluster name, also etcd's cluster token
	Sync       bool       `json:"sync"`  // bootstrapped with synchronous_mode
	PatroniBin string     `json:"patroni_bin"`
	EtcdBin    string     `json:"etcd_bin"`
	Etcd       etcdState  `json:"etcd"`
	Members    []haMember `json:"members"` // in creation order: node1, node2, …
	// DCS is Patroni's configuration section for etcd, fixed when the
	// cluster is made (the v2 and v3 APIs keep separate keys): "etcd3", or
	// "etcd" (the v2 API; etcd then runs with --enable-v2) for a Patroni
	// older than 3.0.3, see patroniDCS. Empty in clusters made before it:
	// "etcd3".
	DCS string `json:"dcs,omitempty"`
}

type etcdState struct {
	ClientPort int    `json:"client_port"`
	PeerPort   int    `json:"peer_port"`
	DataDir    string `json:"data_dir"`
	PID        int    `json:"pid"`
}

type haMember struct {
	Name     string `json:"name"`
	RESTPort int    `json:"rest_port"`
	PID      int    `json:"patroni_pid"`
	// DelayMS is the recovery_min_apply_delay Patroni is told to keep on
	// this member (see keepDelay).
	DelayMS int64 `json:"apply_delay_ms"`
}

// FindHATools finds patroni and etcd on PATH; the error, ErrNoHATools,
// says what to install.
func FindHATools() (patroni, etcd string, err error) {
	var missing []string
	patroni, err = exec.LookPath("patroni")
	if err != nil {
		missing = append(missing, "patroni")
	}
	etcd, err = exec.LookPath("etcd")
	if err != nil {
		missing = append(missing, "etcd")
	}
	if len(missing) > 0 {
		return "", "", fmt.Errorf("%w: %s not found on PATH; %s", ErrNoHATools, strings.Join(missing, " and "), haInstallHint)
	}
	return patroni, etcd, nil
}

// chooseHAPorts returns the members' PostgreSQL ports, their REST ports,
// and etcd's client and peer ports, in that order, checking that each is
// free. port 0 picks free ports.
func chooseHAPorts(port, members int) ([]int, error) {
	if port == 0 {
		return FreePorts(2*members + 2)
	}
	if port < 0 || port > 65535-etcdOffset-1 {
		return nil, fmt.Errorf("port %d out of range; use 1024–%d, or 0 for free ports", port, 65535-etcdOffset-1)
	}
	var ports []int
	for i := 0; i < members; i++ {
		ports = append(ports, port+i)
	}
	for i := 0; i < members; i++ {
		ports = append(ports, port+restOffset+i)
	}
	ports = append(ports, port+etcdOffset, port+etcdOffset+1)
	for _, p := range ports {
		if err := portFree(p); err != nil {
			return nil, err
		}
	}
	return ports, nil
}

// createHA makes a new Patroni cluster: etcd first, then every member's
// Patroni at once; the first to take the leader key runs initdb, the others
// clone it with pg_basebackup. On failure it stops what it started and
// removes what it made.
func createHA(ctx context.Context, abs string, cfg Config) (_ *Cluster, err error) {
	began := time.Now()
	patroni, etcd, err := FindHATools()
	if err != nil {
		return nil, err
	}
	c, version, err := newCluster(ctx, abs, cfg)
	if err != nil {
		return nil, err
	}
	n := cfg.Replicas + 1
	ports, err := chooseHAPorts(cfg.Port, n)
	if err != nil {
		return nil, err
	}
	switch cfg.DCS {
	case "":
		cfg.DCS = patroniDCS(ctx, patroni)
	case "etcd", "etcd3":
	default:
		return nil, fmt.Errorf("unknown DCS %q: want etcd (the v2 API) or etcd3", cfg.DCS)
	}
	ha := &haState{
		Scope: "quest-" + hashOf(abs), Sync: cfg.Sync, PatroniBin: patroni, EtcdBin: etcd,
		DCS:  cfg.DCS,
		Etcd: etcdState{ClientPort: ports[2*n], PeerPort: ports[2*n+1], DataDir: filepath.Join(c.st.DataRoot, "etcd")},
	}
	for i := range n {
		name := MemberName(i + 1)
		c.st.Nodes = append(c.st.Nodes, Node{Name: name, Port: ports[i], DataDir: filepath.Join(c.st.DataRoot, name)})
		ha.Members = append(ha.Members, haMember{Name: name, RESTPort: ports[n+i]})
	}
	c.st.HA = ha
	undo, err := c.makeDirs(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Stop and remove only what this call made.
			c.haStopAll(context.WithoutCancel(ctx))
			undo()
		}
	}()

	c.logf("etcd on 127.0.0.1:%d, as %s", ha.Etcd.ClientPort, c.st.User.Name)
	if err := c.startEtcd(ctx); err != nil {
		return nil, err
	}
	mode := "asynchronous"
	if cfg.Sync {
		mode = "synchronous_mode"
	}
	c.logf("  %.1fs: %d Patroni members bootstrap PostgreSQL %d (%s, %s replication)", time.Since(began).Seconds(), n, version, c.st.BinDir, mode)
	for _, m := range ha.Members {
		if err := c.startPatroni(ctx, m.Name); err != nil {
			return nil, err
		}
	}
	leader, err := c.WaitLeader(ctx, "", 60*time.Second)
	if err != nil {
		return nil, err
	}
	c.logf("  %.1fs: %s leads; creating roles and database", time.Since(began).Seconds(), leader)
	lead, _ := c.Node(leader)
	if err := c.bootstrap(ctx, lead); err != nil {
		return nil, err
	}
	c.logf("  %.1fs: waiting for the replicas to stream", time.Since(began).Seconds())
	if err := c.waitMembers(ctx); err != nil {
		return nil, err
	}
	c.st.Phase = "ready"
	if err := c.save(); err != nil {
		return nil, err
	}
	c.logf("HA cluster up in %.1fs: %s leads on 127.0.0.1:%d, %d streaming replicas, etcd on 127.0.0.1:%d",
		time.Since(began).Seconds(), leader, lead.Port, n-1, ha.Etcd.ClientPort)
	return c, nil
}

// dcs is the Patroni configuration section for etcd: see haState.DCS.
func (ha *haState) dcs() string {
	if ha.DCS == "" {
		return "etcd3"
	}
	return ha.DCS
}

// patroniDCS picks the API Patroni talks to etcd with. Patroni before
// 3.0.3 (Debian 12 ships 3.0.2) overwrites the leader key unconditionally
// over the v3 API when its lease has expired (dcs/etcd3.py _update_leader:
// a plain put, no compare): a leader whose PostgreSQL hung longer than the
// ttl takes the key back from the replica promoted meanwhile, which then
// demotes and rewinds — every write it acknowledged is lost. Over the v2
// API Patroni renews with prevValue=its name (dcs/etcd.py _do_update_leader),
// so the woken leader fails to renew and demotes itself. Upstream fixed
// the v3 path in 3.0.3 (patroni#2689, #2693): with it, or when the version
// cannot be read, etcd3.
func patroniDCS(ctx context.Context, patroni string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, patroni, "--version").Output()
	if err != nil {
		return "etcd3"
	}
	if v, ok := parseVersion(string(out)); ok && versionLess(v, [3]int{3, 0, 3}) {
		return "etcd"
	}
	return "etcd3"
}

// parseVersion reads "patroni 3.0.2" (or "3.0.2"): the last word, as
// major.minor.patch.
func parseVersion(s string) ([3]int, bool) {
	var v [3]int
	f := strings.Fields(s)
	if len(f) == 0 {
		return v, false
	}
	parts := strings.SplitN(f[len(f)-1], ".", 3)
	for i, p := range parts {
		p = strings.TrimLeftFunc(p, func(r rune) bool { return r == 'v' })
		n := 0
		for _, r := range p {
			if r < '0' || r > '9' {
				break
			}
			n = n*10 + int(r-'0')
		}
		v[i] = n
	}
	return v, len(parts) >= 2
}

func versionLess(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// patroniConfig is a member's Patroni configuration. The bootstrap section
// counts once, for the member that initializes the cluster: it becomes the
// cluster-wide configuration Patroni keeps in etcd.
func (c *Cluster) patroniConfig(name string) (map[string]any, error) {
	n, err := c.Node(name)
	if err != nil {
		return nil, err
	}
	m := c.member(name)
	ha, p := c.st.HA, c.st.Passwords
	params := map[string]string{}
	for _, line := range append(LeaderSettings(), haSettings...) {
		k, v, _ := strings.Cut(line, "=")
		params[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), "'")
	}
	addr := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	return map[string]any{
		"scope":     ha.Scope,
		"namespace": "/quest/",
		"name":      name,
		"log":       map[string]any{"level": "INFO"},
		"restapi":   map[string]any{"listen": addr(m.RESTPort), "connect_address": addr(m.RESTPort)},
		ha.dcs():    map[string]any{"hosts": addr(ha.Etcd.ClientPort)},
		"bootstrap": map[string]any{
			"dcs": map[string]any{
				"ttl": haTTL, "loop_wait": haLoopWait, "retry_timeout": haRetryTimeout,
				"synchronous_mode": ha.Sync,
				"postgresql":       map[string]any{"use_pg_rewind": true, "use_slots": true, "parameters": params},
			},
			"initdb": []any{
				map[string]string{"encoding": "UTF8"}, map[string]string{"locale": "C"},
				map[string]string{"auth-host": "scram-sha-256"}, map[string]string{"auth-local": "peer"}, "no-sync",
			},
		},
		"postgresql": map[string]any{
			"listen":          addr(n.Port),
			"connect_address": addr(n.Port),
			"data_dir":        n.DataDir,
			"bin_dir":         c.st.BinDir,
			"pgpass":          filepath.Join(c.st.DataRoot, name+".pgpass"),
			"authentication": map[string]any{
				"superuser":   map[string]string{"username": SuperUser, "password": p.Super},
				"replication": map[string]string{"username": ReplRole, "password": p.Repl},
			},
			"parameters": map[string]string{"unix_socket_directories": c.st.SocketDir},
			"pg_hba": []string{
				"local all all peer",
				"host all all 127.0.0.1/32 scram-sha-256",
				"host replication " + ReplRole + " 127.0.0.1/32 scram-sha-256",
			},
			"basebackup": []any{map[string]string{"checkpoint": "fast"}},
			// pg_rewind cannot always find the point where a crashed leader's
			// WAL diverged (seen here after a leader crashed twice in a row);
			// a fresh pg_basebackup then brings the member back instead of
			// leaving it "starting" for ever.
			"remove_data_directory_on_rewind_failure": true,
			"recovery_conf": map[string]string{"recovery_min_apply_delay": fmt.Sprintf("%dms", m.DelayMS)},
		},
		"watchdog": map[string]string{"mode": "off"},
	}, nil
}

func (c *Cluster) patroniConfigPath(name string) string {
	return filepath.Join(c.st.DataRoot, name+".patroni.json")
}

// writePatroniConfig writes a member's configuration for its Patroni to
// read: readable by the server user only (it holds passwords), replaced in
// one rename so a Patroni reloading it never reads half of it.
func (c *Cluster) writePatroniConfig(name string) error {
	conf, err := c.patroniConfig(name)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	path := c.patroniConfigPath(name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := c.st.User.chown(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// member returns a copy of the named member's Patroni record; the zero
// value for a name the cluster does not have.
func (c *Cluster) member(name string) haMember {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.st.HA.Members {
		if m.Name == name {
			return m
		}
	}
	return haMember{}
}

// updateMember changes the named member's record under the lock.
func (c *Cluster) updateMember(name string, f func(*haMember)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.st.HA.Members {
		if c.st.HA.Members[i].Name == name {
			f(&c.st.HA.Members[i])
		}
	}
}

// daemon starts a long-running program (Patroni, etcd) as the server user,
// in the data root, in a session of its own so that it outlives the
// caller, its output appended to DataRoot/<name>.log. It returns the pid.
func (c *Cluster) daemon(name, bin string, args ...string) (int, error) {
	logPath := filepath.Join(c.st.DataRoot, name+".log")
	f, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := c.st.User.chown(logPath); err != nil {
		return 0, err
	}
	// The daemon must outlive ctx and this process: no context to kill it.
	cmd := c.st.User.command(context.Background(), c.st.DataRoot, bin, args...)
	cmd.Env = append(cmd.Env, "HOME="+c.st.DataRoot) // the server user's own may be root's, or absent
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap it if it exits while this process runs (a crash, a fail, a
	// test's clean-up); the goroutine ends with it.
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// ourProcess reports whether pid is a live process whose command line
// holds marker (its configuration file, its data directory): a recorded
// pid may have been recycled.
func ourProcess(pid int, marker string) bool {
	if pid <= 0 || !Alive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(marker))
}

// findProcess returns the recorded pid if it is still the process marked
// by marker, else a live process of the data root with that mark (one
// started by another quest), else 0.
func (c *Cluster) findProcess(recorded int, marker string) int {
	if ourProcess(recorded, marker) {
		return recorded
	}
	for _, pid := range processesIn(filepath.Clean(c.st.DataRoot)) {
		if ourProcess(pid, marker) {
			return pid
		}
	}
	return 0
}

// patroniPID returns the pid of the member's running Patroni, or 0.
func (c *Cluster) patroniPID(name string) int {
	return c.findProcess(c.member(name).PID, c.patroniConfigPath(name))
}

// etcdPID returns the pid of the running etcd, or 0.
func (c *Cluster) etcdPID() int {
	c.mu.Lock()
	e := c.st.HA.Etcd
	c.mu.Unlock()
	return c.findProcess(e.PID, e.DataDir)
}

// startEtcd starts etcd unless it runs, and waits until it is healthy.
func (c *Cluster) startEtcd(ctx context.Context) error {
	if c.etcdPID() > 0 {
		return nil
	}
	e := c.st.HA.Etcd
	for _, p := range []int{e.ClientPort, e.PeerPort} {
		if err := portFree(p); err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", e.ClientPort)
	peer := fmt.Sprintf("http://127.0.0.1:%d", e.PeerPort)
	args := []string{"--name", "quest", "--data-dir", e.DataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "quest=" + peer, "--initial-cluster-state", "new",
		"--initial-cluster-token", c.st.HA.Scope, "--logger", "zap", "--log-outputs", "stderr"}
	if c.st.HA.dcs() == "etcd" {
		// Patroni's etcd (v2) section needs the v2 API, off by default
		// since etcd 3.4 (and gone in 3.6, where Patroni 3.0.3+ speaks v3).
		args = append(args, "--enable-v2=true")
	}
	pid, err := c.daemon("etcd", c.st.HA.EtcdBin, args...)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.st.HA.Etcd.PID = pid
	c.mu.Unlock()
	logPath := filepath.Join(c.st.DataRoot, "etcd.log")
	return poll.Until(ctx, 20*time.Second, 20*time.Millisecond, "etcd to answer on "+client, func(ctx context.Context) (bool, error) {
		if !Alive(pid) {
			return false, poll.Stop(fmt.Errorf("etcd exited%s", logTail(logPath)))
		}
		var health struct {
			Health string `json:"health"`
		}
		err := getJSON(ctx, client+"/health", &health)
		return err == nil && health.Health == "true", err
	})
}

// startPatroni starts a member's Patroni unless it runs. Patroni starts
// PostgreSQL: it bootstraps or clones a new member, rewinds one that
// diverged, and starts an existing one as a replica unless it takes the
// leader key.
func (c *Cluster) startPatroni(ctx context.Context, name string) error {
	if c.patroniPID(name) > 0 {
		return nil
	}
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	m := c.member(name)
	if err := portFree(m.RESTPort); err != nil {
		return fmt.Errorf("%s's Patroni: %w", name, err)
	}
	if c.runningPID(n) == 0 {
		if err := portFree(n.Port); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		// After a crash the old postmaster's children may linger a moment;
		// Patroni's PostgreSQL would refuse to start until they are gone.
		if err := os.MkdirAll(c.st.SocketDir, 0o700); err == nil {
			c.st.User.chown(c.st.SocketDir)
		}
		socketLock := filepath.Join(c.st.SocketDir, fmt.Sprintf(".s.PGSQL.%d.lock", n.Port))
		if err := clearStaleLock(ctx, n.DataDir, socketLock, stopTimeout); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
	}
	if err := c.writePatroniConfig(name); err != nil {
		return err
	}
	pid, err := c.daemon(name, c.st.HA.PatroniBin, c.patroniConfigPath(name))
	if err != nil {
		return err
	}
	c.updateMember(name, func(m *haMember) { m.PID = pid })
	return nil
}

// haStartAll starts what is not running of an existing Patroni cluster
// (after a machine restart, say) and waits until a member leads and the
// others stream from it.
func (c *Cluster) haStartAll(ctx context.Context) error {
	started := 0
	if c.etcdPID() == 0 {
		c.logf("starting etcd on 127.0.0.1:%d", c.st.HA.Etcd.ClientPort)
		if err := c.startEtcd(ctx); err != nil {
			return err
		}
		started++
	}
	for _, m := range c.st.HA.Members {
		if c.patroniPID(m.Name) > 0 {
			continue
		}
		c.logf("starting %s's Patroni", m.Name)
		if err := c.startPatroni(ctx, m.Name); err != nil {
			return err
		}
		started++
	}
	leader, err := c.WaitLeader(ctx, "", 60*time.Second)
	if err != nil {
		return err
	}
	if err := c.waitMembers(ctx); err != nil {
		return err
	}
	if started == 0 {
		c.logf("reusing the running HA cluster in %s (%s leads, %d members)", c.dir, leader, len(c.st.Nodes))
	}
	return c.save()
}

// waitMembers waits until every replica streams from the leader and every
// member's Patroni says it runs — Patroni reports a new replica as starting
// for a loop or two after it streams — and, under synchronous_mode, until
// Patroni has named the synchronous standby: before that only the old
// leader may be promoted.
func (c *Cluster) waitMembers(ctx context.Context) error {
	if err := c.waitStreaming(ctx, 60*time.Second); err != nil {
		return err
	}
	what := "every member's Patroni to report it running"
	if c.st.HA.Sync {
		what += ", one as the synchronous standby"
	}
	return poll.Until(ctx, 30*time.Second, 50*time.Millisecond, what, func(ctx context.Context) (bool, error) {
		ms, err := c.Members(ctx)
		sync := !c.st.HA.Sync || len(ms) < 2
		for _, m := range ms {
			if !m.Running() {
				return false, err
			}
			sync = sync || m.Role == RoleSyncStandby
		}
		return err == nil && sync, err
	})
}

// haStopAll stops every member and then etcd, each by its pid: the
// replicas' Patroni first, together, then the leader's, so that no member
// takes over from a leader being stopped. A Patroni stops its PostgreSQL
// (fast shutdown) before it exits; a postmaster left without its Patroni
// is stopped directly.
func (c *Cluster) haStopAll(ctx context.Context) error {
	var leaders, others []Node
	for _, n := range c.Nodes() {
		if n.Leader() {
			leaders = append(leaders, n)
		} else {
			others = append(others, n)
		}
	}
	var errs []error
	for _, group := range [][]Node{others, leaders} {
		ch := make(chan error, len(group))
		for _, n := range group {
			go func() { ch <- c.stopMember(ctx, n, false) }()
		}
		for range group {
			errs = append(errs, <-ch)
		}
	}
	if pid := c.etcdPID(); pid > 0 {
		if err := terminate(ctx, pid, syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("stop etcd: %w", err))
		}
	}
	return errors.Join(errs...)
}

// stopMember stops a member's Patroni and PostgreSQL: SIGTERM to Patroni,
// which stops PostgreSQL with a fast shutdown (a leader hands over to a
// replica when one runs); or, immediate, SIGKILL to Patroni and an
// immediate shutdown of PostgreSQL.
func (c *Cluster) stopMember(ctx context.Context, n Node, immediate bool) error {
	sig := syscall.SIGTERM
	if immediate {
		sig = syscall.SIGKILL
	}
	if pid := c.patroniPID(n.Name); pid > 0 {
		if err := terminate(ctx, pid, sig); err != nil {
			return fmt.Errorf("stop %s's Patroni: %w", n.Name, err)
		}
	}
	return c.stopNode(ctx, n, immediate)
}

// terminate signals pid and waits until it has exited.
func terminate(ctx context.Context, pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return waitGone(ctx, pid, stopTimeout)
}

// killAll sends SIGKILL to every pid and waits until each has exited.
func killAll(ctx context.Context, pids []int) error {
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill pid %d: %w", pid, err))
		}
	}
	for _, pid := range pids {
		if err := waitGone(ctx, pid, stopTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
