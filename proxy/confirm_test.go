package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
	"github.com/tbproxy/tbproxy/swarm"
)

func TestCheckConfirmation(t *testing.T) {
	made := time.Unix(1_700_000_000, 0).UTC()
	before := made.Add(-time.Hour).Format(http.TimeFormat)
	after := made.Add(time.Hour).Format(http.TimeFormat)
	for _, tc := range []struct {
		name   string
		status int
		header map[string]string
		length int64 // Content-Length of a 200
		ok     bool
	}{
		{"206 of the first byte", 206, map[string]string{"Content-Range": "bytes 0-0/1000"}, 1, true},
		{"206, unmodified since the torrent", 206, map[string]string{"Content-Range": "bytes 0-0/1000", "Last-Modified": before}, 1, true},
		{"200 of the whole file", 200, nil, 1000, true},
		{"206, another size", 206, map[string]string{"Content-Range": "bytes 0-0/999"}, 1, false},
		{"206, unknown size", 206, map[string]string{"Content-Range": "bytes 0-0/*"}, 1, false},
		{"206, another byte", 206, map[string]string{"Content-Range": "bytes 1-1/1000"}, 1, false},
		{"206, no Content-Range", 206, nil, 1, false},
		{"200, another size", 200, nil, 999, false},
		{"200, unknown size", 200, nil, -1, false},
		{"modified after the torrent was made", 206, map[string]string{"Content-Range": "bytes 0-0/1000", "Last-Modified": after}, 1, false},
		{"compressed", 200, map[string]string{"Content-Encoding": "gzip"}, 1000, false},
		{"a metainfo document", 200, map[string]string{"Content-Type": "application/x-bittorrent; charset=binary"}, 1000, false},
		{"not found", 404, nil, 9, false},
		{"server error", 500, nil, 9, false},
		{"redirect", 302, map[string]string{"Location": "/elsewhere"}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Status: http.StatusText(tc.status), Header: http.Header{}, ContentLength: tc.length}
			for k, v := range tc.header {
				resp.Header.Set(k, v)
			}
			err := checkConfirmation(resp, 1000, made)
			if (err == nil) != tc.ok {
				t.Fatalf("checkConfirmation: %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestHeadersBeforeFirstPiece: once the origin confirms it serves the
// torrent's file, the synthesised headers go out before the first piece
// has come; the body follows, verified.
func TestHeadersBeforeFirstPiece(t *testing.T) {
	w := newWorld(t, 512<<10)
	release := make(chan struct{})
	w.lonely(t, "/slow.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if rg := r.Header.Get("Range"); rg != "" && rg != "bytes=0-0" {
			select { // the web seed waits until the headers are seen
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		http.ServeContent(rw, r, "slow.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	resp, err := w.client.Get(w.origin.URL + "/slow.mp3")
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	close(release)
	w.servedWhole(t, resp)
}

// servedWhole checks that resp, the proxy's first response, is the
// synthesised answer with the whole file, and that nothing fell back.
func (w *world) servedWhole(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(w.content)) || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("status %d, length %d, ETag %q: not the synthesised answer", resp.StatusCode, resp.ContentLength, resp.Header.Get("ETag"))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, w.content) {
		t.Fatalf("body: %d bytes, %v", len(body), err)
	}
	if st := w.proxy.Status(); st.Fallbacks != 0 || st.Transformed != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestAbortAfterHeaders: an origin that confirms the file but then
// delivers none of it, with no peer either: the headers have gone out, so
// the stream is aborted once the first-byte budget has passed, never
// passed off as complete.
func TestAbortAfterHeaders(t *testing.T) {
	w := newWorld(t, 512<<10)
	w.lonely(t, "/teaser.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if rg := r.Header.Get("Range"); rg != "" && rg != "bytes=0-0" {
			http.Error(rw, "no more today", http.StatusServiceUnavailable)
			return
		}
		http.ServeContent(rw, r, "teaser.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	start := time.Now()
	resp, err := w.client.Get(w.origin.URL + "/teaser.mp3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("status %d, ETag %q: not the synthesised answer", resp.StatusCode, resp.Header.Get("ETag"))
	}
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a stream with no bytes to send ended cleanly after %d bytes", len(body))
	}
	if len(body) != 0 {
		t.Fatalf("%d bytes reached the client", len(body))
	}
	t.Logf("aborted after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestConfirmationRemembered: a second request for the same file soon
// after, such as a player's seek, is not confirmed again.
func TestConfirmationRemembered(t *testing.T) {
	w := newWorld(t, 1<<20)
	var confirms atomic.Int64
	w.lonely(t, "/seek.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			confirms.Add(1)
		}
		http.ServeContent(rw, r, "seek.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	for _, rg := range [][2]int{{100_000, 100_099}, {700_000, 700_999}} {
		resp, body := w.get(t, "/seek.mp3", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", rg[0], rg[1])})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, w.content[rg[0]:rg[1]+1]) {
			t.Fatalf("range %v: status %d, %d bytes", rg, resp.StatusCode, len(body))
		}
	}
	if st := w.proxy.Status(); st.Transformed != 2 {
		t.Fatalf("status %+v", st)
	}
	w.questionsEnded(t)
	if n := confirms.Load(); n != 1 {
		t.Fatalf("the origin was asked to confirm the file %d times, want once", n)
	}
}

// questionsEnded waits until no shared confirmation (Proxy.asking) is
// under way. A response whose headers went out with verified bytes lets
// its question finish on its own (release), so it may still be on its
// way to the origin when the response ends.
func (w *world) questionsEnded(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.proxy.mu.Lock()
		n := len(w.proxy.asking)
		w.proxy.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d confirmations still under way after 10 s", n)
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedStore holds each Open until the test lets it go: nil opens the
// torrent in memory, an error fails it.
type gatedStore struct {
	memoryStore
	gate chan error
}

func (s gatedStore) Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error) {
	if err := <-s.gate; err != nil {
		return nil, err
	}
	return s.memoryStore.Open(m, transient)
}

// enteringStore is a gatedStore that tells entered when an Open begins,
// and left when it has returned.
type enteringStore struct {
	gatedStore
	entered, left chan struct{}
}

func (s enteringStore) Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error) {
	select {
	case s.entered <- struct{}{}:
	default:
	}
	defer func() {
		select {
		case s.left <- struct{}{}:
		default:
		}
	}()
	return s.gatedStore.Open(m, transient)
}

// getAsync starts a GET of path through the proxy; the response (or the
// error) arrives on the channel once its headers have.
func (w *world) getAsync(path string) <-chan any {
	ch := make(chan any, 1)
	go func() {
		resp, err := w.client.Get(w.origin.URL + path)
		if err != nil {
			ch <- err
			return
		}
		ch <- resp
	}()
	return ch
}

// awaitHeaders is the response getAsync gets, failing the test if its
// headers take longer than d.
func awaitHeaders(t *testing.T, ch <-chan any, d time.Duration, why string) *http.Response {
	t.Helper()
	select {
	case v := <-ch:
		resp, ok := v.(*http.Response)
		if !ok {
			t.Fatal(v)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	case <-time.After(d):
		t.Fatalf("no headers after %v: %s", d, why)
		return nil
	}
}

// gatedWorld is a world whose torrents open only as the returned gate
// says (gatedStore), with the content at path on an origin that has no
// peers for it.
func gatedWorld(t *testing.T, path string) (*world, chan error) {
	t.Helper()
	gate := make(chan error)
	w := newWorld(t, 512<<10, func(c *Config) { c.Store = gatedStore{gate: gate} })
	name := strings.TrimPrefix(path, "/")
	w.lonely(t, path, func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, name, time.Time{}, bytes.NewReader(w.content))
	})
	return w, gate
}

// TestHeadersBeforeTorrentOpens: once the origin has confirmed the file,
// the headers do not wait for the torrent to open (its cache entry, the
// engine); the body does, and then arrives whole.
func TestHeadersBeforeTorrentOpens(t *testing.T) {
	w, gate := gatedWorld(t, "/late.mp3")
	ch := w.getAsync("/late.mp3")
	resp := awaitHeaders(t, ch, 10*time.Second, "the headers waited for the torrent to open")
	gate <- nil
	w.servedWhole(t, resp)
}

// TestOpenFailsAfterHeaders: a torrent that cannot be opened after the
// headers went out aborts its response; the responses that follow wait
// for their torrent, so that a cache that keeps failing leaves them the
// plain answer, until a torrent opens again.
func TestOpenFailsAfterHeaders(t *testing.T) {
	w, gate := gatedWorld(t, "/full.mp3")
	diskFull := errors.New("no space left on device")

	resp := awaitHeaders(t, w.getAsync("/full.mp3"), 10*time.Second, "the headers waited for the torrent to open")
	gate <- diskFull
	if !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("ETag %q: not the synthesised answer", resp.Header.Get("ETag"))
	}
	if body, err := io.ReadAll(resp.Body); err == nil || len(body) != 0 {
		t.Fatalf("a response whose torrent did not open got %d bytes, err %v", len(body), err)
	}

	ch := w.getAsync("/full.mp3")
	select {
	case v := <-ch:
		t.Fatalf("headers went out before the torrent opened, after a failed open: %v", v)
	case gate <- diskFull:
	}
	resp = awaitHeaders(t, ch, 10*time.Second, "the plain answer")
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, w.content) || strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("after a failed open: %d bytes, %v, ETag %q; want the plain answer", len(body), err, resp.Header.Get("ETag"))
	}

	ch = w.getAsync("/full.mp3")
	gate <- nil
	resp = awaitHeaders(t, ch, 10*time.Second, "the torrent opened")
	body, err = io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, w.content) || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("once the cache works again: %d bytes, %v, ETag %q; want the synthesised answer", len(body), err, resp.Header.Get("ETag"))
	}
	if st := w.proxy.Status(); st.Fallbacks != 1 || st.Transformed != 2 {
		t.Fatalf("status %+v", st)
	}
}

// TestConfirmationAskedWhileMetainfoIsRead: the origin is asked to confirm
// the file as soon as its answer to the negotiation is seen to be
// metainfo, not once the whole document is read. The origin here holds
// back the second half of the metainfo until it has been asked.
func TestConfirmationAskedWhileMetainfoIsRead(t *testing.T) {
	w := newWorld(t, 512<<10)
	asked := make(chan struct{})
	var once sync.Once
	w.mux.HandleFunc("/early.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			if r.Header.Get("Range") == "bytes=0-0" {
				once.Do(func() { close(asked) })
			}
			http.ServeContent(rw, r, "early.mp3", time.Time{}, bytes.NewReader(w.content))
			return
		}
		rw.Header().Set("Content-Type", "application/x-bittorrent")
		rw.Header().Set("Content-Length", strconv.Itoa(len(w.torrent)))
		half := len(w.torrent) / 2
		rw.Write(w.torrent[:half])
		rw.(http.Flusher).Flush()
		select {
		case <-asked:
		case <-time.After(5 * time.Second):
			t.Error("the origin was not asked to confirm the file while the metainfo was read")
		case <-r.Context().Done():
			return
		}
		rw.Write(w.torrent[half:])
	})
	resp, body := w.get(t, "/early.mp3", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("status %d, %d bytes, ETag %q: not the synthesised answer", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
}

// TestStaleTorrentFallsBack: the origin's file is no longer the one its
// torrent describes (another size, or modified after the torrent was
// made). Before the headers go out, the proxy learns so from the
// confirmation and answers with the origin's file, plainly; it does not
// wait for the torrent, which here never opens (HARDENING 69).
func TestStaleTorrentFallsBack(t *testing.T) {
	made := time.Unix(1_700_000_000, 0) // lonely's torrents' creation date
	for _, tc := range []struct {
		name  string
		file  func(old []byte) []byte
		mtime time.Time
	}{
		{"another size", func(old []byte) []byte { return append(bytes.Clone(old), "and more"...) }, time.Time{}},
		{"modified after the torrent", func(old []byte) []byte {
			b := bytes.Clone(old)
			b[0] ^= 0xff
			return b
		}, made.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan error)
			w := newWorld(t, 512<<10, func(c *Config) { c.Store = gatedStore{gate: gate} })
			current := tc.file(w.content)
			w.lonely(t, "/news.mp3", func(rw http.ResponseWriter, r *http.Request) {
				http.ServeContent(rw, r, "news.mp3", tc.mtime, bytes.NewReader(current))
			})
			defer func() {
				select { // let the torrent's opening, still pending, end
				case gate <- nil:
				case <-time.After(10 * time.Second):
				}
			}()
			resp := awaitHeaders(t, w.getAsync("/news.mp3"), 10*time.Second, "the headers waited for a stale torrent")
			body, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(body, current) || strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
				t.Fatalf("%d bytes, %v, ETag %q; want the origin's current file, plainly", len(body), err, resp.Header.Get("ETag"))
			}
			if st := w.proxy.Status(); st.Fallbacks != 1 || st.Transformed != 0 {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// TestOriginSaysPlainFile: an origin whose metainfo answer says what its
// plain answer is (negotiate.SetPlainFile), matching the torrent's file,
// is not asked to confirm it (nor guessed to be a torrent: its name is no
// bulky file's): the headers go out before the first piece has come, and
// the body follows, verified.
func TestOriginSaysPlainFile(t *testing.T) {
	w := newWorld(t, 512<<10)
	said := http.Header{}
	negotiate.SetPlainFile(said, int64(len(w.content)), time.Unix(1_700_000_000, 0)) // the torrent's creation date
	release := make(chan struct{})
	var confirms atomic.Int64
	w.lonelySaying(t, "/said.dat", said, func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			confirms.Add(1)
		}
		select { // the web seed waits until the headers are seen
		case <-release:
		case <-r.Context().Done():
			return
		}
		http.ServeContent(rw, r, "said.dat", time.Time{}, bytes.NewReader(w.content))
	})
	resp := awaitHeaders(t, w.getAsync("/said.dat"), 10*time.Second, "the headers waited although the origin said what it serves")
	close(release)
	w.servedWhole(t, resp)
	w.questionsEnded(t)
	if n := confirms.Load(); n != 0 {
		t.Fatalf("the origin was asked to confirm the file %d times, want never", n)
	}
}

// TestOriginSaysAnotherFile: an origin whose metainfo answer says that
// its plain answer is another file than the torrent's (another size, or
// modified after the torrent was made) gets the request plainly, and no
// torrent is opened: an opening would wait on the gate for ever, and the
// package's leak check would find it.
func TestOriginSaysAnotherFile(t *testing.T) {
	made := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name  string
		size  int64
		mtime time.Time
	}{
		{"another size", 512<<10 + 1, made},
		{"modified after the torrent", 512 << 10, made.Add(time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := make(chan error)
			w := newWorld(t, 512<<10, func(c *Config) { c.Store = gatedStore{gate: gate} })
			said := http.Header{}
			negotiate.SetPlainFile(said, tc.size, tc.mtime)
			w.lonelySaying(t, "/old.mp3", said, func(rw http.ResponseWriter, r *http.Request) {
				http.ServeContent(rw, r, "old.mp3", time.Time{}, bytes.NewReader(w.content))
			})
			resp := awaitHeaders(t, w.getAsync("/old.mp3"), 10*time.Second, "the headers waited for a torrent the origin disowned")
			body, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(body, w.content) || strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
				t.Fatalf("%d bytes, %v, ETag %q; want the origin's file, plainly", len(body), err, resp.Header.Get("ETag"))
			}
			if st := w.proxy.Status(); st.Fallbacks != 1 || st.Transformed != 0 {
				t.Fatalf("status %+v", st)
			}
		})
	}
}

