package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"quest/internal/dbrouter"
)

// Errors the HTTP layer maps to statuses.
var (
	ErrNotFound      = errors.New("not found")
	ErrUsernameTaken = errors.New("that username is taken")
	// ErrUserGone is returned for a change made in the name of a user
	// whose account no longer exists: a session a replica still held.
	ErrUserGone = errors.New("the account no longer exists")
)

// isForeignKey reports whether err is a violation of the named foreign
// key constraint.
func isForeignKey(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503" && pgErr.ConstraintName == constraint
}

// User is an account.
type User struct {
	ID           int64
	Username     string
	DisplayName  string
	Bio          string
	PasswordHash string
	IsAdmin      bool
	CreatedAt    time.Time
}

// Item is a lightsaber in the catalog.
type Item struct {
	ID          int64
	Name        string
	Wielder     string
	Color       string
	Description string
}

// WishlistLine is one item on a wishlist with how many times it was added;
// LatestEntry is the entry "remove one" deletes.
type WishlistLine struct {
	Item        Item
	Count       int
	LatestEntry int64
	AddedAt     time.Time
}

// Thread is a forum thread.
type Thread struct {
	ID         int64
	Title      string
	AuthorID   int64
	AuthorName string
	CreatedAt  time.Time
	Comments   int
}

// Comment is a forum comment.
type Comment struct {
	ID         int64
	ThreadID   int64
	AuthorID   int64
	AuthorName string
	Body       string
	CreatedAt  time.Time
}

// Store runs Quest's queries through the router, each with its intent.
type Store struct {
	r *dbrouter.Router
}

// New returns a Store over the router.
func New(r *dbrouter.Router) *Store { return &Store{r: r} }

// wrap names the operation an error comes from, keeping the error for
// errors.Is and errors.As (dbrouter.ErrReadOnly, ErrNotFound, …).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// write runs fn in a transaction on the primary.
func (s *Store) write(ctx context.Context, fn func(pgx.Tx) error) error {
	err := s.r.Write(ctx, fn)
	return err
}

const userColumns = `id, username, display_name, bio, password_hash, is_admin, created_at`

