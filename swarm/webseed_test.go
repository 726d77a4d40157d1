package swarm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// countingServer serves content with Range support, counts the bytes it
// sends, and lets a test spoil its answers.
type countingServer struct {
	*httptest.Server
	sent     atomic.Int64
	requests atomic.Int64
	finished atomic.Int64 // requests whose handler has returned
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n.Add(int64(n))
	return n, err
}

func serve(t testing.TB, h http.Handler) *countingServer {
	cs := &countingServer{}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.requests.Add(1)
		defer cs.finished.Add(1)
		h.ServeHTTP(countingWriter{w, &cs.sent}, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

// settle waits until every request the server took has been answered:
// a client can have every byte before the handler's last Write returns
// and is counted.
func (cs *countingServer) settle(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for cs.finished.Load() < cs.requests.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d requests still being answered", cs.requests.Load()-cs.finished.Load(), cs.requests.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

func contentHandler(name string, content []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(content))
	})
}

func (f *fixture) withURLList(t testing.TB, urls ...string) *metainfo.MetaInfo {
	t.Helper()
	m := *f.meta
	m.URLList = urls
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := metainfo.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func leechWith(t testing.TB, m *metainfo.MetaInfo, cfg Config, opts TorrentOptions) (*Torrent, *MemoryStorage) {
	t.Helper()
	c := newClient(t, cfg)
	st := NewMemoryStorage(&m.Info)
	opts.NoTrackers = true
	tor, err := c.AddTorrent(m, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tor, st
}

func checkBytes(t testing.TB, st *MemoryStorage, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := st.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("downloaded bytes differ")
	}
}

func TestWebSeedOnly(t *testing.T) {
	f := newFixture(t, 3<<20+5, 64<<10)
	srv := serve(t, http.StripPrefix("/files/", contentHandler("content.bin", f.content)))
	for _, u := range []string{srv.URL + "/files/", srv.URL + "/files/content.bin"} {
		t.Run(u[len(srv.URL):], func(t *testing.T) {
			srv.sent.Store(0)
			srv.requests.Store(0)
			m := f.withURLList(t, u)
			tor, st := leechWith(t, m, Config{}, TorrentOptions{StallBudget: time.Millisecond})
			waitComplete(t, tor, 30*time.Second)
			checkBytes(t, st, f.content)
			s := tor.Stats()
			if s.FromWebSeeds != int64(len(f.content)) || s.Downloaded != 0 {
				t.Fatalf("from web seeds %d, from peers %d", s.FromWebSeeds, s.Downloaded)
			}
			// Large ranges, not a request per block.
			if n := srv.requests.Load(); n > 10 {
				t.Fatalf("%d requests for %d bytes", n, len(f.content))
			}
		})
	}
}

// album writes a directory "album" of files named by sizes (each filled
// with its own name) and builds its torrent, with 32 KiB pieces; all is
// the files' bytes in the torrent's order, which is the names' lexical
// order.
func album(t *testing.T, sizes map[string]int) (root string, m *metainfo.MetaInfo, all []byte) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "album")
	for _, name := range slices.Sorted(maps.Keys(sizes)) {
		size := sizes[name]
		data := bytes.Repeat([]byte(name), size/len(name)+1)[:size]
		path := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		all = append(all, data...)
	}
	m, err := metainfo.Build(context.Background(), root, metainfo.BuildOptions{PieceLength: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return root, m, all
}

func TestWebSeedMultiFile(t *testing.T) {
	root, m, all := album(t, map[string]int{"a track.mp3": 700_000, "disc 2/b.mp3": 1 << 20, "c.txt": 10})
	srv := serve(t, http.FileServer(http.Dir(filepath.Dir(root))))
	f := &fixture{content: all, meta: m}
	m = f.withURLList(t, srv.URL+"/")
	// Build walks the directory in lexical order; make the expectation match.
	var want []byte
	for _, fl := range m.Info.Files {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(root), filepath.FromSlash(fl.DisplayPath())))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, data...)
	}
	tor, st := leechWith(t, m, Config{}, TorrentOptions{StallBudget: time.Millisecond})
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, want)
}

