package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// answerKind is how guessWatch answers a request for a torrent.
type answerKind int

const (
	answerTorrent answerKind = iota // a trackerless torrent of the world's content
	answerSaying                    // the same, saying what the plain answer is
	answerPlain                     // the world's content, plainly (no torrent)
)

// guessWatch serves path. A request for a torrent is answered as kind
// says, after the origin has looked for the proxy's one-byte question
// about path (a plain GET with Range bytes=0-0). With early, the answer
// waits for the question, up to 10 s, and the test fails without it: the
// proxy guessed that path would be metainfo and asked at once. Without
// early, the answer waits 300 ms for it, and the test fails if it comes:
// the proxy must not ask before it has the answer. Plain requests get the
// world's content.
func (w *world) guessWatch(t *testing.T, path string, early bool, kind answerKind) {
	t.Helper()
	src := filepath.Join(t.TempDir(), strings.TrimPrefix(path, "/"))
	if err := os.WriteFile(src, w.content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), src, metainfo.BuildOptions{PieceLength: 64 << 10, CreationDate: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	torrent, _ := m.Marshal()
	asked := make(chan struct{})
	var once sync.Once
	w.mux.HandleFunc(path, func(rw http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), negotiate.MediaType) {
			if r.Header.Get("Range") == "bytes=0-0" {
				once.Do(func() { close(asked) })
			}
			http.ServeContent(rw, r, filepath.Base(src), time.Time{}, bytes.NewReader(w.content))
			return
		}
		wait := 300 * time.Millisecond
		if early {
			wait = 10 * time.Second
		}
		select {
		case <-asked:
			if !early {
				t.Errorf("%s: the origin was asked to confirm the file before the negotiation's answer", path)
			}
		case <-time.After(wait):
			if early {
				t.Errorf("%s: the origin was not asked to confirm the file beside the negotiation", path)
			}
		case <-r.Context().Done():
			return
		}
		switch kind {
		case answerPlain:
			rw.Header().Set("Content-Type", "audio/mpeg")
			rw.Write(w.content)
			return
		case answerSaying:
			negotiate.SetPlainFile(rw.Header(), int64(len(w.content)), time.Unix(1_700_000_000, 0))
		}
		rw.Header().Set("Content-Type", negotiate.MediaType)
		rw.Write(torrent)
	})
}

