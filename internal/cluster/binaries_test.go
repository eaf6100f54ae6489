package cluster_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quest/internal/cluster"
)

// TestFindBinDirOrder builds a fake machine in a temporary directory — a
// PATH entry, a pg_config, Debian's, Homebrew's and Postgres.app's
// directories, each with empty executables standing in for the server
// programs — and removes the winner of each search in turn: the next one
// must win, down to the error that says what to install.
func TestFindBinDirOrder(t *testing.T) {
	root := t.TempDir()
	at := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	server := func(p string) { t.Helper(); fakeTools(t, at(p), "initdb", "pg_ctl", "postgres", "pg_basebackup") }

	// Debian puts client wrappers on PATH, not the server: not a match.
	fakeTools(t, at("usr/bin"), "pg_basebackup", "psql")
	server("opt/pg/bin")
	server("custom/bin")
	writeExec(t, at("usr/bin/pg_config"), "#!/bin/sh\necho "+at("custom/bin")+"\n")
	server("usr/lib/postgresql/13/bin")
	server("usr/lib/postgresql/15/bin")
	fakeTools(t, at("usr/lib/postgresql/16/bin"), "initdb", "pg_ctl") // a half-removed install
	server("opt/homebrew/opt/postgresql@14/bin")
	server("opt/homebrew/opt/postgresql@17/bin")
	server("usr/local/opt/postgresql@15/bin")
	server("Applications/Postgres.app/Contents/Versions/9.6/bin")
	server("Applications/Postgres.app/Contents/Versions/16/bin")
	if err := os.Symlink("16", at("Applications/Postgres.app/Contents/Versions/latest")); err != nil {
		t.Fatal(err)
	}
	search := cluster.Search{PATH: at("usr/bin") + string(os.PathListSeparator) + at("opt/pg/bin"), Root: root}

	steps := []struct {
		want   string // the directory found
		remove string // then removed, for the next step
	}{
		{"opt/pg/bin", "opt/pg"},                               // on PATH
		{"custom/bin", "usr/bin/pg_config"},                    // pg_config --bindir
		{"usr/lib/postgresql/15/bin", "usr/lib"},               // Debian, newest complete version
		{"opt/homebrew/opt/postgresql@17/bin", "opt/homebrew"}, // Homebrew on Apple silicon, newest
		{"usr/local/opt/postgresql@15/bin", "usr/local"},       // Homebrew on Intel
		{"Applications/Postgres.app/Contents/Versions/16/bin", "Applications/Postgres.app/Contents/Versions/16"},
		{"Applications/Postgres.app/Contents/Versions/9.6/bin", "Applications/Postgres.app/Contents/Versions/9.6"},
	}
	for _, s := range steps {
		got, err := cluster.FindBinDir(search)
		if err != nil || got != at(s.want) {
			t.Fatalf("FindBinDir = %q, %v; want %s", got, err, at(s.want))
		}
		if err := os.RemoveAll(at(s.remove)); err != nil {
			t.Fatal(err)
		}
	}
	// Only Postgres.app's dangling "latest" link is left.
	got, err := cluster.FindBinDir(search)
	if !errors.Is(err, cluster.ErrNoBinaries) {
		t.Fatalf("FindBinDir = %q, %v; want ErrNoBinaries", got, err)
	}
	for _, want := range []string{
		"apt-get install postgresql", "brew install postgresql@15", "Postgres.app", "WSL2", "QUEST_PG_BIN",
		at("/opt/homebrew/opt/postgresql@*/bin"),
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("the error spans several lines: %q", err)
	}
}

// fakeTools makes dir with an empty executable for each name.
func fakeTools(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		writeExec(t, filepath.Join(dir, n), "")
	}
}

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
