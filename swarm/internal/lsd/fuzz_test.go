package lsd

import (
	"reflect"
	"testing"
)

// FuzzParse checks that no datagram panics Parse, that what it returns
// keeps the limits, and that an announce encodes and parses back to
// itself.
func FuzzParse(f *testing.F) {
	f.Add([]byte("BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: " + ih1Hex + "\r\ncookie: abc\r\n\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Parse(b, Limits{})
		if err != nil {
			return
		}
		if a.Port == 0 || len(a.InfoHashes) == 0 || len(a.InfoHashes) > DefaultMaxHashes || len(a.Cookie) > maxCookie || len(a.Host) > maxHost {
			t.Fatalf("out of bounds: %+v", a)
		}
		if !validField(a.Host) || !validField(a.Cookie) {
			return // not representable again; Parse need not refuse it
		}
		a2, err := Parse(Append(nil, a), Limits{MaxSize: 1 << 16})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(a, a2) {
			t.Fatalf("round trip changed %+v into %+v", a, a2)
		}
	})
}

// validField reports whether s survives being written as a header value.
func validField(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return false
		}
	}
	return true
}
