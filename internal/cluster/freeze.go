package cluster

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// Freeze stops a node's PostgreSQL in its tracks — SIGSTOP to the
// postmaster and every one of its processes — as a host that hangs would:
// connections stay open, nothing answers, nothing fails. Patroni, when it
// runs the node, is left running, as in a hang of the database alone. The
// returned thaw sends SIGCONT to the same processes; call it exactly once
// (a test, with t.Cleanup). A node frozen and never thawed stays so until
// it is stopped: Down sends SIGCONT before it stops a node.
func (c *Cluster) Freeze(ctx context.Context, name string) (func() error, error) {
	n, err := c.Node(name)
	if err != nil {
		return nil, err
	}
	if c.runningPID(n) == 0 {
		return nil, fmt.Errorf("%s is not running", n.Name)
	}
	pids := processesIn(n.DataDir)
	if len(pids) == 0 {
		return nil, fmt.Errorf("%s: no process runs in its data directory", n.Name)
	}
	var stopped []int
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err == nil {
			stopped = append(stopped, pid)
		}
	}
	c.logf("%s frozen: SIGSTOP to its %d processes", n.Name, len(stopped))
	return func() error {
		err := thaw(stopped)
		c.logf("%s thawed: SIGCONT to its %d processes", n.Name, len(stopped))
		return err
	}, nil
}

// thaw sends SIGCONT to each pid; one that is gone is no error.
func thaw(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
