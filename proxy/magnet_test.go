package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
)

// magnetTestTimeout is the proxy's MagnetTimeout in these tests.
const magnetTestTimeout = 2 * time.Second

// magnetWorld adds, to a world, paths whose origin names the torrent by a
// magnet: in the body of the negotiation answer (/mb/…) or in a Link
// header on the file's own answer (/ml/…). "good" magnets name the seed
// with x.pe (and the origin refuses the web seed's range requests for
// them); "dead" ones a port where nobody listens; "hold" ones a peer that
// never answers.
func magnetWorld(t *testing.T, size int) (w *world, seedPeer string) {
	t.Helper()
	// Budgets with room for a loaded machine: a dead magnet costs
	// magnetTestTimeout per request.
	w = newWorld(t, size, func(c *Config) {
		c.FirstByte = 10 * time.Second
		c.MagnetTimeout = magnetTestTimeout
		if os.Getenv("MAGNET_DEBUG") != "" {
			c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	// The seed is the peer the origin's tracker hands out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	good := w.meta.Magnet()
	good.Trackers = nil // peers from x.pe only
	good.Params = map[string][]string{"x.pe": {seedAddrOf(t, w)}}
	bad := w.meta.Magnet()
	bad.Trackers = nil
	bad.Params = map[string][]string{"x.pe": {dead}}
	hold := w.meta.Magnet()
	hold.Trackers = nil
	hold.Params = map[string][]string{"x.pe": {w.silentPeer(t)}}
	magnets := map[string]string{"good": good.String(), "dead": bad.String(), "hold": hold.String()}

	serveFile := func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			w.confirms.Add(1) // the proxy's question (confirmOrigin), not the file
		} else {
			w.originHit.Add(1)
		}
		rw.Header().Set("ETag", `"origin-file"`)
		http.ServeContent(rw, r, "episode.mp3", time.Time{}, bytes.NewReader(w.content))
	}
	for name, uri := range magnets {
		serveFile := serveFile
		if name == "good" {
			// No web seed: the bytes must come from the peer.
			serveFile = func(rw http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Range") != "" {
					http.Error(rw, "no ranges here", http.StatusServiceUnavailable)
					return
				}
				w.originHit.Add(1)
				rw.Header().Set("ETag", `"origin-file"`)
				http.ServeContent(rw, r, "episode.mp3", time.Time{}, bytes.NewReader(w.content))
			}
		}
		w.mux.HandleFunc("/mb/"+name+"/episode.mp3", func(rw http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
				rw.Header().Set("Content-Type", "application/x-bittorrent")
				rw.Header().Set("Vary", "Accept")
				io.WriteString(rw, uri+"\n")
				return
			}
			serveFile(rw, r)
		})
		w.mux.HandleFunc("/ml/"+name+"/episode.mp3", func(rw http.ResponseWriter, r *http.Request) {
			rw.Header().Set("Link", `</style.css>; rel=stylesheet, <`+uri+`>; rel="alternate describedby"`)
			serveFile(rw, r)
		})
	}
	return w, seedAddrOf(t, w)
}

// silentPeer listens for peers, counts them in w.peerDials and never
// answers, until the test ends.
func (w *world) silentPeer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			w.peerDials.Add(1)
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// seedAddrOf asks the world's tracker for its one peer.
func seedAddrOf(t *testing.T, w *world) string {
	t.Helper()
	resp, err := http.Get(w.origin.URL + "/announce")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	i := bytes.Index(body, []byte("5:peers6:"))
	if i < 0 {
		t.Fatalf("announce %q", body)
	}
	p := body[i+len("5:peers6:"):]
	return fmt.Sprintf("%d.%d.%d.%d:%d", p[0], p[1], p[2], p[3], int(p[4])<<8|int(p[5]))
}

