package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"quest/internal/dbrouter"
	"quest/internal/server"
	"quest/internal/store"
)

func (e environment) seed(ctx context.Context, args []string) error {
	fs := e.newFlags("seed", "seed [--reset] [--database-url URL] [--dir D]")
	reset := fs.Bool("reset", false, "put the demo data back as seeded: empty every wishlist, the forum back to the article's thread (accounts stay)")
	var cfg config
	e.addFlags(fs, &cfg, dirFlag|databaseFlag)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("seed takes no arguments, got %q", pos)
	}
	if err := e.resolve(&cfg); err != nil {
		return err
	}
	r, err := dbrouter.New(ctx, dbrouter.Config{PrimaryURL: cfg.DatabaseURL, Strategy: dbrouter.Primary})
	if err != nil {
		return err
	}
	defer r.Close()
	st := store.New(r)

	// The admin's password is generated once and kept beside the cluster,
	// so `make run` can print it every time.
	pwFile := filepath.Join(cfg.StateDir, "admin-password")
	password, err := readOrCreatePassword(pwFile)
	if err != nil {
		return err
	}
	created := 0
	for i, u := range store.DemoUsers {
		pw := password
		if i > 0 {
			pw = randomPassword()
		}
		hash, err := server.HashPassword(pw)
		if err != nil {
			return err
		}
		_, err = st.CreateUser(ctx, u.Username, u.DisplayName, hash, i == 0)
		switch {
		case errors.Is(err, store.ErrUsernameTaken):
			if i == 0 { // keep the admin's password in step with the file
				if err := resetPassword(ctx, st, u.Username, password, hash); err != nil {
					return err
				}
			}
			continue
		case err != nil:
			return fmt.Errorf("seed: %w", err)
		}
		created++
	}
	switch {
	case *reset:
		if err := st.ResetDemo(ctx); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, "demo data reset: every wishlist emptied, the forum back to the article's thread")
	case created == len(store.DemoUsers):
		if err := st.SeedDemoForum(ctx); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "seeded %d users and the forum thread \"Help adding items to my wishlist\"\n", created)
	default:
		fmt.Fprintln(e.stdout, "demo data already seeded")
	}
	fmt.Fprintf(e.stdout, "sign in as admin with password %s (kept in %s)\n", password, pwFile)
	return nil
}

// resetPassword sets a user's password to password (hash) unless it is
// that already. A reset ends the user's sessions (migration 00005), and
// `make run` seeds at every start: an admin stays signed in across
// restarts, and is signed out when the password file changes.
func resetPassword(ctx context.Context, st *store.Store, username, password, hash string) error {
	u, err := st.UserByUsername(ctx, username)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	if server.PasswordMatches(u.PasswordHash, password) {
		return nil
	}
	return st.SetPassword(ctx, username, hash)
}

func readOrCreatePassword(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if pw := strings.TrimSpace(string(b)); len(pw) >= 12 {
			return pw, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	pw := randomPassword()
	if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save the admin password: %w", err)
	}
	return pw, nil
}

func randomPassword() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