// TestWebSeedSkip: a seed whose URL is the torrent's directory itself
// (Skip 1: the torrent's name is not in its paths) serves every file; a
// Skip that leaves a file no path, or that a single-file torrent or an
// origin seed is given, is refused.
func TestWebSeedSkip(t *testing.T) {
	root, m, all := album(t, map[string]int{"a track.mp3": 700_000, "disc 2/b.mp3": 1 << 20})
	srv := serve(t, http.FileServer(http.Dir(root)))
	tor, st := leechWith(t, m, Config{}, TorrentOptions{StallBudget: time.Millisecond})
	for _, bad := range []WebSeed{
		{URL: srv.URL + "/", Skip: 2},
		{URL: srv.URL + "/", Skip: -1},
		{URL: srv.URL + "/a%20track.mp3", Origin: true, Skip: 1},
	} {
		if err := tor.AddWebSeed(bad); err == nil {
			t.Errorf("AddWebSeed(%+v) accepted", bad)
		}
	}
	if err := tor.AddWebSeed(WebSeed{URL: srv.URL + "/", Skip: 1}); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, all)
}

// TestBadWebSeeds: a seed that lies is caught by the hashes and dropped; one
// that ignores Range is still used; one that fails is retried, then
// dropped; the file is still correct.
func TestBadWebSeeds(t *testing.T) {
	f := newFixture(t, 2<<20, 32<<10)
	good := contentHandler("f", f.content)
	tests := []struct {
		name    string
		handler http.Handler
		dropped bool
		tries   int64 // requests to wait for before the good seed joins
	}{
		{"wrong bytes in one range", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			spoilt := bytes.Clone(f.content)
			spoilt[1<<20] ^= 0xff
			http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(spoilt))
		}), true, 1},
		{"whole file for a range", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "2097152")
			w.Write(f.content)
		}), false, 1},
		{"404", http.NotFoundHandler(), true, webMaxFailures},
		{"500", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}), true, webMaxFailures},
		{"a compressed range", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ae := r.Header.Get("Accept-Encoding"); ae != "identity" {
				t.Errorf("web seed asked with Accept-Encoding %q", ae)
			}
			w.Header().Set("Content-Encoding", "gzip")
			http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(f.content))
		}), true, 1},
		{"a Content-Range of another range", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", "bytes 0-32767/2097152")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(f.content[:32<<10])
		}), true, 1},
		{"a Content-Range with signed numbers", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The right bytes, but a header the grammar does not allow.
			first, last, ok := strings.Cut(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-")
			if !ok {
				http.Error(w, "no range", http.StatusBadRequest)
				return
			}
			a, _ := strconv.Atoi(first)
			b, _ := strconv.Atoi(last)
			w.Header().Set("Content-Range", "bytes +"+first+"-+"+last+"/2097152")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(f.content[a : b+1])
		}), true, 1},
		{"a torrent instead of the file", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-bittorrent")
			w.Write([]byte("d4:infod4:name1:aee"))
		}), true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := serve(t, tt.handler)
			fallback := serve(t, good)
			m := f.withURLList(t, bad.URL+"/f")
			tor, st := leechWith(t, m, Config{WebSeedRetry: 10 * time.Millisecond}, TorrentOptions{StallBudget: time.Millisecond})
			// The good seed joins once the bad one has been tried enough.
			deadline := time.Now().Add(10 * time.Second)
			for bad.requests.Load() < tt.tries && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if err := tor.AddWebSeed(WebSeed{URL: fallback.URL + "/f"}); err != nil {
				t.Fatal(err)
			}
			waitComplete(t, tor, 30*time.Second)
			checkBytes(t, st, f.content)
			dropped := false
			tor.do(func() { dropped = tor.s.webSeeds[0].dropped })
			if dropped != tt.dropped {
				t.Fatalf("bad seed dropped: %v, want %v", dropped, tt.dropped)
			}
		})
	}
}

