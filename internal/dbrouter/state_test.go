package dbrouter

import (
	"testing"
	"testing/quick"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	cases := []State{
		{},
		{Session: 1},
		{Session: 1<<63 + 5, LastWrite: time.UnixMilli(1_790_000_000_123)},
		{Session: 9, Token: Token{SystemID: 7_300_000_000_000_000_001, Timeline: 2, LSN: 0x16B374D848}},
	}
	for _, want := range cases {
		got, err := DecodeState(want.Encode())
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", want, err)
		}
		if got.Session != want.Session || !got.LastWrite.Equal(want.LastWrite) || got.Token != want.Token {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
	}
	if n := len(cases[3].Encode()); n > 32 {
		t.Errorf("encoded state is %d bytes; it rides in a cookie, keep it compact", n)
	}
}

func TestDecodeStateRejectsGarbage(t *testing.T) {
	good := State{Session: 3, LastWrite: time.UnixMilli(5), Token: Token{SystemID: 1, Timeline: 1, LSN: 99}}.Encode()
	bad := [][]byte{
		nil,
		{},
		{2, 1, 0},                             // unknown version
		{1},                                   // truncated
		{1, 0x80},                             // truncated varint
		{1, 3, 1},                             // negative time
		append(good[:len(good):len(good)], 0), // trailing byte
		good[:len(good)-2],                    // truncated token
	}
	for _, b := range bad {
		if _, err := DecodeState(b); err == nil {
			t.Errorf("DecodeState(%v) accepted garbage", b)
		}
	}
}

func TestMergeIsCommutativeAndIdempotent(t *testing.T) {
	gen := func(session uint64, ms uint32, sys uint8, tli uint8, lsn uint16) State {
		s := State{Session: session % 4, Token: Token{SystemID: uint64(sys % 2), Timeline: uint32(tli % 2), LSN: uint64(lsn % 8)}}
		if s.Token.LSN == 0 {
			s.Token = Token{} // as DecodeState gives it
		}
		if ms%3 != 0 {
			s.LastWrite = time.UnixMilli(int64(ms % 5))
		}
		return s
	}
	same := func(a, b State) bool {
		return a.Session == b.Session && a.LastWrite.Equal(b.LastWrite) && a.Token == b.Token
	}
	prop := func(s1 uint64, m1 uint32, y1, t1 uint8, l1 uint16, s2 uint64, m2 uint32, y2, t2 uint8, l2 uint16) bool {
		a, b := gen(s1, m1, y1, t1, l1), gen(s2, m2, y2, t2, l2)
		ab, ba := a, b
		ab.Merge(b)
		ba.Merge(a)
		aa := a
		aa.Merge(a)
		abb := ab
		abb.Merge(b)
		return same(ab, ba) && same(aa, a) && same(abb, ab)
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
	}
}

func TestMergeKeepsTheLaterPosition(t *testing.T) {
	s := State{Token: Token{SystemID: 1, Timeline: 1, LSN: 100}}
	s.Merge(State{Token: Token{SystemID: 1, Timeline: 1, LSN: 50}})
	if s.Token.LSN != 100 || s.Changed() {
		t.Fatalf("merging an older token moved the state: %+v", s)
	}
	s.Merge(State{Token: Token{SystemID: 1, Timeline: 1, LSN: 150}})
	if s.Token.LSN != 150 || !s.Changed() {
		t.Fatalf("merging a newer token did not advance the state: %+v", s)
	}
}

func TestParseLSN(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
	}{{"0/0", 0}, {"16/B374D848", 0x16B374D848}, {"FFFFFFFF/FFFFFFFF", 1<<64 - 1}} {
		got, err := ParseLSN(tt.in)
		if err != nil || got != tt.want || FormatLSN(got) != tt.in {
			t.Errorf("ParseLSN(%q) = %X, %v", tt.in, got, err)
		}
	}
	for _, in := range []string{"", "16", "x/1", "1/100000000"} {
		if _, err := ParseLSN(in); err == nil {
			t.Errorf("ParseLSN(%q) accepted garbage", in)
		}
	}
}
