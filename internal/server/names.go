package server

import (
	"strings"
	"unicode"

	"quest/internal/store"
)

// What other users read — display names, thread titles, posts — must show
// something, and names and titles must not rearrange the text around them
// or pass for the staff's.

// visible reports whether s has a character a reader can see: a letter, a
// digit, punctuation or a symbol. Spaces of every width, format characters
// (zero-width spaces, joiners, byte order marks) and lone combining marks
// show nothing.
func visible(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S)
	})
}

// bidiControl reports whether r is an explicit bidirectional formatting
// character: embeddings, overrides, isolates and marks, which make text
// display in another order than it was written ("evil\u202Egnp.exe" shows
// as "evilexe.png"). Right-to-left scripts need none of them to display.
func bidiControl(r rune) bool {
	switch {
	case r == '\u061C', r == '\u200E', r == '\u200F': // ALM, LRM, RLM
		return true
	case r >= '\u202A' && r <= '\u202E': // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= '\u2066' && r <= '\u2069': // LRI, RLI, FSI, PDI
		return true
	}
	return false
}

// nameKey folds a name to what a reader tells apart: letters and digits,
// lower case. "Quest Admin", "quest_admin" and "QUEST\u200BADMIN" fold
// alike. Look-alike letters from other scripts do not: that takes a
// confusables table.
func nameKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// staffNames are the folded names only an admin may take as a display
// name: the seeded admin's display name and username, and the words that
// read as a role on this site.
var staffNames = func() map[string]bool {
	m := map[string]bool{}
	for _, s := range []string{store.DemoUsers[0].DisplayName, store.DemoUsers[0].Username,
		"Administrator", "Moderator", "Staff", "Quest", "Quest Staff", "Quest Team"} {
		m[nameKey(s)] = true
	}
	return m
}()

// staffName reports whether a display name reads as the staff's.
func staffName(s string) bool { return staffNames[nameKey(s)] }
