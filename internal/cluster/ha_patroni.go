package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"quest/internal/poll"
)

// Member is one member of a Patroni cluster, as its Patroni reports it
// (GET /cluster) and as the processes on this machine show it.
type Member struct {
	Name     string
	Role     string // RoleLeader, RoleReplica, RoleSyncStandby; "" when Patroni does not list it
	State    string // Patroni's: "running", "starting", "stopped", …; "down" when its Patroni does not run
	Timeline int    // 0 when unknown
	Lag      int64  // bytes a replica is behind the leader; -1 for the leader or when unknown
	Port     int    // PostgreSQL's
	APIURL   string // its Patroni REST API, http://127.0.0.1:port
	PID      int    // its Patroni's pid; 0 when not running
}

// Running reports whether Patroni says the member's PostgreSQL runs.
func (m Member) Running() bool { return m.State == "running" || m.State == "streaming" }

var errNotHA = errors.New("not a Patroni cluster (quest cluster up --ha makes one)")

// HA reports whether the cluster is a Patroni cluster.
func (c *Cluster) HA() bool { return c.st.HA != nil }

// PatroniURLs are the members' REST API URLs, in member order; nil for a
// plain cluster. Any of them answers GET /cluster for the whole cluster.
func (c *Cluster) PatroniURLs() []string {
	if c.st.HA == nil {
		return nil
	}
	var urls []string
	for _, m := range c.st.HA.Members {
		urls = append(urls, restURL(m.RESTPort))
	}
	return urls
}

// Etcd returns the URL etcd serves its clients on and its pid (0 when it
// is not running); "" for a plain cluster.
func (c *Cluster) Etcd() (url string, pid int) {
	if c.st.HA == nil {
		return "", 0
	}
	return fmt.Sprintf("http://127.0.0.1:%d", c.st.HA.Etcd.ClientPort), c.etcdPID()
}

func restURL(port int) string { return fmt.Sprintf("http://127.0.0.1:%d", port) }

// patroniView is GET /cluster's answer.
type patroniView struct {
	Members []struct {
		Name     string          `json:"name"`
		Role     string          `json:"role"`
		State    string          `json:"state"`
		Timeline int             `json:"timeline"`
		Lag      json.RawMessage `json:"lag"` // bytes, or "unknown"
	} `json:"members"`
}

// Members returns every member of the cluster, in member order, with what
// Patroni says of it. A member Patroni does not list (its Patroni is down,
// or still starting) has no role. The error says that no Patroni answered;
// the members are returned all the same.
func (c *Cluster) Members(ctx context.Context) ([]Member, error) {
	if c.st.HA == nil {
		return nil, errNotHA
	}
	var view patroniView
	var err error
	for _, m := range c.st.HA.Members {
		if err = getJSON(ctx, restURL(m.RESTPort)+"/cluster", &view); err == nil {
			break
		}
	}
	ms := make([]Member, 0, len(c.st.HA.Members))
	for _, hm := range c.st.HA.Members {
		n, _ := c.Node(hm.Name)
		m := Member{Name: hm.Name, State: "down", Lag: -1, Port: n.Port, APIURL: restURL(hm.RESTPort), PID: c.patroniPID(hm.Name)}
		if m.PID > 0 {
			m.State = "starting"
		}
		for _, v := range view.Members {
			if v.Name == hm.Name {
				m.Role, m.Timeline = v.Role, v.Timeline
				if m.PID > 0 { // else etcd still holds what a crashed Patroni last wrote
					m.State = v.State
				}
				if lag, perr := strconv.ParseInt(string(v.Lag), 10, 64); perr == nil && v.Role != RoleLeader {
					m.Lag = lag
				}
			}
		}
		ms = append(ms, m)
	}
	if err != nil {
		return ms, fmt.Errorf("no Patroni answers (is the cluster up? quest cluster up): %w", err)
	}
	return ms, nil
}

// Refresh asks Patroni who leads now and puts that member first, so that
// PrimaryURL, ReplicaURLs and Node("leader") follow a failover. Open does
// it; a long-lived handle calls it again after the topology changed. It
// must not run beside readers of the same handle.
func (c *Cluster) Refresh(ctx context.Context) error {
	if c.st.HA == nil {
		return nil
	}
	return c.refreshRoles(ctx)
}

