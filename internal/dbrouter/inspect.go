package dbrouter

import (
	"context"
	"sync"
	"time"
)

// NodeInfo is what a node says about itself when asked directly.
type NodeInfo struct {
	Name       string
	Reachable  bool
	Err        string
	InRecovery bool
	Position   string        // flush position on a primary, replay position on a replica
	PauseState string        // replicas only
	ApplyDelay time.Duration // recovery_min_apply_delay
}

// Role is "primary", "replica" or "unreachable".
func (n NodeInfo) Role() string {
	switch {
	case !n.Reachable:
		return "unreachable"
	case n.InRecovery:
		return "replica"
	default:
		return "primary"
	}
}

// ReplicationRow is one row of pg_stat_replication on the primary.
type ReplicationRow struct {
	PID        int
	User       string
	AppName    string
	State      string
	SyncState  string
	LagBytes   int64
	LagSeconds float64 // replay_lag
	WriteLag   float64 // write_lag, seconds
	FlushLag   float64 // flush_lag, seconds
}

// ClusterView is a snapshot of every node, for pages about the cluster.
type ClusterView struct {
	Nodes       []NodeInfo
	Replication []ReplicationRow
	ReplErr     string
}

// nodeQuery branches on pg_is_in_recovery() in the same statement:
// pg_last_wal_replay_lsn() is not NULL on a primary that went through
// crash recovery.
const nodeQuery = `
	SELECT pg_is_in_recovery(),
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
	       current_setting('recovery_min_apply_delay')::interval`

// ReplicationQuery is the article's check, run on the primary, plus the
// replay lag in bytes and seconds.
const ReplicationQuery = `
	SELECT pid, usename, application_name, state, sync_state,
	       COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint,
	       COALESCE(EXTRACT(epoch FROM replay_lag), 0)::float8,
	       COALESCE(EXTRACT(epoch FROM write_lag), 0)::float8,
	       COALESCE(EXTRACT(epoch FROM flush_lag), 0)::float8
	  FROM pg_stat_replication
	 ORDER BY application_name`

// Inspect asks every node directly, in parallel, with a short timeout. It
// is for status pages; routing never waits on it.
func (r *Router) Inspect(ctx context.Context) ClusterView {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The tracker's pools: status pages do not compete with requests for
	// connections, nor count in the round-trip counters.
	pools := r.tracker.pools
	view := ClusterView{Nodes: make([]NodeInfo, len(pools))}
	var wg sync.WaitGroup
	for i, pool := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info := NodeInfo{Name: r.nodes[i].Name}
			var pos *string
			err := pool.QueryRow(ctx, nodeQuery).Scan(&info.InRecovery, &pos, &info.PauseState, &info.ApplyDelay)
			if err != nil {
				info.Err = err.Error()
			} else {
				info.Reachable = true
				if pos != nil {
					info.Position = *pos
				}
			}
			view.Nodes[i] = info
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		rows, err := pools[0].Query(ctx, ReplicationQuery)
		if err != nil {
			view.ReplErr = err.Error()
			return
		}
		defer rows.Close()
		for rows.Next() {
			var row ReplicationRow
			if err := rows.Scan(&row.PID, &row.User, &row.AppName, &row.State, &row.SyncState, &row.LagBytes, &row.LagSeconds, &row.WriteLag, &row.FlushLag); err != nil {
				view.ReplErr = err.Error()
				return
			}
			view.Replication = append(view.Replication, row)
		}
		if err := rows.Err(); err != nil {
			view.ReplErr = err.Error()
		}
	}()
	wg.Wait()
	return view
}
