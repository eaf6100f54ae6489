package dbrouter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// discovery asks Patroni's REST API which members the cluster has, and
// makes the router's nodes follow: a member Patroni lists and the router
// lacks is added, one it no longer lists is dropped. Roles are not taken
// from Patroni: each node's own answer on every poll decides where writes
// go (a member Patroni calls leader may not have finished its promotion),
// and Patroni's view is shown beside it.
type discovery struct {
	r        *Router
	urls     []string // the REST APIs, tried in turn from the last that answered
	template *pgxpool.Config
	interval time.Duration
	client   *http.Client

	last     int    // index of the API that last answered; discovery's goroutine only
	reported string // the last problem logged, so each is logged once
}

// patroniMember is one entry of GET /cluster's "members".
type patroniMember struct {
	Name     string          `json:"name"`
	Role     string          `json:"role"`
	State    string          `json:"state"`
	Host     string          `json:"host"`
	Port     int             `json:"port"`
	Timeline uint32          `json:"timeline"`
	Lag      json.RawMessage `json:"lag"`     // bytes, or "unknown"
	APIURL   string          `json:"api_url"` // the member's own REST API, "http://host:port/patroni"
}

func newDiscovery(r *Router, urls []string, template *pgxpool.Config, interval time.Duration) (*discovery, error) {
	d := &discovery{r: r, template: template, interval: interval, client: &http.Client{Timeout: 2 * time.Second}}
	if d.interval <= 0 {
		d.interval = time.Second
	}
	for _, raw := range urls {
		u, err := patroniURL(raw)
		if err != nil {
			return nil, err
		}
		d.urls = append(d.urls, u)
	}
	return d, nil
}

