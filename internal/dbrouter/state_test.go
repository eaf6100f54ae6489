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

// TestStateRoundTripProperty: any state the router can hold decodes to
// itself (LastWrite at millisecond precision, as the cookie keeps it).
func TestStateRoundTripProperty(t *testing.T) {
	prop := func(session uint64, ms int64, sys uint64, tli uint32, lsn uint64) bool {
		s := State{Session: session, Token: Token{SystemID: sys, Timeline: tli, LSN: lsn}}
		if ms = ms % (1 << 50); ms > 0 {
			s.LastWrite = time.UnixMilli(ms)
		}
		if lsn == 0 {
			s.Token = Token{} // a token without a position is no token
		}
		got, err := DecodeState(s.Encode())
		return err == nil && got.Session == s.Session && got.LastWrite.Equal(s.LastWrite) && got.Token == s.Token
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 5000}); err != nil {
		t.Fatal(err)
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

// TestBoundKeepsLastWriteInThePast: a state that claims a write later than
// now is brought back to now and marked changed (so the cookie is written
// again); one in the past is left as it is.
func TestBoundKeepsLastWriteInThePast(t *testing.T) {
	now := time.UnixMilli(1_790_000_000_000)
	future := State{Session: 7, LastWrite: now.Add(365 * 24 * time.Hour)}
	future.Bound(now)
	if !future.LastWrite.Equal(now) || !future.Changed() {
		t.Fatalf("a last write a year ahead became %s (changed %v), want now and changed", future.LastWrite, future.Changed())
	}
	past := State{Session: 7, LastWrite: now.Add(-time.Second)}
	past.Bound(now)
	if !past.LastWrite.Equal(now.Add(-time.Second)) || past.Changed() {
		t.Fatalf("a last write a second ago became %s (changed %v)", past.LastWrite, past.Changed())
	}
	var none State
	none.Bound(now)
	if !none.LastWrite.IsZero() || none.Changed() {
		t.Fatalf("a state without a write became %+v", none)
	}
}
