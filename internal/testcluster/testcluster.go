// Package testcluster gives each test package one real, throwaway
// PostgreSQL cluster — a leader and two streaming followers on free ports,
// migrated — started by the first test that needs it and stopped after
// the package's tests.
//
// Clusters live under .quest/test at the repository root, so `make test`
// can sweep any that a killed test run left behind. Outside CI a machine
// without PostgreSQL skips the tests that need it; under CI=true they fail.
package testcluster

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"quest/internal/cluster"
	"quest/internal/store"
)

var (
	once     sync.Once
	shared   *cluster.Cluster
	startErr error
	inMain   bool
)

// Main runs the package's tests and stops the package's cluster, if a test
// started one. Use it as: func TestMain(m *testing.M) { os.Exit(testcluster.Main(m)) }.
// The cluster starts lazily, in the first Get: `go test -run TestParseLSN`
// boots no server.
func Main(m *testing.M) int {
	inMain = true
	code := m.Run()
	if shared != nil {
		if err := shared.Down(context.Background(), true); err != nil {
			fmt.Fprintf(os.Stderr, "testcluster: stop: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// start brings up the package's cluster, migrated, with every follower
// holding the schema: a session without a token may read from any of them.
func start() (*cluster.Cluster, error) {
	ctx := context.Background()
	c, err := Start(ctx, "pkg", 2)
	if err != nil {
		return nil, fmt.Errorf("cannot start PostgreSQL: %w", err)
	}
	if err := store.MigrateURL(ctx, c.PrimaryURL(), "up", io.Discard); err != nil {
		c.Down(ctx, true)
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if err := c.WaitCaughtUp(ctx, time.Minute); err != nil {
		c.Down(ctx, true)
		return nil, fmt.Errorf("followers did not replay the migrations: %w", err)
	}
	return c, nil
}

// Get returns the package's cluster, starting it on first use. Without
// PostgreSQL it skips the test, or fails it under CI (CI=true).
func Get(t testing.TB) *cluster.Cluster {
	t.Helper()
	if !inMain {
		t.Fatal("testcluster.Get called without testcluster.Main in TestMain")
	}
	once.Do(func() { shared, startErr = start() })
	if startErr != nil {
		if InCI() {
			t.Fatalf("testcluster: %v (CI=true, so this fails)", startErr)
		}
		t.Skipf("no PostgreSQL cluster: %v", startErr)
	}
	return shared
}

// Long skips a long-running test (a lab, fault or pgpool-II run) under
// go test -short.
func Long(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("a long run: skipped under -short")
	}
}

// InCI reports whether the tests run under CI, where nothing may skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Start brings up a new cluster with the given number of followers in a
// fresh directory under Root.
func Start(ctx context.Context, prefix string, replicas int) (*cluster.Cluster, error) {
	dir, err := NewDir(prefix)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := cluster.Up(ctx, cluster.Config{Dir: dir, Replicas: replicas, Port: 0, BinDir: os.Getenv("QUEST_PG_BIN")})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return c, nil
}

// NewDir makes a new, empty, private (0700) directory under Root.
func NewDir(prefix string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	base := prefix
	if wd, err := os.Getwd(); err == nil {
		base = filepath.Base(wd) + "-" + prefix
	}
	return os.MkdirTemp(root, strings.ReplaceAll(base, string(filepath.Separator), "_")+"-")
}

// Root is .quest/test at the repository root.
func Root() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".quest", "test"), nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("no go.mod above %s", wd)
		}
	}
}

// Eventually polls cond every 10 ms until it returns true or the timeout
// passes, and fails the test then. Timeouts are generous: these machines
// are shared and noisy.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NeedHA skips a test that needs a Patroni cluster when Patroni, etcd or
// PostgreSQL is missing, or fails it under CI, where nothing may skip.
func NeedHA(t testing.TB) {
	t.Helper()
	_, _, err := cluster.FindHATools()
	if err == nil {
		_, err = cluster.FindBinDir(cluster.Search{})
	}
	if err != nil {
		if InCI() {
			t.Fatalf("%v (CI=true, so this fails)", err)
		}
		t.Skip(err)
	}
}
