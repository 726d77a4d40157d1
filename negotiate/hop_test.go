package negotiate

import (
	"net/http"
	"slices"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want []string // remaining keys, sorted
	}{
		{"fixed list", http.Header{
			"Connection": {"keep-alive"}, "Proxy-Connection": {"x"}, "Keep-Alive": {"timeout=5"},
			"Proxy-Authenticate": {"x"}, "Proxy-Authorization": {"x"}, "Te": {"trailers"}, "Trailer": {"x"},
			"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Accept": {"*/*"},
		}, []string{"Accept"}},
		{"nominated", http.Header{
			"Connection":      {"X-Forwarded-For, authorization"},
			"X-Forwarded-For": {"1.2.3.4"}, "Authorization": {"Basic x"}, "Accept": {"*/*"},
		}, []string{"Accept"}},
		{"empty first line", http.Header{
			"Connection": {"", " ,X-Secret ,,"}, "X-Secret": {"1"}, "Host-Keep": {"1"},
		}, []string{"Host-Keep"}},
		{"connection nominates itself", http.Header{"Connection": {"connection, close"}, "Close": {"1"}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			RemoveHopByHop(tc.in)
			var keys []string
			for k := range tc.in {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, tc.want) {
				t.Fatalf("left %v, want %v", keys, tc.want)
			}
		})
	}
	RemoveHopByHop(nil) // must not panic
}

// TestOwnHeadersSurvive checks the order of HARDENING 52: fields added after
// RemoveHopByHop are kept even when the client nominated them.
func TestOwnHeadersSurvive(t *testing.T) {
	h := http.Header{"Connection": {"Via"}, "Via": {"1.1 " + Pseudonym}}
	RemoveHopByHop(h)
	AddVia(h, 1, 1)
	if got := h.Values("Via"); len(got) != 1 || got[0] != ViaToken {
		t.Fatalf("Via = %q", got)
	}
}

func TestAddVia(t *testing.T) {
	tests := []struct {
		major, minor int
		want         string
	}{
		{1, 1, "1.1 tbproxy"}, {1, 0, "1.0 tbproxy"}, {2, 0, "2 tbproxy"}, {3, 0, "3 tbproxy"},
		{0, 9, "1.1 tbproxy"}, {-1, -1, "1.1 tbproxy"}, {1, 10, "1.1 tbproxy"}, {2, 1, "1.1 tbproxy"},
	}
	for _, tc := range tests {
		h := http.Header{"Via": {"1.0 fred"}}
		AddVia(h, tc.major, tc.minor)
		if got := h.Values("Via"); len(got) != 2 || got[0] != "1.0 fred" || got[1] != tc.want {
			t.Errorf("AddVia(%d, %d) = %q", tc.major, tc.minor, got)
		}
	}
	AddVia(nil, 1, 1) // must not panic
}

func TestViaLoop(t *testing.T) {
	tests := []struct {
		via  []string
		want bool
	}{
		{nil, false},
		{[]string{"1.1 tbproxy"}, true},
		{[]string{"1.0 fred, 1.1 p.example.net"}, false},
		{[]string{"1.0 fred", "HTTP/2 TBPROXY"}, true},
		{[]string{"1.1 fred (tbproxy, 1.1 tbproxy)"}, false},
		{[]string{"1.1 fred (a \\) , 1.1 tbproxy)"}, false},
		{[]string{"1.1 fred (unclosed, 1.1 tbproxy"}, false},
		{[]string{"1.1 fred (x), 1.1 tbproxy (y)"}, true},
		{[]string{"tbproxy"}, false},
		{[]string{"1.1 tbproxy-other"}, false},
	}
	for _, tc := range tests {
		if got := ViaLoop(http.Header{"Via": tc.via}); got != tc.want {
			t.Errorf("ViaLoop(%q) = %v", tc.via, got)
		}
	}
}
