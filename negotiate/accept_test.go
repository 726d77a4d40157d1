package negotiate

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestInjectAccept(t *testing.T) {
	cfg := Config{
		ExcludeHosts: []string{"Excluded.Example", "*.cdn.example", "[::1]:8080", "10.0.0.1"},
		ExcludeURLs: func(u *url.URL) bool {
			return u.Host == "tracker.example" && u.Path == "/announce"
		},
	}
	tests := []struct {
		name     string
		method   string
		target   string
		hdr      []string
		want     bool
		reason   string
		wantAcc  string // the Accept afterwards; "-" means absent
		length   int64  // the request's ContentLength
		chunked  bool   // the request's body is chunked
		noChange bool   // Accept must be unchanged
	}{
		{name: "no accept", target: "http://a.example/f.iso", want: true, reason: ReasonInjectedDefault,
			wantAcc: "application/x-bittorrent, */*"},
		{name: "browser accept", target: "http://a.example/f.iso",
			hdr:  []string{"Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
			want: true, reason: ReasonInjected,
			wantAcc: "application/x-bittorrent, text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8"},
		{name: "narrow accept keeps narrow", target: "http://a.example/a.mp3", hdr: []string{"Accept", "audio/mpeg"},
			want: true, reason: ReasonInjected, wantAcc: "application/x-bittorrent, audio/mpeg"},
		{name: "two field lines", target: "http://a.example/", hdr: []string{"Accept", "text/html", "Accept", "*/*; q=0.1"},
			want: true, reason: ReasonInjected, wantAcc: "application/x-bittorrent, text/html, */*; q=0.1"},
		{name: "java quirk tolerated", target: "http://a.example/",
			hdr:  []string{"Accept", "text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"},
			want: true, reason: ReasonInjected,
			wantAcc: "application/x-bittorrent, text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2"},
		{name: "quoted comma", target: "http://a.example/", hdr: []string{"Accept", `text/plain;x="a,b", */*`},
			want: true, reason: ReasonInjected, wantAcc: `application/x-bittorrent, text/plain;x="a,b", */*`},
		{name: "empty accept is absent", target: "http://a.example/", hdr: []string{"Accept", ""},
			want: true, reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
		{name: "malformed accept is absent", target: "http://a.example/", hdr: []string{"Accept", "text/html;q=2"},
			want: true, reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
		{name: "garbage accept is absent", target: "http://a.example/", hdr: []string{"Accept", "}{not a type"},
			want: true, reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
		{name: "huge accept is absent", target: "http://a.example/", hdr: []string{"Accept", strings.Repeat("text/html, ", 10000)},
			want: true, reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
		{name: "client asks for torrents", target: "http://a.example/", hdr: []string{"Accept", "Application/X-BitTorrent, */*"},
			reason: ReasonClientAccepts, noChange: true},
		{name: "client asks with params", target: "http://a.example/", hdr: []string{"Accept", "application/x-bittorrent;q=0.5"},
			reason: ReasonClientAccepts, noChange: true},
		{name: "client refuses torrents", target: "http://a.example/", hdr: []string{"Accept", "application/x-bittorrent;q=0, */*"},
			reason: ReasonClientRefuses, noChange: true},
		{name: "wildcard application is not explicit", target: "http://a.example/", hdr: []string{"Accept", "application/*"},
			want: true, reason: ReasonInjected, wantAcc: "application/x-bittorrent, application/*"},
		{name: "head", method: http.MethodHead, target: "http://a.example/", reason: ReasonNotGET, wantAcc: "-"},
		{name: "post", method: http.MethodPost, target: "http://a.example/", reason: ReasonNotGET, wantAcc: "-"},
		{name: "authorization", target: "http://a.example/", hdr: []string{"Authorization", "Basic eDp5"},
			reason: ReasonCredentials, wantAcc: "-"},
		{name: "cookie", target: "http://a.example/", hdr: []string{"Cookie", "s=1"}, reason: ReasonCredentials, wantAcc: "-"},
		{name: "empty cookie still counts", target: "http://a.example/", hdr: []string{"Cookie", ""}, reason: ReasonCredentials, wantAcc: "-"},
		{name: "body", target: "http://a.example/search", length: 9, reason: ReasonBody, wantAcc: "-"},
		{name: "chunked body", target: "http://a.example/search", length: -1, chunked: true, reason: ReasonBody, wantAcc: "-"},
		{name: "upgrade", target: "http://a.example/", hdr: []string{"Upgrade", "websocket"}, reason: ReasonUpgrade, wantAcc: "-"},
		{name: "no-transform", target: "http://a.example/", hdr: []string{"Cache-Control", "max-age=0, No-Transform"},
			reason: ReasonNoTransform, wantAcc: "-"},
		{name: "cache-control too long to read", target: "http://a.example/", hdr: []string{"Cache-Control", strings.Repeat("max-age=0, ", MaxCacheControlLen/10)},
			reason: ReasonNoTransform, wantAcc: "-"},
		{name: "via names us", target: "http://a.example/", hdr: []string{"Via", "1.0 fred, 1.1 TBProxy (x, y)"},
			reason: ReasonVia, wantAcc: "-"},
		{name: "via in a comment does not count", target: "http://a.example/", hdr: []string{"Via", "1.1 fred (1.1 tbproxy)"},
			want: true, reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
		{name: "torrent url", target: "http://a.example/x/ubuntu.iso.TORRENT", reason: ReasonTorrentURL, wantAcc: "-"},
		{name: "excluded exact host with port", target: "http://EXCLUDED.example.:8080/f", reason: ReasonExcludedHost, wantAcc: "-"},
		{name: "excluded subdomain", target: "http://a.b.cdn.example/f", reason: ReasonExcludedHost, wantAcc: "-"},
		{name: "suffix does not cover its apex", target: "http://cdn.example/f", want: true, reason: ReasonInjectedDefault,
			wantAcc: "application/x-bittorrent, */*"},
		{name: "suffix needs a label boundary", target: "http://xcdn.example/f", want: true, reason: ReasonInjectedDefault,
			wantAcc: "application/x-bittorrent, */*"},
		{name: "excluded ipv6 any port", target: "http://[::1]:9/f", reason: ReasonExcludedHost, wantAcc: "-"},
		{name: "excluded ipv4", target: "http://10.0.0.1/f", reason: ReasonExcludedHost, wantAcc: "-"},
		{name: "excluded url", target: "http://tracker.example/announce?x=1", reason: ReasonExcludedURL, wantAcc: "-"},
		{name: "other path of tracker host", target: "http://tracker.example/file.bin", want: true,
			reason: ReasonInjectedDefault, wantAcc: "application/x-bittorrent, */*"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := getRequest(t, tc.target, tc.hdr...)
			if tc.method != "" {
				r.Method = tc.method
			}
			r.ContentLength = tc.length
			if tc.chunked {
				r.TransferEncoding = []string{"chunked"}
			}
			before := strings.Join(r.Header.Values("Accept"), "|")
			got, reason := InjectAccept(r, cfg)
			if got != tc.want || reason != tc.reason {
				t.Fatalf("InjectAccept = %v, %q; want %v, %q", got, reason, tc.want, tc.reason)
			}
			after := r.Header.Values("Accept")
			switch {
			case tc.noChange:
				if strings.Join(after, "|") != before {
					t.Fatalf("Accept changed from %q to %q", before, after)
				}
			case tc.wantAcc == "-":
				if len(after) != 0 {
					t.Fatalf("Accept = %q, want absent", after)
				}
			default:
				if len(after) != 1 || after[0] != tc.wantAcc {
					t.Fatalf("Accept = %q, want %q", after, tc.wantAcc)
				}
			}
		})
	}
}

func TestInjectAcceptNil(t *testing.T) {
	if ok, reason := InjectAccept(nil, Config{}); ok || reason != ReasonNoRequest {
		t.Fatalf("nil request: %v, %q", ok, reason)
	}
	r := &http.Request{Method: "", URL: mustURL(t, "http://a.example/")} // nil Header, "" means GET
	if ok, _ := InjectAccept(r, Config{}); !ok || r.Header.Get("Accept") != defaultAccept {
		t.Fatalf("nil header: %v, %q", ok, r.Header.Get("Accept"))
	}
}

// TestInjectAcceptHostileValues checks that a control character smuggled
// into an Accept value is never re-emitted: such an Accept is malformed.
func TestInjectAcceptHostileValues(t *testing.T) {
	for _, v := range []string{
		"text/html\r\nX-Injected: 1",
		"text/html\nX-Injected: 1",
		"text/html;a=\"\r\n\"",
		"text/html\x00",
		"text/html;a=\"unterminated",
	} {
		r := getRequest(t, "http://a.example/")
		r.Header["Accept"] = []string{v}
		ok, reason := InjectAccept(r, Config{})
		if !ok || reason != ReasonInjectedDefault || r.Header.Get("Accept") != defaultAccept {
			t.Errorf("Accept %q: %v %q -> %q", v, ok, reason, r.Header.Get("Accept"))
		}
	}
}

func TestParseQ(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"1", 1000, true}, {"1.000", 1000, true}, {"0", 0, true}, {"0.5", 500, true}, {"0.001", 1, true},
		{".2", 200, true}, {"1.001", 0, false}, {"2", 0, false}, {"0.1234", 0, false}, {"", 0, false},
		{".", 0, false}, {"-1", 0, false}, {"0.a", 0, false}, {"1.", 1000, true},
	}
	for _, tc := range tests {
		got, ok := parseQ(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseQ(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestAcceptsTorrent is the publisher's side of the negotiation: which
// Accept values ask it for metainfo.
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
		{"the first q is the weight", []string{"application/x-bittorrent;q=0;q=1"}, false},
		{"no leading zero", []string{"application/x-bittorrent;q=.5"}, true},
		{"another range malformed", []string{"text/html;level, application/x-bittorrent"}, false},
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
		{"too long", []string{strings.Repeat("text/plain, ", MaxAcceptLen/12+1) + "application/x-bittorrent"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.accept {
				h.Add("Accept", v)
			}
			if got := AcceptsTorrent(h); got != tt.want {
				t.Errorf("AcceptsTorrent(%q) = %v, want %v", tt.accept, got, tt.want)
			}
		})
	}
}