// patroniURL checks one REST API address: http(s)://host:port, the scheme
// optional.
func patroniURL(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", fmt.Errorf("dbrouter: Patroni REST API %q: want http://host:port", raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// ask returns Patroni's members from the first API that answers.
func (d *discovery) ask(ctx context.Context) ([]patroniMember, error) {
	var errs []error
	for k := range d.urls {
		i := (d.last + k) % len(d.urls)
		ms, err := d.get(ctx, d.urls[i])
		if err == nil {
			d.last = i
			return ms, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no Patroni REST API answers: %w", errors.Join(errs...))
}

func (d *discovery) get(ctx context.Context, api string) ([]patroniMember, error) {
	body, err := d.fetch(ctx, api, "/cluster")
	if err != nil {
		return nil, err
	}
	var view struct {
		Members []patroniMember `json:"members"`
	}
	if err := json.Unmarshal(body, &view); err != nil {
		return nil, fmt.Errorf("%s/cluster: %w", api, err)
	}
	return view.Members, nil
}

// fetch returns the body of GET api+path, at most 1 MB.
func (d *discovery) fetch(ctx context.Context, api, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s%s: %s", api, path, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// admit returns the members the router can use, at most maxNodes, in
// Patroni's order; what it leaves out, and why, goes to the log and the
// status pages.
func (d *discovery) admit(ms []patroniMember) []patroniMember {
	var ok []patroniMember
	var left []string
	for _, m := range ms {
		switch {
		case m.Name == "" || m.Host == "" || m.Port <= 0 || m.Port > 65535:
			left = append(left, fmt.Sprintf("%q (no PostgreSQL address)", m.Name))
		case checkName(m.Name) != nil:
			left = append(left, fmt.Sprintf("%q (the name pages give the current primary)", m.Name))
		case len(ok) == maxNodes:
			left = append(left, fmt.Sprintf("%q (at most %d nodes)", m.Name, maxNodes))
		default:
			ok = append(ok, m)
		}
	}
	if len(left) > 0 {
		d.report("Patroni members left out: " + strings.Join(left, ", "))
	}
	return ok
}

// configFor is the pool configuration of member m: the template's
// credentials, database and settings, m's address, and m's name as
// application_name, which makes it the node's name.
func (d *discovery) configFor(m patroniMember) *pgxpool.Config {
	pc := d.template.Copy()
	pc.ConnConfig.Host = m.Host
	pc.ConnConfig.Port = uint16(m.Port) // #nosec G115 -- admit checked the range
	pc.ConnConfig.Fallbacks = nil
	pc.ConnConfig.RuntimeParams["application_name"] = m.Name
	return pc
}

func (m patroniMember) addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// history returns the switch points of Patroni's /history: the position
// where each ancestor timeline ended.
func (d *discovery) history(ctx context.Context) (map[uint32]uint64, error) {
	body, err := d.fetch(ctx, d.urls[d.last], "/history")
	if err != nil {
		return nil, err
	}
	return parsePatroniHistory(body)
}

// parsePatroniHistory reads Patroni's /history: one array per ancestor
// timeline, [timeline, switch position as a number, reason, time, …].
func parsePatroniHistory(body []byte) (map[uint32]uint64, error) {
	var rows [][]json.RawMessage
	if err := json.Unmarshal(body, &rows); err != nil {
		return nil, fmt.Errorf("the history Patroni gave: %w", err)
	}
	ends := map[uint32]uint64{}
	for _, row := range rows {
		if len(row) < 2 {
			continue
		}
		var tli uint32
		var end uint64
		if json.Unmarshal(row[0], &tli) == nil && json.Unmarshal(row[1], &end) == nil && tli > 0 {
			ends[tli] = end
		}
	}
	return ends, nil
}

// exactHistory replaces the switch points the router only guessed (or
// lacks: it started after the promotion) with Patroni's.
func (d *discovery) exactHistory(ctx context.Context) {
	h := d.r.history.Load()
	if h == nil || !h.inexact() {
		return
	}
	ends, err := d.history(ctx)
	if err != nil {
		d.report(err.Error())
		return
	}
	exact := h.withEnds(ends)
	if !exact.inexact() && d.r.history.CompareAndSwap(h, exact) {
		d.r.log.Info("timeline switch points from Patroni's history", "timeline", h.timeline)
	}
}

// view is what the status pages show of m.
func (m patroniMember) view() Patroni {
	p := Patroni{Listed: true, Role: m.Role, State: m.State, Timeline: m.Timeline, LagBytes: -1, api: apiBase(m.APIURL)}
	if lag, err := strconv.ParseInt(string(m.Lag), 10, 64); err == nil && m.Role != "leader" {
		p.LagBytes = lag
	}
	return p
}

// start runs discovery every interval until ctx ends.
func (d *discovery) start(ctx context.Context) {
	t := d.r.tracker
	t.done.Add(1)
	go func() {
		defer t.done.Done()
		tick := time.NewTicker(d.interval)
		defer tick.Stop()
		d.round(ctx)
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			d.round(ctx)
		}
	}()
}

// round asks Patroni once and makes the nodes follow. A node that leaves
// keeps its pool for a few poll intervals, so reads already routed to it
// finish; the last primary stays until another node answers as primary.
func (d *discovery) round(ctx context.Context) {
	t := d.r.tracker
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	ms, err := d.ask(actx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	if err == nil && len(ms) == 0 {
		err = errors.New("the Patroni cluster lists no members")
	}
	if err != nil {
		// Keep the nodes as they are: routing goes on from their own answers.
		d.report(err.Error())
		d.record(nil, err)
		return
	}
	d.reported = ""
	admitted := d.admit(ms)
	want := make(map[string]patroniMember, len(admitted))
	byAddr := make(map[string]string, len(admitted))
	for _, m := range admitted {
		want[m.Name] = m
		byAddr[m.addr()] = m.Name
	}
	grace := max(10*d.r.pollInterval, 2*time.Second)
	for name, addr := range t.memberAddrs() {
		m, listed := want[name]
		switch {
		case listed && m.addr() == addr:
			continue // unchanged
		case listed:
			d.r.log.Info("a Patroni member moved; reconnecting", "member", name, "was", addr, "now", m.addr())
		case byAddr[addr] != "":
			// A configured URL of another name for a member's server:
			// the member's node replaces it.
		default:
			if t.remove(name, grace, false) {
				d.r.log.Info("a node left the Patroni cluster; no more traffic goes to it", "member", name, "addr", addr)
			}
			continue
		}
		t.remove(name, grace, true)
	}
	current := t.memberAddrs()
	for _, m := range admitted {
		if _, ok := current[m.Name]; ok {
			continue
		}
		if _, err := d.r.newNode(ctx, d.configFor(m)); err != nil {
			d.report(fmt.Sprintf("member %s: %v", m.Name, err))
			continue
		}
		d.r.log.Info("a Patroni member joined; it gets reads once polled and caught up", "member", m.Name, "addr", m.addr())
	}
	d.record(ms, nil)
	hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	d.exactHistory(hctx)
	cancel()
}

// record tells the tracker what Patroni said of each member, or why no
// API answered.
func (d *discovery) record(ms []patroniMember, err error) {
	t := d.r.tracker
	if err != nil {
		t.setPatroni("", err.Error(), nil)
		return
	}
	byName := make(map[string]Patroni, len(ms))
	for _, m := range ms {
		byName[m.Name] = m.view()
	}
	leftOut := ""
	if n := len(d.admit(ms)); n < len(ms) {
		leftOut = fmt.Sprintf("%d of Patroni's %d members left out (see the log)", len(ms)-n, len(ms))
	}
	t.setPatroni(d.urls[d.last], leftOut, byName)
}

// report logs a discovery problem once, until another replaces it.
func (d *discovery) report(problem string) {
	if problem != d.reported {
		d.reported = problem
		d.r.log.Warn("Patroni discovery: "+problem+"; the nodes known so far keep serving", "apis", strings.Join(d.urls, ","))
	}
}