// fetchAs GETs path through the proxy and checks that the answer is the
// world's content, synthesised from a torrent or not, as transformed says.
func (w *world) fetchAs(t *testing.T, path string, transformed bool) {
	t.Helper()
	resp, err := w.client.Get(w.origin.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) {
		t.Fatalf("%s: status %d, %d bytes (%v): not the file", path, resp.StatusCode, len(body), err)
	}
	if got := strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`); got != transformed {
		t.Fatalf("%s: ETag %q, transformed %v, want %v", path, resp.Header.Get("ETag"), got, transformed)
	}
}

// guess is a URL served by guessWatch, as a test fetches it.
type guess struct {
	path  string
	early bool // the proxy must ask about it beside the negotiation
	kind  answerKind
}

// fetchGuesses serves every guess (guessWatch), then fetches them in
// order through the proxy: each must be the world's content, synthesised
// unless its origin answers plainly.
func (w *world) fetchGuesses(t *testing.T, gs ...guess) {
	t.Helper()
	for _, g := range gs {
		w.guessWatch(t, g.path, g.early, g.kind)
	}
	for _, g := range gs {
		w.fetchAs(t, g.path, g.kind != answerPlain)
	}
	w.questionsEnded(t)
}

// TestEarlyQuestionForKnownKind: once a host has answered a .dat URL
// (not a bulky file's name) with metainfo that needed the origin's
// confirmation, the next .dat URL of that host gets its question at once,
// beside the negotiation; a URL of another such kind does not.
func TestEarlyQuestionForKnownKind(t *testing.T) {
	newWorld(t, 256<<10).fetchGuesses(t,
		guess{"/first.dat", false, answerTorrent},
		guess{"/second.dat", true, answerTorrent},
		guess{"/third.DAT", true, answerTorrent}, // the extension's case does not matter
		guess{"/other.txt", false, answerTorrent},
	)
}

// TestEarlyQuestionForBulkyFile: a bulky file's URL (.mp3, .iso) of a
// kind not seen lately is guessed to be a torrent and asked about at once,
// the first of its kind too; and the kind is then learned.
func TestEarlyQuestionForBulkyFile(t *testing.T) {
	newWorld(t, 256<<10).fetchGuesses(t,
		guess{"/episode-1.mp3", true, answerTorrent},
		guess{"/episode-2.mp3", true, answerTorrent},
		guess{"/disc.ISO", true, answerTorrent},
	)
}

// TestWrongGuessRemembered: a .dat URL of a host whose .dat URLs were
// metainfo gets its question early, but the origin answers it plainly:
// the client gets the plain answer, and the next .dat URL is not guessed.
// So too for a bulky file's first URL: its kind is remembered as plain,
// until one of its URLs is metainfo that needs the question.
func TestWrongGuessRemembered(t *testing.T) {
	newWorld(t, 256<<10).fetchGuesses(t,
		guess{"/first.dat", false, answerTorrent},
		guess{"/plain.dat", true, answerPlain},
		guess{"/plain-too.dat", false, answerPlain},
		guess{"/song.mp3", true, answerPlain},
		guess{"/song-too.mp3", false, answerPlain},
		guess{"/now-torrent.mp3", false, answerTorrent},
		guess{"/torrent-again.mp3", true, answerTorrent},
	)
}

// TestSayingOriginNotGuessed: an origin that says what its plain answer
// is needs no question, so its kinds are remembered as plain, bulky
// files' too once one has been asked about; and a kind learned from a URL
// that needed one is remembered as plain when the next URL's answer says
// what it is.
func TestSayingOriginNotGuessed(t *testing.T) {
	newWorld(t, 256<<10).fetchGuesses(t,
		guess{"/said.dat", false, answerSaying},
		guess{"/said-too.dat", false, answerSaying},
		guess{"/said.mp3", true, answerSaying},
		guess{"/said-too.mp3", false, answerSaying},
		guess{"/asked.txt", false, answerTorrent},
		guess{"/now-said.txt", true, answerSaying},
		guess{"/said-again.txt", false, answerSaying},
	)
}

func TestKindOf(t *testing.T) {
	for _, tt := range []struct{ a, b string }{
		{"http://Example.com/a/x.MP3", "http://example.com:80/b/y.mp3"},
		{"https://example.com/x.mp3", "https://example.com:443/z.mp3?q=1"},
		{"http://example.com/dir.d/file", "http://example.com/other"},
		{"http://example.com/x." + strings.Repeat("a", maxKindExt), "http://example.com/noext"},
	} {
		a, _ := url.Parse(tt.a)
		b, _ := url.Parse(tt.b)
		if kindOf(a) != kindOf(b) {
			t.Errorf("kindOf(%s) = %q, kindOf(%s) = %q; want equal", tt.a, kindOf(a), tt.b, kindOf(b))
		}
	}
	for _, tt := range []struct{ a, b string }{
		{"http://example.com/x.mp3", "https://example.com/x.mp3"},
		{"http://example.com/x.mp3", "http://example.com:8080/x.mp3"},
		{"http://example.com/x.mp3", "http://example.org/x.mp3"},
		{"http://example.com/x.mp3", "http://example.com/x.ogg"},
	} {
		a, _ := url.Parse(tt.a)
		b, _ := url.Parse(tt.b)
		if kindOf(a) == kindOf(b) {
			t.Errorf("kindOf(%s) = kindOf(%s) = %q; want different", tt.a, tt.b, kindOf(a))
		}
	}
}
