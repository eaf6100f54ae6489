package dbrouter

import (
	"testing"
	"time"
)

// FuzzDecodeState: any bytes decode to a state or an error, never a panic;
// what decodes re-encodes to the same state. The seed corpus runs in every
// go test.
func FuzzDecodeState(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Add(State{Session: 42, LastWrite: time.UnixMilli(1_790_000_000_000)}.Encode())
	f.Add(State{Session: 1<<62 | 77, Token: Token{SystemID: 7_300_000_000_000_000_001, Timeline: 1, LSN: 0x16B374D848}}.Encode())
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte("not a state at all"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeState(b)
		if err != nil {
			return
		}
		again, err := DecodeState(s.Encode())
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if again.Session != s.Session || !again.LastWrite.Equal(s.LastWrite) || again.Token != s.Token {
			t.Fatalf("round trip changed the state: %+v → %+v", s, again)
		}
	})
}

// FuzzParseLSN: any text parses to a position or an error; what parses
// formats back to something that parses to the same position.
func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "", "/", "1/", "x/y", "0/100000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		lsn, err := ParseLSN(s)
		if err != nil {
			return
		}
		if back, err := ParseLSN(FormatLSN(lsn)); err != nil || back != lsn {
			t.Fatalf("%q → %X → %q → %X, %v", s, lsn, FormatLSN(lsn), back, err)
		}
	})
}