// TestOriginSaysMalformed: a malformed word on the plain answer is no
// word at all: the origin is asked to confirm the file, as any origin is.
func TestOriginSaysMalformed(t *testing.T) {
	w := newWorld(t, 512<<10)
	said := http.Header{negotiate.PlainLengthHeader: {"-1"}}
	var confirms atomic.Int64
	w.lonelySaying(t, "/odd.mp3", said, func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			confirms.Add(1)
		}
		http.ServeContent(rw, r, "odd.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	resp, body := w.get(t, "/odd.mp3", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("status %d, %d bytes, ETag %q: not the synthesised answer", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	w.questionsEnded(t)
	if n := confirms.Load(); n != 1 {
		t.Fatalf("the origin was asked to confirm the file %d times, want once", n)
	}
}

// TestJoinedQuestionEndsUnsettled: a response whose headers went out with
// verified bytes lets its confirmation finish on its own, and a second
// request for the same URL joins it while it is under way. The origin then
// does not confirm the file (a 503 to the one-byte probe): the second
// request neither falls back at once nor sends its headers as if
// confirmed; it waits for its verified bytes and is served from the swarm.
func TestJoinedQuestionEndsUnsettled(t *testing.T) {
	w := newWorld(t, 512<<10, func(c *Config) { c.FirstByte = 3 * time.Second })
	const piece = 64 << 10
	const have = 4 * piece // web seed segments from here on wait for seedGo
	size := int64(len(w.content))
	probeGo, seedGo := make(chan struct{}), make(chan struct{})
	closeOnce := func(ch chan struct{}) {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
	t.Cleanup(func() { closeOnce(probeGo); closeOnce(seedGo) })
	w.lonely(t, "/unsure.mp3", func(rw http.ResponseWriter, r *http.Request) {
		rg := r.Header.Get("Range")
		if rg == "bytes=0-0" { // confirmOrigin's probe
			select {
			case <-probeGo:
			case <-r.Context().Done():
				return
			}
			http.Error(rw, "busy", http.StatusServiceUnavailable)
			return
		}
		if s, e, ok := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-"); ok {
			start, _ := negotiate.ParseDigits(s)
			end, _ := negotiate.ParseDigits(e)
			if start%piece == 0 && ((end+1)%piece == 0 || end+1 == size) && start >= have {
				select { // a web seed segment past the first pieces: later
				case <-seedGo:
				case <-r.Context().Done():
					return
				}
			}
		}
		http.ServeContent(rw, r, "unsure.mp3", time.Time{}, bytes.NewReader(w.content))
	})

	// Request 1: its first verified bytes come before the origin answers
	// the probe, so its question is left to finish on its own.
	resp, body := w.get(t, "/unsure.mp3", map[string]string{"Range": "bytes=0-99"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, w.content[:100]) || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("request 1: status %d, %d bytes, ETag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	w.proxy.mu.Lock()
	n := len(w.proxy.asking)
	w.proxy.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d questions under way after request 1, want its detached one", n)
	}

	// Request 2 joins that question.
	type result struct {
		resp *http.Response
		body []byte
		err  error
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, w.origin.URL+"/unsure.mp3", nil)
		req.Header.Set("Range", "bytes=400000-400099")
		resp, err := w.client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		at := time.Now()
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{resp: resp, body: b, err: err, at: at}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		w.proxy.mu.Lock()
		joined := false
		for _, c := range w.proxy.asking {
			joined = joined || c.users > 0
		}
		w.proxy.mu.Unlock()
		if joined {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("request 2 did not join the question under way")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // request 2 now waits for its first bytes
	close(probeGo)                     // the origin does not confirm: 503
	time.Sleep(300 * time.Millisecond)
	released := time.Now()
	close(seedGo) // the verified bytes come

	r := <-done
	if r.err != nil {
		t.Fatalf("request 2: %v", r.err)
	}
	etag := r.resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"bt-`) {
		t.Errorf("request 2 fell back to plain HTTP (ETag %q) %v before its verified bytes came, though the origin only declined to confirm: the joined question was settled as if cancelled (status %+v)",
			etag, released.Sub(r.at).Round(time.Millisecond), w.proxy.Status())
	} else if r.at.Before(released) {
		t.Errorf("request 2's synthesised headers went out %v before any verified byte, though the origin never confirmed the file", released.Sub(r.at).Round(time.Millisecond))
	}
	if !bytes.Equal(r.body, w.content[400000:400100]) {
		t.Errorf("request 2: status %d, %d bytes", r.resp.StatusCode, len(r.body))
	}
}

// TestOriginBytesDifferAnsweredPlainly: an origin whose file changed with
// its size kept, and whose metainfo did not, passes the confirmation; its
// plain bytes, fetched as the implicit web seed, fail the torrent's
// hashes. The proxy remembers it, and answers the URL's next request
// plainly: the client gets the origin's file, not a stalled stream.
func TestOriginBytesDifferAnsweredPlainly(t *testing.T) {
	w := newWorld(t, 256<<10)
	other := bytes.Clone(w.content)
	for i := range other {
		other[i] ^= 0x5a
	}
	w.lonely(t, "/stale.mp3", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("ETag", `"origin-new"`)
		http.ServeContent(rw, r, "", time.Time{}, bytes.NewReader(other))
	})
	url := w.origin.URL + "/stale.mp3"
	// The first request cannot be served from the torrent: its only
	// source serves other bytes. It ends in an error or a fallback.
	if resp, err := w.client.Get(url); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if f, ok := w.proxy.confirmed.Get(url); ok && f.differs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the origin's wrong bytes were not remembered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fallbacks := w.proxy.Status().Fallbacks
	resp, body := w.get(t, "/stale.mp3", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, other) || resp.Header.Get("ETag") != `"origin-new"` {
		t.Fatalf("status %d, ETag %q, the origin's bytes %v", resp.StatusCode, resp.Header.Get("ETag"), bytes.Equal(body, other))
	}
	if got := w.proxy.Status().Fallbacks; got != fallbacks+1 {
		t.Fatalf("fallbacks %d, want %d", got, fallbacks+1)
	}
}

// TestDisownedOpeningOwnedByTheProxy: when the origin's confirmation
// shows another file while the torrent is still opening, the client is
// answered plainly at once, and the opening, left to finish on its own,
// is the proxy's: Close returns only after it has ended (DESIGN §4).
func TestDisownedOpeningOwnedByTheProxy(t *testing.T) {
	gate, entered, left := make(chan error), make(chan struct{}, 1), make(chan struct{}, 1)
	w := newWorld(t, 512<<10, func(c *Config) {
		c.Store = enteringStore{gatedStore: gatedStore{gate: gate}, entered: entered, left: left}
	})
	newer := append(append([]byte{}, w.content...), 'z') // another file: one byte longer
	w.lonely(t, "/changed.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			// The confirmation shows another file only once the
			// torrent is opening.
			select {
			case <-entered:
			case <-time.After(5 * time.Second):
				t.Error("the torrent did not start opening")
			}
		}
		http.ServeContent(rw, r, "changed.mp3", time.Time{}, bytes.NewReader(newer))
	})
	resp, err := w.client.Get(w.origin.URL + "/changed.mp3")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(body, newer) {
		t.Fatalf("%d bytes, %v: want the origin's file, plainly", len(body), err)
	}
	// Let the opening, blocked in its store's Open, go half a second from
	// now.
	helper := make(chan struct{})
	go func() {
		defer close(helper)
		time.Sleep(500 * time.Millisecond)
		select {
		case gate <- nil:
		case <-time.After(5 * time.Second):
		}
	}()
	w.client.Transport.(*http.Transport).CloseIdleConnections()
	w.proxy.Close()
	stillOpening := false
	select {
	case <-left:
	default:
		stillOpening = true
	}
	<-helper
	if stillOpening {
		t.Fatal("Close returned while the torrent's opening was still running (blocked in its store's Open), after its response had ended")
	}
}