// refreshRoles records each member's role and puts the leader first, the
// others in member order. When no member leads (a failover under way) the
// roles are cleared and the order, last known leader first, stays.
func (c *Cluster) refreshRoles(ctx context.Context) error {
	ms, err := c.Members(ctx)
	if err != nil {
		return err
	}
	role := map[string]string{}
	leads := false
	for _, m := range ms {
		role[m.Name] = m.Role
		leads = leads || m.Role == RoleLeader
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	order := map[string]int{}
	for i, m := range c.st.HA.Members {
		order[m.Name] = i
	}
	nodes := append([]Node(nil), c.st.Nodes...)
	for i := range nodes {
		nodes[i].Role = role[nodes[i].Name]
	}
	if leads {
		sort.SliceStable(nodes, func(i, j int) bool {
			if li, lj := nodes[i].Leader(), nodes[j].Leader(); li != lj {
				return li
			}
			return order[nodes[i].Name] < order[nodes[j].Name]
		})
	}
	c.st.Nodes = nodes
	return nil
}

// WaitLeader waits until a member other than not leads and accepts
// writes, and returns its name. Afterwards the handle has the new roles.
func (c *Cluster) WaitLeader(ctx context.Context, not string, timeout time.Duration) (string, error) {
	if c.st.HA == nil {
		return "", errNotHA
	}
	var leader string
	err := poll.Until(ctx, timeout, 50*time.Millisecond, "a member to lead", func(ctx context.Context) (bool, error) {
		ms, err := c.Members(ctx)
		for _, m := range ms {
			if m.Role == RoleLeader && m.Running() && m.Name != not {
				// Patroni names the leader as soon as it holds the key;
				// PostgreSQL leaves recovery a moment later.
				leader = m.Name
				return c.promoted(ctx, m.Name)
			}
		}
		return false, err
	})
	if err != nil {
		return "", fmt.Errorf("%w; see the logs in %s", err, c.st.DataRoot)
	}
	return leader, c.refreshRoles(ctx)
}

// Fail crashes a member as a host crash would: SIGKILL to its Patroni and
// to its postmaster. "leader" (or "primary") names the member that leads.
// It returns the member's name once both are gone; Patroni promotes a
// replica once the leader key expires (ttl, 10 s), see WaitLeader.
func (c *Cluster) Fail(ctx context.Context, name string) (string, error) {
	if c.st.HA == nil {
		return "", errors.New("fail crashes a member of a Patroni cluster (quest cluster up --ha); on this cluster use kill or stop --immediate")
	}
	n, err := c.resolveMember(ctx, name)
	if err != nil {
		return "", err
	}
	pids := []int{c.patroniPID(n.Name), c.runningPID(n)} // Patroni first: it would restart PostgreSQL
	if pids[0] == 0 && pids[1] == 0 {
		return "", fmt.Errorf("%s is not running (start it with: quest cluster start %s)", n.Name, n.Name)
	}
	var live []int
	for _, pid := range pids {
		if pid > 0 {
			live = append(live, pid)
		}
	}
	if err := killAll(ctx, live); err != nil {
		return "", fmt.Errorf("fail %s: %w", n.Name, err)
	}
	c.logf("%s crashed: SIGKILL to its Patroni (pid %d) and PostgreSQL (pid %d)", n.Name, pids[0], pids[1])
	return n.Name, c.save()
}

// startMember starts a member's Patroni (and etcd, if it is down) and waits
// until the member runs: as a replica streaming from the leader when
// another member leads — after a crash Patroni rewinds it first — or as
// the leader when none does.
func (c *Cluster) startMember(ctx context.Context, name string) error {
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	if pid := c.patroniPID(n.Name); pid > 0 {
		c.logf("%s's Patroni is already running (pid %d)", n.Name, pid)
		return nil
	}
	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	began := time.Now()
	if err := c.startPatroni(ctx, n.Name); err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	err = poll.Until(ctx, 60*time.Second, 100*time.Millisecond, n.Name+" to run as a member", func(ctx context.Context) (bool, error) {
		ms, err := c.Members(ctx)
		if err != nil {
			return false, err
		}
		var me, leader Member
		for _, m := range ms {
			if m.Name == n.Name {
				me = m
			}
			if m.Role == RoleLeader && m.Running() {
				leader = m
			}
		}
		if !me.Running() || leader.Name == "" {
			return false, nil
		}
		if leader.Name == n.Name {
			return true, nil
		}
		return c.streamsFrom(ctx, leader.Name, n.Name)
	})
	if err != nil {
		return fmt.Errorf("%w; see %s", err, c.logFile(n))
	}
	if err := c.refreshRoles(ctx); err != nil {
		return err
	}
	as := "a replica"
	if n, _ = c.Node(n.Name); n.Leader() {
		as = "the leader"
	}
	c.logf("%s runs again after %.1fs, as %s", n.Name, time.Since(began).Seconds(), as)
	return c.save()
}

// promoted reports whether the member's PostgreSQL is out of recovery.
func (c *Cluster) promoted(ctx context.Context, name string) (bool, error) {
	var inRecovery bool
	err := c.askMember(ctx, name, &inRecovery, `SELECT pg_is_in_recovery()`)
	return err == nil && !inRecovery, err
}

// streamsFrom reports whether the leader's pg_stat_replication shows the
// member streaming.
func (c *Cluster) streamsFrom(ctx context.Context, leader, member string) (bool, error) {
	var ok bool
	err := c.askMember(ctx, leader, &ok, `SELECT EXISTS (SELECT FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')`, member)
	return ok, err
}

// askMember runs a one-value query as the superuser on the named member.
func (c *Cluster) askMember(ctx context.Context, name string, dest any, query string, args ...any) error {
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	conn, err := connect(ctx, c.SuperURL(n))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, query, args...).Scan(dest)
}

