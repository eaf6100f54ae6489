// Package pgpool starts pgpool-II — the proxy people put in front of
// PostgreSQL for read scaling without changing their app — in front of the
// local cluster, in streaming-replication mode with load balancing, so the
// lab can measure it beside Quest's strategies. Everything it writes lives
// in one temporary directory, removed by Stop.
package pgpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/poll"
)

// ErrNotInstalled is returned when no pgpool binary is found.
var ErrNotInstalled = errors.New("pgpool-II is not installed: apt-get install pgpool2 (Debian's package; .ci/run installs it)")

// Backend is one PostgreSQL server behind pgpool.
type Backend struct {
	Name string // application_name, for pgpool's view
	Port int    // on 127.0.0.1
}

// Config says what pgpool fronts and how.
type Config struct {
	Primary  Backend
	Replicas []Backend
	User     string // the application role; pgpool also checks replication with it
	Password string
	Database string
	// PoolSize is how many client sessions pgpool serves at once
	// (num_init_children); set it to the app's pool size.
	PoolSize int
	// DelayThreshold: a replica further behind than this many bytes of WAL
	// gets no reads (pgpool 4.3 has no time-based threshold).
	DelayThreshold int64
	Log            io.Writer // pgpool's own log; nil keeps it for the error if pgpool does not come up
}

// Pgpool is a running pgpool-II.
type Pgpool struct {
	dir      string
	port     int
	cfg      Config
	conf     string
	cmd      *exec.Cmd
	done     chan error
	stopOnce sync.Once
}

// Settings renders the pgpool.conf settings that matter for the
// comparison, for the lab to print beside its results.
func (c Config) Settings() []string {
	return []string{
		"backend_clustering_mode = 'streaming_replication'",
		"load_balance_mode = on",
		"backend_weight0 = 0 (the primary; reads go to replicas, as in Quest)",
		"statement_level_load_balance = off (default: a session keeps its load-balance node)",
		"disable_load_balance_on_write = 'transaction' (default)",
		"sr_check_period = 1",
		fmt.Sprintf("delay_threshold = %d (bytes; 4.3 has no time threshold)", c.DelayThreshold),
		fmt.Sprintf("num_init_children = %d, max_pool = 1 (as many sessions as the app's pool)", c.PoolSize),
		"connection_cache = on, health_check_period = 0, failover_on_backend_error = on (defaults)",
	}
}

// binary finds pgpool: on PATH, else where Debian's package puts it.
func binary() (string, error) {
	if bin, err := exec.LookPath("pgpool"); err == nil {
		return bin, nil
	}
	if _, err := os.Stat("/usr/sbin/pgpool"); err != nil {
		return "", ErrNotInstalled
	}
	return "/usr/sbin/pgpool", nil
}

// Version is the installed pgpool-II's version ("4.3.5"), or "" when it
// is not installed or does not say.
func Version() string {
	bin, err := binary()
	if err != nil {
		return ""
	}
	out, err := exec.Command(bin, "--version").CombinedOutput() // #nosec G204 -- pgpool's own binary, found above
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(out)); len(f) >= 3 {
		return f[2]
	}
	return ""
}

// Start writes a configuration into a new temporary directory and starts
// pgpool on a free port, waiting until it answers.
func Start(ctx context.Context, cfg Config) (*Pgpool, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 10
	}
	if cfg.DelayThreshold <= 0 {
		cfg.DelayThreshold = 64 << 20
	}
	dir, err := os.MkdirTemp("", "qpgpool")
	if err != nil {
		return nil, err
	}
	p := &Pgpool{dir: dir, cfg: cfg, done: make(chan error, 1)}
	ok := false
	defer func() {
		if !ok {
			p.Stop()
		}
	}()
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return nil, err
	}
	p.port = ports[0]
	p.conf = filepath.Join(dir, "pgpool.conf")
	if err := os.WriteFile(p.conf, []byte(p.config(ports[1])), 0o600); err != nil {
		return nil, err
	}
	// Plain-text passwords, marked TEXT, let pgpool answer SCRAM on the
	// app's side and speak SCRAM to the backends.
	if err := os.WriteFile(filepath.Join(dir, "pool_passwd"), []byte(cfg.User+":TEXT"+cfg.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "pcp.conf"), nil, 0o600); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "-n", "-f", p.conf, "-F", filepath.Join(dir, "pcp.conf"))
	p.cmd.Dir = dir
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var logBuf bytes.Buffer
	if cfg.Log != nil {
		p.cmd.Stdout, p.cmd.Stderr = cfg.Log, cfg.Log
	} else {
		p.cmd.Stdout, p.cmd.Stderr = &logBuf, &logBuf
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgpool: %w", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("pgpool did not come up: %w; log: %s", err, cluster.LastLines(logBuf.String(), 3))
	}
	ok = true
	return p, nil
}