func TestMagnetAnswers(t *testing.T) {
	w, _ := magnetWorld(t, 1<<20+5)
	wantETag := fmt.Sprintf(`"bt-%s-0"`, w.meta.InfoHash)
	for i, path := range []string{"/mb/good/episode.mp3", "/ml/good/episode.mp3"} {
		t.Run(path, func(t *testing.T) {
			resp, body := w.get(t, path, nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, w.content) {
				t.Fatalf("status %d, %d bytes, equal %v", resp.StatusCode, len(body), bytes.Equal(body, w.content))
			}
			if resp.Header.Get("ETag") != wantETag || resp.ContentLength != int64(len(w.content)) || resp.Header.Get("Content-Type") != "audio/mpeg" {
				t.Fatalf("headers %v, length %d", resp.Header, resp.ContentLength)
			}
			if resp.Header.Get("Link") != "" {
				t.Errorf("the origin's Link header reached the client: %q", resp.Header.Get("Link"))
			}
			if st := w.proxy.Status(); st.Transformed != int64(i+1) || st.Magnets != int64(i+1) || st.Fallbacks != 0 {
				t.Fatalf("status %+v", st)
			}
		})
	}
	t.Run("range", func(t *testing.T) {
		resp, body := w.get(t, "/ml/good/episode.mp3", map[string]string{"Range": "bytes=100-199"})
		if resp.StatusCode != 206 || !bytes.Equal(body, w.content[100:200]) || resp.Header.Get("ETag") != wantETag {
			t.Fatalf("status %d, %v", resp.StatusCode, resp.Header)
		}
	})
	tor, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash)
	if !ok {
		t.Fatal("no torrent in the engine")
	}
	if s := tor.Stats(); s.Downloaded == 0 {
		t.Fatalf("nothing came from the peer: %+v", s)
	}
}

func TestMagnetFallbacks(t *testing.T) {
	w, _ := magnetWorld(t, 256<<10)
	tests := []struct {
		path      string
		hdr       map[string]string
		wantHits  int64 // origin answers with the file
		wantCode  int
		wantStart int
	}{
		// The magnet body is not the file: fetch it plainly.
		{"/mb/dead/episode.mp3", nil, 1, 200, 0},
		// The Link answer is the file: passed through, no second request.
		{"/ml/dead/episode.mp3", nil, 1, 200, 0},
		// The client's Range was held back from the negotiation: ask
		// again with it.
		{"/ml/dead/episode.mp3", map[string]string{"Range": "bytes=10-19"}, 2, 206, 10},
	}
	for _, tc := range tests {
		t.Run(tc.path+fmt.Sprint(tc.hdr), func(t *testing.T) {
			before := w.originHit.Load()
			start := time.Now()
			resp, body := w.get(t, tc.path, tc.hdr)
			want := w.content[tc.wantStart:]
			if tc.wantCode == 206 {
				want = want[:10]
			}
			if resp.StatusCode != tc.wantCode || !bytes.Equal(body, want) || resp.Header.Get("ETag") != `"origin-file"` {
				t.Fatalf("status %d, %d bytes, ETag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
			}
			if hits := w.originHit.Load() - before; hits != tc.wantHits {
				t.Fatalf("origin served the file %d times, want %d", hits, tc.wantHits)
			}
			if d := time.Since(start); d > magnetTestTimeout+3*time.Second {
				t.Fatalf("the fallback took %v", d)
			}
		})
	}
	if st := w.proxy.Status(); st.Fallbacks != 3 || st.Transformed != 0 {
		t.Fatalf("status %+v", st)
	}
	if _, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash); ok {
		t.Fatal("a torrent was started without metadata")
	}
}