// Switchover hands the leader's role to another member, planned: through
// Patroni's REST API (POST /switchover with leader and candidate), which
// demotes the leader with a clean shutdown and promotes the candidate.
// An empty to picks the replica Patroni would pick: the synchronous
// standby under synchronous_mode, else the running replica least behind.
// It returns the old and new leaders once every running member follows
// the new one on its timeline.
func (c *Cluster) Switchover(ctx context.Context, to string) (from, cand string, err error) {
	if c.st.HA == nil {
		return "", "", errors.New("switchover needs a Patroni cluster (quest cluster up --ha)")
	}
	ms, err := c.Members(ctx)
	if err != nil {
		return "", "", err
	}
	var leader Member
	for _, m := range ms {
		if m.Role == RoleLeader && m.Running() {
			leader = m
		}
	}
	if leader.Name == "" {
		return "", "", errors.New("no member leads now (a failover under way?); see quest cluster status")
	}
	if to == LeaderName || to == "primary" || to == leader.Name {
		return "", "", fmt.Errorf("%s leads already; name a replica to hand over to", leader.Name)
	}
	if to == "" {
		to = c.pickCandidate(ms)
		if to == "" {
			return "", "", errors.New("no running replica to hand over to")
		}
	} else if _, err := c.Node(to); err != nil {
		return "", "", err
	}
	body, _ := json.Marshal(map[string]string{"leader": leader.Name, "candidate": to})
	began := time.Now()
	status, answer, err := callAPI(ctx, http.MethodPost, leader.APIURL+"/switchover", body)
	if err != nil {
		return "", "", fmt.Errorf("switchover: %w", err)
	}
	if status != http.StatusOK {
		return "", "", fmt.Errorf("switchover from %s to %s refused by Patroni (HTTP %d): %s", leader.Name, to, status, strings.TrimSpace(answer))
	}
	err = poll.Until(ctx, 60*time.Second, 100*time.Millisecond, "every member to follow "+to, func(ctx context.Context) (bool, error) {
		ms, err := c.Members(ctx)
		return err == nil && c.settled(ms, to), err
	})
	if err != nil {
		return "", "", err
	}
	if err := c.refreshRoles(ctx); err != nil {
		return "", "", err
	}
	c.logf("switchover from %s to %s done in %.1fs", leader.Name, to, time.Since(began).Seconds())
	return leader.Name, to, c.save()
}

// settled reports whether leader leads and every member whose Patroni
// runs has followed it onto its timeline — under synchronous_mode, with a
// synchronous standby named again.
func (c *Cluster) settled(ms []Member, leader string) bool {
	tl, running := 0, 0
	sync := !c.st.HA.Sync
	for _, m := range ms {
		if m.Name == leader && m.Role == RoleLeader && m.Running() {
			tl = m.Timeline
		}
		if m.PID > 0 {
			running++
		}
		sync = sync || m.Role == RoleSyncStandby
	}
	if tl == 0 || (!sync && running > 1) {
		return false
	}
	for _, m := range ms {
		if m.PID > 0 && (!m.Running() || m.Timeline != tl) {
			return false
		}
	}
	return true
}