// TestNoBodyAnswerHeedsTheOrigin: when the origin's metainfo answer says
// its plain answer is another file (Tbp-Plain-Length), a GET is answered
// plainly (TestOriginSaysAnotherFile). So is a GET whose answer would
// have no body (416, 304): the torrent is stale, and its 416 or 304
// would describe a file the origin no longer serves. A HEAD of the same
// request falls back too (confirmHead).
func TestNoBodyAnswerHeedsTheOrigin(t *testing.T) {
	w := newWorld(t, 512<<10)
	size := int64(len(w.content))
	newer := append(append([]byte{}, w.content...), 'z') // the origin's file now: one byte longer
	said := http.Header{}
	negotiate.SetPlainFile(said, size+1, time.Unix(1_700_000_000, 0))
	w.lonelySaying(t, "/grown.mp3", said, func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, "grown.mp3", time.Time{}, bytes.NewReader(newer))
	})
	t.Run("range past the torrent's file", func(t *testing.T) {
		rg := fmt.Sprintf("bytes=%d-", size)
		head, _ := w.do(t, http.MethodHead, "/grown.mp3", map[string]string{"Range": rg})
		resp, body := w.get(t, "/grown.mp3", map[string]string{"Range": rg})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, []byte("z")) {
			t.Fatalf("GET %s: status %d, body %q, ETag %q (HEAD: %d); want the origin's 206 of its last byte",
				rg, resp.StatusCode, body, resp.Header.Get("ETag"), head.StatusCode)
		}
	})
	t.Run("if-none-match of the stale torrent", func(t *testing.T) {
		etag := `"bt-` + metaOf(t, w, "/grown.mp3") + `-0"`
		resp, body := w.get(t, "/grown.mp3", map[string]string{"If-None-Match": etag})
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, newer) {
			t.Fatalf("GET If-None-Match %s: status %d, %d bytes; want the origin's file (200, %d bytes)",
				etag, resp.StatusCode, len(body), len(newer))
		}
	})
}

