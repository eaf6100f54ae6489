package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverTools are the programs a directory must hold to count as a
// PostgreSQL server installation. Debian puts client wrappers such as
// pg_basebackup on PATH but not the server itself, so all of them are
// required in the same directory.
var serverTools = []string{"initdb", "pg_ctl", "postgres", "pg_basebackup"}

// installDirs are the places PostgreSQL installs its server programs
// outside PATH, in the order FindBinDir tries them: Debian and Ubuntu's
// packages; Homebrew's versioned formulas, which are keg-only (not linked
// onto PATH), on Apple silicon and then on Intel Macs; Postgres.app.
var installDirs = []string{
	"/usr/lib/postgresql/*/bin",
	"/opt/homebrew/opt/postgresql@*/bin",
	"/usr/local/opt/postgresql@*/bin",
	"/Applications/Postgres.app/Contents/Versions/*/bin",
}

// ErrNoBinaries is returned when no PostgreSQL server installation is found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found")

// installHint says what to install, on every system Quest runs on.
const installHint = "install PostgreSQL 15 (14 or newer works) — Debian/Ubuntu: sudo apt-get install postgresql; " +
	"macOS: brew install postgresql@15, or Postgres.app (postgresapp.com); " +
	"Windows: inside WSL2 (Ubuntu), as on Ubuntu — or set QUEST_PG_BIN to the directory holding initdb and postgres"

// Search says where FindBinDir looks. The zero value searches this
// machine. Tests point it at a directory tree of their own.
type Search struct {
	PATH string // a PATH-style list; empty means $PATH
	Glob string // one glob of bin directories replacing the install directories; empty means those
	Root string // where the install directories (or Glob) are looked up; empty means /
}

// FindBinDir returns the first directory holding the PostgreSQL server
// programs: a directory on PATH, then `pg_config --bindir` (the first
// pg_config on PATH), then the install directories in their order (Debian,
// Homebrew, Postgres.app), each newest version first.
func FindBinDir(s Search) (string, error) {
	path := s.PATH
	if path == "" {
		path = os.Getenv("PATH")
	}
	for _, dir := range filepath.SplitList(path) {
		if hasServerTools(dir) {
			return dir, nil
		}
	}
	for _, dir := range filepath.SplitList(path) {
		pgConfig := filepath.Join(dir, "pg_config")
		if _, err := os.Stat(pgConfig); err != nil {
			continue
		}
		out, err := exec.Command(pgConfig, "--bindir").Output()
		if err == nil {
			if bindir := strings.TrimSpace(string(out)); hasServerTools(bindir) {
				return bindir, nil
			}
		}
		break
	}
	globs := installDirs
	if s.Glob != "" {
		globs = []string{s.Glob}
	}
	looked := make([]string, len(globs))
	for i, g := range globs {
		if s.Root != "" {
			g = filepath.Join(s.Root, g)
		}
		looked[i] = g
		dirs, _ := filepath.Glob(g)
		sort.SliceStable(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
		for _, dir := range dirs {
			if hasServerTools(dir) {
				return dir, nil
			}
		}
	}
	return "", fmt.Errorf("%w (looked on PATH, in `pg_config --bindir` and in %s); %s",
		ErrNoBinaries, strings.Join(looked, ", "), installHint)
}

func hasServerTools(dir string) bool {
	if dir == "" {
		return false
	}
	for _, tool := range serverTools {
		st, err := os.Stat(filepath.Join(dir, tool))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionOf reads the major version from the directory above bin:
// /usr/lib/postgresql/15/bin, /opt/homebrew/opt/postgresql@15/bin,
// …/Postgres.app/Contents/Versions/16/bin. A name without one (Postgres.app's
// "latest" link) gives -1 and sorts last.
func versionOf(bindir string) int {
	name := filepath.Base(filepath.Dir(bindir))
	if _, v, ok := strings.Cut(name, "@"); ok {
		name = v
	}
	major, _, _ := strings.Cut(name, ".")
	v, err := strconv.Atoi(major)
	if err != nil {
		return -1
	}
	return v
}

// serverVersion asks the postgres binary for its major version.
func serverVersion(bindir string) (int, error) {
	out, err := exec.Command(filepath.Join(bindir, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("run %s --version: %w", filepath.Join(bindir, "postgres"), err)
	}
	// "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
	fields := strings.Fields(string(out))
	if len(fields) < 3 {
		return 0, fmt.Errorf("unexpected postgres --version output %q", out)
	}
	major, _, _ := strings.Cut(fields[2], ".")
	v, err := strconv.Atoi(major)
	if err != nil {
		return 0, fmt.Errorf("unexpected postgres --version output %q", out)
	}
	return v, nil
}
