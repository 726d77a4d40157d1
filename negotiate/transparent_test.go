package negotiate

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	tor := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, map[string]any{"comment": "hi"})
	get := func() *http.Request { return getRequest(t, "http://a.example/a.bin") }
	resp := func(status int, hdr ...string) *http.Response {
		r := &http.Response{StatusCode: status, Header: make(http.Header), Request: get()}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	ct := "Content-Type"
	tests := []struct {
		name     string
		resp     *http.Response
		injected bool
		prefix   []byte
		want     Decision
	}{
		{"nil response", nil, true, nil, Decision{Reason: DecideNoResponse}},
		{"transform by type", resp(200, ct, MediaType), true, nil, Decision{Transform: true, Reason: DecideTransform}},
		{"type with params and case", resp(200, ct, "Application/X-BitTorrent; charset=binary"), true, nil,
			Decision{Transform: true, Reason: DecideTransform}},
		{"transform by sniff", resp(200, ct, "application/octet-stream"), true, tor, Decision{Transform: true, Reason: DecideTransform}},
		{"not injected passes torrent through", resp(200, ct, MediaType), false, tor, Decision{Reason: DecideNotInjected}},
		{"ordinary answer", resp(200, ct, "text/html"), true, []byte("<html>"), Decision{Reason: DecideNotTorrent}},
		{"private ordinary answer passes", resp(200, ct, "text/html", "Cache-Control", "private"), true, nil,
			Decision{Reason: DecideNotTorrent}},
		{"partial torrent", resp(206, ct, MediaType), true, nil, Decision{Refetch: true, Reason: DecideStatus}},
		{"error typed as torrent", resp(404, ct, MediaType), true, nil, Decision{Refetch: true, Reason: DecideStatus}},
		{"no-transform", resp(200, ct, MediaType, "Cache-Control", "public, NO-TRANSFORM"), true, nil,
			Decision{Refetch: true, Reason: DecideNoTransform}},
		{"private", resp(200, ct, MediaType, "Cache-Control", `private="Set-Cookie", max-age=60`), true, nil,
			Decision{Refetch: true, Reason: DecidePrivate}},
		{"no-store second line", resp(200, ct, MediaType, "Cache-Control", "max-age=5", "Cache-Control", "no-store"), true, nil,
			Decision{Refetch: true, Reason: DecideNoStore}},
		{"cache-control too long to read", resp(200, ct, MediaType, "Cache-Control", "max-age=5, "+strings.Repeat("x,", MaxCacheControlLen/2)), true, nil,
			Decision{Refetch: true, Reason: DecideNoTransform}},
		{"cache-control too long over two lines", resp(200, ct, MediaType, "Cache-Control", strings.Repeat("a", MaxCacheControlLen/2+1),
			"Cache-Control", strings.Repeat("b", MaxCacheControlLen/2)), true, nil, Decision{Refetch: true, Reason: DecideNoTransform}},
		{"cache-control at the limit is read", resp(200, ct, MediaType, "Cache-Control", "public, x="+strings.Repeat("1", MaxCacheControlLen-10)), true, nil,
			Decision{Transform: true, Reason: DecideTransform}},
		{"quoted no-store is an argument", resp(200, ct, MediaType, "Cache-Control", `no-cache="no-store, x"`), true, nil,
			Decision{Transform: true, Reason: DecideTransform}},
		{"torrent download", resp(200, ct, MediaType, "Content-Disposition", `attachment; filename="ubuntu.iso.torrent"`), true, nil,
			Decision{Refetch: true, Reason: DecideTorrentDownload}},
		{"file disposition is fine", resp(200, ct, MediaType, "Content-Disposition", `attachment; filename="x.bin"`), true, nil,
			Decision{Transform: true, Reason: DecideTransform}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Decide(tc.resp, tc.injected, tc.prefix); got != tc.want {
				t.Fatalf("Decide = %+v, want %+v", got, tc.want)
			}
			if got := IsTransparent(tc.resp, tc.injected); got && !tc.want.Transform {
				t.Fatalf("IsTransparent = true, Decide says %+v", tc.want)
			}
		})
	}

	t.Run("not get", func(t *testing.T) {
		for _, m := range []string{http.MethodHead, http.MethodPost} {
			r := resp(200, ct, MediaType)
			r.Request.Method = m
			if got := Decide(r, true, tor); got != (Decision{Reason: DecideNotGET}) {
				t.Errorf("%s: %+v", m, got)
			}
		}
		r := resp(200, ct, MediaType)
		r.Request = nil
		if got := Decide(r, true, tor); got.Transform || got.Refetch {
			t.Errorf("no request: %+v", got)
		}
	})
	t.Run("sniff only counts with a body", func(t *testing.T) {
		r := resp(200, ct, "application/octet-stream")
		if IsTransparent(r, true) {
			t.Fatal("header-only decision transformed an octet-stream")
		}
	})
}

