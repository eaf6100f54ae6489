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
//
// Each row records whose session it is, so the database ends a user's
// sessions when the account is deleted or its password or admin right
// changes (migration 00005).
type SessionStore struct {
	r      *dbrouter.Router
	userOf func(data []byte) int64
}

// Sessions returns the session store. userOf tells whose session some
// encoded session data is (0: nobody's, a visitor's); the HTTP layer,
// which encodes it, knows how to read it.
func (s *Store) Sessions(userOf func(data []byte) int64) *SessionStore {
	return &SessionStore{r: s.r, userOf: userOf}
}

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

// CommitCtx stores a session. It returns ErrUserGone when the session is
// a user's whose account no longer exists (a replica behind the deletion
// still found the session).
//
// A request that loaded the session before the user's sessions were ended
// and changes it afterwards stores it again: the window is one request,
// and only a strategy choice changes a signed-in session.
func (ss *SessionStore) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	var user *int64
	if ss.userOf != nil {
		if id := ss.userOf(b); id != 0 {
			user = &id
		}
	}
	err := ss.r.Write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO sessions (token, data, expiry, user_id) VALUES ($1, $2, $3, $4)
			ON CONFLICT (token) DO UPDATE SET data = EXCLUDED.data, expiry = EXCLUDED.expiry, user_id = EXCLUDED.user_id`, token, b, expiry, user)
		return err
	})
	if isForeignKey(err, "sessions_user_id_fkey") {
		err = ErrUserGone
	}
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
