package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"quest/internal/testcluster"
)

// TestHelpExitsZero asks every command and every cluster action for help
// in each of the ways people ask: the usage goes to stdout, nothing to
// stderr, run returns nil (main exits 0), and nothing is started or made.
func TestHelpExitsZero(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "fresh")
	env := map[string]string{"QUEST_DIR": fresh}
	commands := [][]string{{}, {"serve"}, {"migrate"}, {"seed"}, {"dbshell"}, {"cluster"}, {"lab"}, {"lab", "run"}, {"lab", "faults"}}
	for _, a := range clusterActions {
		commands = append(commands, []string{"cluster", a.name})
	}
	var asks [][]string
	for _, cmd := range commands {
		for _, ask := range []string{"--help", "-h", "-help", "help"} {
			asks = append(asks, append(append([]string(nil), cmd...), ask))
		}
		if len(cmd) > 0 {
			asks = append(asks, append([]string{"help"}, cmd...)) // quest help cluster up
		}
	}
	for _, args := range asks {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, err := quest(t, env, args...)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !strings.HasPrefix(out, "usage: quest") || errOut != "" {
				t.Fatalf("stdout:\n%s\nstderr:\n%s", out, errOut)
			}
		})
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("asking for help made %s", fresh)
	}
	// An action's help shows its own flags, not the other actions'.
	out, _, _ := quest(t, env, "cluster", "up", "--help")
	if !strings.Contains(out, "\n  -port") || strings.Contains(out, "\n  -purge") {
		t.Errorf("cluster up --help:\n%s", out)
	}
	out, _, _ = quest(t, env, "serve", "--help")
	if !strings.Contains(out, "127.0.0.1:8080") || !strings.Contains(out, "--addr :8080") {
		t.Errorf("serve --help does not say how to share it:\n%s", out)
	}
}