// TestOriginWebSeedHeaders: the origin seed carries the client's headers;
// url-list seeds do not.
func TestOriginWebSeedHeaders(t *testing.T) {
	f := newFixture(t, 1<<20, 32<<10)
	var sawCookie, sawAccept atomic.Bool
	origin := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cookie") == "session=1" {
			sawCookie.Store(true)
		}
		if strings.Contains(r.Header.Get("Accept"), "bittorrent") {
			sawAccept.Store(true)
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(f.content))
	}))
	tor, st := leechWith(t, f.meta, Config{}, TorrentOptions{StallBudget: time.Millisecond})
	h := http.Header{"Cookie": {"session=1"}, "Accept": {"*/*"}}
	if err := tor.AddWebSeed(WebSeed{URL: origin.URL + "/f", Origin: true, File: 0, Header: h}); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, f.content)
	if !sawCookie.Load() || sawAccept.Load() {
		t.Fatalf("cookie sent %v, bittorrent accept sent %v", sawCookie.Load(), sawAccept.Load())
	}
	if err := tor.AddWebSeed(WebSeed{URL: "ftp://127.0.0.1/x"}); err == nil {
		t.Fatal("an ftp web seed was accepted")
	}
}

// TestWebSeedCap: a torrent keeps at most maxWebSeeds web seeds; one more
// is refused with an error, the same URL again is no new seed, and a seed
// that was added counts against the cap until it is dropped.
func TestWebSeedCap(t *testing.T) {
	f := newFixture(t, 64<<10, 32<<10)
	_, tor := f.seed(t) // complete: no web seed ever fetches
	for i := range maxWebSeeds {
		if err := tor.AddWebSeed(WebSeed{URL: fmt.Sprintf("http://127.0.0.1:1/%d", i)}); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
	}
	if err := tor.AddWebSeed(WebSeed{URL: "http://127.0.0.1:1/0"}); err != nil {
		t.Fatalf("a URL already there: %v", err)
	}
	err := tor.AddWebSeed(WebSeed{URL: "http://user:secret@127.0.0.1:1/one-more?key=1"})
	if err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("one web seed more than %d: %v", maxWebSeeds, err)
	}
	if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "key=1") {
		t.Fatalf("the error shows the URL's credentials or query: %v", err)
	}
	n := 0
	tor.do(func() { n = len(tor.s.webSeeds) })
	if n != maxWebSeeds {
		t.Fatalf("%d web seeds kept, want %d", n, maxWebSeeds)
	}
	// A dropped seed frees its place.
	tor.do(func() { tor.s.webSeeds[0].dropped = true })
	if err := tor.AddWebSeed(WebSeed{URL: "http://127.0.0.1:1/after-a-drop"}); err != nil {
		t.Fatalf("after a drop: %v", err)
	}
}

