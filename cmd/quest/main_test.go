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

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown command", nil, []string{"fly"}, `unknown command "fly"`},
		{"unknown action", nil, []string{"cluster", "explode", "--dir", c.Dir()}, `unknown cluster action "explode"`},
		{"taken port", nil, []string{"cluster", "up", "--dir", fresh, "--port", strconv.Itoa(taken)}, "already in use"},
		{"pause without node", nil, []string{"cluster", "pause", "--dir", c.Dir()}, "cluster pause takes 1 argument(s), got 0"},
		{"pause unknown node", nil, []string{"cluster", "pause", "replica7", "--dir", c.Dir()}, `unknown node "replica7"`},
		{"pause the leader, flag first", nil, []string{"cluster", "pause", "--dir", c.Dir(), "leader"}, "cannot pause replay on the leader"},
		{"bad delay", nil, []string{"cluster", "delay", "replica1", "soon", "--dir", c.Dir()}, `invalid duration "soon"`},
		{"no cluster", nil, []string{"cluster", "status", "--dir", fresh}, "no Quest cluster here"},
		{"migrate a replica", replicaEnv, []string{"migrate", "up"}, "is a replica (in recovery); migrations run on the primary only"},
		{"migrate without database", nil, []string{"migrate", "up", "--dir", fresh}, "no database: set DATABASE_URL"},
		{"lab with one user", nil, []string{"lab", "run", "--users", "1", "--dir", c.Dir()}, "--users 1: choose between 2 and 200"},
		{"lab faults without a cluster", nil, []string{"lab", "faults", "--dir", fresh}, "no Quest cluster here"},
		{"lab unknown action", nil, []string{"lab", "explode"}, "usage: quest lab run"},
		{"lab unknown strategy", nil, []string{"lab", "run", "--strategies", "random,fastest", "--dir", c.Dir()}, `unknown strategy "fastest"`},
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

// TestComposeMatchesLauncher validates docker-compose.yml with
// docker-compose itself and checks that the leader's image sets what the
// local launcher sets.
func TestComposeMatchesLauncher(t *testing.T) {
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
	leaderFiles, err := filepath.Glob("../../postgres_leader/*")
	if err != nil || len(leaderFiles) == 0 {
		t.Fatalf("no postgres_leader files: %v", err)
	}
	var leaderText strings.Builder
	for _, f := range leaderFiles {
		b, _ := os.ReadFile(f)
		leaderText.Write(b)
	}
	for _, setting := range cluster.LeaderSettings() {
		if !strings.Contains(leaderText.String(), setting) {
			t.Errorf("postgres_leader does not set %q as the local launcher does", setting)
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

// labRows reads the lab's Markdown table into rows keyed "strategy × lag".
func labRows(out string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, " | ")
		if len(f) >= 12 && strings.HasPrefix(line, "| ") {
			rows[strings.TrimPrefix(f[0], "| ")+" × "+f[1]] = f
		}
	}
	return rows
}

// failures adds up a table row's read-your-writes and monotonic failures.
func failures(row []string) (ryw, mono int) {
	for _, part := range strings.Split(row[3], " / ") {
		var n, of int
		fmt.Sscanf(part, "%d/%d", &n, &of)
		ryw += n
	}
	fmt.Sscanf(row[4], "%d/", &mono)
	return ryw, mono
}

// TestLabQuick runs the quick experiment against the package's cluster and
// checks what the table must show: causal never fails a check, random does
// under lag, sticky keeps reads monotonic.
func TestLabQuick(t *testing.T) {
	c := testcluster.Get(t)
	out := t.TempDir()
	began := time.Now()
	stdout, stderr, err := quest(t, nil, "lab", "run", "--quick", "--dir", c.Dir(), "--out", out)
	if err != nil {
		t.Fatalf("lab run: %v\n%s", err, stderr)
	}
	t.Logf("quick lab run took %s", time.Since(began).Round(time.Second))
	rows := labRows(stdout)
	for _, s := range []string{"primary", "random", "pin-own", "sticky", "timed", "causal"} {
		for _, lag := range []string{"none", "replica1 5 s behind, replica2 fresh", "none, closed loop"} {
			if rows[s+" × "+lag] == nil {
				t.Fatalf("the table lacks %s × %s:\n%s", s, lag, stdout)
			}
		}
	}
	for _, lag := range []string{"none", "replica1 5 s behind, replica2 fresh", "none, closed loop"} {
		if r, m := failures(rows["causal × "+lag]); r != 0 || m != 0 {
			t.Errorf("causal × %s: %d read-your-writes and %d monotonic failures, want none", lag, r, m)
		}
	}
	if r, m := failures(rows["random × replica1 5 s behind, replica2 fresh"]); r == 0 || m == 0 {
		t.Errorf("random under 5 s of lag shows %d read-your-writes and %d monotonic failures; the anomalies should appear", r, m)
	}
	if _, m := failures(rows["sticky × replica1 5 s behind, replica2 fresh"]); m != 0 {
		t.Errorf("sticky went back in time %d times", m)
	}
	for _, f := range []string{"results.md", "results.csv", "chart.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("lab run did not write %s: %v", f, err)
		}
	}
}

