package cluster

import (
	"context"
	"errors"
	"fmt"
)

// KillAgent sends SIGKILL to a Patroni member's Patroni alone: its
// PostgreSQL runs on. A leader whose agent died stays a primary, and
// takes writes from whoever connects, until its key expires and another
// member is promoted — and after that too, a second primary (split brain)
// until its Patroni is started again (Start), which demotes and rewinds
// it. name may be "leader". It returns the member's name.
func (c *Cluster) KillAgent(ctx context.Context, name string) (string, error) {
	if c.st.HA == nil {
		return "", errors.New("kill-agent is for a Patroni cluster (quest cluster up --ha)")
	}
	n, err := c.resolveMember(ctx, name)
	if err != nil {
		return "", err
	}
	pid := c.patroniPID(n.Name)
	if pid == 0 {
		return "", fmt.Errorf("%s's Patroni is not running", n.Name)
	}
	if err := killAll(ctx, []int{pid}); err != nil {
		return "", fmt.Errorf("kill %s's Patroni: %w", n.Name, err)
	}
	c.logf("%s's Patroni killed (SIGKILL, pid %d); its PostgreSQL runs on", n.Name, pid)
	return n.Name, c.save()
}

// StartAlone starts a Patroni member's PostgreSQL without its Patroni, as
// an operator bringing a crashed server back by hand would: a crashed
// leader comes back as a primary on the timeline it had — a split brain
// once another member was promoted. Stop, then Start, hands it back to
// Patroni, which rewinds it.
func (c *Cluster) StartAlone(ctx context.Context, name string) error {
	if c.st.HA == nil {
		return errors.New("start-alone is for a Patroni cluster (quest cluster up --ha); on this cluster use start")
	}
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	if c.patroniPID(n.Name) > 0 {
		return fmt.Errorf("%s's Patroni runs: it starts PostgreSQL itself", n.Name)
	}
	if pid := c.runningPID(n); pid > 0 {
		return fmt.Errorf("%s is already running (pid %d)", n.Name, pid)
	}
	if err := c.startNode(ctx, n); err != nil {
		return err
	}
	c.logf("%s's PostgreSQL started without Patroni", n.Name)
	return c.save()
}

// resolveMember resolves a member's name, "leader" (or "primary") to the
// member Patroni says leads now.
func (c *Cluster) resolveMember(ctx context.Context, name string) (Node, error) {
	if name == LeaderName || name == "primary" {
		c.refreshRoles(ctx)
	}
	return c.Node(name)
}
