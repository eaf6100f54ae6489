package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"quest/internal/poll"
)

// osUser is the unprivileged account the servers run as. PostgreSQL
// refuses to run as root, so a root caller switches to it for initdb,
// pg_basebackup and pg_ctl.
type osUser struct {
	Name string `json:"name"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
}

// defaultServerUser is created when the caller is root and neither the
// requested account nor "postgres" exists.
const defaultServerUser = "quest-pg"

// resolveServerUser picks the account that runs the servers: the caller
// itself unless it is root; as root the named account, else "postgres",
// else a system account created for the purpose.
func resolveServerUser(ctx context.Context, name string) (osUser, error) {
	if os.Geteuid() != 0 {
		u, err := user.Current()
		if err != nil {
			return osUser{}, fmt.Errorf("look up the current user: %w", err)
		}
		return toOSUser(u)
	}
	candidates := []string{name}
	if name == "" {
		candidates = []string{"postgres", defaultServerUser}
	}
	for _, n := range candidates {
		if u, err := user.Lookup(n); err == nil {
			if u.Uid == "0" {
				return osUser{}, fmt.Errorf("server user %q is root; PostgreSQL refuses to run as root", n)
			}
			return toOSUser(u)
		}
	}
	if name != "" {
		return osUser{}, fmt.Errorf("server user %q does not exist; create it (useradd --system %s) or leave --user empty", name, name)
	}
	out, err := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home",
		"--shell", "/usr/sbin/nologin", defaultServerUser).CombinedOutput()
	if err != nil {
		return osUser{}, fmt.Errorf("create server user %s: %w: %s", defaultServerUser, err, bytes.TrimSpace(out))
	}
	u, err := user.Lookup(defaultServerUser)
	if err != nil {
		return osUser{}, err
	}
	return toOSUser(u)
}

func toOSUser(u *user.User) (osUser, error) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return osUser{}, fmt.Errorf("user %s: uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return osUser{}, fmt.Errorf("user %s: gid %q", u.Username, u.Gid)
	}
	return osUser{Name: u.Username, UID: uid, GID: gid}, nil
}

// switches reports whether commands must change to the server user.
func (u osUser) switches() bool { return os.Geteuid() != u.UID }

// command prepares a PostgreSQL tool to run as the server user, from a
// working directory that user can enter.
func (u osUser) command(ctx context.Context, dir, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	if u.switches() {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(u.UID), Gid: uint32(u.GID)}, // #nosec G115 -- ids come from user.Lookup
		}
	}
	return cmd
}

// run runs a prepared command and folds its output into the error.
func run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 && len(msg) > 400 {
			msg = "…" + msg[i+1:]
		}
		return fmt.Errorf("%s: %w: %s", filepath.Base(cmd.Path), err, msg)
	}
	return nil
}

// chown gives a path to the server user when commands switch to it.
func (u osUser) chown(path string) error {
	if !u.switches() {
		return nil
	}
	return os.Chown(path, u.UID, u.GID)
}

// postmasterPID reads the pid recorded in a data directory's postmaster.pid.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s/postmaster.pid: bad pid %q", dataDir, first)
	}
	return pid, nil
}

// isPostmaster reports whether pid is a live postmaster serving dataDir.
// Checking the working directory (a postmaster changes into its data
// directory) or the command line guards against a recycled pid.
func isPostmaster(pid int, dataDir string) bool {
	if pid <= 0 || !Alive(pid) {
		return false
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil {
		return filepath.Clean(cwd) == filepath.Clean(dataDir)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte(dataDir))
}

// Alive reports whether pid names a process that has not exited. A zombie
// (exited, not yet reaped by its parent) counts as gone.
func Alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

// waitGone waits until pid has exited.
func waitGone(ctx context.Context, pid int, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 10*time.Millisecond, fmt.Sprintf("process %d to exit", pid), func(context.Context) (bool, error) {
		return !Alive(pid), nil
	})
}

// processesIn returns the live (not zombie) processes whose working
// directory is dir: a postmaster and its children all run in their data
// directory.
func processesIn(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && filepath.Clean(cwd) == dir && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// postmastersIn returns the live processes running in dir (see
// processesIn) whose parent does not: the postmasters, not their children.
func postmastersIn(dir string) []int {
	pids := processesIn(dir)
	in := make(map[int]bool, len(pids))
	for _, pid := range pids {
		in[pid] = true
	}
	var out []int
	for _, pid := range pids {
		if !in[parentPID(pid)] {
			out = append(out, pid)
		}
	}
	return out
}

// parentPID reads pid's parent from /proc; 0 when it cannot.
func parentPID(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid …": comm may hold spaces and parentheses.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) >= 2 {
			ppid, _ := strconv.Atoi(f[1])
			return ppid
		}
	}
	return 0
}

// clearStaleLock removes a data directory's postmaster.pid left by a
// postmaster that was killed, once every process of the old server has
// exited. PostgreSQL itself would refuse to start while the dead
// postmaster lingers as a zombie (its pid still answers kill 0), which is
// what happens where no init reaps orphans.
// The socket's lock file, which names the same pid, goes too.
func clearStaleLock(ctx context.Context, dataDir, socketLock string, timeout time.Duration) error {
	pid, err := postmasterPID(dataDir)
	if err != nil || Alive(pid) {
		return nil // no lock, or a live postmaster: pg_ctl decides
	}
	err = poll.Until(ctx, timeout, 20*time.Millisecond, "the old server's processes in "+dataDir+" to exit", func(context.Context) (bool, error) {
		return len(processesIn(filepath.Clean(dataDir))) == 0, nil
	})
	if err != nil {
		return err
	}
	for _, f := range []string{socketLock, filepath.Join(dataDir, "postmaster.pid")} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