// metaOf is the info-hash (hex) of the metainfo the origin answers path
// with.
func metaOf(t *testing.T, w *world, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.origin.URL+path, nil)
	req.Header.Set("Accept", negotiate.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, _, err := negotiate.ReadMetainfo(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m.InfoHash.HexString()
}

// TestConvictedOriginAbortsAtOnce: an origin whose file changed but kept
// its size, with no date to tell (so its confirmation passes and the
// headers go out), is convicted by its first piece, which fails the
// torrent's hashes. With no peer to serve the torrent's bytes, the stream
// that has sent nothing is aborted then, not when its first-byte budget
// (here a minute) runs out; the next request is answered plainly.
func TestConvictedOriginAbortsAtOnce(t *testing.T) {
	w := newWorld(t, 512<<10, func(c *Config) { c.FirstByte = time.Minute })
	other := make([]byte, len(w.content))
	rand.Read(other)
	w.lonely(t, "/changed-same-size.mp3", func(rw http.ResponseWriter, r *http.Request) {
		http.ServeContent(rw, r, "changed-same-size.mp3", time.Time{}, bytes.NewReader(other))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+"/changed-same-size.mp3", nil)
	resp, err := w.client.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && !bytes.Equal(body, other) {
			t.Fatalf("status %d, %d bytes: neither the origin's file nor a broken answer", resp.StatusCode, len(body))
		}
	}
	if ctx.Err() != nil {
		t.Fatal("the stream was not aborted when the origin was convicted")
	}
	resp, body := w.get(t, "/changed-same-size.mp3", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, other) {
		t.Fatalf("then: status %d, %d bytes; want the origin's file, plainly", resp.StatusCode, len(body))
	}
}

// TestNoSourceFallsBackAtOnce: a torrent with no tracker and no peer,
// whose origin answers the file itself with 404: nothing can deliver it,
// so the client gets the origin's plain 404 at once, not when its
// first-byte budget (here a minute) runs out. With a tracker to ask, the
// same origin's answer waits for peers (TestHeadOriginBusy's GET).
func TestNoSourceFallsBackAtOnce(t *testing.T) {
	w := newWorld(t, 256<<10, func(c *Config) { c.FirstByte = time.Minute })
	w.trackerless(t, "/gone.mp3", http.NotFound)
	resp := w.getAtOnce(t, "/gone.mp3")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status %d; want the origin's plain 404", resp.StatusCode)
	}
}