// TestRescueStalledReader: the only peer accepts requests and never answers;
// the reader is rescued from the web seed long before requests time out.
func TestRescueStalledReader(t *testing.T) {
	f := newFixture(t, 2<<20, 64<<10)
	stuck := startFakePeer(t, f, seedGreeting, func(*bufio.Writer, *wire.Message, *fixture) {})
	origin := serve(t, contentHandler("f", f.content))
	tor, _ := leechWith(t, f.meta, Config{RequestTimeout: time.Hour}, TorrentOptions{Lazy: true, StallBudget: 200 * time.Millisecond})
	tor.AddPeers(stuck.addr())
	if err := tor.AddWebSeed(WebSeed{URL: origin.URL + "/f", Origin: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streamEquals(t, ctx, tor, f.content)
	if stuck.served.Load() == 0 {
		t.Fatal("the stuck peer was never asked")
	}
}

// TestWebSeedSparingWhenPeersKeepUp: with a healthy peer, the origin serves
// little.
func TestWebSeedSparingWhenPeersKeepUp(t *testing.T) {
	f := newFixture(t, 8<<20, 64<<10)
	seedClient, _ := f.seed(t)
	origin := serve(t, contentHandler("f", f.content))
	m := f.withURLList(t, origin.URL+"/f")
	tor, st := leechWith(t, m, Config{}, TorrentOptions{Peers: []netip.AddrPort{addrOf(seedClient)}})
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, f.content)
	if sent := origin.sent.Load(); sent*10 > int64(len(f.content)) {
		t.Fatalf("origin served %d of %d bytes", sent, len(f.content))
	}
}

// silentSource is a peer source that never finds anyone, so the torrent
// waits for peers instead of turning to web seeds at once.
type silentSource struct{}

func (silentSource) Run(ctx context.Context, _ SourceView, _ func([]netip.AddrPort)) { <-ctx.Done() }

// TestWebSeedRacesFirstPiece: a new reader's first piece comes from the
// web seed while peers are still being looked for (the stall budget is a
// minute), and only that piece; with WebSeedRescueOnly the reader waits.
func TestWebSeedRacesFirstPiece(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 1<<20, pieceLen)
	origin := serve(t, contentHandler("f", f.content))
	m := f.withURLList(t, origin.URL+"/f")
	opts := TorrentOptions{Lazy: true, StallBudget: time.Minute, PeerSources: []PeerSource{silentSource{}}}
	tor, _ := leechWith(t, m, Config{}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := tor.NewRangeReader(ctx, 0, 3*pieceLen, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make([]byte, 100)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, f.content[3*pieceLen:3*pieceLen+100]) {
		t.Fatal("wrong bytes")
	}
	origin.settle(t)
	if sent := origin.sent.Load(); sent != pieceLen {
		t.Fatalf("the origin sent %d bytes for a reader's first piece of %d", sent, pieceLen)
	}

	opts.WebSeedMode = WebSeedRescueOnly
	quiet, _ := leechWith(t, m, Config{}, opts)
	before := origin.sent.Load()
	short, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer stop()
	r2 := quiet.NewReader(short)
	defer r2.Close()
	if _, err := r2.Read(got); err == nil {
		t.Fatal("WebSeedRescueOnly served a first piece before the stall budget")
	}
	if sent := origin.sent.Load(); sent != before {
		t.Fatalf("WebSeedRescueOnly: the origin sent %d bytes before the stall budget", sent-before)
	}
}

// TestHTTPDialPolicy: the default web seed client dials through
// Config.HTTPDial, so a policy there decides what a url-list reaches.
func TestHTTPDialPolicy(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	srv := serve(t, contentHandler("f", f.content))
	m := f.withURLList(t, srv.URL+"/f")
	var allowed, refused atomic.Int64
	var d net.Dialer
	allow := func(ctx context.Context, network, addr string) (net.Conn, error) {
		allowed.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	tor, st := leechWith(t, m, Config{HTTPDial: allow}, TorrentOptions{StallBudget: time.Millisecond})
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, f.content)
	if allowed.Load() == 0 {
		t.Fatal("the web seed was fetched without HTTPDial")
	}
	deny := func(context.Context, string, string) (net.Conn, error) {
		refused.Add(1)
		return nil, errors.New("refused by policy")
	}
	before := srv.requests.Load()
	denied, _ := leechWith(t, m, Config{HTTPDial: deny, WebSeedRetry: time.Millisecond}, TorrentOptions{StallBudget: time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for refused.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if refused.Load() == 0 {
		t.Fatal("HTTPDial was never asked")
	}
	if n := srv.requests.Load() - before; n != 0 || denied.Stats().FromWebSeeds != 0 {
		t.Fatalf("a refused dial still reached the web seed: %d requests", n)
	}
}

// BenchmarkWebSeedDownload: a whole torrent from one web seed on
// loopback, no peers: the path behind "no peers at all runs at close to
// plain HTTP speed" (read, hash, store).
func BenchmarkWebSeedDownload(b *testing.B) {
	f := newFixture(b, 64<<20, 1<<20)
	srv := serve(b, contentHandler("content.bin", f.content))
	m := f.withURLList(b, srv.URL+"/content.bin")
	b.SetBytes(int64(len(f.content)))
	b.ResetTimer()
	for b.Loop() {
		tor, _ := leechWith(b, m, Config{}, TorrentOptions{StallBudget: time.Millisecond})
		waitComplete(b, tor, time.Minute)
		tor.Close()
	}
}

// flakyStorage fails the first fails writes of piece bad.
type flakyStorage struct {
	*MemoryStorage
	bad   int
	fails atomic.Int32
}

func (s *flakyStorage) WritePiece(i int, data []byte) error {
	if i == s.bad && s.fails.Add(-1) >= 0 {
		return errors.New("flaky disk")
	}
	return s.MemoryStorage.WritePiece(i, data)
}

// TestWebSeedStoreFails: a web seed's piece is written by the web worker
// as soon as it matches its hash; when that write fails, the hash
// workers write it again, and when that fails too the piece is fetched
// anew. Nothing is lost and the bytes are right.
func TestWebSeedStoreFails(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	srv := serve(t, contentHandler("content.bin", f.content))
	m := f.withURLList(t, srv.URL+"/content.bin")
	for _, tc := range []struct {
		fails     int32
		storeErrs int
	}{{1, 0}, {2, 1}} {
		st := &flakyStorage{MemoryStorage: NewMemoryStorage(&m.Info), bad: 3}
		st.fails.Store(tc.fails)
		c := newClient(t, Config{})
		tor, err := c.AddTorrent(m, st, TorrentOptions{NoTrackers: true, StallBudget: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		waitComplete(t, tor, 30*time.Second)
		checkBytes(t, st.MemoryStorage, f.content)
		if s := tor.Stats(); s.StorageErrors != tc.storeErrs || s.HashFailures != 0 {
			t.Errorf("%d failed writes: %d storage errors, %d hash failures; want %d, 0", tc.fails, s.StorageErrors, s.HashFailures, tc.storeErrs)
		}
		if st.fails.Load() >= 0 {
			t.Errorf("%d failed writes: the storage was not asked to write piece 3 often enough", tc.fails)
		}
	}
}

// TestWebSeedIdleAnswerGivesWay: a web seed answers a range with the right
// headers and then sends nothing. A healthy peer with every piece connects
// meanwhile. After the request timeout without a byte, the request ends
// and its pieces go to the peer: the reader gets its bytes.
func TestWebSeedIdleAnswerGivesWay(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 1<<20, pieceLen)
	seedClient, _ := f.seed(t)

	release := make(chan struct{})
	var once sync.Once
	asked := make(chan struct{}, 100)
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- struct{}{}
		var first, last int64
		fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, len(f.content)))
		w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
		w.WriteHeader(http.StatusPartialContent)
		w.(http.Flusher).Flush()
		select { // headers sent; the body never comes
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stall.Close)
	t.Cleanup(func() { once.Do(func() { close(release) }) })

	tor, _ := leechWith(t, f.meta, Config{RequestTimeout: 2 * time.Second},
		TorrentOptions{Lazy: true, StallBudget: 200 * time.Millisecond})
	if err := tor.AddWebSeed(WebSeed{URL: stall.URL + "/f", Origin: true}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r := tor.NewReader(ctx)
	defer r.Close()
	got := make(chan error, 1)
	buf := make([]byte, 100)
	go func() {
		_, err := io.ReadFull(r, buf)
		got <- err
	}()
	select {
	case <-asked: // the web seed took the reader's first piece
	case <-time.After(10 * time.Second):
		t.Fatal("the web seed was never asked")
	}
	tor.AddPeers(addrOf(seedClient)) // a healthy peer with every piece

	start := time.Now()
	if err := <-got; err != nil {
		t.Fatalf("reader failed after %v although a healthy peer had the piece: %v (stats: %+v)",
			time.Since(start).Round(time.Millisecond), err, tor.Stats())
	}
	if !bytes.Equal(buf, f.content[:100]) {
		t.Fatal("wrong bytes")
	}
}

// slowWriter sends at most 16 KiB every 40 ms (about 400 KB/s): a slow
// origin.
type slowWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 16<<10)
		m, err := w.ResponseWriter.Write(p[:k])
		n += m
		w.n.Add(int64(m))
		if err != nil {
			return n, err
		}
		w.ResponseWriter.(http.Flusher).Flush()
		p = p[k:]
		time.Sleep(40 * time.Millisecond)
	}
	return n, nil
}

