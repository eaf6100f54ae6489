package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"quest/internal/levers"
	"quest/internal/poll"
)

// The lag levers below connect as the lever role, which holds just the
// grants it needs: a running app never needs a superuser to pull them.
// The SQL is the levers package's, which pulls them on any cluster.

// Pause pauses WAL replay on a replica: it keeps receiving WAL but applies
// none, so its data stops moving.
func (c *Cluster) Pause(ctx context.Context, name string) error {
	n, err := c.replica(name, "pause replay on")
	if err != nil {
		return err
	}
	return startHint(n, levers.Pause(ctx, n.Name, c.LeverURL(n)))
}

// Resume resumes WAL replay on a replica.
func (c *Cluster) Resume(ctx context.Context, name string) error {
	n, err := c.replica(name, "resume replay on")
	if err != nil {
		return err
	}
	return startHint(n, levers.Resume(ctx, n.Name, c.LeverURL(n)))
}

// MaxDelay bounds SetDelay: a longer delay is a mistake, not a lesson.
const MaxDelay = levers.MaxDelay

// SetDelay sets a replica's recovery_min_apply_delay without a restart; 0
// removes it. It returns once the new value is in force: pg_reload_conf()
// only signals the servers. On a Patroni member the member's Patroni is
// told the delay first, or it would undo it (keepDelay).
func (c *Cluster) SetDelay(ctx context.Context, name string, d time.Duration) error {
	if d < 0 || d > MaxDelay {
		return fmt.Errorf("delay %s out of range; use 0 to %s", d, MaxDelay)
	}
	n, err := c.replica(name, "set the apply delay of")
	if err != nil {
		return err
	}
	if c.st.HA != nil {
		if err := c.keepDelay(ctx, name, d.Milliseconds()); err != nil {
			return err
		}
	}
	return startHint(n, levers.SetDelay(ctx, n.Name, c.LeverURL(n), d))
}

// replica returns the named node, refusing the leader: action is what the
// lever would have done.
func (c *Cluster) replica(name, action string) (Node, error) {
	n, err := c.Node(name)
	if err != nil {
		return Node{}, err
	}
	if n.Leader() {
		return Node{}, fmt.Errorf("cannot %s the leader: it replays no WAL; name a replica (%s)", action, strings.Join(c.replicaNames(), ", "))
	}
	return n, nil
}

// startHint says how to start a node a lever could not reach.
func startHint(n Node, err error) error {
	if errors.Is(err, levers.ErrUnreachable) {
		return fmt.Errorf("%w (start it with: quest cluster start %s)", err, n.Name)
	}
	return err
}

func (c *Cluster) replicaNames() []string {
	var names []string
	for _, n := range c.st.Nodes[1:] {
		names = append(names, n.Name)
	}
	return names
}

// Stop stops a node: a fast shutdown (the leader's walsenders first ship
// what was committed), or an immediate one that skips the shutdown
// checkpoint as a crash would. A Patroni member's Patroni stops too, first:
// it would start PostgreSQL again (see stopMember).
func (c *Cluster) Stop(ctx context.Context, name string, immediate bool) error {
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	if c.st.HA != nil {
		return c.haStop(ctx, n, immediate)
	}
	return c.stopNode(ctx, n, immediate)
}

// Kill sends SIGKILL to a node's postmaster, the harshest crash. Its
// children notice the postmaster's death and exit on their own; Start waits
// for them. A Patroni member's Patroni starts it again by itself: a crash
// of PostgreSQL, not of the host (for that, see Fail).
func (c *Cluster) Kill(ctx context.Context, name string) error {
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	pid := c.runningPID(n)
	if pid == 0 {
		return fmt.Errorf("%s is not running", n.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", n.Name, err)
	}
	return waitGone(ctx, pid, stopTimeout)
}

// Start starts a stopped node once its old postmaster is gone. Starting a
// running node does nothing. For a Patroni member it starts the member's
// Patroni, which rewinds a crashed member and rejoins it as a replica (see
// startMember).
func (c *Cluster) Start(ctx context.Context, name string) error {
	if c.st.HA != nil {
		return c.startMember(ctx, name)
	}
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	if pid := c.runningPID(n); pid > 0 {
		c.logf("%s is already running (pid %d)", n.Name, pid)
		return nil
	}
	if n.PID > 0 {
		if err := waitGone(ctx, n.PID, stopTimeout); err != nil {
			return fmt.Errorf("start %s: old postmaster: %w", n.Name, err)
		}
	}
	// After a SIGKILL the old postmaster's children may still hold its
	// shared memory for a moment; the new one refuses to start until they
	// have exited.
	var startErr error
	err = poll.Until(ctx, 30*time.Second, 100*time.Millisecond, n.Name+" to start", func(ctx context.Context) (bool, error) {
		startErr = c.startNode(ctx, n)
		if startErr != nil && strings.Contains(startErr.Error(), "pre-existing shared memory block") {
			return false, startErr // the old children still hold it: again
		}
		return true, nil
	})
	if startErr != nil {
		err = startErr
	}
	if err != nil {
		return err
	}
	return c.save()
}

// WaitCaughtUp waits until every running replica has replayed what the
// leader had flushed when it was called.
func (c *Cluster) WaitCaughtUp(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	leader, err := connect(ctx, c.PrimaryURL())
	if err != nil {
		return err
	}
	var target string
	err = leader.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text`).Scan(&target)
	leader.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	for _, n := range c.st.Nodes[1:] {
		if c.runningPID(n) == 0 {
			continue
		}
		conn, err := connect(ctx, c.URL(n))
		if err != nil {
			return err
		}
		err = poll.Until(ctx, 0, 5*time.Millisecond, n.Name+" to replay "+target, func(ctx context.Context) (bool, error) {
			var ok bool
			err := conn.QueryRow(ctx, `SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn`, target).Scan(&ok)
			return ok, err
		})
		if err != nil {
			conn.Close(context.Background())
			return fmt.Errorf("%s did not replay %s within %s (paused?): %w", n.Name, target, timeout, err)
		}
		conn.Close(ctx)
	}
	return nil
}
