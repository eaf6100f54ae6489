package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"net/http"
	"time"

	"quest/internal/dbrouter"
)

// The consistency cookie carries the router's per-session state — the
// identity sticky routing hashes, the last write, the causal token — signed
// with HMAC, so any app instance can serve the session's next request. It
// is sent only when the state advanced.
const (
	consistencyCookie = "quest_consistency"
	consistencyMaxAge = 30 * 24 * time.Hour
	macLen            = 16
)

// sign returns value followed by a truncated HMAC of it, base64url.
func sign(key []byte, purpose string, value []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write(value)
	return base64.RawURLEncoding.EncodeToString(append(value, m.Sum(nil)[:macLen]...))
}

// verify reverses sign; ok is false for anything sign did not write with key.
func verify(key []byte, purpose, s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < macLen {
		return nil, false
	}
	value, mac := b[:len(b)-macLen], b[len(b)-macLen:]
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write(value)
	if !hmac.Equal(mac, m.Sum(nil)[:macLen]) {
		return nil, false
	}
	return value, true
}

// loadState reads the request's consistency state. A missing, forged or
// malformed cookie means an empty state with a new anonymous identity; a
// last write in the future is bounded to now.
func (s *Server) loadState(r *http.Request) *dbrouter.State {
	st := &dbrouter.State{}
	if c, err := r.Cookie(consistencyCookie); err == nil {
		if b, ok := verify(s.key, consistencyCookie, c.Value); ok {
			if decoded, err := dbrouter.DecodeState(b); err == nil {
				*st = decoded
				st.Bound(time.Now())
			}
		}
	}
	if st.Session == 0 {
		var b [8]byte
		rand.Read(b[:])
		st.SetSession(binary.LittleEndian.Uint64(b[:]) | 1<<62) // anonymous ids stay clear of user ids
	}
	return st
}

// consistency puts the session's state and a fresh decision trace in the
// request context. It sits outside scs's LoadAndSave: scs saves a modified
// session on the handler's first write, and this middleware writes its
// cookie and the X-Quest-Served-By header only when the response header is
// written — after that save — so the token includes the session write of a
// sign-in.
func (s *Server) consistency(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.loadState(r)
		ctx := dbrouter.WithState(r.Context(), st)
		cw := &consistencyWriter{ResponseWriter: w, s: s, st: st, trace: dbrouter.TraceFrom(ctx)}
		next.ServeHTTP(cw, r.WithContext(ctx))
		if !cw.wroteHeader && !cw.sealed {
			// Nothing written: the server sends 200 with these headers.
			cw.finishHeaders(http.StatusOK)
		}
	})
}

// consistencyWriter writes the consistency cookie and the served-by header
// with the response header.
type consistencyWriter struct {
	http.ResponseWriter
	s           *Server
	st          *dbrouter.State
	trace       *dbrouter.Trace
	wroteHeader bool
	// sealed: an error page replaced the response (saving the session
	// failed); whatever the handler writes afterwards is dropped.
	sealed bool
}

func (w *consistencyWriter) finishHeaders(code int) {
	h := w.Header()
	served := w.trace.ServedBy()
	if served == "" {
		served = "none"
	}
	h.Set("X-Quest-Served-By", served)
	if route := w.trace.Route(); route != "" {
		h.Set("X-Quest-Route", route)
	}
	if w.trace.Stale() {
		h.Set("X-Quest-Stale", "1")
	}
	// The "may have been lost in a failover" banner, for clients that
	// read headers rather than pages (the lab counts these apart from
	// anomalies).
	if w.trace.Lost() {
		h.Set("X-Quest-Lost", "1")
		if code >= 300 && code < 400 {
			// A form's own reads settle a lost position on the new
			// primary, and its answer is a redirect no browser shows:
			// the page it leads to must still tell (see render).
			w.s.carryLost(w.ResponseWriter)
		}
	}
	if w.st.Changed() {
		// #nosec G124 -- HttpOnly, SameSite=Lax; Secure when served over TLS (--secure-cookies)
		http.SetCookie(w.ResponseWriter, &http.Cookie{
			Name:     consistencyCookie,
			Value:    sign(w.s.key, consistencyCookie, w.st.Encode()),
			Path:     "/",
			MaxAge:   int(consistencyMaxAge.Seconds()),
			HttpOnly: true,
			Secure:   w.s.secure,
			SameSite: http.SameSiteLaxMode,
		})
	}
}

func (w *consistencyWriter) WriteHeader(code int) {
	if w.sealed || w.wroteHeader {
		return
	}
	w.wroteHeader = true
	w.finishHeaders(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *consistencyWriter) Write(b []byte) (int, error) {
	if w.sealed {
		return len(b), nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// seal marks the response as finished: later writes are dropped.
func (w *consistencyWriter) seal() { w.sealed = true }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *consistencyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
