package server

import "net/http"

// contentSecurityPolicy lets a page load what Quest's pages use and
// nothing else: the stylesheet, the lab's script (which fetches
// /lab/state) and the icon, all from Quest itself; forms post back to
// Quest. No inline script or style attribute, no eval, no plugins, no
// <base> that moves relative links, and no site may frame a page (which
// X-Frame-Options says again for browsers that ignore frame-ancestors).
// The lab draws its charts through the DOM and sets colours through
// CSSOM, which style-src does not govern.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// securityHeaders are sent with every response: pages, error pages,
// static files, JSON and metrics alike. Referrer-Policy same-origin keeps
// page addresses (a thread's id, a ?next=) from other sites while
// keeping the Origin header on Quest's own form posts, which the
// cross-origin check reads.
var securityHeaders = [...][2]string{
	{"Content-Security-Policy", contentSecurityPolicy},
	{"X-Frame-Options", "DENY"},
	{"X-Content-Type-Options", "nosniff"},
	{"Referrer-Policy", "same-origin"},
}

// secureHeaders sets the security headers before anything else runs, so
// a refusal, a 404 or a panic page carries them too.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		for _, kv := range securityHeaders {
			h.Set(kv[0], kv[1])
		}
		next.ServeHTTP(w, r)
	})
}

// noStore keeps pages out of every cache: a page names who is signed in,
// shows their session's positions and, on /wishlist, /profile and the
// lab, their own data — none of which a shared cache may keep, nor a
// browser store on disk for the next user of the machine.
func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, no-store")
		next.ServeHTTP(w, r)
	})
}

// keptHeader reports whether an error page that replaces a response
// (sessionError) keeps the header name from it: these describe every
// response, whatever it says.
func keptHeader(name string) bool {
	if name == "Cache-Control" {
		return true
	}
	for _, kv := range securityHeaders {
		if kv[0] == name {
			return true
		}
	}
	return false
}