func (p *Pgpool) config(pcpPort int) string {
	c := p.cfg
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("backend_clustering_mode = 'streaming_replication'")
	w("listen_addresses = '127.0.0.1'")
	w("port = %d", p.port)
	w("socket_dir = '%s'", p.dir)
	w("pcp_listen_addresses = ''")
	w("pcp_port = %d", pcpPort)
	w("pcp_socket_dir = '%s'", p.dir)
	w("wd_ipc_socket_dir = '%s'", p.dir)
	w("pid_file_name = '%s'", filepath.Join(p.dir, "pgpool.pid"))
	w("logdir = '%s'", p.dir)
	for i, be := range append([]Backend{c.Primary}, c.Replicas...) {
		weight := 1
		if i == 0 {
			weight = 0
		}
		w("backend_hostname%d = '127.0.0.1'", i)
		w("backend_port%d = %d", i, be.Port)
		w("backend_weight%d = %d", i, weight)
		w("backend_flag%d = 'ALLOW_TO_FAILOVER'", i)
		w("backend_application_name%d = '%s'", i, be.Name)
	}
	w("enable_pool_hba = off")
	w("pool_passwd = 'pool_passwd'")
	w("num_init_children = %d", c.PoolSize)
	w("max_pool = 1")
	w("load_balance_mode = on")
	w("disable_load_balance_on_write = 'transaction'")
	w("statement_level_load_balance = off")
	w("sr_check_period = 1")
	w("sr_check_user = '%s'", c.User)
	w("sr_check_password = '%s'", c.Password)
	w("sr_check_database = '%s'", c.Database)
	w("delay_threshold = %d", c.DelayThreshold)
	w("health_check_period = 0")
	w("log_destination = 'stderr'")
	w("log_min_messages = warning")
	return b.String()
}

// URL is the application's connection URL through pgpool.
func (p *Pgpool) URL() string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", p.cfg.User, p.cfg.Password, p.port, p.cfg.Database)
}

// Port is where pgpool listens on 127.0.0.1.
func (p *Pgpool) Port() int { return p.port }

// PID is the pgpool parent process's id.
func (p *Pgpool) PID() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *Pgpool) waitReady(ctx context.Context, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 100*time.Millisecond, "pgpool to answer", func(ctx context.Context) (bool, error) {
		select {
		case err := <-p.done:
			p.done <- err
			return false, poll.Stop(fmt.Errorf("pgpool exited: %w", err))
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, p.URL())
		if err != nil {
			return false, err
		}
		defer conn.Close(context.Background())
		var one int
		err = conn.QueryRow(cctx, "SELECT 1").Scan(&one)
		return err == nil, err
	})
}

// Stop shuts pgpool down (SIGINT: fast shutdown), waits for it and its
// children to exit, and removes its directory.
func (p *Pgpool) Stop() error {
	var err error
	p.stopOnce.Do(func() {
		if p.cmd != nil && p.cmd.Process != nil {
			pid := p.cmd.Process.Pid
			syscall.Kill(pid, syscall.SIGINT)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				// Its whole process group: pgpool's children share it.
				syscall.Kill(-pid, syscall.SIGKILL)
				<-p.done
			}
		}
		err = os.RemoveAll(p.dir)
	})
	return err
}
