package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// stopTimeout bounds how long a stopping postmaster may take.
const stopTimeout = 60 * time.Second

// Down stops every server of the cluster, followers first, and waits until
// each postmaster has exited. With purge it also deletes the data
// directories and the state directory.
func (c *Cluster) Down(ctx context.Context, purge bool) error {
	err := c.stopAll(ctx, false)
	if err != nil && !purge {
		return err
	}
	if !purge {
		c.logf("cluster in %s stopped", c.dir)
		return c.save()
	}
	if err != nil {
		// A server we could not stop keeps its files open; keep them too.
		return fmt.Errorf("not purging: %w", err)
	}
	for _, p := range []string{c.st.DataRoot, c.st.SocketDir, c.dir} {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	c.logf("cluster in %s stopped and purged", c.dir)
	return nil
}

func (c *Cluster) stopAll(ctx context.Context, immediate bool) error {
	if c.st.HA != nil {
		return c.haStopAll(ctx)
	}
	var errs []error
	for i := len(c.st.Nodes) - 1; i >= 0; i-- {
		if err := c.stopNode(ctx, c.st.Nodes[i], immediate); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopNode signals a node's postmaster (SIGINT: fast shutdown, SIGQUIT:
// immediate) and waits until it is gone. A node already down is no error.
func (c *Cluster) stopNode(ctx context.Context, n Node, immediate bool) error {
	thaw(processesIn(n.DataDir)) // a frozen server (Freeze) would never act on the signal
	if pid := c.runningPID(n); pid != 0 {
		if err := signalAndWait(ctx, pid, immediate); err != nil {
			return fmt.Errorf("stop %s: %w", n.Name, err)
		}
	}
	// A postmaster its postmaster.pid does not name — one Patroni was
	// starting when it was stopped, before the file was written — is
	// found by its working directory, and stopped the same way.
	for _, pid := range postmastersIn(n.DataDir) {
		if err := signalAndWait(ctx, pid, immediate); err != nil {
			return fmt.Errorf("stop %s: %w", n.Name, err)
		}
	}
	return nil
}

func signalAndWait(ctx context.Context, pid int, immediate bool) error {
	sig := syscall.SIGINT
	if immediate {
		sig = syscall.SIGQUIT
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return waitGone(ctx, pid, stopTimeout)
}

// Sweep stops and purges every cluster in the direct subdirectories of
// root, as left by tests that could not clean up after themselves.
func Sweep(ctx context.Context, root string) (int, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		c, err := Open(filepath.Join(root, e.Name()))
		if err != nil {
			continue
		}
		if err := c.Down(ctx, true); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
