package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"quest/internal/poll"
)

// keepInStateDir lists files other parts of Quest keep in a state directory
// before a cluster exists there; they do not make the directory foreign.
var keepInStateDir = map[string]bool{"session.key": true, "admin-password": true}

// Up brings the cluster in cfg.Dir up. A new directory gets a new cluster;
// a directory holding a cluster has its stopped servers started again (after
// a machine restart, say) and its running ones reused.
func Up(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, errors.New("cluster: no state directory given")
	}
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 2
	}
	if cfg.Replicas < 1 || cfg.Replicas > 8 {
		return nil, fmt.Errorf("--replicas %d: choose between 1 and 8", cfg.Replicas)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Sync && !cfg.HA {
		return nil, errors.New("--sync is Patroni's synchronous_mode: it needs --ha")
	}
	c, err := Open(abs)
	if err == nil && cfg.HA && c.st.HA == nil {
		return nil, fmt.Errorf("%s holds a plain cluster (leader and followers), not a Patroni one; stop and delete it first (quest cluster down --purge --dir %s), or choose another --dir", abs, cfg.Dir)
	}
	switch {
	case err == nil && c.st.Phase == "ready":
		c.SetLog(cfg.Log)
		return c, c.startAll(ctx)
	case err == nil:
		c.SetLog(cfg.Log)
		c.logf("an earlier `cluster up` in %s did not finish; starting over", abs)
		if err := c.Down(ctx, true); err != nil {
			return nil, err
		}
	case !errors.Is(err, ErrNotCluster):
		return nil, err
	}
	entries, err := os.ReadDir(abs)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if !keepInStateDir[e.Name()] {
			return nil, fmt.Errorf("%s holds files that are not a Quest cluster (%s, …); choose an empty or new directory with --dir", abs, e.Name())
		}
	}
	if cfg.HA {
		return createHA(ctx, abs, cfg)
	}
	return create(ctx, abs, cfg)
}

