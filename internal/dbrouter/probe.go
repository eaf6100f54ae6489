package dbrouter

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// pollQuery branches on pg_is_in_recovery() in the same statement:
// pg_last_wal_replay_lsn() is not NULL on a primary that went through crash
// recovery. Its timeline columns: a primary's current timeline, from its
// current WAL segment's name (pg_control_checkpoint() keeps the old one
// until the first checkpoint after a promotion); a standby's last
// restartpoint's, and apart the timeline its walreceiver receives, when
// one runs. The restartpoint's is only a lower bound: it stays behind for
// as long as no restartpoint runs, while the standby has long followed
// the new timeline.
const pollQuery = `
	SELECT pg_is_in_recovery(),
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
	       current_setting('recovery_min_apply_delay')::interval,
	       pg_postmaster_start_time(),
	       CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
	            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
	       CASE WHEN pg_is_in_recovery() THEN (SELECT NULLIF(received_tli, 0) FROM pg_stat_wal_receiver) END`

// replicationQuery is the article's check, run by the poll of every node
// (on a standby it is empty), plus the replay lag in bytes and seconds.
const replicationQuery = `
	SELECT pid, usename, application_name, state, sync_state,
	       COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint,
	       COALESCE(EXTRACT(epoch FROM replay_lag), 0)::float8,
	       COALESCE(EXTRACT(epoch FROM write_lag), 0)::float8,
	       COALESCE(EXTRACT(epoch FROM flush_lag), 0)::float8
	  FROM pg_stat_replication
	 ORDER BY application_name`

// probe is the tracker's connection to one node.
type probe struct {
	config *pgx.ConnConfig
	conn   *pgx.Conn     // owned by the node's poll loop
	kick   chan struct{} // asks the loop to poll now
}

func newProbe(cc *pgx.ConnConfig) *probe {
	cc = cc.Copy()
	cc.Tracer = nil // the tracker's queries are not the application's round trips
	cc.RuntimeParams["application_name"] = "quest-tracker"
	return &probe{config: cc, kick: make(chan struct{}, 1)}
}

// pollResult is one answer of a node to the poll.
type pollResult struct {
	inRecovery  bool
	pos, recv   *string
	pause       string
	applyDelay  time.Duration
	started     time.Time
	timeline    int32  // a primary's current timeline; a standby's last restartpoint's
	receiving   *int32 // a standby's walreceiver's timeline, nil without one
	replication []ReplicationRow
	replErr     error
}

// ask runs the poll on the probe's connection, connecting first if it
// has none. A failure on a connection that had worked before is asked
// again on a fresh one: a terminated backend is not a node down. Only a
// failure on a fresh connection counts.
func (p *probe) ask(ctx context.Context, timeout time.Duration) (pollResult, error) {
	for {
		fresh := false
		if p.conn == nil {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			conn, err := pgx.ConnectConfig(cctx, p.config)
			cancel()
			if err != nil {
				return pollResult{}, err
			}
			p.conn, fresh = conn, true
		}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		res, err := poll(qctx, p.conn)
		cancel()
		if err == nil {
			return res, nil
		}
		p.close()
		if fresh || ctx.Err() != nil {
			return pollResult{}, err
		}
	}
}

func (p *probe) close() {
	if p.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		p.conn.Close(ctx)
		cancel()
		p.conn = nil
	}
}

// poll asks one node for its state and its replication rows, in one batch.
func poll(ctx context.Context, conn *pgx.Conn) (pollResult, error) {
	var res pollResult
	b := &pgx.Batch{}
	b.Queue(pollQuery).QueryRow(func(row pgx.Row) error {
		return row.Scan(&res.inRecovery, &res.pos, &res.recv, &res.pause, &res.applyDelay, &res.started, &res.timeline, &res.receiving)
	})
	b.Queue(replicationQuery).Query(func(rows pgx.Rows) error {
		// Its failure (a role without pg_monitor sees no lag columns, say)
		// is reported on the status pages, not counted as the node's.
		for rows.Next() {
			var row ReplicationRow
			if err := rows.Scan(&row.PID, &row.User, &row.AppName, &row.State, &row.SyncState, &row.LagBytes, &row.LagSeconds, &row.WriteLag, &row.FlushLag); err != nil {
				res.replErr = err
				return nil
			}
			res.replication = append(res.replication, row)
		}
		if err := rows.Err(); err != nil {
			res.replErr = err
		}
		return nil
	})
	err := conn.SendBatch(ctx, b).Close()
	return res, err
}
