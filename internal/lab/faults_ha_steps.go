package lab

import (
	"context"
	"errors"
	"fmt"
	"quest/internal/cluster"
	"time"
)

// notes say what a row's fault did, in words.
func (h *haRun) notes(row HARow) []string {
	var notes []string
	switch row.Key {
	case RowCrash, RowCrashSync:
		notes = append(notes, fmt.Sprintf("%s crashed (SIGKILL of its Patroni and PostgreSQL); %s promoted %.1f s later; the primary's share of reads before / after: %s / %s",
			row.Member, row.NewLeader, row.Promoted.Seconds(), share(row.PhaseReads[0], "primary"), share(row.PhaseReads[1], "primary")))
	case RowRejoin:
		ok := "it got no reads within a minute"
		if row.ReadsAgain > 0 {
			ok = fmt.Sprintf("the router gave it reads %.1f s after the start", row.ReadsAgain.Seconds())
		}
		as := ""
		if n := row.name(row.Member); n != row.Member {
			as = fmt.Sprintf(" (to the app %s: its URL, the leader's when the app started, names no application_name)", n)
		}
		notes = append(notes, fmt.Sprintf("%s%s started again: Patroni rejoined it as a replica (rewound where its WAL had gone past the new timeline), streaming after %.1f s; %s; its share of reads before / after: %s / %s",
			row.Member, as, row.Rejoined.Seconds(), ok, share(row.PhaseReads[0], row.name(row.Member)), share(row.PhaseReads[1], row.name(row.Member))))
	case RowSwitchover:
		notes = append(notes, fmt.Sprintf("%s → %s; every member followed after %.1f s; the primary's share of reads before / after: %s / %s",
			row.Member, row.NewLeader, row.Switchover.Seconds(), share(row.PhaseReads[0], "primary"), share(row.PhaseReads[1], "primary")))
	case RowHang:
		woke := "on waking it demoted itself"
		if row.NewLeader == row.Member {
			woke = "on waking it took the leader key back (the promoted member's writes were rewound away)"
		}
		promoted := "no member was promoted during the hang"
		if row.Promoted > 0 {
			promoted = fmt.Sprintf("Patroni promoted a member %.1f s after the hang began", row.Promoted.Seconds())
		}
		notes = append(notes, fmt.Sprintf("%s hung for %s; %s; %s; %s leads after", row.Member, span(h.cfg.Hang), promoted, woke, row.NewLeader))
	case RowAgent:
		notes = append(notes, fmt.Sprintf("%s's Patroni killed; %s promoted %.1f s later; %s's PostgreSQL stayed a primary until its Patroni was started again %.1f s after that (the app reported a split brain for %.1f s)",
			row.Member, row.NewLeader, row.Promoted.Seconds(), row.Member, row.Rejoined.Seconds(), row.SplitBrain.Seconds()))
	case RowSplitBrain:
		notes = append(notes, fmt.Sprintf("%s crashed; %s promoted %.1f s later; %s started again without Patroni, a primary on its old timeline, for %s, then handed back to Patroni (the app reported a split brain for %.1f s)",
			row.Member, row.NewLeader, row.Promoted.Seconds(), row.Member, span(splitBrainHold), row.SplitBrain.Seconds()))
	}
	if row.WritesBack > 0 {
		notes = append(notes, fmt.Sprintf("writes refused for %.1f s", row.Refused.Seconds()))
	}
	if row.LostForms > 0 {
		notes = append(notes, fmt.Sprintf("%d form answers said a change may have been lost: redirects, which a browser follows without showing", row.LostForms))
	}
	if row.LostMisses > 0 {
		notes = append(notes, fmt.Sprintf("%d read-backs short of a lost change, on pages that said so", row.LostMisses))
	}
	if row.StaleMisses > 0 {
		notes = append(notes, fmt.Sprintf("%d read-backs short on pages with the staleness banner", row.StaleMisses))
	}
	return notes
}

