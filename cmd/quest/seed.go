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

// demoUsers are created by quest seed; the first is the admin.
var demoUsers = []struct{ username, display string }{
	{"admin", "Quest Admin"},
	{"luke", "Luke"},
	{"leia", "Leia"},
	{"han", "Han"},
}

func (e environment) seed(ctx context.Context, args []string) error {
	fs := e.newFlags("seed", "seed [--database-url URL] [--dir D]")
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
	ids := map[string]int64{}
	created := 0
	for i, u := range demoUsers {
		pw := password
		if i > 0 {
			pw = randomPassword()
		}
		hash, err := server.HashPassword(pw)
		if err != nil {
			return err
		}
		user, err := st.CreateUser(ctx, u.username, u.display, hash, i == 0)
		switch {
		case errors.Is(err, store.ErrUsernameTaken):
			if i == 0 { // keep the admin's password in step with the file
				if err := st.SetPassword(ctx, u.username, hash); err != nil {
					return err
				}
			}
			continue
		case err != nil:
			return fmt.Errorf("seed: %w", err)
		}
		ids[u.username] = user.ID
		created++
	}
	if created == len(demoUsers) {
		// The article's help-forum thread, its comments in the order they
		// were written; under lag they can appear out of order.
		id, err := st.CreateThread(ctx, ids["luke"], "Help adding items to my wishlist",
			"I added a lightsaber to my wishlist and it wasn't there. So I added it again. Now I have two?")
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		if _, err := st.AddComment(ctx, id, ids["leia"], "What's up with the site today - I keep getting duplicates in my wishlist??"); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		if _, err := st.AddComment(ctx, id, ids["han"], "There's nothing wrong with the site ya geezer"); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		fmt.Fprintf(e.stdout, "seeded %d users and the forum thread \"Help adding items to my wishlist\"\n", created)
	} else {
		fmt.Fprintln(e.stdout, "demo data already seeded")
	}
	fmt.Fprintf(e.stdout, "sign in as admin with password %s (kept in %s)\n", password, pwFile)
	return nil
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
