package negotiate

import (
	"net/http"
	"strings"
	"testing"
)

func TestVariesOn(t *testing.T) {
	tests := []struct {
		vary []string
		want bool
	}{
		{nil, false},
		{[]string{"Accept-Encoding"}, false},
		{[]string{"accept"}, true},
		{[]string{"Accept-Encoding, Accept"}, true},
		{[]string{"Origin", "Accept"}, true},
		{[]string{"*"}, true},
		{[]string{`"Accept"`}, false},
	}
	for _, tc := range tests {
		if got := VariesOn(http.Header{"Vary": tc.vary}, "Accept"); got != tc.want {
			t.Errorf("Vary %q: %v, want %v", tc.vary, got, tc.want)
		}
	}
}

func TestWantsFresh(t *testing.T) {
	for _, tt := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{}, false},
		{http.Header{"Cache-Control": {"no-cache"}}, true},
		{http.Header{"Cache-Control": {"No-Cache"}}, true},
		{http.Header{"Cache-Control": {"max-stale=60, no-store"}}, true},
		{http.Header{"Cache-Control": {" max-age=0 "}}, true},
		{http.Header{"Cache-Control": {`max-age="0"`}}, true},
		{http.Header{"Cache-Control": {"max-age=00"}}, true},
		{http.Header{"Cache-Control": {"max-age=60"}}, false},
		{http.Header{"Cache-Control": {"max-age=junk"}}, false},
		{http.Header{"Cache-Control": {"no-transform"}}, false},
		{http.Header{"Cache-Control": {"no-cachey"}}, false},
		{http.Header{"Pragma": {"no-cache"}}, true},
		{http.Header{"Pragma": {"x, NO-CACHE"}}, true},
		{http.Header{"Pragma": {"nocache"}}, false},
		{http.Header{"Cache-Control": {"max-age=60, " + strings.Repeat("x", MaxCacheControlLen)}}, true}, // unreadable
	} {
		if got := WantsFresh(tt.h); got != tt.want {
			t.Errorf("WantsFresh(%v) = %v, want %v", tt.h, got, tt.want)
		}
	}
}
