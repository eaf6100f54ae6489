package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestSessionKeyGeneratedOnceAndShared(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	e := environment{getenv: func(string) string { return "" }}
	// Several instances starting at once end up with one key.
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := e.sessionKey(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if len(k) != 32 || !bytes.Equal(k, keys[0]) {
			t.Fatalf("instances got different keys: %x vs %x", k, keys[0])
		}
	}
	again, err := e.sessionKey(dir)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Fatalf("a restart got another key: %x, %v", again, err)
	}
	st, err := os.Stat(filepath.Join(dir, "session.key"))
	if err != nil {
		t.Fatalf("session.key: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("session.key has mode %v, want 0600", st.Mode().Perm())
	}
}

func TestSessionKeyFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("k", 40)
	e := environment{getenv: func(k string) string { return map[string]string{"QUEST_SESSION_KEY": long}[k] }}
	if k, err := e.sessionKey(dir); err != nil || string(k) != long {
		t.Fatalf("key = %q, %v", k, err)
	}
	e.getenv = func(k string) string { return map[string]string{"QUEST_SESSION_KEY": "short"}[k] }
	if _, err := e.sessionKey(dir); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("a short key was accepted: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "session.key"), []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.getenv = func(string) string { return "" }
	if _, err := e.sessionKey(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a damaged key file was accepted: %v", err)
	}
}

func TestPatroniURLsFromFlagOrEnvironment(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://quest@127.0.0.1:1/quest", "QUEST_PATRONI_URL": "http://127.0.0.1:8008, http://127.0.0.1:8009,"}
	e := environment{getenv: func(k string) string { return env[k] }}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "http://127.0.0.1:8008 http://127.0.0.1:8009"},
		{[]string{"--patroni-url", "http://127.0.0.1:9000"}, "http://127.0.0.1:9000"},
	} {
		fs := e.newFlags("serve", "serve")
		var cfg config
		e.addFlags(fs, &cfg, dirFlag|databaseFlag|replicasFlag|serveFlags)
		if _, err := parse(fs, tt.args); err != nil {
			t.Fatal(err)
		}
		if err := e.resolve(&cfg); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(cfg.PatroniURLs, " "); got != tt.want {
			t.Errorf("args %q: Patroni URLs %q, want %q", tt.args, got, tt.want)
		}
	}
}