// TestRescueSkipsPiecesInFlight: a reader streams a lazy torrent whose only
// source is a slow origin, and each piece takes longer than the stall
// budget. A rescue must not ask the seed again for pieces it is fetching
// already: the origin would send the same bytes several times over.
func TestRescueSkipsPiecesInFlight(t *testing.T) {
	f := newFixture(t, 1<<20, 256<<10)
	origin := newSlowOrigin(t, f.content)
	tor := origin.lazyLeech(t, f.meta)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	streamEquals(t, ctx, tor, f.content)
	tor.Close() // ends the requests still running
	if got := origin.sent.Load(); got > int64(len(f.content))*3/2 {
		t.Fatalf("the origin sent %d bytes for a %d-byte torrent; ranges asked: %v", got, len(f.content), origin.asked())
	}
}

// slowOrigin serves a file at about 400 KB/s (slowWriter) and keeps the
// Range of every request.
type slowOrigin struct {
	url    string
	sent   atomic.Int64
	mu     sync.Mutex
	ranges []string
}

func newSlowOrigin(t *testing.T, content []byte) *slowOrigin {
	o := &slowOrigin{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.ranges = append(o.ranges, r.Header.Get("Range"))
		o.mu.Unlock()
		http.ServeContent(slowWriter{w, &o.sent}, r, "f", time.Time{}, bytes.NewReader(content))
	}))
	t.Cleanup(srv.Close)
	o.url = srv.URL + "/f"
	return o
}

