package dbrouter

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pollQuery branches on pg_is_in_recovery() in the same statement:
// pg_last_wal_replay_lsn() is not NULL on a primary that went through crash
// recovery. Its timeline columns: a primary's current timeline, from its
// current WAL segment's name (pg_control_checkpoint() keeps the old one
// until the first checkpoint after a promotion); a standby's last
// restartpoint's or its minimum recovery point's, whichever is newer, and
// apart the timeline its walreceiver receives, when one runs. The first is
// only a lower bound: it stays behind for as long as no restartpoint runs,
// while the standby has long followed the new timeline — or, demoted
// after a fast promotion (no checkpoint), still holds the newer timeline's
// WAL it wrote as a primary.
const pollQuery = `
	SELECT pg_is_in_recovery(),
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() END::text,
	       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END,
	       current_setting('recovery_min_apply_delay')::interval,
	       pg_postmaster_start_time(),
	       CASE WHEN pg_is_in_recovery() THEN GREATEST((SELECT timeline_id FROM pg_control_checkpoint()),
	                                                   (SELECT min_recovery_end_timeline FROM pg_control_recovery()))
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

func (t *tracker) pollOnce(ctx context.Context, m *member) {
	timeout := max(10*t.interval, time.Second)
	probe := m.node.probe
	connsAt := m.node.conns.Load() // before asking: see causalOnReplica
	res, err := probe.ask(ctx, timeout)
	now := time.Now()
	if ctx.Err() != nil {
		return
	}
	name := m.node.Name
	h := Health{Name: name, Member: name, CheckedAt: now, connsAt: connsAt}
	if err != nil {
		h.Err = err.Error()
	} else {
		h.Up = true
		h.InRecovery = res.inRecovery
		h.PauseState = res.pause
		h.Paused = res.inRecovery && res.pause != "not paused"
		h.ApplyDelay = res.applyDelay
		h.started = res.started
		h.Timeline = uint32(max(res.timeline, 0)) // #nosec G115 -- clamped
		if res.inRecovery {
			t.standbyTimeline(m, &h, res.receiving)
		}
		if res.pos != nil {
			h.Position, _ = ParseLSN(*res.pos)
		}
		if res.recv != nil {
			h.Receive, _ = ParseLSN(*res.recv)
		}
	}
	if h.Up && !h.InRecovery {
		// A primary on a timeline newer than the history tokens name:
		// learn that history before the node can become the primary, so
		// no write is ever stamped with the old timeline and a new one's
		// position. Its claim comes first, so no other poll meanwhile
		// takes the history back below it (settleHistory).
		t.setClaim(m, h.Timeline)
		t.r.followHistory(ctx, probe.conn, timeout, h.Timeline, t.standbyEnd(m))
		t.checkLeader(ctx, m, &h)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if m.removed {
		return
	}
	old := m.health
	if err != nil && old.Up && tooBusy(err) {
		// The probe's connection broke and the server will not let a new
		// one in: it is up, and busy. What the last poll saw stands.
		h = old
		h.Err = "refuses new connections: " + err.Error()
		if old.Err == "" {
			t.r.log.Warn("node refuses new connections; kept as it was", "node", name, "err", err)
		}
		m.setHealth(h)
		t.publish(now)
		return
	}
	if h.Err != "" && h.Err != old.Err {
		// Once per new reason, not per poll: the pages show the reason
		// to admins only, so the log is where everyone else looks.
		t.r.log.Warn("node unreachable", "node", name, "err", h.Err)
	}
	if old.Up && (!h.Up || !h.started.Equal(old.started)) {
		// Gone down, or restarted between two polls: every pooled
		// connection is broken, and each would fail a read on its way out.
		m.node.pool.Reset()
	}
	h.Patroni = old.Patroni // discovery's to set
	t.noteReplay(m, &h)
	m.setHealth(h)
	t.choosePrimary()
	if m == t.primary && h.Up && !h.InRecovery {
		t.addSample(h.Position, now)
	}
	if m == t.primary {
		t.replication, t.replErr = res.replication, ""
		switch {
		case err != nil:
			t.replErr = err.Error()
		case res.replErr != nil:
			t.replErr = res.replErr.Error()
		}
	}
	t.publish(now)
}

// standbyEnd is the furthest WAL member m had received or replayed when
// the tracker last saw it as a standby (0 if it did not): when the node
// turns up as a primary on a new timeline, its history forked at or after
// this position.
func (t *tracker) standbyEnd(m *member) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := m.health; h.Up && h.InRecovery {
		return max(h.Position, h.Receive)
	}
	return 0
}

// tooBusy reports whether err is a connect refused by a server that is up
// but has no room: too many connections (53300) or out of memory (53400).
func tooBusy(err error) bool {
	var pgErr *pgconn.PgError
	return isConnectError(err) && errors.As(err, &pgErr) && (pgErr.Code == "53300" || pgErr.Code == "53400")
}
