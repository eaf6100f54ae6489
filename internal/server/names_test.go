package server

import "testing"

func TestNameRules(t *testing.T) {
	for _, tt := range []struct {
		s             string
		visible, bidi bool
		staff         bool
	}{
		{s: "Luke", visible: true},
		{s: "李小龍", visible: true},
		{s: "محمد", visible: true},
		{s: "🚀", visible: true},
		{s: "\u200b\u200c\u200d\u2060\ufeff"},
		{s: "\u00a0\u2003\u3000"},
		{s: "\u0301\u0308"}, // combining marks with nothing to combine with
		{s: "a\u202eb", visible: true, bidi: true},
		{s: "\u2066\u2069", bidi: true},
		{s: "\u200f", bidi: true},
		{s: "Quest Admin", visible: true, staff: true},
		{s: "quest_ADMIN", visible: true, staff: true},
		{s: "Quest\u200b\u00a0Admin", visible: true, staff: true},
		{s: "Admin Fan", visible: true},
	} {
		if got := visible(tt.s); got != tt.visible {
			t.Errorf("visible(%+q) = %v", tt.s, got)
		}
		bidi := false
		for _, r := range tt.s {
			bidi = bidi || bidiControl(r)
		}
		if bidi != tt.bidi {
			t.Errorf("%+q has bidirectional controls: %v, want %v", tt.s, bidi, tt.bidi)
		}
		if got := staffName(tt.s); got != tt.staff {
			t.Errorf("staffName(%+q) = %v", tt.s, got)
		}
	}
}
