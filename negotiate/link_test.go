package negotiate

import (
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/metainfo"
)

const (
	testHash   = "0123456789abcdef0123456789abcdef01234567"
	testMagnet = "magnet:?xt=urn:btih:" + testHash + "&dn=a.bin&so=0,2,4-6"
)

func TestParseLinks(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  []Link
	}{
		{"none", nil, nil},
		{"quoted rel", []string{`<magnet:?xt=urn:btih:x>; rel="describedby"`},
			[]Link{{Target: "magnet:?xt=urn:btih:x", Rels: []string{"describedby"}}}},
		{"token rel, any case", []string{`<http://a/>;REL=DescribedBy`},
			[]Link{{Target: "http://a/", Rels: []string{"describedby"}}}},
		{"several rels", []string{`<m>; rel="alternate  describedby alternate"`},
			[]Link{{Target: "m", Rels: []string{"alternate", "describedby"}}}},
		{"several links, comma in target", []string{`<magnet:?so=0,2>; rel=describedby, <https://a/b.css>; rel=stylesheet`},
			[]Link{{Target: "magnet:?so=0,2", Rels: []string{"describedby"}}, {Target: "https://a/b.css", Rels: []string{"stylesheet"}}}},
		{"comma and semicolon in quoted params", []string{`<a>; title="x, <y>; rel=z"; rel="next", <b>`},
			[]Link{{Target: "a", Rels: []string{"next"}}, {Target: "b"}}},
		{"quoted pair in rel", []string{`<a>; rel="describ\edby"`},
			[]Link{{Target: "a", Rels: []string{"describedby"}}}},
		{"only the first rel counts", []string{`<a>; rel=next; rel=describedby`},
			[]Link{{Target: "a", Rels: []string{"next"}}}},
		{"valueless param and trailing semicolon", []string{`<a>; crossorigin; rel=x;`},
			[]Link{{Target: "a", Rels: []string{"x"}}}},
		{"empty elements", []string{` , <a>;rel=x ,, `}, []Link{{Target: "a", Rels: []string{"x"}}}},
		{"several field lines", []string{`<a>; rel=x`, `<b>; rel=y`},
			[]Link{{Target: "a", Rels: []string{"x"}}, {Target: "b", Rels: []string{"y"}}}},
		{"bad line dropped, good line kept", []string{`<a>; rel="x`, `<b>; rel=y`},
			[]Link{{Target: "b", Rels: []string{"y"}}}},
		{"no angle brackets", []string{`magnet:?xt=urn:btih:x; rel=describedby`}, nil},
		{"unterminated target", []string{`<magnet:?xt=urn:btih:x; rel=describedby`}, nil},
		{"space in target", []string{`<magnet:?xt=a b>; rel=describedby`}, nil},
		{"control in target", []string{"<magnet:?xt=a\x01b>; rel=describedby"}, nil},
		{"junk after link", []string{`<a>; rel=x junk`}, nil},
		{"empty value", []string{`<a>; rel=`}, nil},
		{"control in quoted value", []string{"<a>; rel=\"x\x00\""}, nil},
		{"too long altogether", []string{`<a>; rel=x`, "<" + strings.Repeat("b", MaxLinkLen) + ">"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseLinks(http.Header{"Link": tc.lines})
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseLinks(%q) = %#v, want %#v", tc.lines, got, tc.want)
			}
		})
	}

	t.Run("at most MaxLinks", func(t *testing.T) {
		line := strings.Repeat("<a>;rel=x,", 3*MaxLinks)
		if got := ParseLinks(http.Header{"Link": {line, line}}); len(got) != MaxLinks {
			t.Fatalf("%d links", len(got))
		}
	})
	t.Run("at most maxLinkRels", func(t *testing.T) {
		var rels []string
		for i := range 100 {
			rels = append(rels, strings.Repeat("r", i+1))
		}
		got := ParseLinks(http.Header{"Link": {`<a>; rel="` + strings.Join(rels, " ") + `"`}})
		if len(got) != 1 || len(got[0].Rels) != maxLinkRels {
			t.Fatalf("%#v", got)
		}
	})
}