// An origin whose plain answers carry a Content-Range other than the
// range asked for confirms nothing, and its web seed is dropped at its
// first answer. With no other source, the client gets the plain answer at
// once, not when the first-byte budget runs out.
func TestBrokenOriginSeedFallsBackAtOnce(t *testing.T) {
	w := newWorld(t, 256<<10, func(c *Config) { c.FirstByte = time.Minute })
	var ranged atomic.Int32
	w.trackerless(t, "/odd.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			// Always the file's last byte, whatever was asked for.
			ranged.Add(1)
			n := len(w.content)
			rw.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n-1, n-1, n))
			rw.WriteHeader(http.StatusPartialContent)
			rw.Write(w.content[n-1:])
			return
		}
		rw.Write(w.content)
	})
	resp := w.getAtOnce(t, "/odd.mp3")
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, w.content) {
		t.Fatalf("status %d, %d bytes, err %v; want the origin's plain file", resp.StatusCode, len(got), err)
	}
	if ranged.Load() < 2 {
		t.Fatalf("%d range requests; want the confirmation's and the web seed's", ranged.Load())
	}
}

// A file the proxy has served from the swarm, and has whole in its cache,
// is still served when its origin cannot be reached: the proxy is then
// disconnected, when a cache may answer with what it has (RFC 9111,
// section 4.2.4), unless the client asks for a fresh answer. A URL it
// never transformed still gets the 502.
func TestOriginUnreachableServesCachedFile(t *testing.T) {
	w := newWorld(t, 512<<10)
	w.fetchWhole(t)
	w.origin.Close()

	if err := w.fetchEquals("/episode.mp3"); err != nil {
		t.Fatalf("with the origin gone: %v", err)
	}
	req, _ := http.NewRequest(http.MethodGet, w.origin.URL+"/episode.mp3", nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, w.content[100:200]) {
		t.Fatalf("a range with the origin gone: status %d, %d bytes", resp.StatusCode, len(body))
	}
	if et := resp.Header.Get("ETag"); !strings.HasPrefix(et, `"bt-`) {
		t.Fatalf("ETag %q; want the torrent's", et)
	}
	for name, h := range map[string]http.Header{
		"no-cache":  {"Cache-Control": {"no-cache"}},
		"max-age=0": {"Cache-Control": {"max-age=0"}},
		"pragma":    {"Pragma": {"no-cache"}},
	} {
		req, _ := http.NewRequest(http.MethodGet, w.origin.URL+"/episode.mp3", nil)
		req.Header = h
		resp, err := w.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d; a client asking for a fresh answer gets the 502", name, resp.StatusCode)
		}
	}
	resp, err = w.client.Get(w.origin.URL + "/page.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a page never transformed: status %d, want 502", resp.StatusCode)
	}
}