// TestUsageErrorsNameWhatIsMissing gives commands too little, or a bad
// flag: each answer is one line naming what is missing (the cluster's own
// node names when there is a cluster), a usage error (main exits 2),
// and no usage text.
func TestUsageErrorsNameWhatIsMissing(t *testing.T) {
	c := testcluster.Get(t)
	dir := c.Dir()
	fresh := filepath.Join(t.TempDir(), "fresh")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "pause", "--dir", dir}, "pause needs a node: replica1 or replica2"},
		{[]string{"cluster", "resume", "--dir", dir}, "resume needs a node: replica1 or replica2"},
		{[]string{"cluster", "delay", "--dir", dir}, "delay needs a node and a duration: replica1 or replica2, then e.g. 5s or 5000ms"},
		{[]string{"cluster", "delay", "replica1", "--dir", dir}, "delay needs a duration after replica1: e.g. 5s or 5000ms"},
		{[]string{"cluster", "stop", "--dir", dir}, "stop needs a node: leader, replica1 or replica2"},
		{[]string{"cluster", "start", "--dir", dir}, "start needs a node: leader, replica1 or replica2"},
		{[]string{"cluster", "kill", "--dir", dir}, "kill needs a node: leader, replica1 or replica2"},
		{[]string{"cluster", "sweep"}, "sweep needs a directory"},
		{[]string{"cluster", "pause", "--dir", fresh}, "pause needs a node, such as replica1"},
		{[]string{"cluster", "kill", "--dir", fresh}, "kill needs a node, such as leader or replica1"},
		{[]string{"cluster", "pause", "replica1", "replica2", "--dir", dir}, "cluster pause takes 1 argument(s), got 2 (replica1 replica2)"},
		{[]string{"cluster", "delay", "replica1", "5000", "--dir", dir}, `invalid duration "5000": a number needs its unit, e.g. 5000ms or 5000s`},
		{[]string{"cluster", "delay", "replica1", "soon", "--dir", dir}, `invalid duration "soon": use e.g. 5s, 5000ms`},
		{[]string{"cluster", "up", "--purge", "--dir", fresh}, "cluster up: flag provided but not defined: -purge; see quest cluster up --help"},
		{[]string{"serve", "--bogus"}, "serve: flag provided but not defined: -bogus; see quest serve --help"},
		{[]string{"cluster", "up", "--port", "x", "--dir", fresh}, `cluster up: invalid value "x" for flag -port`},
		{[]string{"lab", "run", "--users"}, "lab run: flag needs an argument: -users"},
		{[]string{"fly"}, `unknown command "fly"; run quest help`},
		{[]string{"migrate"}, "migrate needs an action: up (apply the migrations) or status (list them)"},
		{[]string{"migrate", "down"}, `unknown migrate action "down": up or status`},
		{[]string{"cluster", "init-node"}, "cluster init-node needs --role leader or --role follower"},
		{[]string{"cluster", "init-node", "--role", "follower"}, "cluster init-node --role follower needs --name, e.g. --name replica1"},
		{[]string{"cluster", "init-node", "--role", "leader", "--data", fresh}, "cluster init-node --role leader: set POSTGRES_PASSWORD, QUEST_APP_PASSWORD, QUEST_REPL_PASSWORD, QUEST_LEVER_PASSWORD in the environment"},
		{[]string{"cluster", "init-node", "--role", "follower", "--name", "replica1", "--data", fresh}, "cluster init-node --role follower: set QUEST_REPL_PASSWORD in the environment"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, err := quest(t, nil, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
			if !errors.As(err, new(usageError)) {
				t.Errorf("err is a %T, not a usage error", err)
			}
			if strings.Contains(err.Error(), "\n") || out != "" || errOut != "" {
				t.Fatalf("not one line: err %q, stdout %q, stderr %q", err, out, errOut)
			}
		})
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused command made %s", fresh)
	}
	// A bare quest or quest cluster still answers with the list, on stderr.
	for _, args := range [][]string{nil, {"cluster"}} {
		out, errOut, err := quest(t, nil, args...)
		if !errors.Is(err, errUsageShown) || out != "" || !strings.HasPrefix(errOut, "usage: quest") {
			t.Errorf("quest %s: %v, stdout %q, stderr %q", strings.Join(args, " "), err, out, errOut)
		}
	}
}

func TestCLIDelayUnits(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"5000ms", 5 * time.Second, ""},
		{"5s", 5 * time.Second, ""},
		{"1.5s", 1500 * time.Millisecond, ""},
		{"0", 0, ""},
		{"5000", 0, `a number needs its unit, e.g. 5000ms or 5000s`},
		{"2.5", 0, `e.g. 2.5ms or 2.5s`},
		{"5 s", 0, `use e.g. 5s, 5000ms`},
	} {
		d, err := parseDelay(tt.in)
		if tt.err == "" && (err != nil || d != tt.want) {
			t.Errorf("parseDelay(%q) = %v, %v; want %v", tt.in, d, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("parseDelay(%q) = %v, %v; want an error saying %q", tt.in, d, err, tt.err)
		}
	}

	// On the cluster, both spellings set the same delay.
	c := testcluster.Get(t)
	t.Cleanup(func() { quest(t, nil, "cluster", "delay", "replica1", "0", "--dir", c.Dir()) })
	for _, d := range []string{"5000ms", "5s", "0"} {
		out, _, err := quest(t, nil, "cluster", "delay", "replica1", d, "--dir", c.Dir())
		want := "apply delay of replica1 is now " + map[string]string{"5000ms": "5s", "5s": "5s", "0": "0s"}[d]
		if err != nil || strings.TrimSpace(out) != want {
			t.Fatalf("delay %s: %q, %v; want %q", d, out, err, want)
		}
	}
}