// pickCandidate returns the synchronous standby if there is one, else the
// running replica least behind, one without an apply delay first (the
// first in member order among equals): a delayed replica would be promoted
// only once it has replayed what it holds back.
func (c *Cluster) pickCandidate(ms []Member) string {
	var best Member
	better := func(m Member) bool {
		if best.Name == "" {
			return true
		}
		if dm, db := c.member(m.Name).DelayMS > 0, c.member(best.Name).DelayMS > 0; dm != db {
			return !dm
		}
		return m.Lag >= 0 && (best.Lag < 0 || m.Lag < best.Lag)
	}
	for _, m := range ms {
		if !m.Running() || m.Role == RoleLeader || m.Role == "" {
			continue
		}
		if m.Role == RoleSyncStandby {
			return m.Name
		}
		if better(m) {
			best = m
		}
	}
	return best.Name
}

// keepDelay makes Patroni keep the apply delay SetDelay is about to set on
// a member. Patroni owns a replica's recovery settings: every loop it
// compares them with its configuration and, when they differ, rewrites
// postgresql.conf, strips them from postgresql.auto.conf (where ALTER
// SYSTEM puts them) and reloads — an ALTER SYSTEM alone is undone within a
// second. So the member's Patroni configuration gets the delay too
// (postgresql.recovery_conf), Patroni reloads it (POST /reload), and
// keepDelay returns once it has, which PostgreSQL's pg_conf_load_time()
// shows: Patroni reloads PostgreSQL as it takes the new configuration.
// Then the lever role's ALTER SYSTEM and Patroni agree, and the delay also
// survives a restart or a failover. A leader, an unknown or unreachable
// member are left to SetDelay's own checks.
func (c *Cluster) keepDelay(ctx context.Context, name string, ms int64) error {
	n, err := c.Node(name)
	if err != nil || n.Leader() {
		return nil
	}
	conn, err := connect(ctx, c.LeverURL(n))
	if err != nil {
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var loaded time.Time
	if err := conn.QueryRow(ctx, `SELECT pg_conf_load_time()`).Scan(&loaded); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	c.updateMember(n.Name, func(m *haMember) { m.DelayMS = ms })
	if err := c.writePatroniConfig(n.Name); err != nil {
		return err
	}
	if err := c.save(); err != nil {
		return err
	}
	status, answer, err := callAPI(ctx, http.MethodPost, restURL(c.member(n.Name).RESTPort)+"/reload", nil)
	if err != nil || status >= 300 {
		return fmt.Errorf("%s's Patroni did not take its new configuration (%v %s); is it running? quest cluster start %s", n.Name, err, strings.TrimSpace(answer), n.Name)
	}
	return poll.Until(ctx, 10*time.Second, 20*time.Millisecond, n.Name+"'s Patroni to reload its configuration", func(ctx context.Context) (bool, error) {
		var now time.Time
		err := conn.QueryRow(ctx, `SELECT pg_conf_load_time()`).Scan(&now)
		return err == nil && now.After(loaded), err
	})
}

// haClient is for Patroni's and etcd's REST APIs on loopback: an answer
// takes milliseconds, except a switchover's, which Patroni sends once the
// candidate is promoted.
var haClient = &http.Client{Timeout: 30 * time.Second}

// callAPI sends a request with an optional JSON body and returns the
// status and the body of the answer.
func callAPI(ctx context.Context, method, url string, body []byte) (int, string, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return 0, "", err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := haClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// getJSON decodes a GET's JSON answer. Each try is short: a member whose
// API does not answer at once is down, and the next one is asked.
func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, body, err := callAPI(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, status)
	}
	return json.Unmarshal([]byte(body), v)
}

// haStop is Stop for a member of a Patroni cluster.
func (c *Cluster) haStop(ctx context.Context, n Node, immediate bool) error {
	if err := c.stopMember(ctx, n, immediate); err != nil {
		return err
	}
	return c.save()
}
