package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/cluster"
	"quest/internal/testcluster"
)

func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }

// quest runs the command as main would, with env as its whole environment.
func quest(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string { return env[k] }
	err = run(context.Background(), args, getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCommandLineErrorsAreOneLine(t *testing.T) {
	c := testcluster.Get(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	fresh := filepath.Join(t.TempDir(), "fresh")
	replicaEnv := map[string]string{"DATABASE_URL": c.ReplicaURLs()[0]}
	leverEnv := func(leverURL string) map[string]string {
		return map[string]string{"DATABASE_URL": c.PrimaryURL(), "REPLICA_URLS": strings.Join(c.ReplicaURLs(), ","),
			"QUEST_SESSION_KEY": strings.Repeat("k", 32), "QUEST_LEVER_URL": leverURL}
	}
	wrongLever, _ := url.Parse(c.LeverURL(c.Nodes()[0]))
	wrongLever.User = url.UserPassword(cluster.LeverRole, "not-the-password")

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown command", nil, []string{"fly"}, `unknown command "fly"`},
		{"unknown action", nil, []string{"cluster", "explode", "--dir", c.Dir()}, `unknown cluster action "explode"`},
		{"taken port", nil, []string{"cluster", "up", "--dir", fresh, "--port", strconv.Itoa(taken)}, "already in use"},
		{"pause without node", nil, []string{"cluster", "pause", "--dir", c.Dir()}, "pause needs a node: replica1 or replica2"},
		{"pause unknown node", nil, []string{"cluster", "pause", "replica7", "--dir", c.Dir()}, `unknown node "replica7"`},
		{"pause the leader, flag first", nil, []string{"cluster", "pause", "--dir", c.Dir(), "leader"}, "cannot pause replay on the leader"},
		{"bad delay", nil, []string{"cluster", "delay", "replica1", "soon", "--dir", c.Dir()}, `invalid duration "soon"`},
		{"no cluster", nil, []string{"cluster", "status", "--dir", fresh}, "no Quest cluster here"},
		{"migrate a replica", replicaEnv, []string{"migrate", "up"}, "is a replica (in recovery); migrations run on the primary only"},
		{"migrate without database", nil, []string{"migrate", "up", "--dir", fresh}, "no database: set DATABASE_URL"},
		{"lab with one user", nil, []string{"lab", "run", "--users", "1", "--dir", c.Dir()}, "--users 1: choose between 2 and 200"},
		{"lab faults without a cluster", nil, []string{"lab", "faults", "--dir", fresh}, "no Quest cluster here"},
		{"lab unknown action", nil, []string{"lab", "explode"}, "lab needs an action: run, faults or bench"},
		{"lab bench without a cluster", nil, []string{"lab", "bench", "--dir", fresh}, "no Quest cluster here"},
		{"lab bench unknown row", nil, []string{"lab", "bench", "--strategies", "random,fastest", "--dir", c.Dir()}, `no benchmark row "fastest"`},
		{"lab bench too short", nil, []string{"lab", "bench", "--seconds", "0", "--dir", c.Dir()}, "--seconds 0: choose between"},
		{"lab unknown strategy", nil, []string{"lab", "run", "--strategies", "random,fastest", "--dir", c.Dir()}, `unknown strategy "fastest"`},
		{"serve with a lever URL that is not one", leverEnv("mysql://quest_lever@db/quest"), []string{"serve", "--addr", "127.0.0.1:0"}, "--lever-url: the lever URL"},
		{"serve with a wrong lever password", leverEnv(wrongLever.String()), []string{"serve", "--addr", "127.0.0.1:0"}, "refuses the lever role"},
		{"dbshell unknown node", nil, []string{"dbshell", "--database", "replica9", "--dir", c.Dir()}, `unknown node "replica9"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := quest(t, tt.env, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans several lines: %q", err)
			}
		})
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Fatalf("a failed command left %s behind", fresh)
	}
}

func TestEnvPrintsShellLines(t *testing.T) {
	c := testcluster.Get(t)
	out, _, err := quest(t, nil, "cluster", "env", "--dir", c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	want := "DATABASE_URL='" + c.PrimaryURL() + "'\nREPLICA_URLS='" + strings.Join(c.ReplicaURLs(), ",") + "'\n"
	if out != want {
		t.Fatalf("env printed\n%s\nwant\n%s", out, want)
	}
	// A shell can eval it.
	sh := exec.Command("sh", "-c", `eval "$(cat)"; printf '%s\n%s' "$DATABASE_URL" "$REPLICA_URLS"`)
	sh.Stdin = strings.NewReader(out)
	got, err := sh.Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != c.PrimaryURL()+"\n"+strings.Join(c.ReplicaURLs(), ",") {
		t.Fatalf("after eval: %q", got)
	}
}

func TestStatusShowsStreamingFollowers(t *testing.T) {
	c := testcluster.Get(t)
	out, _, err := quest(t, nil, "cluster", "status", "--dir", c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^leader\s+\d+\s+\d+\s+up\s+primary\s`,
		`(?m)^replica1\s+\d+\s+\d+\s+up\s+replica\s+\S+\s+not paused`,
		`(?m)^\d+\s+quest_replicator\s+replica1\s+streaming\s+async`,
		`(?m)^\d+\s+quest_replicator\s+replica2\s+streaming\s+async`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("status output lacks %s:\n%s", re, out)
		}
	}
}

// TestServeListsNodes runs migrate and serve as make run does, then reads
// the home page and /healthz, and stops the server with its context.
func TestServeListsNodes(t *testing.T) {
	c := testcluster.Get(t)
	env := map[string]string{"QUEST_DIR": c.Dir()}
	if _, _, err := quest(t, env, "migrate", "up"); err != nil {
		t.Fatal(err)
	}
	out, _, err := quest(t, env, "migrate", "status")
	if err != nil || !strings.Contains(out, "00001_users.sql") || !strings.Contains(out, "applied") {
		t.Fatalf("migrate status: %v\n%s", err, out)
	}

	m, _, stop := startServe(t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()

	body := get(t, m+"/")
	for _, want := range []string{"primary", "replica1", "replica2"} {
		if !strings.Contains(body, "<td>"+want+"</td>") {
			t.Errorf("home page does not list %s", want)
		}
	}
	if n := strings.Count(body, "streaming (async)"); n != 2 {
		t.Errorf("home page shows %d streaming followers, want 2", n)
	}
	if h := get(t, m+"/healthz"); !strings.Contains(h, `"replica2":"replica"`) {
		t.Errorf("/healthz = %s", h)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestComposeFile validates docker-compose.yml with docker-compose itself,
// and checks what the file promises: four services, ports on 127.0.0.1
// only, every image built from the repository root with the app's build
// stage (so Docker builds quest once), and database images that set their
// node up with `quest cluster init-node` rather than a copy of the
// launcher's settings and roles. make compose-test runs the stack itself.
func TestComposeFile(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		if testcluster.InCI() {
			t.Fatal("docker-compose is not installed (CI=true, so this fails; .ci/run installs it)")
		}
		t.Skip("docker-compose is not installed")
	}
	out, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	config := string(out)
	for _, svc := range []string{"leader:", "replica1:", "replica2:", "app:"} {
		if !strings.Contains(config, svc) {
			t.Errorf("compose config lacks service %s", svc)
		}
	}
	published := regexp.MustCompile(`(?m)^\s*-\s+(\S+)/tcp$`).FindAllStringSubmatch(config, -1)
	if len(published) != 4 {
		t.Errorf("compose publishes %d ports, want 4 (leader, two replicas, app)", len(published))
	}
	for _, p := range published {
		if !strings.HasPrefix(p[1], "127.0.0.1:") {
			t.Errorf("compose publishes %s beyond 127.0.0.1", p[1])
		}
	}
	dockerfiles := regexp.MustCompile(`(?m)^\s*dockerfile:\s*(\S+)$`).FindAllStringSubmatch(config, -1)
	if len(dockerfiles) != 4 {
		t.Fatalf("compose builds %d images, want 4", len(dockerfiles))
	}
	buildStage := func(path string) string {
		b, err := os.ReadFile(filepath.Join("../..", path))
		if err != nil {
			t.Fatal(err)
		}
		var instrs []string
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if len(instrs) > 0 && strings.HasPrefix(line, "FROM ") {
				break
			}
			instrs = append(instrs, line)
		}
		return strings.Join(instrs, "\n")
	}
	app := buildStage("cmd/quest/Dockerfile")
	for _, d := range dockerfiles {
		if got := buildStage(d[1]); got != app {
			t.Errorf("%s's build stage differs from the app's, so Docker builds quest twice:\n%s\nwant:\n%s", d[1], got, app)
		}
	}
	for _, dir := range []string{"postgres_leader", "postgres_follower"} {
		files, err := filepath.Glob(filepath.Join("../..", dir, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s files: %v", dir, err)
		}
		var text strings.Builder
		for _, f := range files {
			b, _ := os.ReadFile(f)
			text.Write(b)
		}
		if !strings.Contains(text.String(), "quest cluster init-node") {
			t.Errorf("%s does not set its node up with quest cluster init-node", dir)
		}
		for _, setting := range cluster.LeaderSettings() {
			name, _, _ := strings.Cut(setting, " ")
			if strings.Contains(text.String(), name) {
				t.Errorf("%s sets %s itself: the setting belongs to internal/cluster, which init-node applies", dir, name)
			}
		}
		if strings.Contains(text.String(), "CREATE ROLE") {
			t.Errorf("%s creates roles itself: internal/cluster does, through init-node", dir)
		}
	}
}

func TestServeRefusesBadStrategy(t *testing.T) {
	_, _, err := quest(t, map[string]string{"QUEST_STRATEGY": "fastest"}, "serve", "--addr", "127.0.0.1:0")
	if err == nil || !strings.Contains(err.Error(), `unknown strategy "fastest"; choose one of primary, random, pin-own, sticky, timed, causal`) {
		t.Fatalf("err = %v", err)
	}
}

func TestSeedIsIdempotentAndKeepsTheAdminPassword(t *testing.T) {
	c := testcluster.Get(t)
	env := map[string]string{"QUEST_DIR": c.Dir()}
	first, _, err := quest(t, env, "seed")
	if err != nil {
		t.Fatal(err)
	}
	pw := regexp.MustCompile(`admin with password (\S+)`).FindStringSubmatch(first)
	if pw == nil || !strings.Contains(first, `seeded 4 users and the forum thread "Help adding items to my wishlist"`) {
		t.Fatalf("first seed printed:\n%s", first)
	}
	again, _, err := quest(t, env, "seed")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(again, "already seeded") || !strings.Contains(again, "password "+pw[1]+" ") {
		t.Fatalf("second seed printed:\n%s", again)
	}
	// Setting the admin's password ends the admin's sessions, and make run
	// seeds at every start: a seed with the same password leaves the hash
	// alone; a new password in the file is set.
	conn, err := pgx.Connect(context.Background(), c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	hash := func() (h string) {
		if err := conn.QueryRow(context.Background(), `SELECT password_hash FROM users WHERE username = 'admin'`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := hash()
	if _, _, err := quest(t, env, "seed"); err != nil {
		t.Fatal(err)
	}
	if hash() != before {
		t.Fatal("seeding again with the same password reset the admin's password (and ended the admin's sessions)")
	}
	pwFile := filepath.Join(c.Dir(), "admin-password")
	t.Cleanup(func() { // the package's other tests read the file
		os.WriteFile(pwFile, []byte(pw[1]+"\n"), 0o600)
		quest(t, env, "seed")
	})
	if err := os.WriteFile(pwFile, []byte("a-new-admin-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := quest(t, env, "seed"); err != nil || !strings.Contains(out, "password a-new-admin-password ") {
		t.Fatalf("seed after the password file changed: %v\n%s", err, out)
	}
	if hash() == before {
		t.Fatal("a new password in the file did not reset the admin's")
	}
}

func TestDBShell(t *testing.T) {
	c := testcluster.Get(t)
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql is not installed (it comes with the PostgreSQL packages)")
	}
	env := map[string]string{"QUEST_DIR": c.Dir()}
	for node, want := range map[string]string{"replica1": "t", "leader": "f", "primary": "f"} {
		out, errOut, err := quest(t, env, "dbshell", "--database", node, "--", "-Atc", "SELECT pg_is_in_recovery()")
		if err != nil || strings.TrimSpace(out) != want {
			t.Fatalf("dbshell %s: %q, %v, %s", node, out, err, errOut)
		}
	}
	_, _, err := quest(t, env, "dbshell", "--database", "replica7")
	if err == nil || !strings.Contains(err.Error(), `unknown node "replica7"; choose one of primary, replica1, replica2`) {
		t.Fatalf("dbshell on an unknown node: %v", err)
	}
}

// TestGracefulShutdownUnderLoad cancels serve's context — what SIGTERM
// does — while clients keep requesting pages: requests in flight finish,
// serve returns cleanly, and the app's connections are closed.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	c := testcluster.Get(t)
	base, logs, stopServe := startServe(t, map[string]string{"QUEST_DIR": c.Dir()})
	var wg sync.WaitGroup
	var ok, broken atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One transport per worker keeps one connection per worker for
			// the whole run. With a shared transport (two idle connections
			// per host) the six workers would dial all the time, and a dial
			// that lands in the listen backlog just as Shutdown closes the
			// listener is reset by the kernel: a request the server never
			// accepted, not one it dropped. Here the only dials after the
			// start are the transport's retries of a request that met a
			// closed keep-alive connection, and they meet a closed listener.
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(base + "/catalog")
				if err != nil {
					// After shutdown new connections are refused: that is the end.
					if strings.Contains(err.Error(), "connection refused") {
						return
					}
					broken.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					broken.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %.200s", resp.Status, body))
				}
			}
		}()
	}
	time.Sleep(time.Second)
	if err := stopServe(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == 0 || broken.Load() != 0 {
		t.Fatalf("%d requests answered 200, %d broke during shutdown (first: %v); serve's warnings and errors:\n%s",
			ok.Load(), broken.Load(), firstErr.Load(), logs.lines("level=WARN", "level=ERROR"))
	}
	// The pools are closed: no connection of the app's is left on the primary.
	conn, err := pgx.Connect(context.Background(), c.SuperURL(c.Nodes()[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	testcluster.Eventually(t, 10*time.Second, "the app's connections to close", func() bool {
		var n int
		err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'quest' AND datname = 'quest'`).Scan(&n)
		return err == nil && n == 0
	})
}

// startServe runs `quest serve` on a free loopback port with env as its
// whole environment. It returns the URL serve printed, serve's log, and
// stop, which cancels serve's context — what SIGTERM does — and returns
// what serve returned. The test's cleanup stops serve if the test did not.
func startServe(t *testing.T, env map[string]string) (url string, logs *lockedBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	logs = &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0"}, func(k string) string { return env[k] }, pw, logs)
		pw.Close()
	}()
	var once sync.Once
	var stopErr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					stopErr = fmt.Errorf("serve returned %w", err)
				}
			case <-time.After(20 * time.Second):
				stopErr = errors.New("serve did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { stop() })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v\n%s", err, logs.lines(""))
	}
	go io.Copy(io.Discard, pr)
	url = regexp.MustCompile(`http://localhost:\d+`).FindString(line)
	if url == "" {
		t.Fatalf("serve did not print its URL: %q", line)
	}
	return url, logs, stop
}

// lockedBuffer collects a server's log while its goroutines write to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines that contain any of the given strings.
func (b *lockedBuffer) lines(substrs ...string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		for _, a := range substrs {
			if strings.Contains(l, a) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
