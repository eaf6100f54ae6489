package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"quest/internal/testcluster"
)

// TestDBShellKeepsThePasswordOffTheCommandLine runs dbshell with a psql
// that writes down its arguments and its PGPASSWORD, then runs the real
// psql: the command line, which ps shows every user of the machine, holds
// no password, and psql still signs in — the cluster asks for one over
// TCP (scram-sha-256) — with the one it got in its environment.
func TestDBShellKeepsThePasswordOffTheCommandLine(t *testing.T) {
	c := testcluster.Get(t)
	u, err := url.Parse(c.PrimaryURL())
	if err != nil {
		t.Fatal(err)
	}
	password, _ := u.User.Password()
	if password == "" {
		t.Fatalf("the cluster's URL %s carries no password: nothing to hide", u.Redacted())
	}
	psql, err := findPsql("")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\n" +
		"printf '%s\\n' \"$@\" > '" + dir + "/argv'\n" +
		"printf '%s' \"$PGPASSWORD\" > '" + dir + "/password'\n" +
		"exec '" + psql + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "psql"), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := quest(t, map[string]string{"QUEST_DIR": c.Dir()}, "dbshell", "--pg-bin", dir, "--", "-Atc", "SELECT current_user")
	if err != nil || strings.TrimSpace(out) != u.User.Username() {
		t.Fatalf("dbshell: %q, %v\n%s", out, err, errOut)
	}
	argv, err := os.ReadFile(filepath.Join(dir, "argv"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(argv), password) {
		t.Errorf("psql's command line holds the password:\n%s", strings.ReplaceAll(string(argv), password, "<the password>"))
	}
	if !strings.Contains(string(argv), u.Host) {
		t.Errorf("psql's command line does not name the node %s:\n%s", u.Host, argv)
	}
	got, err := os.ReadFile(filepath.Join(dir, "password"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != password {
		t.Errorf("psql's PGPASSWORD is %d bytes, want the URL's password", len(got))
	}
}

// TestWithoutPassword takes the password out of each form of connection
// string libpq reads, and refuses one it cannot read rather than pass the
// password on.
func TestWithoutPassword(t *testing.T) {
	for _, tt := range []struct{ in, rest, password string }{
		{"postgres://quest:s3cret@127.0.0.1:5432/quest?sslmode=disable", "postgres://quest@127.0.0.1:5432/quest?sslmode=disable", "s3cret"},
		{"postgresql://quest:p%40ss%3Aw@h/db", "postgresql://quest@h/db", "p@ss:w"},
		{"postgres://quest@h/db?password=s3cret&application_name=replica1", "postgres://quest@h/db?application_name=replica1", "s3cret"},
		{"postgres://:s3cret@h/db", "postgres://h/db", "s3cret"},
		{"postgres://quest@h/db", "postgres://quest@h/db", ""},
		{"host=h port=5432 user=quest password=s3cret dbname=quest", "host='h' port='5432' user='quest' dbname='quest'", "s3cret"},
		{"host = h password = 'it''s' user=q", "", ""}, // '' is no escape in libpq: a bad string, refused
		{`password='a b\'c\\d' host=h`, "host='h'", `a b'c\d`},
		{`password=a\ b host=h`, "host='h'", "a b"},
		{"dbname='o\\'brien' host=h", `dbname='o\'brien' host='h'`, ""},
	} {
		rest, password, err := withoutPassword(tt.in)
		if tt.rest == "" {
			if err == nil {
				t.Errorf("withoutPassword(%q) = %q, %q; want an error", tt.in, rest, password)
			}
			continue
		}
		if err != nil || rest != tt.rest || password != tt.password {
			t.Errorf("withoutPassword(%q) = %q, %q, %v; want %q, %q", tt.in, rest, password, err, tt.rest, tt.password)
		}
	}
}
