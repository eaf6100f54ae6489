package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"quest/internal/poll"
)

// NodeConfig describes one node of a cluster that something else runs —
// a container of the docker-compose stack — for InitNode to set up with
// the settings, roles and slots `quest cluster up` gives its own nodes.
type NodeConfig struct {
	Role      string // "leader" or "follower"
	Name      string // a follower's name (replica1): its slot and application_name
	DataDir   string // the node's data directory; a node already made there is left as it is
	Port      int    // the port the node serves on
	Listen    string // listen_addresses: "*" in a container
	SocketDir string // unix_socket_directories
	Leader    string // a follower's leader, host:port
	Replicas  int    // a leader's followers: it makes the slots replica1…replicaN for them
	User      string // OS user that owns the data and runs the server; "" picks as Up does
	BinDir    string // PostgreSQL bin directory; "" searches the usual places
	Log       io.Writer

	// The roles' passwords. A leader needs all four, a follower Repl.
	SuperPassword, AppPassword, ReplPassword, LeverPassword string
}

// InitNode makes a leader or a follower in cfg.DataDir unless one is
// there already, so that a container may call it at every start:
//
//   - a leader: initdb, the shared settings and listen addresses, host
//     rules asking a password from any address (a container's network
//     decides who can reach it), then the roles and the database, on a
//     server it starts on a free loopback port and stops again — so
//     nothing can connect before the roles exist;
//   - a follower: waits for the leader, then pg_basebackup from it
//     through the slot named after it, which the leader made, or which
//     the follower creates when the leader has none by that name.
//
// The caller then runs the server in the foreground.
func InitNode(ctx context.Context, cfg NodeConfig) error {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	switch {
	case cfg.Role != "leader" && cfg.Role != "follower":
		return fmt.Errorf("node role %q: choose leader or follower", cfg.Role)
	case cfg.DataDir == "":
		return errors.New("no data directory given")
	case cfg.Port < 1 || cfg.Port > 65535:
		return fmt.Errorf("port %d: choose between 1 and 65535", cfg.Port)
	case cfg.Role == "leader" && (cfg.Replicas < 0 || cfg.Replicas > 8):
		return fmt.Errorf("%d replicas: choose between 0 and 8", cfg.Replicas)
	case cfg.Role == "follower" && (cfg.Name == "" || cfg.Leader == ""):
		return errors.New("a follower needs its name and its leader's host:port")
	case cfg.Role == "follower" && cfg.ReplPassword == "":
		return errors.New("a follower needs the replication role's password")
	case cfg.Role == "leader" && (cfg.SuperPassword == "" || cfg.AppPassword == "" || cfg.ReplPassword == "" || cfg.LeverPassword == ""):
		return errors.New("a leader needs the superuser's, the application's, the replication and the lever role's passwords")
	}
	bindir := cfg.BinDir
	if bindir == "" {
		var err error
		if bindir, err = FindBinDir(Search{}); err != nil {
			return err
		}
	}
	u, err := resolveServerUser(ctx, cfg.User)
	if err != nil {
		return err
	}
	// The socket directory may live on a fresh tmpfs.
	if cfg.SocketDir != "" {
		if err := os.MkdirAll(cfg.SocketDir, 0o755); err != nil {
			return err
		}
		if err := u.chown(cfg.SocketDir); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "PG_VERSION")); err == nil {
		fmt.Fprintf(cfg.Log, "%s: a node is already set up in %s\n", cfg.Role, cfg.DataDir)
		return nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	// A volume's mount point comes as 0755; postgres wants 0700.
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil { // #nosec G302 -- a directory: 0700 is owner-only
		return err
	}
	if err := u.chown(cfg.DataDir); err != nil {
		return err
	}
	// The tools' working directory and initdb's password file: somewhere
	// the server user can enter.
	work, err := os.MkdirTemp("", "quest-node-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := u.chown(work); err != nil {
		return err
	}
	if cfg.Role == "leader" {
		return initLeaderNode(ctx, cfg, u, bindir, work)
	}
	return initFollowerNode(ctx, cfg, u, bindir, work)
}

