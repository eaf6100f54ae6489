package dbrouter

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseLSN reads a WAL position written as PostgreSQL prints it, "16/B374D848".
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad WAL position %q", s)
	}
	return h<<32 | l, nil
}

// FormatLSN writes a WAL position as PostgreSQL prints it.
// It runs on every causal read, so it allocates only the string.
func FormatLSN(lsn uint64) string {
	var buf [17]byte
	b := appendHex(buf[:0], lsn>>32)
	b = append(b, '/')
	return string(appendHex(b, lsn&0xFFFFFFFF))
}

// appendHex appends v in upper-case hexadecimal, as PostgreSQL prints LSNs.
func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789ABCDEF"
	var tmp [16]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v&0xF]
		if v >>= 4; v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}
func lsnOrZero(s *string) uint64 {
	if s == nil {
		return 0
	}
	v, _ := ParseLSN(*s)
	return v
}
