package dbrouter

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Patroni's word decides the writer. A node that answers as a primary is
// not enough when Patroni runs the cluster: a primary whose Patroni agent
// died keeps accepting writes until a replica is promoted (about ttl
// later), and a primary that hung and woke up may have lost the leader key
// meanwhile. With discovery, the router writes only to a node that
// answers as a primary and whose own Patroni answers GET /primary with 200
// — what HAProxy's check in front of a Patroni cluster asks — on every
// poll. A node whose agent is gone, or whose leader key expired, gets no
// writes; its reads go on as the routing of a primary that is down says.

// leaderCheckTimeout bounds one GET /primary: a Patroni whose PostgreSQL
// hangs hangs with it, and that is an answer too.
const leaderCheckTimeout = time.Second

// apiBase is the scheme://host:port of a member's api_url, "" if it has
// none that parses.
func apiBase(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// holdsLeaderLock asks a member's own Patroni whether it holds the leader
// lock; why not, when not.
func (d *discovery) holdsLeaderLock(ctx context.Context, api string) (bool, string) {
	if api == "" {
		return false, "Patroni has not told the router this member's REST API yet"
	}
	ctx, cancel := context.WithTimeout(ctx, leaderCheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+"/primary", nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return false, fmt.Sprintf("its Patroni does not answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("its Patroni answers GET /primary with %s: it does not hold the leader lock", resp.Status)
	}
	return true, ""
}

// checkLeader fills h.PatroniLeader for a node that answered as a primary,
// when the router follows Patroni; without discovery it stays false and
// counts for nothing.
func (t *tracker) checkLeader(ctx context.Context, m *member, h *Health) {
	d := t.r.discovery
	if d == nil || !h.Up || h.InRecovery {
		return
	}
	t.mu.Lock()
	api := m.health.Patroni.api
	t.mu.Unlock()
	h.PatroniLeader, h.PatroniLeaderErr = d.holdsLeaderLock(ctx, api)
}

// writer reports whether a node in health h may take writes as far as
// Patroni is concerned: always without discovery.
func (t *tracker) writer(h *Health) bool { return t.r.discovery == nil || h.PatroniLeader }
