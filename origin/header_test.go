package origin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/negotiate"
)

func TestAcceptsTorrent(t *testing.T) {
	tests := []struct {
		name   string
		accept []string
		want   bool
	}{
		{"absent", nil, false},
		{"exact", []string{"application/x-bittorrent"}, true},
		{"as the proxy injects it", []string{"application/x-bittorrent, */*"}, true},
		{"after other types", []string{"text/html, application/x-bittorrent;q=0.9, */*;q=0.8"}, true},
		{"letter case", []string{"Application/X-BitTorrent"}, true},
		{"spaces", []string{"  application/x-bittorrent ; q=0.5 "}, true},
		{"q=1", []string{"application/x-bittorrent;q=1"}, true},
		{"q=1.000", []string{"application/x-bittorrent;q=1.000"}, true},
		{"q=0.001", []string{"application/x-bittorrent;q=0.001"}, true},
		{"q=0", []string{"application/x-bittorrent;q=0"}, false},
		{"q=0.000", []string{"application/x-bittorrent;Q=0.000"}, false},
		{"q=0 beats a q>0 listing", []string{"application/x-bittorrent, application/x-bittorrent;q=0"}, false},
		{"q above 1", []string{"application/x-bittorrent;q=1.5"}, false},
		{"q too precise", []string{"application/x-bittorrent;q=0.0001"}, false},
		{"q not a number", []string{"application/x-bittorrent;q=high"}, false},
		{"empty q", []string{"application/x-bittorrent;q="}, false},
		{"other parameter", []string{"application/x-bittorrent;v=1"}, true},
		{"wildcard only", []string{"*/*"}, false},
		{"type wildcard", []string{"application/*"}, false},
		{"prefix of the type", []string{"application/x-bittorrentx"}, false},
		{"inside a quoted parameter", []string{`text/html;x="a,application/x-bittorrent"`}, false},
		{"second field line", []string{"text/html", "application/x-bittorrent"}, true},
		{"too long", []string{strings.Repeat("text/plain, ", negotiate.MaxAcceptLen/12+1) + "application/x-bittorrent"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.accept {
				h.Add("Accept", v)
			}
			if got := acceptsTorrent(h); got != tt.want {
				t.Errorf("acceptsTorrent(%q) = %v, want %v", tt.accept, got, tt.want)
			}
		})
	}
}

func FuzzAcceptsTorrent(f *testing.F) {
	for _, s := range []string{"application/x-bittorrent", "application/x-bittorrent;q=0", `a/b;x="y,z", application/x-bittorrent;q=0.5`, "*/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := acceptsTorrent(http.Header{"Accept": {s}})
		if got && !strings.Contains(strings.ToLower(s), negotiate.MediaType) {
			t.Fatalf("accepts %q, which does not name the type", s)
		}
	})
}

func TestNoneMatch(t *testing.T) {
	const etag = `"mi-abc-1234"`
	tests := []struct {
		name string
		inm  []string
		want bool
	}{
		{"absent", nil, false},
		{"same", []string{etag}, true},
		{"weak form", []string{`W/` + etag}, true},
		{"in a list", []string{`"x", ` + etag}, true},
		{"second line", []string{`"x"`, etag}, true},
		{"star", []string{"*"}, true},
		{"other", []string{`"mi-abc-9999"`}, false},
		{"unquoted", []string{"mi-abc-1234"}, false},
		{"unterminated", []string{`"mi-abc-1234`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.inm {
				h.Add("If-None-Match", v)
			}
			if got := noneMatch(h, etag); got != tt.want {
				t.Errorf("noneMatch(%q) = %v, want %v", tt.inm, got, tt.want)
			}
		})
	}
}

func FuzzNoneMatch(f *testing.F) {
	for _, s := range []string{`"a"`, `W/"a", "b"`, "*", `"`, `W/`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		noneMatch(http.Header{"If-None-Match": {s}}, `"a"`)
	})
}

func TestAddVaryAccept(t *testing.T) {
	tests := []struct {
		name string
		vary []string
		want []string
	}{
		{"none", nil, []string{"Accept"}},
		{"other", []string{"Accept-Encoding"}, []string{"Accept-Encoding", "Accept"}},
		{"already", []string{"Accept-Encoding, accept"}, []string{"Accept-Encoding, accept"}},
		{"star", []string{"*"}, []string{"*"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.vary {
				h.Add("Vary", v)
			}
			addVaryAccept(h)
			if got := h["Vary"]; strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("Vary %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCleanKey(t *testing.T) {
	tests := []struct {
		path, key string
		ok        bool
	}{
		{"/a/b.iso", "/a/b.iso", true},
		{"/a//b.iso", "/a/b.iso", true},
		{"/a/./b.iso", "/a/b.iso", true},
		{"/a/../b.iso", "", false},
		{`/a\..\b.iso`, "", false},
		{"/..", "", false},
		{"/dir/", "", false},
		{"/", "", false},
		{"", "", false},
		{"relative", "", false},
		{"/x/index.html", "", false},
		{"/nul\x00", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			key, ok := cleanKey(tt.path)
			if key != tt.key || ok != tt.ok {
				t.Errorf("cleanKey(%q) = %q, %v; want %q, %v", tt.path, key, ok, tt.key, tt.ok)
			}
		})
	}
}
