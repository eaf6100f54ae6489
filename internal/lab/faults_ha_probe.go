package lab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// writeProbe writes a comment as the story's writer every 20 ms, to time
// when writes stop and work again.
type writeProbe struct {
	cancel  context.CancelFunc
	done    chan struct{}
	settle  chan time.Time // when the fault is over (the new leader is known)
	refused time.Time      // the first refused write's answer
	back    time.Time      // the first acknowledged write's after it
	other   int            // answers other than success, read-only, "may have been saved"
	first   string
	err     error
}

// probeInterval is how often the probe writes: a tenth of Patroni's loop.
const probeInterval = 20 * time.Millisecond

// probeWrites starts a probe. It stops at the first write acknowledged
// after one was refused, or at the first one acknowledged after the fault
// settled without any refused, or after two minutes.
func (f *faultRun) probeWrites(ctx context.Context) *writeProbe {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	p := &writeProbe{cancel: cancel, done: make(chan struct{}), settle: make(chan time.Time, 1)}
	target := f.app.URL + f.story.thread + "/comments"
	go func() {
		defer close(p.done)
		var settled time.Time
		for pctx.Err() == nil {
			select {
			case settled = <-p.settle:
			default:
			}
			pg, err := f.story.writer.do(pctx, http.MethodPost, target, url.Values{"body": {"probe"}})
			at := time.Now()
			if pctx.Err() != nil {
				break
			}
			ok := err == nil && pg.status == http.StatusSeeOther && !strings.HasPrefix(pg.loc, "/login")
			switch {
			case ok:
				f.story.comments.Add(1)
				if !p.refused.IsZero() {
					p.back = at
					return
				}
				if !settled.IsZero() && at.After(settled) {
					return // writes never stopped, as far as the probe saw
				}
			case err == nil && pg.status == http.StatusServiceUnavailable && (readOnlyRE.MatchString(pg.body) || unknownRE.MatchString(pg.body)):
				if p.refused.IsZero() {
					p.refused = at
				}
			default:
				if p.refused.IsZero() {
					p.refused = at
				}
				p.other++
				if p.first == "" {
					p.first = fmt.Sprint(err)
					if err == nil {
						p.first = fmt.Sprintf("status %d", pg.status)
					}
				}
			}
			sleep(pctx, probeInterval)
		}
		p.err = errors.New("writes did not work again within two minutes")
	}()
	return p
}

// finish tells the probe the fault is over now, waits for it, and
// records in row when writes came back (from began; zero if they never
// stopped), how long they were refused, and the probe's writes that failed
// otherwise than by being refused, with a note on the first.
func (p *writeProbe) finish(ctx context.Context, began time.Time, row *HARow) error {
	p.settle <- time.Now()
	select {
	case <-p.done:
	case <-ctx.Done():
		p.cancel()
		<-p.done
		return ctx.Err()
	}
	if p.err != nil {
		return p.err
	}
	if !p.back.IsZero() {
		row.WritesBack, row.Refused = p.back.Sub(began), p.back.Sub(p.refused)
	}
	row.FailedWrites = p.other
	if p.other > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d probe writes failed otherwise than read-only; the first: %s", p.other, p.first))
	}
	return nil
}

// stop ends the probe and waits for it.
func (p *writeProbe) stop() {
	p.cancel()
	<-p.done
}
