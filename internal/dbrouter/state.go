package dbrouter

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Token is a position in one cluster's WAL history: the system identifier
// and timeline tell clusters and histories apart, so a token from another
// one counts as empty. Tokens only grow.
type Token struct {
	SystemID uint64
	Timeline uint32
	LSN      uint64
}

// UnknownLSN is the token position of a committed write whose WAL position
// could not be read: the primary went away between COMMIT and the position
// query. No replica can vouch for it, so the session's causal reads go to
// the primary — or carry the staleness banner while it is down — until a
// read there replaces it with the primary's flush position, which is at
// least the commit's. As the largest position it survives every merge.
const UnknownLSN = math.MaxUint64

// IsZero reports whether the token holds no position.
func (t Token) IsZero() bool { return t.LSN == 0 }

// State is what the router knows of one session's consistency needs. The
// HTTP layer keeps it in a signed cookie, puts a pointer to it in each
// request's context, and writes the cookie back when it advanced. It is
// never kept only in process memory, so any app instance can serve the
// session next.
//
// The guarantees it carries hold for a client that sends its requests one
// after another. Two overlapping requests of one browser each start from
// the same cookie, and the response that arrives last sets it: a read that
// finishes after a write can put back the token from before the write.
// Nothing merges them — the server never holds both states at once — and
// another device of the same user has a cookie of its own.
type State struct {
	// Session is the identity that sticky routing hashes: a user's id, or a
	// random id for an anonymous visitor.
	Session uint64
	// LastWrite is when the session last committed a write (timed).
	LastWrite time.Time
	// Token is the WAL position the session has written or seen (causal).
	Token Token

	changed bool
}

// SetSession sets the identity sticky routing hashes: a user's id when
// they sign in, a random id for an anonymous visitor.
func (s *State) SetSession(id uint64) {
	if s.Session != id {
		s.Session = id
		s.changed = true
	}
}

// Bound keeps a decoded state within what the router could have written
// by now. A last write later than now — only a cookie forged with the
// signing key, or an app instance whose clock runs ahead, claims one —
// becomes now, and the state counts as changed so its cookie is written
// back so: the session reads from the primary for one timed delay, as
// after a real write, rather than for as long as the claim says.
func (s *State) Bound(now time.Time) {
	if s.LastWrite.After(now) {
		s.LastWrite = now
		s.changed = true
	}
}

// Changed reports whether the state advanced since it was decoded.
func (s *State) Changed() bool { return s != nil && s.changed }

const stateVersion = 1

// ErrBadState is returned by DecodeState for bytes it did not write.
var ErrBadState = errors.New("dbrouter: malformed consistency state")

// Encode returns the state as compact bytes: a version, the session id,
// the last write in Unix milliseconds, and the token.
func (s State) Encode() []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+12)
	b = append(b, stateVersion)
	b = binary.AppendUvarint(b, s.Session)
	var ms int64
	if !s.LastWrite.IsZero() {
		ms = s.LastWrite.UnixMilli()
	}
	b = binary.AppendVarint(b, ms)
	if !s.Token.IsZero() {
		b = binary.BigEndian.AppendUint64(b, s.Token.SystemID)
		b = binary.BigEndian.AppendUint32(b, s.Token.Timeline)
		b = binary.AppendUvarint(b, s.Token.LSN)
	}
	return b
}

// DecodeState reads what Encode wrote.
func DecodeState(b []byte) (State, error) {
	var s State
	if len(b) == 0 || b[0] != stateVersion {
		return State{}, ErrBadState
	}
	b = b[1:]
	var n int
	if s.Session, n = binary.Uvarint(b); n <= 0 {
		return State{}, ErrBadState
	}
	b = b[n:]
	ms, n := binary.Varint(b)
	if n <= 0 || ms < 0 {
		return State{}, ErrBadState
	}
	b = b[n:]
	if ms > 0 {
		s.LastWrite = time.UnixMilli(ms)
	}
	if len(b) == 0 {
		return s, nil
	}
	if len(b) < 13 {
		return State{}, ErrBadState
	}
	s.Token.SystemID = binary.BigEndian.Uint64(b)
	s.Token.Timeline = binary.BigEndian.Uint32(b[8:])
	if s.Token.LSN, n = binary.Uvarint(b[12:]); n <= 0 || 12+n != len(b) || s.Token.LSN == 0 {
		return State{}, ErrBadState
	}
	return s, nil
}

type stateKey struct{}

// WithState returns a context carrying a pointer to the session's state;
// the router reads and advances it.
func WithState(ctx context.Context, s *State) context.Context {
	return context.WithValue(ctx, stateKey{}, s)
}

// StateFrom returns the state in ctx, or nil.
func StateFrom(ctx context.Context) *State {
	s, _ := ctx.Value(stateKey{}).(*State)
	return s
}
