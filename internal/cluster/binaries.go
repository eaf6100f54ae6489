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

// ErrNoBinaries is returned when no PostgreSQL server installation is found.
var ErrNoBinaries = errors.New("no PostgreSQL server binaries found (looked on PATH, in `pg_config --bindir` and /usr/lib/postgresql/*/bin); install them with: apt-get install postgresql")

// Search says where FindBinDir looks. The zero value means the defaults:
// the process's PATH and Debian's /usr/lib/postgresql/*/bin.
type Search struct {
	PATH string // a PATH-style list; empty means $PATH
	Glob string // a glob of bin directories; empty means /usr/lib/postgresql/*/bin
}

// FindBinDir returns the first directory holding the PostgreSQL server
// programs: a directory on PATH, then `pg_config --bindir`, then the
// versioned directories of the glob, newest version first.
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
	glob := s.Glob
	if glob == "" {
		glob = "/usr/lib/postgresql/*/bin"
	}
	dirs, _ := filepath.Glob(glob)
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if hasServerTools(dir) {
			return dir, nil
		}
	}
	return "", ErrNoBinaries
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

// versionOf reads the major version from a path like /usr/lib/postgresql/15/bin.
func versionOf(bindir string) int {
	v, err := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
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