func scanUser(row pgx.Row, u *User) error {
	err := row.Scan(&u.ID, &u.Username, &u.DisplayName, &u.Bio, &u.PasswordHash, &u.IsAdmin, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// CreateUser adds an account.
func (s *Store) CreateUser(ctx context.Context, username, displayName, passwordHash string, admin bool) (User, error) {
	var u User
	err := s.write(ctx, func(tx pgx.Tx) error {
		return scanUser(tx.QueryRow(ctx, `INSERT INTO users (username, display_name, password_hash, is_admin)
			VALUES ($1, $2, $3, $4) RETURNING `+userColumns, username, displayName, passwordHash, admin), &u)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return User{}, ErrUsernameTaken
	}
	return u, wrap("create user", err)
}

// SetPassword replaces a user's password hash. It ends the user's
// sessions, on every device: the database does it (migration 00005).
func (s *Store) SetPassword(ctx context.Context, username, passwordHash string) error {
	return wrap("set password", s.write(ctx, func(tx pgx.Tx) error {
		ct, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE username = $1`, username, passwordHash)
		if err == nil && ct.RowsAffected() == 0 {
			return ErrNotFound
		}
		return err
	}))
}

// UserByUsername looks a user up for signing in, on the primary whatever
// the strategy. A causal read is not enough: an account made or a password
// reset by another process (`quest seed`, another device) left no token in
// this browser, and a replica behind it would refuse the new account or,
// worse, still accept the old password. Sign-ins are rare and write the
// session on the primary anyway. With the primary down the router serves
// the read from a replica, and the sign-in then fails read-only.
func (s *Store) UserByUsername(ctx context.Context, username string) (User, error) {
	var u User
	err := s.r.ReadWith(ctx, dbrouter.Primary, dbrouter.Own, func(b *pgx.Batch) {
		u = User{}
		b.Queue(`SELECT `+userColumns+` FROM users WHERE username = $1`, username).QueryRow(func(row pgx.Row) error {
			return scanUser(row, &u)
		})
	})
	return u, wrap("user by name", err)
}

// IsAdmin reports whether a user is an admin now, as the primary says —
// whatever the user's session remembers — or, with the primary down, a
// replica. It returns ErrNotFound for a user who no longer exists.
func (s *Store) IsAdmin(ctx context.Context, id int64) (bool, error) {
	var admin bool
	err := s.r.ReadWith(ctx, dbrouter.Primary, dbrouter.Own, func(b *pgx.Batch) {
		admin = false
		b.Queue(`SELECT is_admin FROM users WHERE id = $1`, id).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&admin)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		})
	})
	return admin, wrap("is admin", err)
}

// User returns a user; intent says whether it is the signed-in user's own
// profile or someone else's.
func (s *Store) User(ctx context.Context, intent dbrouter.Intent, id int64) (User, error) {
	var u User
	err := s.r.Read(ctx, intent, func(b *pgx.Batch) {
		u = User{}
		b.Queue(`SELECT `+userColumns+` FROM users WHERE id = $1`, id).QueryRow(func(row pgx.Row) error {
			return scanUser(row, &u)
		})
	})
	return u, wrap("user", err)
}

// UpdateProfile changes a user's display name and bio; ErrUserGone when
// the user no longer exists.
func (s *Store) UpdateProfile(ctx context.Context, id int64, displayName, bio string) error {
	return wrap("update profile", s.write(ctx, func(tx pgx.Tx) error {
		ct, err := tx.Exec(ctx, `UPDATE users SET display_name = $2, bio = $3 WHERE id = $1`, id, displayName, bio)
		if err == nil && ct.RowsAffected() == 0 {
			return ErrUserGone
		}
		return err
	}))
}

const itemColumns = `i.id, i.name, i.wielder, i.color, i.description`

func scanItem(row pgx.Row, it *Item, extra ...any) error {
	return row.Scan(append([]any{&it.ID, &it.Name, &it.Wielder, &it.Color, &it.Description}, extra...)...)
}

// Catalog lists every item.
func (s *Store) Catalog(ctx context.Context) ([]Item, error) {
	var items []Item
	err := s.r.Read(ctx, dbrouter.Shared, func(b *pgx.Batch) {
		items = nil
		b.Queue(`SELECT ` + itemColumns + ` FROM items i ORDER BY i.id`).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var it Item
				if err := scanItem(rows, &it); err != nil {
					return err
				}
				items = append(items, it)
			}
			return rows.Err()
		})
	})
	return items, wrap("catalog", err)
}

// Wishlist returns a user's wishlist, one line per item with its count.
// intent is Own for the signed-in user's own list.
func (s *Store) Wishlist(ctx context.Context, intent dbrouter.Intent, userID int64) ([]WishlistLine, error) {
	var lines []WishlistLine
	err := s.r.Read(ctx, intent, func(b *pgx.Batch) {
		lines = nil
		b.Queue(`SELECT `+itemColumns+`, count(*), max(w.id), max(w.created_at)
			FROM wishlist_entries w JOIN items i ON i.id = w.item_id
			WHERE w.user_id = $1
			GROUP BY i.id ORDER BY max(w.created_at) DESC, i.id`, userID).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var l WishlistLine
				if err := scanItem(rows, &l.Item, &l.Count, &l.LatestEntry, &l.AddedAt); err != nil {
					return err
				}
				lines = append(lines, l)
			}
			return rows.Err()
		})
	})
	return lines, wrap("wishlist", err)
}

// AddToWishlist adds an item to a user's wishlist (again, if it is there).
func (s *Store) AddToWishlist(ctx context.Context, userID, itemID int64) error {
	err := s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO wishlist_entries (user_id, item_id) VALUES ($1, $2)`, userID, itemID)
		return err
	})
	switch {
	case isForeignKey(err, "wishlist_entries_user_id_fkey"):
		err = ErrUserGone
	case isForeignKey(err, "wishlist_entries_item_id_fkey"):
		err = ErrNotFound
	}
	return wrap("add to wishlist", err)
}

// RemoveWishlistEntry deletes one of the user's own entries. An entry of
// another user is "not found": nobody can touch another's wishlist.
func (s *Store) RemoveWishlistEntry(ctx context.Context, userID, entryID int64) error {
	return wrap("remove wishlist entry", s.write(ctx, func(tx pgx.Tx) error {
		ct, err := tx.Exec(ctx, `DELETE FROM wishlist_entries WHERE id = $1 AND user_id = $2`, entryID, userID)
		if err == nil && ct.RowsAffected() == 0 {
			return ErrNotFound
		}
		return err
	}))
}

// Page sizes.
const (
	ThreadsPerPage  = 20
	CommentsPerPage = 50
)

// Threads returns a page (1-based) of threads, newest first, and the
// number of pages.
func (s *Store) Threads(ctx context.Context, page int) ([]Thread, int, error) {
	var threads []Thread
	var total int
	err := s.r.Read(ctx, dbrouter.Shared, func(b *pgx.Batch) {
		threads, total = nil, 0
		b.Queue(`SELECT t.id, t.title, t.author_id, u.display_name, t.created_at,
				(SELECT count(*) FROM comments c WHERE c.thread_id = t.id)
			FROM threads t JOIN users u ON u.id = t.author_id
			ORDER BY t.created_at DESC, t.id DESC LIMIT $1 OFFSET $2`,
			ThreadsPerPage, (page-1)*ThreadsPerPage).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var t Thread
				if err := rows.Scan(&t.ID, &t.Title, &t.AuthorID, &t.AuthorName, &t.CreatedAt, &t.Comments); err != nil {
					return err
				}
				threads = append(threads, t)
			}
			return rows.Err()
		})
		b.Queue(`SELECT count(*) FROM threads`).QueryRow(func(row pgx.Row) error { return row.Scan(&total) })
	})
	return threads, pages(total, ThreadsPerPage), wrap("threads", err)
}

