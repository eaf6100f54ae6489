package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// DemoUser is an account `quest seed` creates; the first is the admin.
type DemoUser struct{ Username, DisplayName string }

// DemoUsers are the seeded accounts, the admin first.
var DemoUsers = []DemoUser{
	{"admin", "Quest Admin"},
	{"luke", "Luke"},
	{"leia", "Leia"},
	{"han", "Han"},
}

// The article's help-forum thread, its comments in the order they were
// written: under lag they can appear out of order.
const (
	demoThreadAuthor = "luke"
	demoThreadTitle  = "Help adding items to my wishlist"
	demoThreadBody   = "I added a lightsaber to my wishlist and it wasn't there. So I added it again. Now I have two?"
)

var demoComments = []struct{ author, body string }{
	{"leia", "What's up with the site today - I keep getting duplicates in my wishlist??"},
	{"han", "There's nothing wrong with the site ya geezer"},
}

// ErrNoDemoUsers is returned when the seeded users the demo data belongs
// to are missing: `quest seed` creates them.
var ErrNoDemoUsers = errors.New("the demo users are missing: run quest seed first")

// SeedDemoForum writes the article's thread and its comments, by the
// seeded users, in one transaction.
func (s *Store) SeedDemoForum(ctx context.Context) error {
	return wrap("seed the forum", s.write(ctx, func(tx pgx.Tx) error { return seedForum(ctx, tx) }))
}

func seedForum(ctx context.Context, tx pgx.Tx) error {
	id := func(username string) (int64, error) {
		var id int64
		err := tx.QueryRow(ctx, `SELECT id FROM users WHERE username = $1`, username).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("%w (no %s)", ErrNoDemoUsers, username)
		}
		return id, err
	}
	author, err := id(demoThreadAuthor)
	if err != nil {
		return err
	}
	var thread int64
	if err := tx.QueryRow(ctx, `INSERT INTO threads (author_id, title) VALUES ($1, $2) RETURNING id`, author, demoThreadTitle).Scan(&thread); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO comments (thread_id, author_id, body) VALUES ($1, $2, $3)`, thread, author, demoThreadBody); err != nil {
		return err
	}
	for _, c := range demoComments {
		uid, err := id(c.author)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO comments (thread_id, author_id, body) VALUES ($1, $2, $3)`, thread, uid, c.body); err != nil {
			return err
		}
	}
	return nil
}

// ResetDemo puts the shared demo data back as `quest seed` left it: every
// wishlist emptied, the forum back to the article's thread alone. Accounts
// stay — workshop attendees keep theirs, and their sessions.
func (s *Store) ResetDemo(ctx context.Context) error {
	return wrap("reset the demo data", s.write(ctx, func(tx pgx.Tx) error {
		for _, stmt := range []string{`DELETE FROM wishlist_entries`, `DELETE FROM comments`, `DELETE FROM threads`} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return seedForum(ctx, tx)
	}))
}