func TestMagnetConcurrentRequests(t *testing.T) {
	w, _ := magnetWorld(t, 1<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := range 10 {
		path := []string{"/mb/good/episode.mp3", "/ml/good/episode.mp3"}[i%2]
		wg.Go(func() {
			if err := w.fetchEquals(path); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := w.proxy.Status(); st.Transformed != 10 || st.Magnets != 10 {
		t.Fatalf("status %+v", st)
	}
}

func TestMagnetFetchIsShared(t *testing.T) {
	w, _ := magnetWorld(t, 256<<10)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 6 {
		wg.Go(func() {
			if err := w.fetchEquals("/mb/hold/episode.mp3"); err != nil {
				errs <- err
			}
		})
	}
	// A client that gives up while the metadata is being fetched.
	ctx, cancel := context.WithTimeout(t.Context(), magnetTestTimeout/4)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+"/mb/hold/episode.mp3", nil)
	if resp, err := w.client.Do(req); err == nil {
		resp.Body.Close()
		errs <- fmt.Errorf("the impatient client got %s", resp.Status)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := w.peerDials.Load(); n != 1 {
		t.Fatalf("the magnet's peer was dialled %d times, want once for all requests", n)
	}
	if st := w.proxy.Status(); st.Fallbacks != 6 {
		t.Fatalf("status %+v", st)
	}
}

func TestCheckMagnetMeta(t *testing.T) {
	m := &metainfo.MetaInfo{InfoHash: metainfo.Hash{1}, InfoBytes: []byte("d4:name1:ae")}
	priv := &metainfo.MetaInfo{InfoHash: metainfo.Hash{1}, Info: metainfo.Info{Private: true}}
	huge := &metainfo.MetaInfo{InfoHash: metainfo.Hash{1}, InfoBytes: make([]byte, maxMagnetMetadata+1)}
	mg := metainfo.Magnet{InfoHash: metainfo.Hash{1}}
	tests := []struct {
		name string
		m    *metainfo.MetaInfo
		mg   metainfo.Magnet
		ok   bool
	}{
		{"fine", m, mg, true},
		{"nil", nil, mg, false},
		{"other hash", m, metainfo.Magnet{InfoHash: metainfo.Hash{2}}, false},
		{"private", priv, mg, false},
		{"too large", huge, mg, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkMagnetMeta(tc.m, tc.mg)
			if (err == nil) != tc.ok || (err == nil) != (got != nil) {
				t.Fatalf("checkMagnetMeta = %v, %v", got, err)
			}
			if tc.name == "private" && !errors.Is(err, errPrivateMagnet) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

func TestMagnetTimeout(t *testing.T) {
	tests := []struct {
		name          string
		magnet, first time.Duration
		want          time.Duration
	}{
		{"defaults", 0, 0, DefaultMagnetTimeout},
		{"configured", 3 * time.Second, 0, 3 * time.Second},
		{"capped by the first-byte budget", 30 * time.Second, 10 * time.Second, 5 * time.Second},
		{"default capped", 0, 4 * time.Second, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Proxy{cfg: Config{MagnetTimeout: tc.magnet, FirstByte: tc.first}}
			if got := p.magnetTimeout(); got != tc.want {
				t.Fatalf("magnetTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestHeadOfMagnetAnswer: a HEAD gets the headers its GET would get (RFC
// 9110, section 9.3.2). For a URL whose origin names its torrent by a
// magnet in the negotiation's body, the GET is answered from the torrent
// (ETag "bt-…"); the HEAD, asked right after, when the torrent is running
// and its metadata known, carries the same validators.
func TestHeadOfMagnetAnswer(t *testing.T) {
	w, _ := magnetWorld(t, 256<<10)
	want := fmt.Sprintf(`"bt-%s-0"`, w.meta.InfoHash)
	for _, path := range []string{"/mb/good/episode.mp3", "/ml/good/episode.mp3"} {
		get, _ := w.get(t, path, nil)
		if get.Header.Get("ETag") != want {
			t.Fatalf("GET %s: ETag %q, want %q", path, get.Header.Get("ETag"), want)
		}
		head, _ := w.do(t, http.MethodHead, path, nil)
		for _, k := range []string{"ETag", "Last-Modified", "Content-Length", "Content-Type"} {
			if head.Header.Get(k) != get.Header.Get(k) {
				t.Errorf("HEAD %s: %s %q, the GET's %q", path, k, head.Header.Get(k), get.Header.Get(k))
			}
		}
	}
	// A magnet whose torrent the proxy does not know: no peer is asked,
	// and the HEAD gets the origin's plain answer.
	w2, _ := magnetWorld(t, 64<<10)
	for _, path := range []string{"/mb/hold/episode.mp3", "/ml/hold/episode.mp3"} {
		head, _ := w2.do(t, http.MethodHead, path, nil)
		if head.StatusCode != http.StatusOK || head.Header.Get("ETag") != `"origin-file"` {
			t.Errorf("HEAD %s, its magnet's torrent unknown: status %d, ETag %q", path, head.StatusCode, head.Header.Get("ETag"))
		}
	}
	if n := w2.peerDials.Load(); n != 0 {
		t.Errorf("HEADs dialled the magnet's peer %d times", n)
	}
}
