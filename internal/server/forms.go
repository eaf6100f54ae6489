package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// errBadForm is returned for a body that is not a readable form.
var errBadForm = errors.New("unreadable form")

// form holds a submitted form's values and the errors found in them, so a
// page can show each error next to its field with the input kept.
type form struct {
	Values url.Values
	Errors map[string]string
}

func newForm() *form { return &form{Values: url.Values{}, Errors: map[string]string{}} }

// Get returns a field's submitted value.
func (f *form) Get(field string) string { return f.Values.Get(field) }

// Valid reports whether no field has an error.
func (f *form) Valid() bool { return len(f.Errors) == 0 }

// fail records an error for a field, keeping the first one.
func (f *form) fail(field, msg string) {
	if _, ok := f.Errors[field]; !ok {
		f.Errors[field] = msg
	}
}

// parseForm reads a POSTed form. Bodies over the limit, invalid UTF-8 and
// NUL bytes (PostgreSQL rejects them in text) are refused.
func parseForm(r *http.Request) (*form, error) {
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errBadForm, err)
	}
	for _, vs := range r.PostForm {
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return nil, errBadForm
			}
		}
	}
	return &form{Values: r.PostForm, Errors: map[string]string{}}, nil
}

// text validates a free-text field's length in characters, after
// trimming surrounding space, and returns it. A required field needs a
// character a reader can see: zero-width spaces alone are nothing.
func (f *form) text(field, label string, min, max int) string {
	v := strings.TrimSpace(f.Values.Get(field))
	n := utf8.RuneCountInString(v)
	switch {
	case n == 0 && min > 0:
		f.fail(field, label+" is required.")
	case n < min:
		f.fail(field, fmt.Sprintf("%s needs at least %d characters.", label, min))
	case n > max:
		f.fail(field, fmt.Sprintf("%s can be at most %d characters.", label, max))
	case min > 0 && !visible(v):
		f.fail(field, label+" needs a character you can see: a letter, a digit or a symbol.")
	}
	return v
}

// name validates a name or a title that others read beside content that
// is not its author's: text, and no bidirectional controls, which could
// make it, or the text after it, read in another order.
func (f *form) name(field, label string, min, max int) string {
	v := f.text(field, label, min, max)
	if strings.ContainsFunc(v, bidiControl) {
		f.fail(field, label+" cannot hold bidirectional control characters (they make text display in another order than written).")
	}
	return v
}

// parseID reads a positive integer id, from a path or a form.
func parseID(s string) (int64, bool) {
	id, err := strconv.ParseInt(s, 10, 64)
	return id, err == nil && id > 0
}

// pageParam reads ?page=N, defaulting to 1; ok is false for garbage.
func pageParam(r *http.Request) (int, bool) {
	p := r.URL.Query().Get("page")
	if p == "" {
		return 1, true
	}
	n, err := strconv.Atoi(p)
	return n, err == nil && n >= 1 && n <= 100000
}