func TestSniffTorrent(t *testing.T) {
	tor := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, map[string]any{
		"announce-list": []any{[]any{"http://t1.example/a"}, []any{"udp://t2.example:80"}},
		"creation date": 1700000000,
		"comment":       "d4:info",
	})
	long := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, map[string]any{"comment": strings.Repeat("c", SniffLen)})
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"real torrent", tor, true},
		{"minimal", []byte("d4:infod"), true},
		{"info first of many", []byte("d8:announce3:abc4:infod4:name"), true},
		{"nested values skipped", []byte("d1:ald1:xi-5eei0ee1:yi0e4:infod"), true},
		{"info not a dict", []byte("d4:info4:abcd"), false},
		{"info truncated", []byte("d4:info"), false},
		{"no info", []byte("d1:ai1ee"), false},
		{"empty", nil, false},
		{"html", []byte("<!doctype html>"), false},
		{"list", []byte("l4:infoe"), false},
		{"leading zero length", []byte("d04:infod"), false},
		{"leading zero int", []byte("d1:ai01e4:infod"), false},
		{"negative zero", []byte("d1:ai-0e4:infod"), false},
		{"empty int", []byte("d1:aie4:infod"), false},
		{"string past prefix", []byte("d9:abc"), false},
		{"key not a string", []byte("di1e4:infod"), false},
		{"info beyond sniff window", long, false},
		{"deep nesting", []byte("d1:a" + strings.Repeat("l", 100) + strings.Repeat("e", 100) + "4:infod"), false},
		{"huge length", []byte("d999999999999:x"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SniffTorrent(tc.in); got != tc.want {
				t.Fatalf("SniffTorrent(%.40q) = %v", tc.in, got)
			}
		})
	}
}

// TestPrefixWaitsForNoMoreThanNeeded: Prefix returns as soon as the bytes
// Decide needs have arrived, from a body that is still open, and waits
// when they have not.
func TestPrefixWaitsForNoMoreThanNeeded(t *testing.T) {
	tor := torrentBytes(t, "a.bin", []fileSpec{{length: 40000}}, nil)
	for _, tc := range []struct {
		name, ctype string
		sent        string // all that has arrived; the body stays open
		waits       bool   // Prefix needs more, until the body ends
		want        string
	}{
		{name: "metainfo by type", ctype: MediaType, sent: string(tor[:20]), want: string(tor[:len(magnetScheme)])},
		{name: "magnet by type", ctype: MediaType + "; charset=utf-8", sent: "magnet:?xt=urn:btih:", want: "magnet:?"},
		{name: "html", ctype: "text/html", sent: "<!doctype html>", want: "<!"},
		{name: "event stream", ctype: "text/event-stream", sent: "data: {}\n\n", want: "da"},
		{name: "one byte so far", sent: "x", waits: true, want: "x"},
		{name: "maybe bencoded", ctype: "application/octet-stream", sent: "d4:", waits: true, want: "d4:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte(tc.sent))
			got := make(chan []byte, 1)
			go func() { got <- Prefix(bufio.NewReaderSize(pr, SniffLen), tc.ctype) }()
			var b []byte
			select {
			case b = <-got:
				if tc.waits {
					t.Fatalf("returned %q without waiting for more", b)
				}
			case <-time.After(200 * time.Millisecond):
				if !tc.waits {
					t.Fatal("Prefix waited for more of the body than Decide needs")
				}
				pw.CloseWithError(io.ErrUnexpectedEOF) // the body ends
				b = <-got
			}
			if string(b) != tc.want {
				t.Fatalf("prefix %q, want %q", b, tc.want)
			}
		})
	}
	// A body that may be a torrent by its bytes alone is sniffed whole.
	b := Prefix(bufio.NewReaderSize(bytes.NewReader(tor), SniffLen), "application/octet-stream")
	if !bytes.Equal(b, tor[:min(len(tor), SniffLen)]) || !SniffTorrent(b) {
		t.Fatalf("sniffed %d bytes of %d", len(b), len(tor))
	}
}