// crash crashes the leader, waits for Patroni to promote a replica, and
// times the return of writes from the crash and from the promotion.
func (h *haRun) crash(ctx context.Context, row *HARow) error {
	began := time.Now()
	failed, err := h.c.Fail(ctx, cluster.LeaderName)
	if err != nil {
		return err
	}
	// The probe starts once the leader is gone: a write it sent just
	// before the kill would race it, and be lost more often than the
	// users' writes, which the crash meets wherever they are.
	probe := h.probeWrites(ctx)
	defer probe.stop()
	row.Member = failed
	h.crashed = failed
	h.say("%s crashed; Patroni promotes a replica once the leader key expires (ttl %s)", failed, span(h.cfg.TTL))
	if row.NewLeader, err = h.c.WaitLeader(ctx, failed, time.Minute); err != nil {
		return err
	}
	row.Promoted = time.Since(began)
	if err := probe.finish(ctx, began, row); err != nil {
		return err
	}
	h.say("%s promoted after %.1f s; writes back %.1f s after the crash", row.NewLeader, row.Promoted.Seconds(), row.WritesBack.Seconds())
	return nil
}

// rejoin starts the member the crash row crashed: Patroni rewinds it
// onto the new leader's timeline and it rejoins as a replica; then the
// app's router should give it reads once it has caught up.
func (h *haRun) rejoin(ctx context.Context, row *HARow) error {
	if h.crashed == "" {
		return errors.New("no member was crashed on this cluster")
	}
	row.Member = h.crashed
	began := time.Now()
	if err := h.c.Start(ctx, h.crashed); err != nil {
		return err
	}
	row.Rejoined = time.Since(began)
	h.say("%s streams again after %.1f s; waiting for the app's router to give it reads (as %s)", h.crashed, row.Rejoined.Seconds(), h.app.name(h.crashed))
	if h.awaitState(ctx, h.app.name(h.crashed), "usable", time.Minute) {
		row.ReadsAgain = time.Since(began)
		h.say("%s gets reads %.1f s after the start", h.crashed, row.ReadsAgain.Seconds())
	}
	h.crashed = ""
	return nil
}

// switchover hands the leader's role over through Patroni, and times the
// writes' interruption.
func (h *haRun) switchover(ctx context.Context, row *HARow) error {
	began := time.Now()
	probe := h.probeWrites(ctx)
	defer probe.stop()
	from, to, err := h.c.Switchover(ctx, "")
	if err != nil {
		return err
	}
	row.Member, row.NewLeader, row.Switchover = from, to, time.Since(began)
	if err := probe.finish(ctx, began, row); err != nil {
		return err
	}
	h.say("switchover %s → %s done after %.1f s; writes back %.1f s after it was asked for", from, to, row.Switchover.Seconds(), row.WritesBack.Seconds())
	return nil
}

// hang stops the leader's PostgreSQL in its tracks for cfg.Hang (its
// Patroni runs on), then wakes it. Patroni promotes another member once
// the leader key expires; what the woken leader does then decides whether
// the promoted member's writes survive (Patroni 3.0.2 over etcd's v3 API
// took the key back).
func (h *haRun) hang(ctx context.Context, row *HARow) error {
	leader, err := h.c.WaitLeader(ctx, "", time.Minute)
	if err != nil {
		return err
	}
	began := time.Now()
	thaw, err := h.c.Freeze(ctx, leader)
	if err != nil {
		return err
	}
	thawed := false
	defer func() {
		if !thawed {
			thaw()
		}
	}()
	row.Member = leader
	probe := h.probeWrites(ctx)
	defer probe.stop()
	h.say("%s hung (SIGSTOP of its PostgreSQL) for %s", leader, span(h.cfg.Hang))
	if _, err := h.c.WaitLeader(ctx, leader, h.cfg.Hang); err == nil {
		row.Promoted = time.Since(began)
	}
	sleep(ctx, time.Until(began.Add(h.cfg.Hang)))
	thawed = true
	if err := thaw(); err != nil {
		return err
	}
	sleep(ctx, 2*time.Second) // the woken leader's Patroni runs a loop or two
	if row.NewLeader, err = h.c.WaitLeader(ctx, "", time.Minute); err != nil {
		return err
	}
	if err := probe.finish(ctx, began, row); err != nil {
		return err
	}
	h.say("%s woke; %s leads; writes back %.1f s after the hang began", leader, row.NewLeader, row.WritesBack.Seconds())
	return nil
}