// asked is the Range of each request so far.
func (o *slowOrigin) asked() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ranges...)
}

// lazyLeech adds m as a lazy torrent, as the proxy opens them, whose only
// source is the origin.
func (o *slowOrigin) lazyLeech(t *testing.T, m *metainfo.MetaInfo) *Torrent {
	tor, _ := leechWith(t, m, Config{}, TorrentOptions{Lazy: true, StallBudget: 100 * time.Millisecond})
	if err := tor.AddWebSeed(WebSeed{URL: o.url, Origin: true}); err != nil {
		t.Fatal(err)
	}
	return tor
}

// TestWebSeedWaitForConnectionIsNotIdle: the engine's web seed HTTP
// client allows webWorkers connections per host, shared by every torrent.
// Three torrents stream from a slow but steady origin and hold those
// connections; a fourth torrent's web seed on the same origin must wait
// for one. Waiting for a connection of our own pool is not the seed
// "sending no byte for the request timeout": the seed must not fail, let
// alone be dropped, for it.
func TestWebSeedWaitForConnectionIsNotIdle(t *testing.T) {
	const pieceLen = 64 << 10
	slowF := []*fixture{newFixture(t, 1<<20, pieceLen), newFixture(t, 1<<20, pieceLen), newFixture(t, 1<<20, pieceLen)}
	victim := newFixture(t, 1<<20, pieceLen)

	stop := make(chan struct{})
	var slowActive, victimAsked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/victim") {
			victimAsked.Add(1)
			http.ServeContent(w, r, "v", time.Time{}, bytes.NewReader(victim.content))
			return
		}
		// A slow, steady origin: a few bytes every 50 ms, well within
		// any idle timeout, but the range takes minutes.
		slowActive.Add(1)
		var k int
		switch r.URL.Path {
		case "/s1":
			k = 1
		case "/s2":
			k = 2
		}
		http.ServeContent(trickleWriter{w, r.Context(), stop}, r, "s", time.Time{}, bytes.NewReader(slowF[k].content))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(stop) })

	c := newClient(t, Config{RequestTimeout: 300 * time.Millisecond, WebSeedRetry: time.Millisecond})
	for k, f := range slowF {
		tor, err := c.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, WebSeedMode: WebSeedAlways})
		if err != nil {
			t.Fatal(err)
		}
		if err := tor.AddWebSeed(WebSeed{URL: srv.URL + "/s" + string(rune('0'+k)), Origin: true}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for slowActive.Load() < webWorkers {
		if time.Now().After(deadline) {
			t.Fatalf("only %d slow requests started", slowActive.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}

	dropped := make(chan error, 1)
	vt, err := c.AddTorrent(victim.meta, NewMemoryStorage(&victim.meta.Info), TorrentOptions{NoTrackers: true, WebSeedMode: WebSeedAlways})
	if err != nil {
		t.Fatal(err)
	}
	if err := vt.AddWebSeed(WebSeed{URL: srv.URL + "/victim", Origin: true, Dropped: func(why error) {
		select {
		case dropped <- why:
		default:
		}
	}}); err != nil {
		t.Fatal(err)
	}
	select {
	case why := <-dropped:
		t.Fatalf("a healthy web seed was dropped while its requests waited for one of the client's own connections "+
			"(requests that reached the origin: %d; idle error: %v): %v",
			victimAsked.Load(), errors.Is(why, errWebSeedIdle), why)
	case <-time.After(4 * time.Second): // five idle failures would take about 2 s
	}
}

// trickleWriter sends 2 KiB every 50 ms until the request or the test ends.
type trickleWriter struct {
	http.ResponseWriter
	ctx  context.Context
	stop chan struct{}
}

func (w trickleWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 2<<10)
		m, err := w.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		w.ResponseWriter.(http.Flusher).Flush()
		p = p[k:]
		select {
		case <-w.ctx.Done():
			return n, w.ctx.Err()
		case <-w.stop:
			return n, errors.New("test over")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return n, nil
}

// TestRescueSeekIntoRunningRange: a lazy torrent (as the proxy opens
// them) whose only source is a slow origin. A first reader at the start
// makes a web seed worker fetch one long free-running range (up to
// webJobBytes). A second reader then starts 6 MiB in: a player's seek.
// No peer can send its piece, so rescueStart must fetch it from the seed
// on one of its idle workers at once, though it lies in the running
// range: that range would bring it only after tens of seconds.
func TestRescueSeekIntoRunningRange(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 8<<20, pieceLen)
	origin := newSlowOrigin(t, f.content)
	tor := origin.lazyLeech(t, f.meta)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := tor.NewReader(ctx)
	defer first.Close()
	if _, err := io.ReadFull(first, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}

	// Wait for the free-running range after the first piece's race: the
	// seed is now fetching, slowly, every piece up to the file's end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		asked := origin.asked()
		long := false
		for _, r := range asked {
			long = long || r == fmt.Sprintf("bytes=%d-%d", pieceLen, len(f.content)-1)
		}
		if long {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free-running range; ranges asked: %v", asked)
		}
		time.Sleep(10 * time.Millisecond)
	}

	const seekTo = 6 << 20
	seek, err := tor.NewRangeReader(ctx, 0, seekTo, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer seek.Close()
	got := make(chan error, 1)
	buf := make([]byte, 100)
	start := time.Now()
	go func() {
		_, err := io.ReadFull(seek, buf)
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, f.content[seekTo:seekTo+100]) {
			t.Fatal("wrong bytes")
		}
		t.Logf("the seek got its bytes after %v; ranges %v", time.Since(start).Round(time.Millisecond), origin.asked())
	case <-time.After(5 * time.Second):
		asked := origin.asked()
		tor.Close() // ends the requests and the reads
		<-got
		t.Fatalf("a seek into the seed's running range got nothing in 5 s (the origin sends about 400 KB/s; ranges asked: %v)", asked)
	}
	tor.Close()
}

