package server

import "net/http"

// Flash messages live in a short-lived signed cookie of their own, so
// showing one never writes the session.
const flashCookie = "quest_flash"

// flash sets a message for the next page the browser shows.
func (s *Server) flash(w http.ResponseWriter, msg string) {
	// #nosec G124 -- HttpOnly, SameSite=Lax; Secure when served over TLS (--secure-cookies)
	http.SetCookie(w, &http.Cookie{
		Name: flashCookie, Value: sign(s.key, flashCookie, []byte(msg)), Path: "/",
		MaxAge: 60, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
	})
}

// takeFlash returns the pending message, if any, and clears it.
func (s *Server) takeFlash(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return ""
	}
	// #nosec G124 -- deletes the cookie above
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
	msg, ok := verify(s.key, flashCookie, c.Value)
	if !ok {
		return ""
	}
	return string(msg)
}
