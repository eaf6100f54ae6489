package server

import (
	"net/url"
	"strings"
	"testing"
)

// asBrowser reads a Location as a browser resolves it on an http page
// (the WHATWG URL parser): surrounding C0 controls and spaces trimmed,
// tabs and newlines removed anywhere, a backslash taken for a slash.
func asBrowser(loc string) string {
	loc = strings.TrimFunc(loc, func(r rune) bool { return r <= ' ' })
	loc = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(loc)
	return strings.ReplaceAll(loc, `\`, "/")
}

// FuzzSafeNext: whatever next is, where a browser goes after signing in
// is a path on this site.
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{
		"/forum?page=2", "/\t/evil.example", "/\\evil.example", "//evil.example",
		"///evil.example", " //evil.example", "https://evil.example", "/%09/x", "/\n\\/x",
	} {
		f.Add(s)
	}
	// The check must not send everyone home.
	if got := safeNext("/forum/3?page=2#latest"); got != "/forum/3?page=2#latest" {
		f.Fatalf("safeNext dropped a path on this site: %q", got)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := asBrowser(safeNext(next))
		u, err := url.Parse(got)
		if err != nil || !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || u.Scheme != "" || u.Host != "" {
			t.Fatalf("safeNext(%q) leads a browser to %q, off this site", next, got)
		}
	})
}