// TestWebSeedRate: Stats reports the rate at which web seeds deliver, as
// it does each peer's, so that a download from the origin alone does not
// show 0 B/s.
func TestWebSeedRate(t *testing.T) {
	f := newFixture(t, 4<<20, 64<<10)
	origin := newSlowOrigin(t, f.content)
	tor, _ := leechWith(t, f.meta, Config{}, TorrentOptions{WebSeedMode: WebSeedAlways})
	if err := tor.AddWebSeed(WebSeed{URL: origin.url, Origin: true}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := tor.Stats()
		if st.WebSeedRate > 0 && st.FromWebSeeds > 0 {
			break
		}
		if st.Complete || time.Now().After(deadline) {
			t.Fatalf("no web seed rate while the origin delivered %d bytes: %+v", st.FromWebSeeds, st.WebSeedRate)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fromWeb := tor.Stats().FromWebSeeds
	tor.Close()
	// A closed torrent still reports what web seeds gave it: the proxy's
	// totals read it once more after it closes.
	if st := tor.Stats(); st.FromWebSeeds < fromWeb {
		t.Errorf("after Close, %d bytes from web seeds; %d before", st.FromWebSeeds, fromWeb)
	}
}

// TestOriginSeedOutlivesAnOutage: the URL the client asked for is kept as
// a source through more failures in a row than drop any other web seed,
// so that a reader whose only source is an origin that was down for a
// while is served once the origin is back.
func TestOriginSeedOutlivesAnOutage(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	var tries atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tries.Add(1) <= 3*webMaxFailures {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		http.ServeContent(w, r, "f", time.Time{}, bytes.NewReader(f.content))
	}))
	t.Cleanup(origin.Close)
	tor, st := leechWith(t, f.meta, Config{WebSeedRetry: time.Millisecond}, TorrentOptions{WebSeedMode: WebSeedAlways})
	if err := tor.AddWebSeed(WebSeed{URL: origin.URL + "/f", Origin: true}); err != nil {
		t.Fatal(err)
	}
	waitComplete(t, tor, 30*time.Second)
	checkBytes(t, st, f.content)
	if n := tries.Load(); n <= 3*webMaxFailures {
		t.Fatalf("%d requests", n)
	}
}

