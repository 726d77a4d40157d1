package origin

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestContentLength(t *testing.T) {
	tests := []struct {
		name string
		vals []string
		want int64 // -1 for refused
	}{
		{"plain", []string{"2097152"}, 2097152},
		{"zero", []string{"0"}, 0},
		{"leading zeros", []string{"007"}, 7},
		{"max int64", []string{"9223372036854775807"}, 1<<63 - 1},
		{"absent", nil, -1},
		{"empty", []string{""}, -1},
		{"plus sign", []string{"+2097152"}, -1},
		{"minus sign", []string{"-1"}, -1},
		{"minus zero", []string{"-0"}, -1},
		{"leading space", []string{" 2097152"}, -1},
		{"trailing space", []string{"2097152 "}, -1},
		{"inner space", []string{"2097 152"}, -1},
		{"tab", []string{"2097152\t"}, -1},
		{"max int64 plus one", []string{"9223372036854775808"}, -1},
		{"nineteen nines", []string{"9999999999999999999"}, -1},
		{"twenty digits", []string{"00000000000000000001"}, -1},
		{"hex", []string{"0x10"}, -1},
		{"underscore", []string{"1_000"}, -1},
		{"list", []string{"5, 5"}, -1},
		{"twice, equal", []string{"5", "5"}, -1},
		{"non-ascii digit", []string{"\u0665"}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := contentLength(http.Header{"Content-Length": tt.vals})
			if tt.want < 0 {
				if ok {
					t.Fatalf("accepted %q as %d", tt.vals, n)
				}
				return
			}
			if !ok || n != tt.want {
				t.Fatalf("contentLength(%q) = %d, %v; want %d", tt.vals, n, ok, tt.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	const size = "2097152"
	date := baseTime.Format(http.TimeFormat)
	long := `"` + strings.Repeat("e", maxValidator-2) + `"`
	tests := []struct {
		name   string
		header http.Header
		ok     bool
		size   int64
		etag   string
	}{
		{"etag", http.Header{"Etag": {`"v1"`}, "Content-Length": {size}}, true, 2097152, `"v1"`},
		{"last-modified only", http.Header{"Last-Modified": {date}, "Content-Length": {size}}, true, 2097152, ""},
		{"etag of maxValidator bytes", http.Header{"Etag": {long}, "Content-Length": {size}}, true, 2097152, long},
		{"plus sign length", http.Header{"Etag": {`"v1"`}, "Content-Length": {"+" + size}}, false, -1, `"v1"`},
		{"length with spaces", http.Header{"Etag": {`"v1"`}, "Content-Length": {" " + size + " "}}, false, -1, `"v1"`},
		{"length overflows", http.Header{"Etag": {`"v1"`}, "Content-Length": {"9223372036854775808"}}, false, -1, `"v1"`},
		{"two lengths", http.Header{"Etag": {`"v1"`}, "Content-Length": {size, size}}, false, -1, `"v1"`},
		{"over-long etag", http.Header{"Etag": {long + "x"}, "Content-Length": {size}}, false, 2097152, ""},
		{"over-long etag despite a date", http.Header{"Etag": {`"` + strings.Repeat("e", 100000) + `"`}, "Last-Modified": {date}, "Content-Length": {size}}, false, 2097152, ""},
		{"over-long last-modified", http.Header{"Etag": {`"v1"`}, "Last-Modified": {date + strings.Repeat(" ", maxValidator)}, "Content-Length": {size}}, false, 2097152, ""},
		{"etag with a newline", http.Header{"Etag": {"\"a\nb\""}, "Content-Length": {size}}, false, 2097152, ""},
		{"last-modified with a control byte", http.Header{"Last-Modified": {date + "\x00"}, "Content-Length": {size}}, false, 2097152, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := parseVersion(http.StatusOK, tt.header, 1, DefaultMaxFetch)
			if v.ok != tt.ok || v.size != tt.size || v.etag != tt.etag {
				t.Fatalf("got ok %v size %d etag %q; want %v %d %q", v.ok, v.size, v.etag, tt.ok, tt.size, tt.etag)
			}
			if len(v.validators) > 2*maxValidator+2+20 {
				t.Errorf("validators of %d bytes kept", len(v.validators))
			}
		})
	}
}

func TestModifyResponseContentLength(t *testing.T) {
	u := &Upstream{cfg: UpstreamConfig{MinSize: DefaultMinSize}}
	for _, tt := range []struct {
		length string
		vary   bool
	}{
		{"2097152", true},
		{"+2097152", false},
		{" 2097152", false},
		{"99999999999999999999", false},
		{"1000", false},
	} {
		resp := &http.Response{
			StatusCode: http.StatusOK,
			Header:     http.Header{"Content-Length": {tt.length}},
			Request:    httptest.NewRequest(http.MethodGet, "/a.iso", nil),
		}
		if err := u.modifyResponse(resp); err != nil {
			t.Fatal(err)
		}
		if got := varyAccept(resp.Header) == 1; got != tt.vary {
			t.Errorf("Content-Length %q: Vary %q, want Accept %v", tt.length, resp.Header["Vary"], tt.vary)
		}
	}
}

// FuzzParseVersion checks parseVersion on the validators, length and
// Cache-Control an upstream could send: the kept values stay within
// maxValidator, the size is exactly what a strict decimal parse gives,
// and a publishable version is within the size bounds, has a validator,
// and is named unambiguously. The seed corpus is in
// testdata/fuzz/FuzzParseVersion.
func FuzzParseVersion(f *testing.F) {
	const minSize, maxSize = 1 << 20, DefaultMaxFetch
	f.Fuzz(func(t *testing.T, etag, lastMod, length, cacheControl string, twoLengths bool) {
		h := http.Header{"Content-Length": {length}}
		if twoLengths {
			h.Add("Content-Length", length)
		}
		for k, v := range map[string]string{"Etag": etag, "Last-Modified": lastMod, "Cache-Control": cacheControl} {
			if v != "" {
				h.Set(k, v)
			}
		}
		v := parseVersion(http.StatusOK, h, minSize, maxSize)
		if v2 := parseVersion(http.StatusOK, h, minSize, maxSize); v2 != v {
			t.Fatalf("not deterministic: %+v then %+v", v, v2)
		}
		if len(v.etag) > maxValidator || len(v.validators) > 2*maxValidator+2+20 {
			t.Fatalf("kept an etag of %d bytes, validators of %d", len(v.etag), len(v.validators))
		}
		if want := strictLength(length, twoLengths); v.size != want {
			t.Fatalf("Content-Length %q (twice: %v) gave size %d, want %d", length, twoLengths, v.size, want)
		}
		if !v.ok {
			return
		}
		if v.size < minSize || v.size > maxSize || (v.etag == "" && v.lastMod.IsZero()) || v.etag != etag {
			t.Fatalf("published %+v for etag %q", v, etag)
		}
		if !validatorOK(etag) || !validatorOK(lastMod) || strings.Count(v.validators, "\n") != 2 {
			t.Fatalf("published with ambiguous validators %q", v.validators)
		}
		if !public(h) {
			t.Fatalf("published with Cache-Control %q", cacheControl)
		}
		if parseVersion(http.StatusNotFound, h, minSize, maxSize).ok {
			t.Fatal("a 404 is publishable")
		}
	})
}

// strictLength is the size a Content-Length of s (sent twice when twice
// is set) must give: its value when s is 1 to 19 ASCII digits that fit an
// int64, else -1.
func strictLength(s string, twice bool) int64 {
	if twice || s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}