// trackerless serves at path, to a request that asks for a torrent, a
// torrent of the world's content with no tracker and no web seed, named
// by path; other requests go to file.
func (w *world) trackerless(t *testing.T, path string, file http.HandlerFunc) {
	t.Helper()
	src := filepath.Join(t.TempDir(), strings.TrimPrefix(path, "/"))
	if err := os.WriteFile(src, w.content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), src, metainfo.BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	torrent, _ := m.Marshal()
	w.mux.HandleFunc(path, func(rw http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			rw.Header().Set("Content-Type", "application/x-bittorrent")
			rw.Write(torrent)
			return
		}
		file(rw, r)
	})
}

// fetchWhole downloads the world's episode through the proxy, and waits
// for its torrent to be whole.
func (w *world) fetchWhole(t *testing.T) {
	t.Helper()
	if err := w.fetchEquals("/episode.mp3"); err != nil {
		t.Fatal(err)
	}
	tor, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash)
	if !ok {
		t.Fatal("no torrent after the download")
	}
	select {
	case <-tor.Complete():
	case <-time.After(20 * time.Second):
		t.Fatal("the torrent did not complete")
	}
}

// getAtOnce GETs path through the proxy, bounded at 20 s: for a fallback
// that must come at once, well before a first-byte budget of a minute.
func (w *world) getAtOnce(t *testing.T, path string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+path, nil)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatalf("%v (the first-byte budget is a minute)", err)
	}
	return resp
}