func initLeaderNode(ctx context.Context, cfg NodeConfig, u osUser, bindir, work string) (err error) {
	began := time.Now()
	p := passwords{Super: cfg.SuperPassword, App: cfg.AppPassword, Repl: cfg.ReplPassword, Lever: cfg.LeverPassword}
	fmt.Fprintf(cfg.Log, "leader: initdb in %s\n", cfg.DataDir)
	defer func() {
		if err != nil { // the next start begins again from an empty directory
			clearDir(cfg.DataDir)
		}
	}()
	if err := initdb(ctx, u, bindir, work, cfg.DataDir, p.Super); err != nil {
		return err
	}
	if err := appendFile(cfg.DataDir, "postgresql.conf", nodeConf(cfg.Listen, cfg.Port, cfg.SocketDir)); err != nil {
		return err
	}
	if err := appendFile(cfg.DataDir, "pg_hba.conf", "\n# Added by quest cluster init-node: the node's network decides who reaches it.\n"+
		"host all all all scram-sha-256\n"+
		"host replication "+ReplRole+" all scram-sha-256\n"); err != nil {
		return err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	logFile := filepath.Join(work, "bootstrap.log")
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d", ports[0])
	if err := run(u.command(ctx, work, filepath.Join(bindir, "pg_ctl"), "start", "-w", "-t", "60", "-D", cfg.DataDir, "-l", logFile, "-o", opts)); err != nil {
		return fmt.Errorf("leader: start for set-up: %w%s", err, logTail(logFile))
	}
	pid, err := postmasterPID(cfg.DataDir)
	if err != nil {
		return err
	}
	defer func() { // a fast shutdown, by the pid, as Down stops the launcher's nodes
		if stopErr := signalAndWait(context.WithoutCancel(ctx), pid, false); err == nil {
			err = stopErr
		}
	}()
	fmt.Fprintf(cfg.Log, "leader: creating roles, database and %d slots\n", cfg.Replicas)
	var slots []string
	for i := 1; i <= cfg.Replicas; i++ {
		slots = append(slots, ReplicaName(i))
	}
	if err := runBootstrap(ctx, pgURL(SuperUser, p.Super, ports[0], "postgres"), pgURL(SuperUser, p.Super, ports[0], Database), p, true, slots); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "leader: set up in %.1fs\n", time.Since(began).Seconds())
	return nil
}

func initFollowerNode(ctx context.Context, cfg NodeConfig, u osUser, bindir, work string) (err error) {
	host, portText, err := net.SplitHostPort(cfg.Leader)
	if err != nil {
		return fmt.Errorf("leader %q: want host:port", cfg.Leader)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("leader %q: want host:port", cfg.Leader)
	}
	began := time.Now()
	last := time.Time{}
	err = poll.Until(ctx, 3*time.Minute, 500*time.Millisecond, "the leader at "+cfg.Leader, func(ctx context.Context) (bool, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", cfg.Leader)
		if err != nil {
			if time.Since(last) > 5*time.Second {
				fmt.Fprintf(cfg.Log, "%s: waiting for the leader at %s\n", cfg.Name, cfg.Leader)
				last = time.Now()
			}
			return false, err
		}
		conn.Close()
		return true, nil
	})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			clearDir(cfg.DataDir)
		}
	}()
	fmt.Fprintf(cfg.Log, "%s: pg_basebackup from %s\n", cfg.Name, cfg.Leader)
	conninfo := replConninfo(host, port, cfg.ReplPassword, cfg.Name)
	basebackup := filepath.Join(bindir, "pg_basebackup")
	err = run(u.command(ctx, work, basebackup, baseBackupArgs(cfg.DataDir, conninfo, cfg.Name, false)...))
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		// A follower beyond the leader's --replicas: no slot was made for it.
		fmt.Fprintf(cfg.Log, "%s: the leader has no slot %s; creating it\n", cfg.Name, cfg.Name)
		clearDir(cfg.DataDir)
		err = run(u.command(ctx, work, basebackup, baseBackupArgs(cfg.DataDir, conninfo, cfg.Name, true)...))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.Name, err)
	}
	if err := appendFile(cfg.DataDir, "postgresql.conf", fmt.Sprintf("port = %d\n", cfg.Port)); err != nil {
		return err
	}
	fmt.Fprintf(cfg.Log, "%s: cloned in %.1fs\n", cfg.Name, time.Since(began).Seconds())
	return nil
}

// clearDir empties a data directory but keeps the directory itself: it
// may be a volume's mount point.
func clearDir(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}
