package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"quest/internal/dbrouter"
)

// SessionStore keeps scs sessions in PostgreSQL, through the router, with
// the request's context: its writes advance the session's consistency
// token, and its lookups always route causally whatever the strategy — the
// strategies govern the wishlist and the forum, not whether a user stays
// signed in.
type SessionStore struct {
	r *dbrouter.Router
}

// Sessions returns the session store.
func (s *Store) Sessions() *SessionStore { return &SessionStore{r: s.r} }

// FindCtx returns a session's data if it exists and has not expired.
func (ss *SessionStore) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	var data []byte
	found := false
	err := ss.r.ReadWith(ctx, dbrouter.Causal, dbrouter.Own, func(b *pgx.Batch) {
		data, found = nil, false
		b.Queue(`SELECT data FROM sessions WHERE token = $1 AND expiry > now()`, token).QueryRow(func(row pgx.Row) error {
			err := row.Scan(&data)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			found = err == nil
			return err
		})
	})
	return data, found, wrap("find session", err)
}

// CommitCtx stores a session.
func (ss *SessionStore) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	err := ss.r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO sessions (token, data, expiry) VALUES ($1, $2, $3)
			ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry`, token, b, expiry)
		return err
	})
	return wrap("save session", err)
}

// DeleteCtx removes a session.
func (ss *SessionStore) DeleteCtx(ctx context.Context, token string) error {
	err := ss.r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM sessions WHERE token = $1`, token)
		return err
	})
	return wrap("delete session", err)
}

// Find is FindCtx without a request context (scs.Store).
func (ss *SessionStore) Find(token string) ([]byte, bool, error) {
	return ss.FindCtx(context.Background(), token)
}

// Commit is CommitCtx without a request context (scs.Store).
func (ss *SessionStore) Commit(token string, b []byte, expiry time.Time) error {
	return ss.CommitCtx(context.Background(), token, b, expiry)
}

// Delete is DeleteCtx without a request context (scs.Store).
func (ss *SessionStore) Delete(token string) error {
	return ss.DeleteCtx(context.Background(), token)
}
