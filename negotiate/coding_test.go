package negotiate

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// encode returns data in content coding c ("" for none, "raw-deflate" for
// deflate without zlib's framing, as some servers send it).
func encode(t testing.TB, c string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	var w io.WriteCloser
	switch c {
	case "":
		return data
	case "gzip":
		w = gzip.NewWriter(&b)
	case "deflate":
		w = zlib.NewWriter(&b)
	case "raw-deflate":
		w, _ = flate.NewWriter(&b, flate.DefaultCompression)
	default:
		t.Fatalf("no coding %q", c)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

func answerHeader(ctype, coding string) http.Header {
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	if coding != "" {
		h.Set("Content-Encoding", strings.TrimPrefix(coding, "raw-"))
	}
	return h
}

// TestPrefixOfDecodes: the start of a gzip or deflate answer is sniffed
// decoded, and the body is left for whoever reads it next as it came;
// Decoded then reads the whole document.
func TestPrefixOfDecodes(t *testing.T) {
	torrent := []byte("d8:announce22:http://t.example/annce4:infod6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:" +
		strings.Repeat("x", 20) + "ee")
	page := []byte("<!doctype html>" + strings.Repeat("<p>hello</p>", 3000))
	for _, c := range []string{"", "gzip", "deflate", "raw-deflate"} {
		for _, tc := range []struct {
			name, ctype string
			body        []byte
			torrent     bool
		}{
			{"untyped torrent", "application/octet-stream", torrent, true},
			{"typed torrent", MediaType, torrent, true},
			{"page", "text/html", page, false},
		} {
			enc := encode(t, c, tc.body)
			h := answerHeader(tc.ctype, c)
			br := bufio.NewReaderSize(bytes.NewReader(enc), SniffLen)
			prefix := PrefixOf(br, h)
			if got := SniffTorrent(prefix) || (isTorrentType(tc.ctype) && len(prefix) > 0); got != tc.torrent {
				t.Errorf("%s, coding %q: prefix %q sniffs %v", tc.name, c, prefix[:min(len(prefix), 20)], got)
			}
			if !bytes.HasPrefix(tc.body, prefix) {
				t.Errorf("%s, coding %q: prefix %q is not the decoded start", tc.name, c, prefix[:min(len(prefix), 20)])
			}
			rest, _ := io.ReadAll(br)
			if !bytes.Equal(rest, enc) {
				t.Errorf("%s, coding %q: peeking consumed the body", tc.name, c)
			}
			dec, err := Decoded(bytes.NewReader(enc), h)
			if err != nil {
				t.Fatalf("%s, coding %q: %v", tc.name, c, err)
			}
			if got, _ := io.ReadAll(dec); !bytes.Equal(got, tc.body) {
				t.Errorf("%s, coding %q: decoded %d bytes, want %d", tc.name, c, len(got), len(tc.body))
			}
		}
	}
}

// TestPrefixOfOtherCodings: codings the proxy does not decode give no
// prefix, and Decoded refuses them; a body whose coding is a lie gives
// no prefix either.
func TestPrefixOfOtherCodings(t *testing.T) {
	for _, ce := range []string{"br", "zstd", "gzip, gzip", "compress"} {
		h := http.Header{"Content-Encoding": {ce}, "Content-Type": {"application/octet-stream"}}
		br := bufio.NewReaderSize(strings.NewReader("d4:infod6:lengthi1eee"), SniffLen)
		if p := PrefixOf(br, h); p != nil {
			t.Errorf("Content-Encoding %q: prefix %q", ce, p)
		}
		if _, err := Decoded(strings.NewReader("x"), h); !errors.Is(err, ErrCoding) {
			t.Errorf("Content-Encoding %q: Decoded err %v", ce, err)
		}
	}
	h := http.Header{"Content-Encoding": {"Identity"}}
	if p := PrefixOf(bufio.NewReaderSize(strings.NewReader("de"), SniffLen), h); string(p) != "de" {
		t.Errorf("identity: prefix %q", p)
	}
	h = http.Header{"Content-Encoding": {"gzip"}}
	if p := PrefixOf(bufio.NewReaderSize(strings.NewReader("d4:infod6:lengthi1eee"), SniffLen), h); len(p) != 0 {
		t.Errorf("plain bytes said to be gzip: prefix %q", p)
	}
}

// TestPrefixOfBomb: a small gzip body that inflates hugely gives at most
// SniffLen bytes of prefix.
func TestPrefixOfBomb(t *testing.T) {
	bomb := encode(t, "gzip", append([]byte("d4:infod"), make([]byte, 64<<20)...))
	br := bufio.NewReaderSize(bytes.NewReader(bomb), SniffLen)
	if p := PrefixOf(br, answerHeader("application/octet-stream", "gzip")); len(p) != SniffLen {
		t.Fatalf("prefix of %d bytes", len(p))
	}
}

// TestPrefixOfWaitsNoMore: the start of a gzip answer that is no bencoded
// dictionary is known without waiting for more of a body that is slow to
// come (an event stream).
func TestPrefixOfWaitsNoMore(t *testing.T) {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("data: hello\n\n"))
	zw.Flush() // the stream goes on, unfinished
	pr, pw := io.Pipe()
	go func() {
		pw.Write(b.Bytes())
		// never more, until the reader is done
	}()
	defer pw.Close()
	done := make(chan []byte, 1)
	go func() {
		done <- PrefixOf(bufio.NewReaderSize(pr, SniffLen), answerHeader("text/event-stream", "gzip"))
	}()
	p := <-done
	if !bytes.HasPrefix([]byte("data: hello\n\n"), p) || len(p) < 2 {
		t.Fatalf("prefix %q", p)
	}
}