func TestSmoothedRateSettlesToZero(t *testing.T) {
	r := smooth(0, 1<<20)
	if r <= 0 {
		t.Fatalf("rate %v after a busy second", r)
	}
	for range 60 {
		r = smooth(r, 0)
	}
	if r != 0 {
		t.Errorf("rate %v after a minute of nothing, want 0", r)
	}
}

// TestSourceless: a torrent with no trackers, no peer and only its origin
// web seed is sourceless; a web seed of its own, or a peer it knows of,
// is a source.
func TestSourceless(t *testing.T) {
	f := newFixture(t, 256<<10, 32<<10)
	tor, _ := leechWith(t, f.meta, Config{}, TorrentOptions{Lazy: true})
	if err := tor.AddWebSeed(WebSeed{URL: "http://127.0.0.1:9/f", Origin: true}); err != nil {
		t.Fatal(err)
	}
	if !tor.Sourceless() {
		t.Fatal("a torrent with only its origin web seed is not sourceless")
	}
	if err := tor.AddWebSeed(WebSeed{URL: "http://127.0.0.1:9/mirror/f"}); err != nil {
		t.Fatal(err)
	}
	if tor.Sourceless() {
		t.Fatal("a torrent with a mirror is sourceless")
	}
	g := newFixture(t, 256<<10, 32<<10)
	tor2, _ := leechWith(t, g.meta, Config{}, TorrentOptions{Lazy: true})
	tor2.AddPeers(netip.MustParseAddrPort("127.0.0.1:9"))
	if tor2.Sourceless() {
		t.Fatal("a torrent that knows of a peer is sourceless")
	}
}