// Thread returns a thread with a page (1-based) of its comments, oldest
// first, and the number of pages.
func (s *Store) Thread(ctx context.Context, id int64, page int) (Thread, []Comment, int, error) {
	var t Thread
	var comments []Comment
	err := s.r.Read(ctx, dbrouter.Shared, func(b *pgx.Batch) {
		t, comments = Thread{}, nil
		b.Queue(`SELECT t.id, t.title, t.author_id, u.display_name, t.created_at,
				(SELECT count(*) FROM comments c WHERE c.thread_id = t.id)
			FROM threads t JOIN users u ON u.id = t.author_id WHERE t.id = $1`, id).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&t.ID, &t.Title, &t.AuthorID, &t.AuthorName, &t.CreatedAt, &t.Comments)
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return err
		})
		b.Queue(`SELECT c.id, c.thread_id, c.author_id, u.display_name, c.body, c.created_at
			FROM comments c JOIN users u ON u.id = c.author_id
			WHERE c.thread_id = $1 ORDER BY c.id LIMIT $2 OFFSET $3`,
			id, CommentsPerPage, (page-1)*CommentsPerPage).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				var c Comment
				if err := rows.Scan(&c.ID, &c.ThreadID, &c.AuthorID, &c.AuthorName, &c.Body, &c.CreatedAt); err != nil {
					return err
				}
				comments = append(comments, c)
			}
			return rows.Err()
		})
	})
	if err != nil {
		return Thread{}, nil, 0, wrap("thread", err)
	}
	return t, comments, pages(t.Comments, CommentsPerPage), nil
}

// CreateThread starts a thread with its first comment.
func (s *Store) CreateThread(ctx context.Context, authorID int64, title, body string) (int64, error) {
	var id int64
	err := s.write(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `INSERT INTO threads (author_id, title) VALUES ($1, $2) RETURNING id`, authorID, title).Scan(&id); err != nil {
			if isForeignKey(err, "threads_author_id_fkey") {
				return ErrUserGone
			}
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO comments (thread_id, author_id, body) VALUES ($1, $2, $3)`, id, authorID, body)
		return err
	})
	return id, wrap("create thread", err)
}

// AddComment appends a comment to a thread and returns the page it is on.
func (s *Store) AddComment(ctx context.Context, threadID, authorID int64, body string) (page int, err error) {
	err = s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO comments (thread_id, author_id, body) VALUES ($1, $2, $3)`, threadID, authorID, body)
		switch {
		case isForeignKey(err, "comments_author_id_fkey"):
			return ErrUserGone
		case isForeignKey(err, "comments_thread_id_fkey"):
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM comments WHERE thread_id = $1`, threadID).Scan(&n); err != nil {
			return err
		}
		page = pages(n, CommentsPerPage)
		return nil
	})
	return page, wrap("add comment", err)
}

func pages(n, per int) int {
	if n <= 0 {
		return 1
	}
	return (n + per - 1) / per
}

// DeleteExpiredSessions removes sessions past their expiry.
func (s *Store) DeleteExpiredSessions(ctx context.Context) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx pgx.Tx) error {
		ct, err := tx.Exec(ctx, `DELETE FROM sessions WHERE expiry < now()`)
		n = ct.RowsAffected()
		return err
	})
	return n, wrap("delete expired sessions", err)
}
