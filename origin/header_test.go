package origin

import (
	"net/http"
	"strings"
	"testing"
)

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
