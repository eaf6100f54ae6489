package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"quest/internal/dbrouter"
)

// requestTimeout bounds every request the lab makes: a page that hangs
// must not hang the run, and the app's own write timeout is as long.
const requestTimeout = 30 * time.Second

// browser is one simulated user: a cookie jar, as a browser keeps one, and
// no redirects followed, so the lab sees where a form sends the user. It
// holds no address: each request names the instance it goes to, so the
// fault runs can spread one user over several instances.
type browser struct {
	name   string
	client *http.Client
	// rng, wishes and lost are touched only by the goroutine playing this
	// user.
	rng    *rand.Rand
	wishes map[int]int // item id → adds the app acknowledged
	// lost: item id → acknowledged adds a page said may have been lost in
	// a failover; the user no longer expects to see them.
	lost map[int]int
}

func newBrowser(name string, seed uint64) *browser {
	jar, _ := cookiejar.New(nil) // it fails only with options given
	return &browser{
		name: name,
		client: &http.Client{
			Jar:           jar,
			Timeout:       requestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		// #nosec G404 -- simulated users pick items; nothing secret depends on it
		rng:    rand.New(rand.NewPCG(seed, 7)),
		wishes: map[int]int{},
		lost:   map[int]int{},
	}
}

// page is one response, as the lab reads it.
type page struct {
	status  int
	body    string
	route   string // the X-Quest-Route header
	lost    bool   // X-Quest-Lost: the page says the session's change may have been lost in a failover
	loc     string // the Location header
	elapsed time.Duration
}

// do sends one request to target (an instance's base URL and a path); a
// form makes it a form post.
func (b *browser) do(ctx context.Context, method, target string, form url.Values) (page, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return page{}, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	start := time.Now()
	resp, err := b.client.Do(req)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return page{}, err
	}
	return page{status: resp.StatusCode, body: string(raw), route: resp.Header.Get("X-Quest-Route"),
		lost: resp.Header.Get("X-Quest-Lost") != "", loc: resp.Header.Get("Location"), elapsed: time.Since(start)}, nil
}

// post sends a form and wants the redirect a successful form answers with.
func (b *browser) post(ctx context.Context, target string, form url.Values) (page, error) {
	p, err := b.do(ctx, http.MethodPost, target, form)
	if err == nil && p.status != http.StatusSeeOther {
		err = fmt.Errorf("POST %s: status %d", target, p.status)
	}
	return p, err
}

// signUp creates n users with fresh names at the app at base.
func signUp(ctx context.Context, base string, n int) ([]*browser, error) {
	run := time.Now().UnixNano() % 1e9
	users := make([]*browser, n)
	for i := range users {
		b := newBrowser(fmt.Sprintf("lab%d_%d", run, i), uint64(run)+uint64(i))
		if _, err := b.post(ctx, base+"/signup", url.Values{"username": {b.name},
			"display_name": {"Lab user " + strconv.Itoa(i)}, "password": {"lab password " + b.name}}); err != nil {
			return nil, fmt.Errorf("sign up %s: %w", b.name, err)
		}
		users[i] = b
	}
	return users, nil
}

// SignInAsAdmin signs in to the app at base as the admin and returns a
// function that switches the app's strategy through /lab, for a run
// against an app the lab did not start.
func SignInAsAdmin(ctx context.Context, base, password string) (func(context.Context, dbrouter.Strategy) error, error) {
	admin := newBrowser("admin", 0)
	if _, err := admin.post(ctx, base+"/login", url.Values{"username": {"admin"}, "password": {password}}); err != nil {
		return nil, fmt.Errorf("sign in as admin at %s (wrong password?): %w", base, err)
	}
	return func(ctx context.Context, s dbrouter.Strategy) error {
		_, err := admin.post(ctx, base+"/lab/strategy", url.Values{"strategy": {s.String()}})
		return err
	}, nil
}

// nodeStates reads an app's /lab/state: what its router thinks of each
// node ("usable", "lagging", …), by node name.
func (b *browser) nodeStates(ctx context.Context, base string) (map[string]string, error) {
	p, err := b.do(ctx, http.MethodGet, base+"/lab/state", nil)
	if err != nil {
		return nil, err
	}
	if p.status != http.StatusOK {
		return nil, fmt.Errorf("GET /lab/state: status %d", p.status)
	}
	var st struct {
		Nodes []struct {
			Name   string `json:"name"`
			Router string `json:"router"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(p.body), &st); err != nil {
		return nil, fmt.Errorf("GET /lab/state: %w", err)
	}
	out := map[string]string{}
	for _, n := range st.Nodes {
		out[n.Name] = n.Router
	}
	return out, nil
}

// splitBrain reads what the app's /lab/state says of a split brain: ""
// when it reports none.
func (b *browser) splitBrain(ctx context.Context, base string) (string, error) {
	p, err := b.do(ctx, http.MethodGet, base+"/lab/state", nil)
	if err != nil {
		return "", err
	}
	if p.status != http.StatusOK {
		return "", fmt.Errorf("GET /lab/state: status %d", p.status)
	}
	var st struct {
		SplitBrain string `json:"split_brain"`
	}
	if err := json.Unmarshal([]byte(p.body), &st); err != nil {
		return "", fmt.Errorf("GET /lab/state: %w", err)
	}
	return st.SplitBrain, nil
}

// metric reads a gauge or counter from an app's /metrics: the sum over
// its label sets, so a family by node reads as its total.
func (b *browser) metric(ctx context.Context, base, name string) (float64, error) {
	p, err := b.do(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	if p.status != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: status %d", p.status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(p.body))
	if err != nil {
		return 0, fmt.Errorf("GET /metrics: %w", err)
	}
	f, ok := families[name]
	if !ok || len(f.GetMetric()) == 0 {
		return 0, fmt.Errorf("no %s in /metrics", name)
	}
	sum := 0.0
	for _, m := range f.GetMetric() {
		switch {
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("%s in /metrics is neither a gauge nor a counter", name)
		}
	}
	return sum, nil
}
