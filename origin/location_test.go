package origin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestOwnLocation: a redirect the upstream gives in its own name is
// rewritten as a path on the publisher; any other is left alone.
func TestOwnLocation(t *testing.T) {
	tests := []struct {
		base, loc, want string
	}{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/sub/", "/sub/"},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/big.bin?x=1#f", "/big.bin?x=1#f"},
		{"http://up.example:8080/base", "http://UP.example:8080/base/a%20b/c%2Fd", "/a%20b/c%2Fd"},
		{"http://up.example:8080/base/", "http://up.example:8080/base", "/"},
		{"http://up.example:8080/base", "http://up.example:8080/basement", "http://up.example:8080/basement"},
		{"http://up.example:8080/base", "http://up.example:8080/other", "http://up.example:8080/other"},
		{"http://up.example:8080", "https://up.example:8080/x", "https://up.example:8080/x"},
		{"http://up.example:8080", "http://elsewhere.example/x", "http://elsewhere.example/x"},
		{"http://up.example:8080", "/relative", "/relative"},
		{"http://up.example:8080", "http://up.example:8080//evil.example/x", "http://up.example:8080//evil.example/x"},
		// A scheme's default port, written or left out, is the same port.
		{"http://up.example:80/", "http://up.example/sub/", "/sub/"},
		{"https://up.example:443/", "https://up.example/sub/", "/sub/"},
		{"http://up.example/", "http://up.example:80/sub/", "/sub/"},
		{"http://up.example/", "http://up.example:8080/sub/", "http://up.example:8080/sub/"},
		{"http://[::1]:8080/", "http://[::1]:8080/sub/", "/sub/"},
	}
	for _, tc := range tests {
		base, err := url.Parse(tc.base)
		if err != nil {
			t.Fatal(err)
		}
		u := &Upstream{base: base}
		h := http.Header{"Location": {tc.loc}}
		u.ownLocation(h)
		if got := h.Get("Location"); got != tc.want {
			t.Errorf("base %s, Location %s: %q, want %q", tc.base, tc.loc, got, tc.want)
		}
	}
}

// TestUpstreamRedirectStaysWithPublisher: through the publisher, an
// upstream's absolute redirect (nginx's, for a directory without its
// slash) names the publisher, not the upstream.
func TestUpstreamRedirectStaysWithPublisher(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+r.Host+r.URL.Path+"/", http.StatusMovedPermanently) // r.URL.Path is under /mirror
	}))
	t.Cleanup(upstream.Close)
	base, _ := url.Parse(upstream.URL + "/mirror/")
	u, err := NewUpstream(UpstreamConfig{Upstream: base, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	srv := httptest.NewServer(newPublisher(t, Config{Resolver: u}).Handler(u.Handler()))
	defer srv.Close()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/sub")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/sub/" {
		t.Errorf("status %d, Location %q; want 301 to /sub/", resp.StatusCode, resp.Header.Get("Location"))
	}
}
