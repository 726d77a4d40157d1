package swarm

import (
	"fmt"
	"strings"
)

// The settings that are small enumerations (Encryption, WebSeedMode) have
// names, for flags and configuration files: their String, MarshalText and
// UnmarshalText go through these. kind names the setting in errors.

func enumString[T ~int](kind string, names []string, v T) string {
	if v < 0 || int(v) >= len(names) {
		return fmt.Sprintf("%s(%d)", kind, int(v))
	}
	return names[v]
}

func enumMarshal[T ~int](kind string, names []string, v T) ([]byte, error) {
	if v < 0 || int(v) >= len(names) {
		return nil, fmt.Errorf("swarm: unknown %s %d", kind, int(v))
	}
	return []byte(names[v]), nil
}

func enumParse[T ~int](kind string, names []string, b []byte) (T, error) {
	for i, n := range names {
		if string(b) == n {
			return T(i), nil
		}
	}
	choices := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
	return 0, fmt.Errorf("swarm: %s must be %s, not %q", kind, choices, b)
}
