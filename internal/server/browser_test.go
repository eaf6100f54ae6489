package server_test

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"quest/internal/dbrouter"
	"quest/internal/testcluster"
)

// browser starts headless Chromium (Debian's package) for one test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if testcluster.InCI() {
			t.Fatal("chromium is not installed (CI=true, so this fails; .ci/run installs it)")
		}
		t.Skip("chromium is not installed")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// outputDir is where the browser test leaves its screenshots.
func outputDir(t *testing.T) string {
	root, err := testcluster.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(filepath.Dir(root), "test-output", "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBrowserWhereIsMyLightsaber plays the article's timeline in Chromium:
// sign in, let the replicas replay the sign-in, pause replay on every
// replica, add a lightsaber, follow the redirect to the wishlist. Under
// random the lightsaber is missing; under pin-own and causal it is there.
func TestBrowserWhereIsMyLightsaber(t *testing.T) {
	out := outputDir(t)
	for _, tt := range []struct {
		s       dbrouter.Strategy
		missing bool
	}{
		{dbrouter.Random, true},
		{dbrouter.PinOwn, false},
		{dbrouter.Causal, false},
	} {
		t.Run(tt.s.String(), func(t *testing.T) {
			a := newApp(t, tt.s)
			name := a.client(t).signup()
			ctx := browser(t) // a fresh browser: no cookie of another app instance
			tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			err := chromedp.Do(tctx,
				chromedp.Navigate(a.URL+"/login"),
				chromedp.SendKeys(chromedp.CSS(`input[name=username]`), name),
				chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse"),
				chromedp.Click(chromedp.CSS(`form[action="/login"] button`)),
				chromedp.WaitVisible(chromedp.CSS(`.grid`)),
			)
			if err != nil {
				t.Fatalf("sign in: %v", err)
			}
			waitReplicated(t, a)
			for _, n := range []string{"replica1", "replica2"} {
				if err := a.c.Pause(context.Background(), n); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { a.c.Resume(context.Background(), n) })
			}
			err = chromedp.Do(tctx,
				chromedp.Click(chromedp.CSS(`form[action="/wishlist"] button`)), // Luke's green lightsaber, first in the catalog
				chromedp.WaitVisible(chromedp.CSS(`ul.wishlist, p.empty`)),
			)
			if err != nil {
				t.Fatalf("add to wishlist: %v", err)
			}
			path, err := chromedp.Run(tctx, chromedp.Evaluate[string](`location.pathname`))
			if err != nil {
				t.Fatal(err)
			}
			text, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(`main`)))
			if err != nil {
				t.Fatal(err)
			}
			shot, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if path != "/wishlist" {
				t.Fatalf("landed on %s, want /wishlist", path)
			}
			has := strings.Contains(text, "Luke's green lightsaber")
			if has == tt.missing {
				t.Fatalf("%s: lightsaber on the page = %v, want %v\n%s", tt.s, has, !tt.missing, text)
			}
			if err := os.WriteFile(filepath.Join(out, tt.s.String()+"-wishlist.png"), shot, 0o644); err != nil {
				t.Fatal(err)
			}
			// The forum page, for the record.
			c := a.client(t)
			c.signup()
			c.post("/forum", url.Values{"title": {"Help adding items to my wishlist"}, "body": {"Where is my lightsaber?"}})
			if err := chromedp.Do(tctx, chromedp.Navigate(a.URL+"/forum"), chromedp.WaitVisible(chromedp.CSS(`h1`))); err != nil {
				t.Fatal(err)
			}
			if shot, err = chromedp.Run(tctx, chromedp.FullScreenshot(100)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(out, tt.s.String()+"-forum.png"), shot, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}
