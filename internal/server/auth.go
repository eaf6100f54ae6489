package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"quest/internal/dbrouter"
	"quest/internal/store"
)

// usernameRE is the rule every username follows (the users table checks
// it too); usernameRule says it to someone signing in.
var usernameRE = regexp.MustCompile(`^[a-z0-9_]{3,32}$`)

const usernameRule = "Usernames are 3–32 lowercase letters, digits or underscores."

// dummyHash is compared against when a username does not exist, so a
// sign-in takes as long whether or not the account exists. It is made on
// first use: every subcommand links this package, few sign anyone in.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("quest-dummy-password"), bcrypt.DefaultCost)
	return h
})

// HashPassword hashes a password for storage.
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}

// PasswordMatches reports whether password is the one hash was made from.
func PasswordMatches(hash, password string) bool {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil
}

type authPage struct {
	Form *form
	Next string
}

func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "signup.html", authPage{Form: newForm()})
}

func (s *Server) handleSignupPost(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	username := strings.ToLower(strings.TrimSpace(f.Get("username")))
	if !usernameRE.MatchString(username) {
		f.fail("username", "Use 3–32 lowercase letters, digits or underscores.")
	}
	display := f.name("display_name", "Display name", 1, 64)
	if staffName(display) { // nobody signs up as an admin
		f.fail("display_name", reservedName)
	}
	password := f.Get("password")
	if len(password) < 8 || len(password) > 72 {
		f.fail("password", "Use 8 to 72 characters.")
	}
	if !f.Valid() {
		s.render(w, r, http.StatusUnprocessableEntity, "signup.html", authPage{Form: f})
		return
	}
	// Counted once the form is valid, before the bcrypt and the row it
	// costs.
	if !s.signups.admit(addrKey(r), time.Now()) {
		s.serverError(w, r, problem(http.StatusTooManyRequests, "Too many new accounts from your address for now. Try again in a few minutes."))
		return
	}
	hash, err := HashPassword(password)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	u, err := s.store.CreateUser(r.Context(), username, display, hash, false)
	if errors.Is(err, store.ErrUsernameTaken) {
		f.fail("username", "That username is taken; pick another.")
		s.render(w, r, http.StatusUnprocessableEntity, "signup.html", authPage{Form: f})
		return
	}
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	if err := s.signIn(r.Context(), u); err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Welcome to Quest, "+u.DisplayName+"! Pick a lightsaber.")
	http.Redirect(w, r, "/catalog", http.StatusSeeOther)
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login.html", authPage{Form: newForm(), Next: safeNext(r.URL.Query().Get("next"))})
}

func (s *Server) handleLoginPost(w http.ResponseWriter, r *http.Request) {
	f, err := parseForm(r)
	if err != nil {
		s.serverError(w, r, err)
		return
	}
	next := safeNext(f.Get("next"))
	username := strings.ToLower(strings.TrimSpace(f.Get("username")))
	if !usernameRE.MatchString(username) {
		// No account has such a name, so no database read, no bcrypt and
		// no limiter entry: a 60 KB "username" leaves nothing behind.
		f.fail("username", usernameRule)
		f.Values.Del("password")
		s.render(w, r, http.StatusUnprocessableEntity, "login.html", authPage{Form: f, Next: next})
		return
	}
	addr := addrKey(r)
	wait, ok := s.logins.admit(username, addr, time.Now())
	if !ok {
		s.serverError(w, r, errRateLimited)
		return
	}
	if wait > 0 {
		// The account is under attack: slow every attempt on it down,
		// its owner's too, rather than refuse them.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client left: there is no one to answer
		}
	}
	u, err := s.store.UserByUsername(r.Context(), username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.serverError(w, r, err)
		return
	}
	hash := dummyHash()
	if err == nil {
		hash = []byte(u.PasswordHash)
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(f.Get("password"))) != nil || err != nil {
		s.logins.failed(username, time.Now())
		f.fail("password", "Wrong username or password.")
		f.Values.Del("password")
		s.render(w, r, http.StatusUnauthorized, "login.html", authPage{Form: f, Next: next})
		return
	}
	s.logins.succeeded(username, addr, time.Now())
	if err := s.signIn(r.Context(), u); err != nil {
		s.serverError(w, r, err)
		return
	}
	s.flash(w, "Signed in as "+u.Username+".")
	http.Redirect(w, r, next, http.StatusSeeOther) // #nosec G710 -- safeNext keeps it on this site
}

// signIn renews the session token (no fixation), records the user in the
// session, and makes the user's id the identity sticky routing hashes.
func (s *Server) signIn(ctx context.Context, u store.User) error {
	if err := s.sessions.RenewToken(ctx); err != nil {
		return err
	}
	s.sessions.Put(ctx, keyUserID, u.ID)
	s.sessions.Put(ctx, keyUsername, u.Username)
	s.sessions.Put(ctx, keyAdmin, u.IsAdmin)
	if st := dbrouter.StateFrom(ctx); st != nil {
		st.SetSession(uint64(u.ID)) // #nosec G115 -- ids are positive (identity column)
	}
	return nil
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if currentUser(r) == nil {
		// Nobody to sign out. Renewing the token would store a fresh
		// session row on the primary for every anonymous request.
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	ctx := r.Context()
	if err := s.sessions.RenewToken(ctx); err != nil {
		s.serverError(w, r, err)
		return
	}
	for _, k := range []string{keyUserID, keyUsername, keyAdmin, keyStrategy} {
		s.sessions.Remove(ctx, k)
	}
	s.flash(w, "Signed out. May the Force be with you.")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// safeNext keeps a post-sign-in redirect on this site: a path, with no
// scheme and no host, else the catalog. Browsers remove tabs and newlines
// from a Location and read a backslash as a slash, so "/\t/evil.example"
// and "/\\evil.example" mean "//evil.example", another site: a value with a
// control character or a backslash is refused whole, as is any that
// starts with two slashes (browsers take "///host" as a host too).
func safeNext(next string) string {
	const home = "/catalog"
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") ||
		strings.ContainsRune(next, '\\') || strings.ContainsFunc(next, unicode.IsControl) {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return home
	}
	return next
}

// clientAddr is the request's remote IP (no proxy headers are trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