// TestLabQuickViaPgpool runs the quick experiment through pgpool-II: its row
// shows read-your-writes failures where causal shows none, the benchmark
// reports every side, and pgpool is gone afterwards with its files.
func TestLabQuickViaPgpool(t *testing.T) {
	c := testcluster.Get(t)
	if _, err := os.Stat("/usr/sbin/pgpool"); err != nil {
		if _, err := exec.LookPath("pgpool"); err != nil {
			if testcluster.InCI() {
				t.Fatal("pgpool-II is not installed (CI=true, so this fails; .ci/run installs pgpool2)")
			}
			t.Skip("pgpool-II is not installed")
		}
	}
	leftBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "qpgpool*"))
	began := time.Now()
	stdout, stderr, err := quest(t, nil, "lab", "run", "--quick", "--via-pgpool", "--dir", c.Dir(), "--out", t.TempDir())
	if err != nil {
		t.Fatalf("lab run --via-pgpool: %v\n%s", err, stderr)
	}
	t.Logf("quick pgpool run took %s", time.Since(began).Round(time.Second))
	rows := labRows(stdout)
	lag := "every replica paused"
	if rows["pgpool-II × "+lag] == nil || rows["causal × "+lag] == nil {
		t.Fatalf("the table lacks the pgpool-II or causal row:\n%s", stdout)
	}
	// An INSERT, then a SELECT in the same session outside a transaction:
	// pgpool sends the SELECT to a replica that has not replayed it.
	if r, _ := failures(rows["pgpool-II × "+lag]); r == 0 {
		t.Errorf("pgpool-II read its own writes with replay paused everywhere:\n%s", stdout)
	}
	for _, l := range []string{"none", lag} {
		if r, m := failures(rows["causal × "+l]); r != 0 || m != 0 {
			t.Errorf("causal × %s failed %d read-your-writes and %d monotonic checks", l, r, m)
		}
	}
	for _, want := range []string{"| Quest random |", "| Quest sticky |", "| Quest causal |", "| pgpool-II |", "delay_threshold = 67108864"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	leftAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "qpgpool*"))
	if len(leftAfter) > len(leftBefore) {
		t.Errorf("pgpool's files were left behind: %v", leftAfter)
	}
	if pid := regexp.MustCompile(`pgpool-II \(pid (\d+)\)`).FindStringSubmatch(stderr); pid == nil {
		t.Error("the run did not say which pgpool it started")
	} else if n, _ := strconv.Atoi(pid[1]); testcluster.ProcessAlive(n) {
		t.Errorf("pgpool (pid %d) still runs after the lab", n)
	}
}

// TestLabFaultsQuick breaks the package's cluster under load and checks the
// table: no failed request when a replica dies, no lost write, no anomaly.
func TestLabFaultsQuick(t *testing.T) {
	c := testcluster.Get(t)
	began := time.Now()
	stdout, stderr, err := quest(t, nil, "lab", "faults", "--quick", "--dir", c.Dir(), "--out", t.TempDir())
	if err != nil {
		t.Fatalf("lab faults: %v\n%s", err, stderr)
	}
	t.Logf("quick fault run took %s", time.Since(began).Round(time.Second))
	rows := map[string][]string{}
	for _, line := range strings.Split(stdout, "\n") {
		if f := strings.Split(line, " | "); len(f) == 11 && strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| scenario") {
			rows[strings.TrimPrefix(f[0], "| ")] = f
		}
	}
	num := func(s string) int { n, _ := strconv.Atoi(strings.TrimSpace(s)); return n }
	for _, name := range []string{"replica1 killed (SIGKILL), restarted", "primary stopped (fast), restarted",
		"primary stopped (immediate), restarted", "replica1 paused past the 2 s lag limit",
		"app restarted, users signed in", "two app instances, users alternating"} {
		f := rows[name]
		if f == nil {
			t.Fatalf("the table lacks %q:\n%s", name, stdout)
		}
		if failed, anomalies, lost := num(f[2]), num(f[5]), num(f[7]); failed != 0 || anomalies != 0 || lost != 0 {
			t.Errorf("%s: %d failed requests, %d anomalies, %d lost writes; want none", name, failed, anomalies, lost)
		}
		if strings.HasPrefix(name, "primary") && num(f[3]) == 0 {
			t.Errorf("%s: no form answered 503 while the primary was down", name)
		}
	}
	if f := rows["replica1 paused past the 2 s lag limit"]; !strings.Contains(f[10], "excluded past the limit: true; taken back once caught up: true") {
		t.Errorf("the paused replica was not excluded and taken back: %s", f[10])
	}
	if f := rows["replica1 killed (SIGKILL), restarted"]; !regexp.MustCompile(`/ 0 % / [1-9]`).MatchString(f[10]) {
		t.Errorf("the killed replica's share did not go to 0 and come back: %s", f[10])
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