// splitBrainHold is how long the rows that make a split brain keep it,
// under the users' load, before they hand the old primary back to Patroni.
const splitBrainHold = 4 * time.Second

// agent kills the leader's Patroni, its PostgreSQL running on: a primary
// nobody manages, until the key expires and another member is promoted,
// and a second primary after that, until its Patroni is started again.
func (h *haRun) agent(ctx context.Context, row *HARow) error {
	began := time.Now()
	killed, err := h.c.KillAgent(ctx, cluster.LeaderName)
	if err != nil {
		return err
	}
	row.Member = killed
	probe := h.probeWrites(ctx)
	defer probe.stop()
	h.say("%s's Patroni killed; its PostgreSQL runs on; Patroni promotes another member once the key expires", killed)
	if row.NewLeader, err = h.c.WaitLeader(ctx, killed, time.Minute); err != nil {
		return err
	}
	row.Promoted = time.Since(began)
	if err := probe.finish(ctx, began, row); err != nil {
		return err
	}
	promoted := time.Now()
	row.SplitBrain = h.watchSplitBrain(ctx, splitBrainHold)
	if err := h.c.Start(ctx, killed); err != nil {
		return err
	}
	row.Rejoined = time.Since(promoted)
	h.say("%s's Patroni started again: it rejoined as a replica %.1f s after the promotion", killed, row.Rejoined.Seconds())
	return nil
}

// splitBrain crashes the leader, waits for the promotion, then starts the
// crashed leader's PostgreSQL without its Patroni — a primary on the old
// timeline beside the new one — and after a while hands it back to
// Patroni, which rewinds it.
func (h *haRun) splitBrain(ctx context.Context, row *HARow) error {
	began := time.Now()
	failed, err := h.c.Fail(ctx, cluster.LeaderName)
	if err != nil {
		return err
	}
	row.Member = failed
	probe := h.probeWrites(ctx)
	defer probe.stop()
	if row.NewLeader, err = h.c.WaitLeader(ctx, failed, time.Minute); err != nil {
		return err
	}
	row.Promoted = time.Since(began)
	if err := probe.finish(ctx, began, row); err != nil {
		return err
	}
	if err := h.c.StartAlone(ctx, failed); err != nil {
		return err
	}
	h.say("%s started without Patroni: a primary on its old timeline beside %s", failed, row.NewLeader)
	row.SplitBrain = h.watchSplitBrain(ctx, splitBrainHold)
	back := time.Now()
	if err := h.c.Stop(ctx, failed, false); err != nil {
		return err
	}
	if err := h.c.Start(ctx, failed); err != nil {
		return err
	}
	row.Rejoined = time.Since(back)
	h.say("%s handed back to Patroni: it rejoined as a replica after %.1f s", failed, row.Rejoined.Seconds())
	return nil
}

// watchSplitBrain asks the app every 100 ms for d whether it reports a
// split brain, and returns for how long it did.
func (h *haRun) watchSplitBrain(ctx context.Context, d time.Duration) time.Duration {
	var seen time.Duration
	const every = 100 * time.Millisecond
	for end := time.Now().Add(d); time.Now().Before(end) && ctx.Err() == nil; {
		if s, err := h.watcher.splitBrain(ctx, h.app.URL); err == nil && s != "" {
			seen += every
		}
		sleep(ctx, every)
	}
	return seen
}
