package pex

import (
	"reflect"
	"testing"
)

// FuzzParse checks that no input panics Parse, that what it returns keeps
// the limits, and that a parsed message encodes and parses back to itself.
func FuzzParse(f *testing.F) {
	f.Add([]byte("d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x12e"))
	lim := Limits{MaxPeers: 8, MaxSize: 4096}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b, lim)
		if err != nil {
			return
		}
		if len(m.Added) > 2*lim.MaxPeers || len(m.Dropped) > 2*lim.MaxPeers {
			t.Fatalf("%d added, %d dropped", len(m.Added), len(m.Dropped))
		}
		for _, p := range m.Added {
			if !p.Addr.IsValid() || p.Addr.Port() == 0 || p.Addr.Addr().Is4In6() {
				t.Fatalf("bad entry %v", p.Addr)
			}
		}
		m.Truncated = false
		m2, err := Parse(Append(nil, m), Limits{})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if len(m.Added) == 0 {
			m.Added = nil
		}
		if len(m.Dropped) == 0 {
			m.Dropped = nil
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}
