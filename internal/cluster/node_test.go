package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"quest/internal/cluster"
	"quest/internal/levers"
	"quest/internal/testcluster"
)

// TestInitNodeGivesTheLaunchersSetUp makes a leader and a follower with
// InitNode, as the docker-compose images do, runs them, and checks that
// they are what `quest cluster up` makes: the shared settings, the roles
// (passwords that need quoting included), the lever grants, the follower
// streaming from the slot the leader made for it under its name; a
// follower beyond the leader's replicas makes its own slot. A second
// InitNode leaves a node alone; a follower whose data was deleted clones
// again through the slot the leader kept.
func TestInitNodeGivesTheLaunchersSetUp(t *testing.T) {
	testcluster.Get(t) // skip or fail alongside the others when PostgreSQL is missing
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := nodeRoot(t)
	ports, err := cluster.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	leader := cluster.NodeConfig{
		Role: "leader", Replicas: 1, DataDir: filepath.Join(root, "leader"), Port: ports[0],
		Listen: "127.0.0.1", SocketDir: filepath.Join(root, "run"), BinDir: os.Getenv("QUEST_PG_BIN"), Log: &log,
		SuperPassword: "super pw", AppPassword: `it's "app"`, ReplPassword: `re\pl 'pw'`, LeverPassword: "lever",
	}
	follower := leader
	follower.Role, follower.Name, follower.DataDir, follower.Port = "follower", "replica1", filepath.Join(root, "replica1"), ports[1]
	follower.Leader = fmt.Sprintf("127.0.0.1:%d", ports[0])
	second := follower
	second.Name, second.DataDir, second.Port = "replica2", filepath.Join(root, "replica2"), ports[2]

	if err := cluster.InitNode(ctx, leader); err != nil {
		t.Fatalf("leader: %v\n%s", err, log.String())
	}
	startServer(t, leader.DataDir)
	if err := cluster.InitNode(ctx, follower); err != nil || strings.Contains(log.String(), "no slot") {
		t.Fatalf("follower, through the slot the leader made: %v\n%s", err, log.String())
	}
	startServer(t, follower.DataDir)
	log.Reset()
	if err := cluster.InitNode(ctx, second); err != nil || !strings.Contains(log.String(), "the leader has no slot replica2; creating it") {
		t.Fatalf("a follower without a slot: %v\n%s", err, log.String())
	}
	startServer(t, second.DataDir)

	super := conn(t, ctx, pgURL("postgres", leader.SuperPassword, ports[0], "postgres"))
	for _, line := range cluster.LeaderSettings() {
		name, value, _ := strings.Cut(line, " = ")
		var got string
		if err := super.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if want := strings.Trim(value, "'"); got != want {
			t.Errorf("leader: %s = %q, want %q as the launcher sets", name, got, want)
		}
	}
	testcluster.Eventually(t, 30*time.Second, "replica1 and replica2 streaming, each from its slot", func() bool {
		var n int
		err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid
			WHERE r.application_name = s.slot_name AND r.state = 'streaming' AND s.slot_name IN ('replica1', 'replica2')`).Scan(&n)
		return err == nil && n == 2
	})
	app := conn(t, ctx, pgURL("quest", leader.AppPassword, ports[0], "quest"))
	if _, err := app.Exec(ctx, "CREATE TABLE node_check (id int); INSERT INTO node_check VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	replica := conn(t, ctx, pgURL("quest", leader.AppPassword, ports[1], "quest"))
	testcluster.Eventually(t, 10*time.Second, "the leader's row on replica1", func() bool { return has(ctx, replica, "node_check", 1) })
	// The lever role pauses and resumes replay, as /lab does.
	leverURL := pgURL("quest_lever", leader.LeverPassword, ports[1], "quest")
	if err := levers.Pause(ctx, "replica1", leverURL); err != nil {
		t.Fatalf("the lever role cannot pause replica1: %v", err)
	}
	if err := levers.Resume(ctx, "replica1", leverURL); err != nil {
		t.Fatalf("the lever role cannot resume replica1: %v", err)
	}

	// Set up already: left alone.
	log.Reset()
	if err := cluster.InitNode(ctx, leader); err != nil || !strings.Contains(log.String(), "already set up") {
		t.Fatalf("second InitNode of the leader: %v\n%s", err, log.String())
	}
	// A follower's data deleted, the leader's slot kept: cloned again through it.
	stopServer(t, follower.DataDir)
	if err := os.RemoveAll(follower.DataDir); err != nil {
		t.Fatal(err)
	}
	log.Reset()
	if err := cluster.InitNode(ctx, follower); err != nil || !strings.Contains(log.String(), "replica1: cloned in") {
		t.Fatalf("follower cloned again: %v\n%s", err, log.String())
	}
	startServer(t, follower.DataDir)
	if _, err := app.Exec(ctx, "INSERT INTO node_check VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	replica = conn(t, ctx, pgURL("quest", leader.AppPassword, ports[1], "quest"))
	testcluster.Eventually(t, 10*time.Second, "a new row on the cloned-again replica1", func() bool { return has(ctx, replica, "node_check", 2) })
}

func TestInitNodeRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  cluster.NodeConfig
		want string
	}{
		{cluster.NodeConfig{Role: "boss", DataDir: "/x", Port: 5432}, `node role "boss": choose leader or follower`},
		{cluster.NodeConfig{Role: "leader", Port: 5432}, "no data directory given"},
		{cluster.NodeConfig{Role: "leader", DataDir: "/x", Port: 70000}, "port 70000: choose between 1 and 65535"},
		{cluster.NodeConfig{Role: "follower", DataDir: "/x", Port: 5432, Name: "replica1"}, "a follower needs its name and its leader's host:port"},
		{cluster.NodeConfig{Role: "leader", DataDir: "/x", Port: 5432, SuperPassword: "s"}, "a leader needs the superuser's"},
	} {
		err := cluster.InitNode(ctx, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func pgURL(user, password string, port int, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: db, RawQuery: "sslmode=disable"}
	return u.String()
}

// nodeRoot is a directory the server user can enter: as root, the servers
// run as another user, who cannot enter a private temp dir.
func nodeRoot(t *testing.T) string {
	t.Helper()
	parent := ""
	if os.Geteuid() == 0 {
		parent = "/var/lib/quest"
		if err := os.MkdirAll(parent, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp(parent, "init-node-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer runs pg_ctl start as the data directory's owner, and stops
// the server when the test ends.
func startServer(t *testing.T, dataDir string) {
	t.Helper()
	logFile := filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".log")
	if out, err := pgCtl(dataDir, "start", "-w", "-t", "60", "-l", logFile); err != nil {
		t.Fatalf("pg_ctl start %s: %v\n%s", dataDir, err, out)
	}
	t.Cleanup(func() { stopServer(t, dataDir) })
}

func stopServer(t *testing.T, dataDir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dataDir, "postmaster.pid")); err != nil {
		return // stopped already
	}
	if out, err := pgCtl(dataDir, "stop", "-w", "-m", "fast"); err != nil {
		t.Errorf("pg_ctl stop %s: %v\n%s", dataDir, err, out)
	}
}

func pgCtl(dataDir string, args ...string) ([]byte, error) {
	bindir := os.Getenv("QUEST_PG_BIN")
	if bindir == "" {
		var err error
		if bindir, err = cluster.FindBinDir(cluster.Search{}); err != nil {
			return nil, err
		}
	}
	fi, err := os.Stat(dataDir)
	if err != nil {
		return nil, err
	}
	st := fi.Sys().(*syscall.Stat_t)
	cmd := exec.Command(filepath.Join(bindir, "pg_ctl"), append(args, "-D", dataDir)...)
	cmd.Dir = filepath.Dir(dataDir)
	if os.Geteuid() == 0 {
		// The server's log goes beside its data directory.
		if err := os.Chown(cmd.Dir, int(st.Uid), int(st.Gid)); err != nil {
			return nil, err
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: st.Uid, Gid: st.Gid}}
	}
	return cmd.CombinedOutput()
}
