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

// lostCookie carries "a change may have been lost in a failover" from a
// response the browser does not show (a form's redirect) to the page it
// shows next. It holds no data: forging it only shows oneself the banner.
const lostCookie = "quest_lost"

// carryLost makes the next rendered page say a change may have been lost.
func (s *Server) carryLost(w http.ResponseWriter) {
	// #nosec G124 -- HttpOnly, SameSite=Lax; Secure when served over TLS (--secure-cookies)
	http.SetCookie(w, &http.Cookie{Name: lostCookie, Value: "1", Path: "/", MaxAge: 120,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// takeLost reports whether a loss was carried to this page, and clears it.
func (s *Server) takeLost(w http.ResponseWriter, r *http.Request) bool {
	if _, err := r.Cookie(lostCookie); err != nil {
		return false
	}
	// #nosec G124 -- deletes the cookie above
	http.SetCookie(w, &http.Cookie{Name: lostCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
	return true
}
