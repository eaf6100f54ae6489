package lab

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// story is the article's two stories, played by simulated users against
// one or more app instances: the first half of the users add to their
// wishlists and read them back (read-your-writes), the others re-read a
// forum thread that one writer appends to (monotonic reads). The lab's
// cells and the fault scenarios both play it.
type story struct {
	users  []*browser
	writer *browser
	thread string // the thread's path: "/forum/12"
	// urls are the instances users are sent to; a user alternates between
	// them from one request to the next.
	urls     atomic.Pointer[[]string]
	comments atomic.Int64 // comments the app acknowledged
}

// newStory signs up n users and a writer at the app at base.
func newStory(ctx context.Context, base string, n int) (*story, error) {
	all, err := signUp(ctx, base, n+1)
	if err != nil {
		return nil, err
	}
	s := &story{users: all[:n], writer: all[n]}
	s.urls.Store(&[]string{base})
	return s, nil
}

// newThread has the writer open the thread the readers follow.
func (s *story) newThread(ctx context.Context, title string) error {
	p, err := s.writer.post(ctx, s.base(0, 0)+"/forum", url.Values{"title": {title}, "body": {"comment #0"}})
	if err != nil {
		return fmt.Errorf("create a thread: %w", err)
	}
	s.thread = p.loc
	return nil
}

// base is the instance a user's n-th request goes to.
func (s *story) base(user, n int) string {
	urls := *s.urls.Load()
	return urls[(user+n)%len(urls)]
}

// act is how the story is played once.
type act struct {
	end         time.Time     // users stop starting actions then; zero: when ctx ends
	think       time.Duration // a user's pause between actions
	writerThink time.Duration // the writer's pause between comments
	// rereads are when a user reads the wishlist after an add: the first
	// at once, the others that much later (read-your-writes checks).
	rereads []time.Duration
}

func (a act) over() bool { return !a.end.IsZero() && time.Now().After(a.end) }

// play runs the users until ctx ends or a.end has passed and the due
// re-reads are made, recording into t. A response that comes back after
// ctx ended is not recorded: the request was cut, not answered.
func (s *story) play(ctx context.Context, a act, t *tally) {
	var wg sync.WaitGroup
	half := len(s.users) / 2
	for i, u := range s.users[:half] {
		wg.Go(func() { s.addAndReadBack(ctx, a, t, i, u) })
	}
	for i, u := range s.users[half:] {
		wg.Go(func() { s.followThread(ctx, a, t, i, u) })
	}
	wg.Go(func() { s.comment(ctx, a, t) })
	wg.Wait()
}

var (
	wishRE     = regexp.MustCompile(`data-item="(\d+)" data-count="(\d+)"`)
	commentsRE = regexp.MustCompile(`data-comments="(\d+)"`)
)

