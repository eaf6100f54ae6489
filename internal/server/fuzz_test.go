package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzVerify: a cookie value decodes only when it was signed with the key
// and purpose; nothing panics.
func FuzzVerify(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	f.Add(sign(key, "p", []byte("hello")), "p")
	f.Add("", "p")
	f.Add("AAAA", "quest_consistency")
	f.Add("!!not base64!!", "quest_flash")
	f.Fuzz(func(t *testing.T, value, purpose string) {
		if b, ok := verify(key, purpose, value); ok && sign(key, purpose, b) != value {
			t.Fatalf("verified %q, which sign would not have written", value)
		}
		if b, ok := verify(key, purpose, sign(key, purpose, []byte(value))); !ok || string(b) != value {
			t.Fatalf("a signed value did not verify")
		}
		if purpose != "other" {
			if _, ok := verify(key, "other", sign(key, purpose, []byte(value))); ok {
				t.Fatalf("a value signed for %q verified for another purpose", purpose)
			}
		}
	})
}

// FuzzParseForm: any body either parses into text fields — valid UTF-8,
// no NUL — or is refused; the validators never panic.
func FuzzParseForm(f *testing.F) {
	f.Add("title=hello&body=world")
	f.Add("body=%00")
	f.Add("body=%ff%fe")
	f.Add("title=" + strings.Repeat("x", 300))
	f.Add("item_id=-1&item_id=99999999999999999999")
	f.Add("%zz=1&=&&&")
	f.Add("body=O%27Brien%3Cscript%3E")
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/forum", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		form, err := parseForm(r)
		if err != nil {
			return
		}
		for k, vs := range form.Values {
			for _, v := range vs {
				if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
					t.Fatalf("field %q kept %q", k, v)
				}
			}
		}
		title := form.text("title", "Title", 1, 200)
		if form.Errors["title"] == "" && (utf8.RuneCountInString(title) < 1 || utf8.RuneCountInString(title) > 200) {
			t.Fatalf("title %q passed validation", title)
		}
		if id, ok := parseID(form.Get("item_id")); ok && id <= 0 {
			t.Fatalf("parseID accepted %d", id)
		}
	})
}