// create makes a new cluster. On failure it stops what it started and
// removes what it made, leaving the state directory as it found it.
func create(ctx context.Context, abs string, cfg Config) (_ *Cluster, err error) {
	began := time.Now()
	c, version, err := newCluster(ctx, abs, cfg)
	if err != nil {
		return nil, err
	}
	ports, err := choosePorts(cfg.Port, cfg.Replicas+1)
	if err != nil {
		return nil, err
	}
	for i, p := range ports {
		name := LeaderName
		if i > 0 {
			name = ReplicaName(i)
		}
		c.st.Nodes = append(c.st.Nodes, Node{Name: name, Port: p, DataDir: filepath.Join(c.st.DataRoot, name)})
	}
	undo, err := c.makeDirs(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Stop and remove only what this call made.
			c.stopAll(context.WithoutCancel(ctx), false)
			undo()
		}
	}()

	leader := c.st.Nodes[0]
	c.logf("initdb leader (PostgreSQL %d, %s, as %s)", version, c.st.BinDir, c.st.User.Name)
	if err := c.initLeader(ctx, leader); err != nil {
		return nil, err
	}
	c.logf("  %.1fs: starting leader", time.Since(began).Seconds())
	if err := c.startNode(ctx, leader); err != nil {
		return nil, err
	}
	c.logf("  %.1fs: creating roles and database", time.Since(began).Seconds())
	if err := c.bootstrap(ctx, leader); err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range c.st.Nodes[1:] {
		g.Go(func() error {
			c.logf("  %.1fs: pg_basebackup %s from leader", time.Since(began).Seconds(), n.Name)
			if err := c.baseBackup(gctx, leader, n); err != nil {
				return err
			}
			c.logf("  %.1fs: starting %s", time.Since(began).Seconds(), n.Name)
			return c.startNode(gctx, n)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	c.logf("  %.1fs: waiting for the followers to stream", time.Since(began).Seconds())
	if err := c.waitStreaming(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	c.st.Phase = "ready"
	if err := c.save(); err != nil {
		return nil, err
	}
	c.logf("cluster up in %.1fs: leader on 127.0.0.1:%d, %d streaming replicas", time.Since(began).Seconds(), leader.Port, len(c.st.Nodes)-1)
	return c, nil
}

// newCluster checks what any new cluster in abs needs — PostgreSQL 14 or
// newer, the OS user the servers run as, a socket path short enough — and
// returns its handle in phase "creating", with no nodes and nothing written
// yet, and the server's major version.
func newCluster(ctx context.Context, abs string, cfg Config) (*Cluster, int, error) {
	bindir := cfg.BinDir
	if bindir == "" {
		var err error
		if bindir, err = FindBinDir(cfg.Search); err != nil {
			return nil, 0, err
		}
	} else if !hasServerTools(bindir) {
		return nil, 0, fmt.Errorf("%s does not hold the PostgreSQL server programs (%s)", bindir, strings.Join(serverTools, ", "))
	}
	version, err := serverVersion(bindir)
	if err != nil {
		return nil, 0, err
	}
	if version < 14 {
		return nil, 0, fmt.Errorf("PostgreSQL %d in %s is too old; Quest needs 14 or newer", version, bindir)
	}
	u, err := resolveServerUser(ctx, cfg.User)
	if err != nil {
		return nil, 0, err
	}
	dataRoot := dataRootFor(abs, u)
	sockDir := socketDirFor(abs, dataRoot, u)
	if n := len(sockDir) + len("/.s.PGSQL.65535.lock"); n > 107 {
		return nil, 0, fmt.Errorf("socket directory %s is too long for a Unix socket (%d bytes > 107)", sockDir, n)
	}
	return &Cluster{dir: abs, log: cfg.Log, st: state{
		Format:    stateFormat,
		Phase:     "creating",
		Created:   time.Now().UTC(),
		BinDir:    bindir,
		User:      u,
		DataRoot:  dataRoot,
		SocketDir: sockDir,
		Passwords: passwords{Super: randomSecret(), App: randomSecret(), Repl: randomSecret(), Lever: randomSecret()},
	}}, version, nil
}

// makeDirs writes cluster.json (phase "creating") into the state directory,
// making it if need be, and makes the data root and the socket directory
// for the server user. undo removes what it made; makeDirs calls it itself
// when it fails.
func (c *Cluster) makeDirs(ctx context.Context) (undo func(), err error) {
	madeDir := false
	if _, err := os.Stat(c.dir); errors.Is(err, os.ErrNotExist) {
		madeDir = true
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return nil, err
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	undo = func() {
		os.RemoveAll(c.st.DataRoot)
		os.RemoveAll(c.st.SocketDir)
		os.Remove(filepath.Join(c.dir, stateFile))
		if madeDir {
			os.Remove(c.dir)
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	// A data root left behind by a state dir deleted by hand is ours by
	// construction (its name is the state dir's hash): stop and clear it.
	if err := clearStaleRoot(ctx, c.st.DataRoot); err != nil {
		return nil, err
	}
	for _, d := range []string{c.st.DataRoot, c.st.SocketDir} {
		// The parents (/var/lib/quest) must stay traversable by the server user.
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return nil, err
		}
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		if err := c.st.User.chown(d); err != nil {
			return nil, err
		}
	}
	return undo, nil
}

func clearStaleRoot(ctx context.Context, dataRoot string) error {
	entries, err := os.ReadDir(dataRoot)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// An HA cluster's Patroni and etcd run in the data root itself; they go
	// first, or Patroni would start the postmasters again.
	if err := killAll(ctx, processesIn(filepath.Clean(dataRoot))); err != nil {
		return err
	}
	for _, e := range entries {
		dir := filepath.Join(dataRoot, e.Name())
		if pid, err := postmasterPID(dir); err == nil && isPostmaster(pid, dir) {
			if err := signalAndWait(ctx, pid, false); err != nil {
				return err
			}
		}
	}
	return os.RemoveAll(dataRoot)
}

// sharedSettings are appended to a new leader's postgresql.conf; followers
// inherit them through pg_basebackup and change only the port. The
// docker-compose stack's nodes get them the same way: its images run
// `quest cluster init-node` (node.go).
var sharedSettings = []string{
	"wal_level = replica",
	"max_wal_senders = 16",
	"max_replication_slots = 16",
	"max_slot_wal_keep_size = '1GB'", // a stopped follower's slot pins at most this much WAL
	"hot_standby = on",
	"hot_standby_feedback = on",
	"synchronous_commit = on", // the router relies on commits flushed before they return
	"wal_receiver_status_interval = '1s'",
	"max_connections = 200",
	"shared_buffers = '64MB'",
}

// LeaderSettings returns the postgresql.conf lines every node shares.
func LeaderSettings() []string { return append([]string(nil), sharedSettings...) }

// nodeConf is what a new leader's postgresql.conf gets: where it listens,
// and the shared settings.
func nodeConf(listen string, port int, socketDir string) string {
	return fmt.Sprintf("\n# Added by quest cluster.\nlisten_addresses = %s\nport = %d\nunix_socket_directories = %s\n%s\n",
		quoteLiteral(listen), port, quoteLiteral(socketDir), strings.Join(sharedSettings, "\n"))
}

func (c *Cluster) initLeader(ctx context.Context, n Node) error {
	if err := initdb(ctx, c.st.User, c.st.BinDir, c.st.DataRoot, n.DataDir, c.st.Passwords.Super); err != nil {
		return err
	}
	return appendFile(n.DataDir, "postgresql.conf", nodeConf("127.0.0.1", n.Port, c.st.SocketDir))
}

// initdb makes a leader's data directory as the server user: the
// superuser's password (from a file in workDir, which that user can
// enter), scram for TCP connections, peer for the socket.
func initdb(ctx context.Context, u osUser, bindir, workDir, dataDir, superPassword string) error {
	pwfile := filepath.Join(workDir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(superPassword+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pwfile)
	if err := u.chown(pwfile); err != nil {
		return err
	}
	return run(u.command(ctx, workDir, filepath.Join(bindir, "initdb"),
		"-D", dataDir, "-U", SuperUser, "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=peer",
		"-E", "UTF8", "--locale=C", "--no-sync"))
}

// bootstrap creates the application, replication and lever roles and the
// application database.
func (c *Cluster) bootstrap(ctx context.Context, leader Node) error {
	replRole := c.st.HA == nil // else Patroni makes the replication role and the slots
	var slots []string
	if replRole {
		for _, n := range c.st.Nodes[1:] {
			slots = append(slots, n.Name)
		}
	}
	return runBootstrap(ctx, c.SuperURL(leader), pgURL(SuperUser, c.st.Passwords.Super, leader.Port, Database), c.st.Passwords, replRole, slots)
}

// bootstrapSQL returns what makes a new leader Quest's: the roles and the
// application database, run in the "postgres" database, and the lever
// role's function grants, run in the application database (function
// privileges live in each database's catalog, and that is where the
// levers connect). The lever role may pause and resume replay and set the
// apply delay without being a superuser.
//
// With the replication role come the followers' slots, one per name in
// slots, reserving WAL at once: the followers clone together, each with a
// fast checkpoint, and a slot pg_basebackup -C made only once its backup
// had started could ask for a segment the other's checkpoint had
// recycled.
func bootstrapSQL(p passwords, replRole bool, slots []string) (inPostgres, inQuest []string) {
	inPostgres = []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", AppRole, quoteLiteral(p.App)),
		fmt.Sprintf("GRANT pg_monitor TO %s", AppRole),
	}
	if replRole {
		inPostgres = append(inPostgres, fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION PASSWORD %s", ReplRole, quoteLiteral(p.Repl)))
		for _, slot := range slots {
			inPostgres = append(inPostgres, fmt.Sprintf("SELECT pg_create_physical_replication_slot(%s, true)", quoteLiteral(slot)))
		}
	}
	inPostgres = append(inPostgres,
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD %s", LeverRole, quoteLiteral(p.Lever)),
		fmt.Sprintf("GRANT pg_monitor TO %s", LeverRole),
		fmt.Sprintf("GRANT ALTER SYSTEM ON PARAMETER recovery_min_apply_delay TO %s", LeverRole),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", Database, AppRole),
	)
	inQuest = []string{
		fmt.Sprintf("GRANT EXECUTE ON FUNCTION pg_wal_replay_pause(), pg_wal_replay_resume(), pg_reload_conf() TO %s", LeverRole),
	}
	return inPostgres, inQuest
}

// runBootstrap runs bootstrapSQL as the superuser: postgresURL and
// questURL reach the "postgres" and the application database.
func runBootstrap(ctx context.Context, postgresURL, questURL string, p passwords, replRole bool, slots []string) error {
	inPostgres, inQuest := bootstrapSQL(p, replRole, slots)
	for _, step := range []struct {
		url   string
		stmts []string
	}{{postgresURL, inPostgres}, {questURL, inQuest}} {
		conn, err := connect(ctx, step.url)
		if err != nil {
			return err
		}
		err = execAll(ctx, conn, step.stmts)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal (role DDL takes no bind
// parameters), which postgresql.conf reads the same way.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func execAll(ctx context.Context, conn *pgx.Conn, stmts []string) error {
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			f := strings.Fields(s)
			return fmt.Errorf("bootstrap %s %s: %w", f[0], f[1], err)
		}
	}
	return nil
}

func (c *Cluster) baseBackup(ctx context.Context, leader, n Node) error {
	conninfo := replConninfo("127.0.0.1", leader.Port, c.st.Passwords.Repl, n.Name)
	if err := run(c.st.User.command(ctx, c.st.DataRoot, filepath.Join(c.st.BinDir, "pg_basebackup"),
		baseBackupArgs(n.DataDir, conninfo, n.Name, false)...)); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return appendFile(n.DataDir, "postgresql.conf", fmt.Sprintf("port = %d\n", n.Port))
}

// replConninfo is how a follower reaches its leader. application_name
// makes pg_stat_replication tell the followers apart; pg_basebackup -R
// writes the whole of it into primary_conninfo.
func replConninfo(host string, port int, password, name string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s application_name=%s",
		conninfoValue(host), port, ReplRole, conninfoValue(password), conninfoValue(name))
}

// conninfoValue quotes a libpq connection-string value.
func conninfoValue(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// baseBackupArgs clone a leader into dataDir as a standby (-R) streaming
// from the physical slot named after it, which bootstrap made; create
// makes the slot (-C) for a follower that has none.
func baseBackupArgs(dataDir, conninfo, slot string, create bool) []string {
	args := []string{"-D", dataDir, "-R", "-X", "stream", "-S", slot, "-c", "fast", "--no-sync", "-d", conninfo}
	if create {
		args = append(args, "-C")
	}
	return args
}

func appendFile(dir, name, text string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startNode starts a node's postmaster with pg_ctl and records its pid.
func (c *Cluster) startNode(ctx context.Context, n Node) error {
	if err := portFree(n.Port); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	// The socket directory may be gone after a restart (it can live in /tmp).
	if err := os.MkdirAll(c.st.SocketDir, 0o700); err == nil {
		c.st.User.chown(c.st.SocketDir)
	}
	socketLock := filepath.Join(c.st.SocketDir, fmt.Sprintf(".s.PGSQL.%d.lock", n.Port))
	if err := clearStaleLock(ctx, n.DataDir, socketLock, stopTimeout); err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	logFile := c.logFile(n)
	cmd := c.st.User.command(ctx, c.st.DataRoot, filepath.Join(c.st.BinDir, "pg_ctl"),
		"start", "-w", "-t", "60", "-D", n.DataDir, "-l", logFile)
	if err := run(cmd); err != nil {
		return fmt.Errorf("start %s: %w%s", n.Name, err, logTail(logFile))
	}
	pid, err := postmasterPID(n.DataDir)
	if err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	c.setPID(n.Name, pid)
	return nil
}

func (c *Cluster) setPID(name string, pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.st.Nodes {
		if c.st.Nodes[i].Name == name {
			c.st.Nodes[i].PID = pid
		}
	}
}

func (c *Cluster) logFile(n Node) string {
	return filepath.Join(c.st.DataRoot, n.Name+".log")
}

// logTail returns the last lines of a server log, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return "; server log " + path + ": " + LastLines(string(b), 3)
}

// LastLines returns the last n lines of a log, joined on one line, for
// error messages.
func LastLines(log string, n int) string {
	lines := strings.Split(strings.TrimSpace(log), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// waitStreaming waits until every follower streams from the leader, each
// under its own name: a count of streaming walsenders would also count
// the one a pg_basebackup -X stream holds while a member is still being
// cloned (Patroni clones that way).
func (c *Cluster) waitStreaming(ctx context.Context, timeout time.Duration) error {
	leader := c.st.Nodes[0]
	conn, err := connect(ctx, c.SuperURL(leader))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var names []string
	for _, n := range c.st.Nodes[1:] {
		names = append(names, n.Name)
	}
	var n int
	err = poll.Until(ctx, timeout, 20*time.Millisecond, "the followers to stream", func(ctx context.Context) (bool, error) {
		err := conn.QueryRow(ctx, `SELECT count(DISTINCT application_name) FROM pg_stat_replication
			WHERE state = 'streaming' AND application_name = ANY($1)`, names).Scan(&n)
		return err == nil && n == len(names), err
	})
	if err != nil {
		return fmt.Errorf("only %d of %d followers streaming: %w; see the logs in %s", n, len(names), err, c.st.DataRoot)
	}
	return nil
}

// startAll starts every node of an existing cluster that is not running.
func (c *Cluster) startAll(ctx context.Context) error {
	if c.st.HA != nil {
		return c.haStartAll(ctx)
	}
	started := 0
	for _, n := range c.st.Nodes {
		if pid := c.runningPID(n); pid > 0 {
			c.setPID(n.Name, pid)
			continue
		}
		c.logf("starting %s on 127.0.0.1:%d", n.Name, n.Port)
		if err := c.startNode(ctx, n); err != nil {
			return err
		}
		started++
	}
	if started == 0 {
		c.logf("reusing the running cluster in %s (leader on 127.0.0.1:%d, %d replicas)", c.dir, c.st.Nodes[0].Port, len(c.st.Nodes)-1)
	}
	return c.save()
}

// runningPID returns the node's live postmaster pid, or 0.
func (c *Cluster) runningPID(n Node) int {
	if pid, err := postmasterPID(n.DataDir); err == nil && isPostmaster(pid, n.DataDir) {
		return pid
	}
	if isPostmaster(n.PID, n.DataDir) {
		return n.PID
	}
	return 0
}

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to 127.0.0.1:%d as %s: %w", cfg.Port, cfg.User, err)
	}
	return conn, nil
}
