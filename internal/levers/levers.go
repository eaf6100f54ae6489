// Package levers pulls the lag levers every Quest cluster has, whoever
// runs it: pause and resume a replica's WAL replay, and set its apply
// delay. They are SQL run as the lever role (quest_lever), which holds
// just the grants they need, so they work on the local launcher's cluster
// (the cluster package pulls them through here) as on the Docker stack or
// any cluster that has the role. Stopping and starting a node is the
// launcher's business, not this package's.
package levers

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/poll"
)

// MaxDelay bounds SetDelay: a longer delay is a mistake, not a lesson.
const MaxDelay = time.Hour

// ErrUnreachable is wrapped by a lever's error when the node did not
// answer: stopped, or not reachable from here.
var ErrUnreachable = errors.New("not reachable")

// Pause pauses WAL replay on the replica named node, reached at url as the
// lever role: it keeps receiving WAL but applies none, so its data stops
// moving.
func Pause(ctx context.Context, node, url string) error {
	return onReplica(ctx, node, url, "pause replay on", `SELECT pg_wal_replay_pause()`)
}

// Resume resumes WAL replay on the replica named node.
func Resume(ctx context.Context, node, url string) error {
	return onReplica(ctx, node, url, "resume replay on", `SELECT pg_wal_replay_resume()`)
}

// SetDelay sets the replica's recovery_min_apply_delay without a restart;
// 0 removes it. It returns once the new value is in force:
// pg_reload_conf() only signals the servers.
func SetDelay(ctx context.Context, node, url string, d time.Duration) error {
	if d < 0 || d > MaxDelay {
		return fmt.Errorf("delay %s out of range; use 0 to %s", d, MaxDelay)
	}
	ms := d.Milliseconds()
	set := fmt.Sprintf("ALTER SYSTEM SET recovery_min_apply_delay = '%dms'", ms)
	if err := onReplica(ctx, node, url, "set the apply delay of", set, `SELECT pg_reload_conf()`); err != nil {
		return err
	}
	conn, err := connect(ctx, node, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Each query lets the backend process a pending reload first.
	return poll.Until(ctx, 10*time.Second, 5*time.Millisecond, node+"'s recovery_min_apply_delay to take the new value", func(ctx context.Context) (bool, error) {
		var setting int64
		err := conn.QueryRow(ctx, `SELECT setting::bigint FROM pg_settings WHERE name = 'recovery_min_apply_delay'`).Scan(&setting)
		return err == nil && setting == ms, err
	})
}

// onReplica runs statements as the lever role on a node that must be a
// replica in recovery.
func onReplica(ctx context.Context, node, url, action string, stmts ...string) error {
	conn, err := connect(ctx, node, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var inRecovery bool
	if err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil {
		return fmt.Errorf("%s: %w", node, err)
	}
	if !inRecovery {
		return fmt.Errorf("cannot %s %s: it is not in recovery (promoted?)", action, node)
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %s: %w", node, s, err)
		}
	}
	return nil
}

func connect(ctx context.Context, node, url string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%s: the lever role's URL: %w", node, err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if authFailed(err) {
		return nil, fmt.Errorf("%s refuses the lever role: connect to %s:%d as %s: %w", node, cfg.Host, cfg.Port, cfg.User, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s is %w: connect to %s:%d as %s: %w", node, ErrUnreachable, cfg.Host, cfg.Port, cfg.User, err)
	}
	return conn, nil
}

// Replicas pulls the levers of a set of replicas by name, each through the
// lever role's URL for it. Its methods are the server's Levers.
type Replicas struct {
	urls map[string]string // replica name → the lever role's URL on it
}

// ForReplicas builds Replicas from the lever role's URL and the replicas'
// URLs by name. The lever URL gives the role, its password, the database
// and the connection parameters; each replica's host and port come from
// that replica's URL, so one lever URL serves every replica (its own
// host and port, if any, are replaced).
func ForReplicas(leverURL string, replicas map[string]string) (*Replicas, error) {
	tmpl, err := url.Parse(leverURL)
	if err != nil || (tmpl.Scheme != "postgres" && tmpl.Scheme != "postgresql") {
		return nil, fmt.Errorf("the lever URL %q is not a postgres:// URL", redacted(leverURL))
	}
	if tmpl.User == nil || tmpl.User.Username() == "" {
		return nil, fmt.Errorf("the lever URL %s names no role: postgres://quest_lever:PASSWORD@host:port/quest", tmpl.Redacted())
	}
	r := &Replicas{urls: make(map[string]string, len(replicas))}
	for name, raw := range replicas {
		ru, err := url.Parse(raw)
		if err != nil || ru.Host == "" {
			return nil, fmt.Errorf("%s's URL has no host and port for the lever role", name)
		}
		u := *tmpl
		u.Host = ru.Host
		if _, err := pgx.ParseConfig(u.String()); err != nil {
			return nil, fmt.Errorf("the lever URL %s for %s: %w", tmpl.Redacted(), name, err)
		}
		r.urls[name] = u.String()
	}
	return r, nil
}

func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparseable)"
}

// URL is the lever role's URL for the named replica.
func (r *Replicas) URL(node string) (string, error) {
	u, ok := r.urls[node]
	if !ok {
		names := make([]string, 0, len(r.urls))
		for n := range r.urls {
			names = append(names, n)
		}
		sort.Strings(names)
		return "", fmt.Errorf("no lever for %q; the replicas are %s", node, strings.Join(names, ", "))
	}
	return u, nil
}

// Pause pauses replay on the named replica (see Pause).
func (r *Replicas) Pause(ctx context.Context, node string) error {
	u, err := r.URL(node)
	if err != nil {
		return err
	}
	return Pause(ctx, node, u)
}

// Resume resumes replay on the named replica (see Resume).
func (r *Replicas) Resume(ctx context.Context, node string) error {
	u, err := r.URL(node)
	if err != nil {
		return err
	}
	return Resume(ctx, node, u)
}

// SetDelay sets the named replica's apply delay (see SetDelay).
func (r *Replicas) SetDelay(ctx context.Context, node string, d time.Duration) error {
	u, err := r.URL(node)
	if err != nil {
		return err
	}
	return SetDelay(ctx, node, u, d)
}

// Check signs in as the lever role on every replica that answers, so a
// wrong password or role is said at start rather than at the first lever.
// A replica that does not answer (stopped, not up yet) is no error.
func (r *Replicas) Check(ctx context.Context) error {
	for name, u := range r.urls {
		conn, err := connect(ctx, name, u)
		if errors.Is(err, ErrUnreachable) {
			continue
		}
		if err != nil {
			return err
		}
		conn.Close(ctx)
	}
	return nil
}

// authFailed reports whether err is the server refusing the role:
// SQLSTATE class 28 (invalid authorization), or 3D000, no such database.
func authFailed(err error) bool {
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		s := pe.SQLState()
		return strings.HasPrefix(s, "28") || s == "3D000"
	}
	return false
}
