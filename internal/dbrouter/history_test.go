package dbrouter

import "testing"

func TestParseTimelineHistory(t *testing.T) {
	file := "1\t0/3000060\tno recovery target specified\n\n2\t1/A0\tafter a switchover\n"
	got := parseTimelineHistory(file)
	if len(got) != 2 || got[1] != 0x3000060 || got[2] != 1<<32|0xA0 {
		t.Fatalf("parsed %v", got)
	}
}

// TestResolveAcrossTimelines: a token on an ancestor timeline is kept at
// or below the switch point, lost beyond it, and empty when the ancestor's
// switch point or the cluster is unknown.
func TestResolveAcrossTimelines(t *testing.T) {
	r := &Router{}
	r.history.Store(&history{systemID: 7, timeline: 3, ends: map[uint32]uint64{1: 100, 2: 200}})
	for _, tt := range []struct {
		tok  Token
		want Token
		lost bool
	}{
		{Token{7, 3, 250}, Token{7, 3, 250}, false},
		{Token{7, 2, 200}, Token{7, 3, 200}, false},
		{Token{7, 1, 50}, Token{7, 3, 50}, false},
		{Token{7, 2, 201}, Token{7, 3, UnknownLSN}, true},
		{Token{7, 1, UnknownLSN}, Token{7, 3, UnknownLSN}, true},
		{Token{7, 4, 10}, Token{}, false},
		{Token{8, 3, 10}, Token{}, false},
	} {
		got, lost := r.resolve(&State{Token: tt.tok})
		if got != tt.want || lost != tt.lost {
			t.Errorf("resolve(%+v) = %+v, %v; want %+v, %v", tt.tok, got, lost, tt.want, tt.lost)
		}
	}
	r.history.Store(&history{systemID: 7, timeline: 3, ends: map[uint32]uint64{2: 200}})
	if got, lost := r.resolve(&State{Token: Token{7, 1, 50}}); !got.IsZero() || lost {
		t.Errorf("a token of an ancestor of unknown end: %+v, %v; want the zero token", got, lost)
	}
}