// wishCount reads how many times the item is on the wishlist page.
func wishCount(body string, item int) int {
	for _, m := range wishRE.FindAllStringSubmatch(body, -1) {
		if id, _ := strconv.Atoi(m[1]); id == item {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	return 0
}

// reread is a pending read-your-writes check.
type reread struct {
	due         time.Time
	index       int // into act.rereads
	item, wants int
}

// addAndReadBack is one wishlist user: add an item, read the wishlist at
// once and, as a.rereads say, later again.
func (s *story) addAndReadBack(ctx context.Context, a act, t *tally, i int, u *browser) {
	var latest time.Duration
	for _, d := range a.rereads {
		latest = max(latest, d)
	}
	var pending []reread
	for n := 0; ctx.Err() == nil; n++ {
		now := time.Now()
		keep := pending[:0]
		for _, r := range pending {
			if now.Before(r.due) {
				keep = append(keep, r)
				continue
			}
			p, err := u.do(ctx, http.MethodGet, s.base(i, n)+"/wishlist", nil)
			if ctx.Err() != nil {
				return
			}
			t.response(u, p, err, true)
			if err == nil && p.status == http.StatusOK {
				t.readBack(r.index, p, wishCount(p.body, r.item), r.wants, "")
				u.acceptLoss(p)
			}
		}
		pending = keep
		if a.over() {
			if len(pending) == 0 {
				return
			}
			sleep(ctx, 10*time.Millisecond)
			continue
		}
		item := 1 + u.rng.IntN(10)
		p, err := u.do(ctx, http.MethodPost, s.base(i, n)+"/wishlist", url.Values{"item_id": {strconv.Itoa(item)}})
		if ctx.Err() != nil {
			return
		}
		t.response(u, p, err, false)
		added := err == nil && p.status == http.StatusSeeOther
		// A form's answer is a redirect, which a browser follows without
		// showing it: a "may have been lost" there reaches no one.
		after := ""
		if err == nil && p.lost {
			after = " (the form's redirect before it said a change may have been lost; the page did not)"
		}
		if added {
			u.wishes[item]++
		}
		// The next instance: with two, the read-back crosses over, and only
		// the cookie carries what the user wrote.
		at := time.Now()
		p, err = u.do(ctx, http.MethodGet, s.base(i, n+1)+"/wishlist", nil)
		if ctx.Err() != nil {
			return
		}
		t.response(u, p, err, true)
		if added && err == nil && p.status == http.StatusOK {
			wants := u.wishes[item] - u.lost[item]
			t.readBack(0, p, wishCount(p.body, item), wants, after)
			for k, d := range a.rereads[1:] {
				// A re-read due after the drain is never made.
				if a.end.IsZero() || at.Add(d).Before(a.end.Add(latest)) {
					pending = append(pending, reread{due: at.Add(d), index: k + 1, item: item, wants: wants})
				}
			}
		}
		if err == nil && p.status == http.StatusOK {
			u.acceptLoss(p)
		}
		sleep(ctx, a.think)
	}
}

// followThread is one thread reader: it must never see fewer comments
// than it saw before.
func (s *story) followThread(ctx context.Context, a act, t *tally, i int, u *browser) {
	seen := 0
	for n := 0; ctx.Err() == nil && !a.over(); n++ {
		p, err := u.do(ctx, http.MethodGet, s.base(i, n)+s.thread, nil)
		if ctx.Err() != nil {
			return
		}
		t.response(u, p, err, true)
		if err == nil && (p.status == http.StatusOK || p.status == http.StatusNotFound) {
			have := 0 // a thread not replicated yet shows no comments
			if m := commentsRE.FindStringSubmatch(p.body); m != nil {
				have, _ = strconv.Atoi(m[1])
			}
			t.monotonic(p, have, seen)
			seen = max(seen, have)
			if p.lost && !pageStale(p) {
				// The primary said comments this reader saw may have been
				// lost in a failover: what it shows is the thread now.
				seen = have
			}
		}
		sleep(ctx, a.think)
	}
}

// comment is the writer, appending numbered comments.
func (s *story) comment(ctx context.Context, a act, t *tally) {
	for k := 1; ctx.Err() == nil && !a.over(); k++ {
		p, err := s.writer.do(ctx, http.MethodPost, s.base(0, k)+s.thread+"/comments", url.Values{"body": {"comment #" + strconv.Itoa(k)}})
		if ctx.Err() != nil {
			return
		}
		t.response(s.writer, p, err, false)
		if err == nil && p.status == http.StatusSeeOther {
			s.comments.Add(1)
		}
		sleep(ctx, a.writerThink)
	}
}

// acceptLoss takes in a wishlist page that said the user's change may
// have been lost in a failover: from then on the user expects what the
// page shows, not every add the app acknowledged (wishes keeps those, for
// the check against the primary). A page that was also served possibly
// stale (no primary yet) may lack adds that are not lost, so only a page
// from the primary counts; the router sends the session's reads there
// until one has.
func (u *browser) acceptLoss(p page) {
	if !p.lost || pageStale(p) {
		return
	}
	for item, n := range u.wishes {
		u.lost[item] = max(0, n-wishCount(p.body, item))
	}
}