// TestAnswerJudgedWhereTold: an origin's answer that is in before the
// torrent's file is known is judged where the file is told (tell), so
// that the verdict is in when tell returns, not when the question's
// goroutine next gets a processor; an answer that comes later is judged
// by the goroutine. Either way it is judged once, and a decided question
// is let go without waiting for its goroutine.
func TestAnswerJudgedWhereTold(t *testing.T) {
	w := newWorld(t, 256<<10)
	size := int64(len(w.content))
	gate := make(chan struct{})
	w.mux.HandleFunc("/told.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("late") != "" {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		http.ServeContent(rw, r, "told.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	answered := func(c *confirmation) bool {
		w.proxy.mu.Lock()
		defer w.proxy.mu.Unlock()
		return c.answered
	}
	ask := func(query string) (*http.Request, *confirmation) {
		orig := httptest.NewRequest(http.MethodGet, w.origin.URL+"/told.mp3"+query, nil)
		return orig, w.proxy.ask(orig, false)
	}
	waitAnswered := func(c *confirmation) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !answered(c) {
			if time.Now().After(deadline) {
				t.Fatal("the origin's answer did not come")
			}
			time.Sleep(time.Millisecond)
		}
	}

	// In before the file is known, and the file matches: confirmed at once.
	orig, c := ask("")
	waitAnswered(c)
	w.proxy.tell(c, orig, expected{size: size})
	if !isDone(c.ok.Done()) || isDone(c.differs.Done()) {
		t.Fatal("an answer in before the file was told was not judged when it was told")
	}
	w.proxy.release(c, false)

	// In before, and another file: disowned at once, saying how.
	orig, c = ask("?v=2")
	waitAnswered(c)
	w.proxy.tell(c, orig, expected{size: size + 1})
	if !isDone(c.differs.Done()) || !errors.Is(context.Cause(c.differs), errOriginDiffers) || isDone(c.ok.Done()) {
		t.Fatalf("an answer showing another file was not judged when the file was told: %v", context.Cause(c.differs))
	}
	w.proxy.release(c, false)

	// Told first, answered later: the goroutine judges it.
	orig, c = ask("?late=1")
	w.proxy.tell(c, orig, expected{size: size})
	if isDone(c.ok.Done()) || answered(c) {
		t.Fatal("judged before the origin answered")
	}
	close(gate)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.verdict(ctx); err != nil || !isDone(c.ok.Done()) {
		t.Fatalf("the late answer: verdict %v, confirmed %v", err, isDone(c.ok.Done()))
	}
	w.proxy.release(c, false)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the question's goroutine did not end")
	}
}
