package negotiate

import (
	"net/http"
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