func TestCLINodeURLReplicaAlias(t *testing.T) {
	r1 := "postgres://q@127.0.0.1:1/quest?application_name=replica1"
	r2 := "postgres://q@127.0.0.1:2/quest?application_name=replica2"
	named := "postgres://q@127.0.0.1:3/quest?application_name=replica"
	for _, tt := range []struct {
		replicas          []string
		ask               string
		wantName, wantURL string
		err               string
	}{
		{[]string{r1, r2}, "replica", "replica1", r1, ""},
		{[]string{r2, r1}, "replica", "replica2", r2, ""},
		{[]string{r1, named}, "replica", "replica", named, ""}, // a replica called replica is that one
		{[]string{r1, r2}, "replica2", "replica2", r2, ""},
		{[]string{r1, r2}, "leader", "primary", "postgres://p", ""},
		{nil, "replica", "", "", "there is no replica"},
		{[]string{r1, r2}, "replica3", "", "", `unknown node "replica3"; choose one of primary, replica1, replica2 (or replica, the first replica)`},
	} {
		name, url, err := nodeURL(config{DatabaseURL: "postgres://p", ReplicaURLs: tt.replicas}, tt.ask)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s among %d: err = %v, want %q", tt.ask, len(tt.replicas), err, tt.err)
			}
			continue
		}
		if err != nil || name != tt.wantName || url != tt.wantURL {
			t.Errorf("%s among %v = %s, %s, %v; want %s, %s", tt.ask, tt.replicas, name, url, err, tt.wantName, tt.wantURL)
		}
	}
}

// TestDBShellOpensTheReplica runs psql through dbshell --database replica,
// the article's name: it lands on replica1 and says so.
func TestDBShellOpensTheReplica(t *testing.T) {
	c := testcluster.Get(t)
	out, errOut, err := quest(t, map[string]string{"QUEST_DIR": c.Dir()}, "dbshell", "--database", "replica", "--",
		"-Atc", "SELECT pg_is_in_recovery(), current_setting('port')")
	want := "t|" + strconv.Itoa(c.Nodes()[1].Port)
	if err != nil || strings.TrimSpace(out) != want || !strings.Contains(errOut, "dbshell: replica is replica1") {
		t.Fatalf("dbshell --database replica: %q (want %q), %v, %s", out, want, err, errOut)
	}
}

// TestServeListensOnLoopbackByDefault checks the default address, then
// serves on a free port and reads the first line: the app's URL and the
// lab's, which answers; shared on every interface, a second line gives
// others the machine's addresses. A port in use gets one line saying what
// to do.
func TestServeListensOnLoopbackByDefault(t *testing.T) {
	for env, want := range map[string]string{"": "127.0.0.1:8080", ":9000": ":9000"} {
		e := environment{getenv: func(k string) string { return map[string]string{"QUEST_ADDR": env}[k] }}
		fs := e.newFlags("serve", "serve")
		var cfg config
		e.addFlags(fs, &cfg, serveFlags)
		if _, err := parse(fs, nil); err != nil || cfg.Addr != want {
			t.Errorf("QUEST_ADDR=%q: --addr defaults to %q, %v; want %q", env, cfg.Addr, err, want)
		}
	}

	c := testcluster.Get(t)
	env := map[string]string{"QUEST_DIR": c.Dir()}
	if _, _, err := quest(t, env, "migrate", "up"); err != nil {
		t.Fatal(err)
	}
	lines := serveLines(t, env, "127.0.0.1:0", 1)
	m := regexp.MustCompile(`^Quest is serving on (http://localhost:\d+) — the lab: (http://localhost:\d+/lab) \(2 replicas, strategy causal; stop with Ctrl-C\)$`).FindStringSubmatch(lines[0])
	if m == nil || m[2] != m[1]+"/lab" {
		t.Fatalf("serve's first line: %q", lines[0])
	}

	var shared []string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() && !ip.IP.IsLinkLocalUnicast() {
				shared = append(shared, ip.IP.String())
			}
		}
	}
	if len(shared) == 0 {
		t.Log("no network address besides loopback: the shared line is not checked")
	} else {
		lines = serveLines(t, env, "0.0.0.0:0", 2)
		if !strings.HasPrefix(lines[1], "shared with the network: others open http://"+shared[0]+":") {
			t.Errorf("shared on every interface, serve printed:\n%s", strings.Join(lines, "\n"))
		}
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, _, err = quest(t, env, "serve", "--addr", l.Addr().String())
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()+" is already in use: choose another port with --addr") {
		t.Fatalf("serve on a port in use: %v", err)
	}
}