func TestMagnetLink(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string // info-hash hex, "" for none
	}{
		{"quoted describedby", []string{`<` + testMagnet + `>; rel="describedby"`}, testHash},
		{"one of several rels", []string{`<` + testMagnet + `>; rel="alternate describedby"`}, testHash},
		{"among other links", []string{`</style.css>; rel=stylesheet, <` + testMagnet + `>; rel=DESCRIBEDBY`}, testHash},
		{"upper-case scheme", []string{`<MAGNET:?xt=urn:btih:` + testHash + `>; rel=describedby`}, testHash},
		{"wrong rel", []string{`<` + testMagnet + `>; rel=alternate`}, ""},
		{"no rel", []string{`<` + testMagnet + `>`}, ""},
		{"rel in another param", []string{`<` + testMagnet + `>; title="rel=describedby"`}, ""},
		{"http target", []string{`<https://a.example/a.torrent>; rel=describedby`}, ""},
		{"magnet without xt", []string{`<magnet:?dn=a.bin&tr=http://t/a>; rel=describedby`}, ""},
		{"magnet with another urn", []string{`<magnet:?xt=urn:sha1:ABCDEFGHIJKLMNOPQRSTUVWXYZ234567>; rel=describedby`}, ""},
		{"v2-only magnet", []string{`<magnet:?xt=urn:btmh:1220` + strings.Repeat("ab", 32) + `>; rel=describedby`}, ""},
		{"bad hash", []string{`<magnet:?xt=urn:btih:xyz>; rel=describedby`}, ""},
		{"two hashes", []string{`<magnet:?xt=urn:btih:` + testHash + `&xt=urn:btih:` + testHash + `>; rel=describedby`}, ""},
		{"bad first, good second", []string{`<magnet:?dn=x>; rel=describedby, <` + testMagnet + `>; rel=describedby`}, testHash},
		{"magnet too long", []string{`<` + testMagnet + `&dn=` + strings.Repeat("a", MaxMagnetLen) + `>; rel=describedby`}, ""},
		{"malformed line", []string{`<` + testMagnet + `>; rel="describedby`}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mg, ok := MagnetLink(http.Header{"Link": tc.lines})
			if got := map[bool]string{true: mg.InfoHash.HexString()}[ok]; got != tc.want {
				t.Fatalf("MagnetLink = %q, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

func TestReadMagnet(t *testing.T) {
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"plain", testMagnet, true},
		{"final newline", testMagnet + "\r\n", true},
		{"upper-case scheme", "Magnet:?xt=urn:btih:" + testHash, true},
		{"empty", "", false},
		{"leading space", " " + testMagnet, false},
		{"two magnets", testMagnet + "\n" + testMagnet, false},
		{"inner space", "magnet:?xt=urn:btih:" + testHash + "&dn=a b", false},
		{"nul byte", testMagnet + "\x00", false},
		{"no xt", "magnet:?dn=a.bin", false},
		{"html", "<html>magnet:?xt=urn:btih:" + testHash, false},
		{"too long", testMagnet + "&dn=" + strings.Repeat("a", MaxMagnetLen), false},
		{"metainfo", "d4:infod6:lengthi1eee", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mg, err := ReadMagnet(strings.NewReader(tc.body))
			if tc.ok != (err == nil) {
				t.Fatalf("ReadMagnet = %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrMagnetBody) {
					t.Fatalf("error %v does not wrap ErrMagnetBody", err)
				}
				return
			}
			if mg.InfoHash.HexString() != testHash {
				t.Fatalf("info-hash %s", mg.InfoHash.HexString())
			}
		})
	}
	t.Run("reads no more than the cap", func(t *testing.T) {
		c := &countReader{}
		if _, err := ReadMagnet(io.MultiReader(strings.NewReader(testMagnet), c)); err == nil {
			t.Fatal("endless body accepted")
		}
		if int64(len(testMagnet))+c.n > MaxMagnetLen+1 {
			t.Fatalf("read %d bytes", int64(len(testMagnet))+c.n)
		}
	})
	t.Run("nil body", func(t *testing.T) {
		if _, err := ReadMagnet(nil); !errors.Is(err, ErrMagnetBody) {
			t.Fatal(err)
		}
	})
}

func TestDecideMagnet(t *testing.T) {
	link := `<` + testMagnet + `>; rel="describedby"`
	resp := func(status int, hdr ...string) *http.Response {
		r := &http.Response{StatusCode: status, Header: make(http.Header), Request: getRequest(t, "http://a.example/a.bin")}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	tor := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, nil)
	body := []byte(testMagnet)
	ct, cc := "Content-Type", "Cache-Control"
	magnetBody := Decision{Transform: true, Reason: DecideMagnetBody, Kind: KindMagnetBody}
	magnetLink := Decision{Transform: true, Reason: DecideMagnetLink, Kind: KindMagnetLink}
	tests := []struct {
		name     string
		resp     *http.Response
		injected bool
		prefix   []byte
		want     Decision
	}{
		{"magnet body", resp(200, ct, MediaType), true, body, magnetBody},
		{"magnet body, upper case", resp(200, ct, MediaType), true, []byte("MAGNET:?xt=urn:btih:" + testHash), magnetBody},
		{"magnet body needs the type", resp(200, ct, "text/plain"), true, body, Decision{Reason: DecideNotTorrent}},
		{"magnet body not injected", resp(200, ct, MediaType), false, body, Decision{Reason: DecideNotInjected}},
		{"magnet body no-transform", resp(200, ct, MediaType, cc, "no-transform"), true, body,
			Decision{Refetch: true, Reason: DecideNoTransform}},
		{"magnet body private", resp(200, ct, MediaType, cc, "private"), true, body, Decision{Refetch: true, Reason: DecidePrivate}},
		{"magnet body 404", resp(404, ct, MediaType), true, body, Decision{Refetch: true, Reason: DecideStatus}},
		{"magnet body, no prefix", resp(200, ct, MediaType), true, nil, Decision{Transform: true, Reason: DecideTransform}},
		{"link on the file", resp(200, ct, "audio/mpeg", "Link", link), true, []byte("ID3"), magnetLink},
		{"link without body prefix", resp(200, "Link", link), true, nil, magnetLink},
		{"link not injected", resp(200, ct, "audio/mpeg", "Link", link), false, nil, Decision{Reason: DecideNotInjected}},
		{"link with no-transform", resp(200, ct, "audio/mpeg", "Link", link, cc, "max-age=60, no-transform"), true, nil,
			Decision{Reason: DecideLinkNotUsable}},
		{"link with no-store", resp(200, "Link", link, cc, "no-store"), true, nil, Decision{Reason: DecideLinkNotUsable}},
		{"link with private", resp(200, "Link", link, cc, "private"), true, nil, Decision{Reason: DecideLinkNotUsable}},
		{"link on a 404", resp(404, "Link", link), true, nil, Decision{Reason: DecideLinkNotUsable}},
		{"link on a 206", resp(206, "Link", link), true, nil, Decision{Reason: DecideLinkNotUsable}},
		{"link with another rel", resp(200, "Link", `<`+testMagnet+`>; rel=alternate`), true, nil, Decision{Reason: DecideNotTorrent}},
		{"link to a non-magnet", resp(200, "Link", `<http://a.example/a.torrent>; rel=describedby`), true, nil,
			Decision{Reason: DecideNotTorrent}},
		{"metainfo wins over link", resp(200, ct, MediaType, "Link", link), true, tor, Decision{Transform: true, Reason: DecideTransform}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.resp, tc.injected, tc.prefix); got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("not get", func(t *testing.T) {
		r := resp(200, "Link", link)
		r.Request.Method = http.MethodHead
		if got := Decide(r, true, nil); got != (Decision{Reason: DecideNotGET}) {
			t.Fatalf("%+v", got)
		}
	})
}

// FuzzParseLinks runs ParseLinks on arbitrary Link values: no panic, the
// bounds hold, every target and relation type is clean, and links written
// back in canonical form parse to the same links. MagnetLink never returns
// a magnet without an info-hash.
func FuzzParseLinks(f *testing.F) {
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{"Link": {v}}
		links := ParseLinks(h)
		if len(links) > MaxLinks {
			t.Fatalf("%d links", len(links))
		}
		if len(v) > MaxLinkLen && links != nil {
			t.Fatalf("over-long header parsed")
		}
		var canon []string
		for _, l := range links {
			if strings.ContainsAny(l.Target, "<> \t\r\n\x00") {
				t.Fatalf("target %q", l.Target)
			}
			if len(l.Rels) > maxLinkRels {
				t.Fatalf("%d rels", len(l.Rels))
			}
			seen := map[string]bool{}
			for _, r := range l.Rels {
				if r == "" || r != strings.ToLower(r) || strings.ContainsAny(r, " \t") || seen[r] {
					t.Fatalf("rels %q", l.Rels)
				}
				seen[r] = true
			}
			s := "<" + l.Target + ">"
			if l.Rels != nil {
				s += `; rel="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(strings.Join(l.Rels, " ")) + `"`
			}
			canon = append(canon, s)
		}
		if len(canon) > 0 {
			again := ParseLinks(http.Header{"Link": {strings.Join(canon, ", ")}})
			if !reflect.DeepEqual(again, links) && len(strings.Join(canon, ", ")) <= MaxLinkLen {
				t.Fatalf("round trip: %#v became %#v", links, again)
			}
		}
		if mg, ok := MagnetLink(h); ok && mg.InfoHash == (metainfo.Hash{}) && !strings.Contains(strings.ToLower(v), "urn:btih:") {
			t.Fatalf("magnet without an info-hash from %q", v)
		}
	})
}
