package swarm

import (
	"encoding"
	"strings"
	"testing"
)

type textEnum interface {
	comparable
	encoding.TextMarshaler
	String() string
}

// checkNames round-trips every value of an enumeration through its text,
// and checks that an unknown name and an unknown value are refused.
func checkNames[T textEnum](t *testing.T, values []T, parse func([]byte) (T, error), bad T, want []string) {
	t.Helper()
	for i, v := range values {
		b, err := v.MarshalText()
		if err != nil || string(b) != want[i] || v.String() != want[i] {
			t.Fatalf("%v: text %q, %v; want %q", v, b, err, want[i])
		}
		back, err := parse(b)
		if err != nil || back != v {
			t.Fatalf("%v: round trip gave %v, %v", v, back, err)
		}
	}
	if _, err := parse([]byte("forced")); err == nil || !strings.Contains(err.Error(), strings.Join(want[:len(want)-1], ", ")+" or "+want[len(want)-1]) {
		t.Fatalf("unknown name: %v", err)
	}
	if _, err := bad.MarshalText(); err == nil {
		t.Fatalf("marshalled unknown value %v", bad)
	}
}

func TestNames(t *testing.T) {
	checkNames(t, []Encryption{EncryptionPrefer, EncryptionRequire, EncryptionDisable},
		func(b []byte) (Encryption, error) {
			var e Encryption
			err := e.UnmarshalText(b)
			return e, err
		}, Encryption(7),
		[]string{"prefer", "require", "disable"})
	checkNames(t, []WebSeedMode{WebSeedRescue, WebSeedAlways, WebSeedRescueOnly},
		func(b []byte) (WebSeedMode, error) {
			var m WebSeedMode
			err := m.UnmarshalText(b)
			return m, err
		}, WebSeedMode(-1),
		[]string{"sparing", "always", "rescue-only"})
	// A refused name leaves the setting as it was.
	m := WebSeedAlways
	if err := m.UnmarshalText([]byte("never")); err == nil || m != WebSeedAlways {
		t.Fatalf("after a bad name: %v, %v", m, err)
	}
}