// serveLines runs serve on addr until it has printed n lines, GETs the
// lab URL of the first, stops serve and returns the lines.
func serveLines(t *testing.T, env map[string]string, addr string, n int) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, logs := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", addr}, func(k string) string { return env[k] }, out, logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v\n%s", err, logs.lines(""))
		}
	}()
	var lines []string
	testcluster.Eventually(t, 20*time.Second, "serve's first lines", func() bool {
		text := out.lines("")
		lines = strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		return strings.Count(text, "\n") >= n
	})
	if lab := regexp.MustCompile(`http://localhost:\d+/lab`).FindString(lines[0]); lab != "" {
		get(t, lab)
	}
	return lines
}

// TestCLIMakeRunTakesPorts reads what make run would run: PORT and
// PGPORT from the command line reach serve and cluster up, and a PGPORT
// in the environment (libpq's, for psql) does not.
func TestCLIMakeRunTakesPorts(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		if testcluster.InCI() {
			t.Fatal("make is not installed")
		}
		t.Skip("make is not installed")
	}
	for _, tt := range []struct {
		args, env []string
		want      []string
	}{
		{nil, []string{"PGPORT=5432", "PORT=9999"}, []string{"cluster up --port 54320", "serve --addr 127.0.0.1:8080"}},
		{[]string{"PORT=8081", "PGPORT=55320"}, nil, []string{"cluster up --port 55320", "serve --addr 127.0.0.1:8081"}},
		{[]string{"HOST=0.0.0.0"}, nil, []string{"serve --addr 0.0.0.0:8080"}},
	} {
		cmd := exec.Command("make", append([]string{"-n", "-C", "../..", "run"}, tt.args...)...)
		cmd.Env = append(os.Environ(), tt.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make -n run: %v\n%s", err, out)
		}
		for _, w := range tt.want {
			if !strings.Contains(string(out), "quest "+w+"\n") {
				t.Errorf("make -n run %s (env %s) does not run quest %s:\n%s", tt.args, tt.env, w, out)
			}
		}
	}
}

func TestCLIPGBinOverride(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "fresh")
	_, _, err := quest(t, map[string]string{"QUEST_PG_BIN": "/nonexistent/bin"}, "cluster", "up", "--dir", fresh)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/bin does not hold the PostgreSQL server programs") {
		t.Fatalf("cluster up with QUEST_PG_BIN=/nonexistent/bin: %v", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused up made %s", fresh)
	}
}

// TestCLIUpKeepsPorts asks the running cluster for another port: it keeps
// its own and the note says how to move it — make purge when the cluster
// is the default one (the one make works on), else with its --dir.
func TestCLIUpKeepsPorts(t *testing.T) {
	c := testcluster.Get(t)
	leader := c.Nodes()[0].Port
	other := strconv.Itoa(leader + 1000)
	for _, tt := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"QUEST_DIR": c.Dir()}, nil, "delete it first: make purge, or quest cluster down --purge\n"},
		{nil, []string{"--dir", c.Dir()}, "delete it first: quest cluster down --purge --dir " + c.Dir() + "\n"},
	} {
		out, _, err := quest(t, tt.env, append([]string{"cluster", "up", "--port", other}, tt.args...)...)
		note := "note: the cluster in " + c.Dir() + " already exists and keeps its 2 replicas and its ports (leader " + strconv.Itoa(leader) + "); to change them, "
		if err != nil || !strings.Contains(out, note+tt.want) || !strings.Contains(out, "127.0.0.1:"+strconv.Itoa(leader)+"\n") {
			t.Errorf("cluster up --port %s %s: %v\n%s", other, tt.args, err, out)
		}
	}
}
