// Package dbrouter owns Quest's connection pools — one for the primary and
// one per replica — and decides which node serves each read. It knows pgx
// and nothing of HTTP.
package dbrouter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Config says where the nodes are.
type Config struct {
	PrimaryURL  string
	ReplicaURLs []string
	MaxConns    int32 // per pool; 0 means 10
}

// Node is one database server with its pool.
type Node struct {
	Name string // "primary", "replica1", …
	Pool *pgxpool.Pool
}

// Router holds the pools.
type Router struct {
	primary  *Node
	replicas []*Node
}

// New creates the pools. It does not wait for any node: a node that is
// down at start is simply unreachable until it comes up.
func New(ctx context.Context, cfg Config) (*Router, error) {
	if cfg.PrimaryURL == "" {
		return nil, errors.New("dbrouter: no primary URL")
	}
	r := &Router{}
	var err error
	if r.primary, err = newNode(ctx, "primary", cfg.PrimaryURL, cfg.MaxConns); err != nil {
		return nil, err
	}
	for i, u := range cfg.ReplicaURLs {
		n, err := newNode(ctx, fmt.Sprintf("replica%d", i+1), u, cfg.MaxConns)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.replicas = append(r.replicas, n)
	}
	return r, nil
}

func newNode(ctx context.Context, name, url string, maxConns int32) (*Node, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: %s URL: %w", name, redact(err))
	}
	// A commit must be flushed locally before it returns: the position a
	// session remembers after a write depends on it.
	pc.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	pc.ConnConfig.RuntimeParams["application_name"] = "quest"
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	if maxConns > 0 {
		pc.MaxConns = maxConns
	} else {
		pc.MaxConns = 10
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("dbrouter: %s: %w", name, err)
	}
	return &Node{Name: name, Pool: pool}, nil
}

// redact keeps a password in a malformed URL out of error messages.
func redact(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		if j := strings.LastIndex(msg, "@"); j > i {
			msg = msg[:i+3] + "…" + msg[j:]
		}
	}
	return errors.New(msg)
}

// Primary returns the primary node.
func (r *Router) Primary() *Node { return r.primary }

// Replicas returns the replica nodes in order.
func (r *Router) Replicas() []*Node { return r.replicas }

// Nodes returns every node, primary first.
func (r *Router) Nodes() []*Node { return append([]*Node{r.primary}, r.replicas...) }

// Close closes every pool.
func (r *Router) Close() {
	for _, n := range r.Nodes() {
		if n != nil {
			n.Pool.Close()
		}
	}
}
