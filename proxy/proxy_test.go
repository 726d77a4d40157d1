package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// world is an origin that answers the negotiation, a swarm seed, a tracker
// that points at the seed, and the proxy under test.
type world struct {
	mux       *http.ServeMux
	content   []byte
	meta      *metainfo.MetaInfo
	torrent   []byte
	origin    *httptest.Server
	proxy     *Proxy
	proxyURL  *url.URL
	client    *http.Client
	originHit atomic.Int64 // requests for the file itself, plainly
	confirms  atomic.Int64 // requests for its first byte alone (confirmOrigin's)
	peerDials atomic.Int64 // connections to silentPeer
}

// newWorld builds a world; opts adjust the proxy's configuration.
func newWorld(t testing.TB, size int, opts ...func(*Config)) *world {
	t.Helper()
	w := &world{content: make([]byte, size)}
	rand.Read(w.content)

	seed, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { seed.Close() })

	mux := http.NewServeMux()
	w.mux = mux
	w.origin = httptest.NewServer(mux)
	t.Cleanup(w.origin.Close)

	path := filepath.Join(t.TempDir(), "episode.mp3")
	if err := os.WriteFile(path, w.content, 0o644); err != nil {
		t.Fatal(err)
	}
	w.meta, err = metainfo.Build(context.Background(), path, metainfo.BuildOptions{
		PieceLength:  64 << 10,
		Trackers:     [][]string{{w.origin.URL + "/announce"}},
		CreationDate: time.Unix(1_700_000_000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.torrent, err = w.meta.Marshal(); err != nil {
		t.Fatal(err)
	}
	st := swarm.NewMemoryStorage(&w.meta.Info)
	if err := st.Fill(bytes.NewReader(w.content)); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.AddTorrent(w.meta, st, swarm.TorrentOptions{NoTrackers: true}); err != nil {
		t.Fatal(err)
	}
	seedAddr := netip.MustParseAddrPort(seed.Addr().String())

	wantsTorrent := func(r *http.Request) bool {
		return strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent")
	}
	serveFile := func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "bytes=0-0" {
			w.confirms.Add(1)
		} else {
			w.originHit.Add(1)
		}
		rw.Header().Set("ETag", `"origin-file"`)
		http.ServeContent(rw, r, "episode.mp3", time.Time{}, bytes.NewReader(w.content))
	}
	serveTorrent := func(rw http.ResponseWriter, extra map[string]string, body []byte) {
		rw.Header().Set("Content-Type", "application/x-bittorrent")
		rw.Header().Set("Vary", "Accept")
		rw.Header().Set("ETag", `"origin-torrent"`)
		for k, v := range extra {
			rw.Header().Set(k, v)
		}
		rw.Write(body)
	}
	mux.HandleFunc("/episode.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if wantsTorrent(r) {
			serveTorrent(rw, nil, w.torrent)
			return
		}
		serveFile(rw, r)
	})
	mux.HandleFunc("/broken.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if wantsTorrent(r) {
			serveTorrent(rw, nil, w.torrent[:len(w.torrent)/2])
			return
		}
		serveFile(rw, r)
	})
	mux.HandleFunc("/notransform.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if wantsTorrent(r) {
			serveTorrent(rw, map[string]string{"Cache-Control": "no-transform"}, w.torrent)
			return
		}
		serveFile(rw, r)
	})
	mux.HandleFunc("/page.html", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		rw.Header().Set("ETag", `"page"`)
		fmt.Fprint(rw, "<p>hello</p>")
	})
	mux.HandleFunc("/announce", func(rw http.ResponseWriter, r *http.Request) {
		ip := seedAddr.Addr().As4()
		peer := string(ip[:]) + string([]byte{byte(seedAddr.Port() >> 8), byte(seedAddr.Port())})
		body, _ := bencode.Marshal(map[string]any{"interval": 1800, "peers": peer})
		rw.Write(body)
	})

	// The engine's web seeds and trackers go through the proxy's parent,
	// if it has one, as in tbproxy run. w.proxy is set before any torrent
	// is added.
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0", HTTPProxy: func(r *http.Request) (*url.URL, error) {
		return w.proxy.ParentFor(r)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	cfg := Config{Engine: engine, AllowPrivateUpstream: true, FirstByte: time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	w.proxy, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.proxyURL, _ = url.Parse("http://" + serveProxy(t, w.proxy))
	tr := &http.Transport{Proxy: http.ProxyURL(w.proxyURL), DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	w.client = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	return w
}

// fetchEquals GETs the origin's path through the proxy and checks the
// body is the world's content; it may run on any goroutine.
func (w *world) fetchEquals(path string) error {
	resp, err := w.client.Get(w.origin.URL + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(body, w.content) {
		return fmt.Errorf("%s: body differs (%d bytes): %v", path, len(body), err)
	}
	return nil
}

// serveProxy serves p on a loopback port until the test ends, and
// returns the port's address.
func serveProxy(t testing.TB, p *Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveProxyOn(t, p, ln)
}

// serveProxyOn is serveProxy on the listener ln.
func serveProxyOn(t testing.TB, p *Proxy, ln net.Listener) string {
	t.Helper()
	p.AddListener(ln.Addr().String()) // before the test asks anything of it
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Serve(ln)
	}()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
	return ln.Addr().String()
}

func (w *world) get(t *testing.T, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	return w.do(t, http.MethodGet, path, hdr)
}

func (w *world) do(t *testing.T, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, w.origin.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, body
}

func TestTransparentDownload(t *testing.T) {
	w := newWorld(t, 3<<20+17)
	resp, body := w.get(t, "/episode.mp3", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, w.content) {
		t.Fatalf("status %d, %d bytes, equal %v", resp.StatusCode, len(body), bytes.Equal(body, w.content))
	}
	wantETag := fmt.Sprintf(`"bt-%s-0"`, w.meta.InfoHash)
	if ct := resp.Header.Get("Content-Type"); ct != "audio/mpeg" {
		t.Errorf("Content-Type %q", ct)
	}
	if resp.ContentLength != int64(len(w.content)) || resp.Header.Get("ETag") != wantETag || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Errorf("headers %v, length %d", resp.Header, resp.ContentLength)
	}
	if lm := resp.Header.Get("Last-Modified"); lm != time.Unix(1_700_000_000, 0).UTC().Format(http.TimeFormat) {
		t.Errorf("Last-Modified %q", lm)
	}
	if !strings.Contains(resp.Header.Get("Via"), "tbproxy") {
		t.Errorf("Via %q", resp.Header.Get("Via"))
	}
	st := w.proxy.Status()
	if st.Transformed != 1 {
		t.Fatalf("status %+v", st)
	}
	tor, _ := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash)
	if s := tor.Stats(); s.Downloaded == 0 {
		t.Fatalf("nothing came from the peer: %+v", s)
	}

	t.Run("range", func(t *testing.T) {
		resp, body := w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=1000-2000"})
		if resp.StatusCode != 206 || !bytes.Equal(body, w.content[1000:2001]) || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-2000/%d", len(w.content)) {
			t.Fatalf("status %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
		}
		resp, body = w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=-500"})
		if resp.StatusCode != 206 || !bytes.Equal(body, w.content[len(w.content)-500:]) {
			t.Fatalf("suffix range: status %d", resp.StatusCode)
		}
		// Two ranges: each part has the file's type (RFC 9110, section
		// 14.6), its range and its bytes.
		resp, body = w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=0-0,100-109"})
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if resp.StatusCode != 206 || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("two ranges: status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for _, want := range [][2]int{{0, 1}, {100, 110}} {
			part, err := mr.NextPart()
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(part)
			if ct, cr := part.Header.Get("Content-Type"), part.Header.Get("Content-Range"); ct != "audio/mpeg" ||
				cr != fmt.Sprintf("bytes %d-%d/%d", want[0], want[1]-1, len(w.content)) || !bytes.Equal(data, w.content[want[0]:want[1]]) {
				t.Fatalf("part %v: Content-Type %q, Content-Range %q, equal %v", want, ct, cr, bytes.Equal(data, w.content[want[0]:want[1]]))
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Fatalf("after two parts: %v", err)
		}
		// Ranges RFC 9110 allows and http.ServeContent would refuse: the
		// unit in capitals, positions too large for an int64.
		for r, want := range map[string][2]int{
			"Bytes=0-9":                    {0, 10},
			"bytes=5-99999999999999999999": {5, len(w.content)},
			"bytes=-99999999999999999999":  {0, len(w.content)},
		} {
			resp, body := w.get(t, "/episode.mp3", map[string]string{"Range": r})
			if resp.StatusCode != 206 || !bytes.Equal(body, w.content[want[0]:want[1]]) {
				t.Fatalf("Range %q: status %d, %d bytes", r, resp.StatusCode, len(body))
			}
		}
		resp, _ = w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=999999999-"})
		if resp.StatusCode != 416 {
			t.Fatalf("unsatisfiable range: status %d", resp.StatusCode)
		}
		// HARDENING 61: a Range that is malformed, or asks for too many or
		// too overlapping ranges, is ignored: the whole file, 200.
		hundred := make([]string, 100)
		for i := range hundred {
			hundred[i] = fmt.Sprintf("%d-%d", i*10, i*10)
		}
		for _, r := range []string{"bytes=abc", "bytes=5-2", "items=0-9", "bytes=" + strings.Join(hundred, ","), "bytes=0-9,0-9,0-9,0-9"} {
			resp, body := w.get(t, "/episode.mp3", map[string]string{"Range": r})
			if resp.StatusCode != 200 || !bytes.Equal(body, w.content) || resp.Header.Get("Content-Range") != "" {
				t.Fatalf("Range %.40q: status %d, %d bytes, Content-Range %q; want the whole file", r, resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
			}
		}
	})
	t.Run("conditional", func(t *testing.T) {
		resp, _ := w.get(t, "/episode.mp3", map[string]string{"If-None-Match": wantETag})
		if resp.StatusCode != 304 {
			t.Fatalf("If-None-Match: status %d", resp.StatusCode)
		}
		resp, _ = w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=0-9", "If-Range": wantETag})
		if resp.StatusCode != 206 {
			t.Fatalf("If-Range match: status %d", resp.StatusCode)
		}
		resp, body := w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=0-9", "If-Range": `"other"`})
		if resp.StatusCode != 200 || len(body) != len(w.content) {
			t.Fatalf("If-Range mismatch: status %d", resp.StatusCode)
		}
	})
}

// TestNoBodyOpensNoTorrent: an answer with no body (If-None-Match that
// matches: 304; an unsatisfiable range: 416) comes from the metainfo
// alone; no torrent is opened, so no tracker or peer hears of it
// (HARDENING 62).
func TestNoBodyOpensNoTorrent(t *testing.T) {
	w := newWorld(t, 256<<10)
	etag := fmt.Sprintf(`"bt-%s-0"`, w.meta.InfoHash)
	resp, body := w.get(t, "/episode.mp3", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 || resp.Header.Get("ETag") != etag {
		t.Fatalf("If-None-Match: %d, %d bytes, ETag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	resp, _ = w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=999999999-"})
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes */%d", len(w.content)) {
		t.Fatalf("unsatisfiable range: %d, Content-Range %q", resp.StatusCode, resp.Header.Get("Content-Range"))
	}
	if _, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash); ok {
		t.Fatal("a torrent was opened for answers with no body")
	}
	// A body still opens it.
	resp, body = w.get(t, "/episode.mp3", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) {
		t.Fatalf("then a plain GET: %d, %d bytes", resp.StatusCode, len(body))
	}
}

func TestPassThrough(t *testing.T) {
	w := newWorld(t, 256<<10)
	resp, body := w.get(t, "/page.html", nil)
	if string(body) != "<p>hello</p>" || resp.Header.Get("ETag") != `"page"` {
		t.Fatalf("page changed: %q %v", body, resp.Header)
	}
	// A proxy adds Via to what it passes on, and drops the fields that
	// describe the origin's connection (RFC 9110, sections 7.6.1, 7.6.3).
	if !strings.Contains(resp.Header.Get("Via"), "tbproxy") {
		t.Errorf("passed-through answer: Via %q", resp.Header.Get("Via"))
	}
	w.mux.HandleFunc("/hop", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Connection", "X-Internal-Token")
		rw.Header().Set("X-Internal-Token", "secret-for-the-proxy-hop")
		rw.Header().Set("Keep-Alive", "timeout=5")
		rw.Header().Set("Proxy-Authenticate", `Basic realm="origin-hop"`)
		io.WriteString(rw, "body")
	})
	resp, body = w.get(t, "/hop", nil)
	if resp.StatusCode != 200 || string(body) != "body" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for _, k := range []string{"X-Internal-Token", "Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			t.Errorf("hop-by-hop %s: %q reached the client", k, v)
		}
	}
	if v := resp.Header.Get("Connection"); strings.Contains(strings.ToLower(v), "x-internal-token") {
		t.Errorf("Connection %q reached the client", v)
	}
	// A client that asks for the torrent gets the torrent.
	resp, body = w.get(t, "/episode.mp3", map[string]string{"Accept": "application/x-bittorrent"})
	if !bytes.Equal(body, w.torrent) || resp.Header.Get("Content-Type") != "application/x-bittorrent" {
		t.Fatalf("the torrent itself was not passed through: %d bytes", len(body))
	}
	// A HEAD that asks for the torrent gets the torrent's headers.
	resp, _ = w.do(t, http.MethodHead, "/episode.mp3", map[string]string{"Accept": "application/x-bittorrent"})
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"origin-torrent"` {
		t.Fatalf("HEAD for the torrent: %d %v", resp.StatusCode, resp.Header)
	}
	if _, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash); ok {
		t.Fatal("a torrent was started without a GET")
	}
}

// TestOriginHeaderCap: an origin whose response headers run past the
// upstream cap gets a 502 from the proxy, not megabytes held and parsed.
func TestOriginHeaderCap(t *testing.T) {
	w := newWorld(t, 64<<10)
	w.mux.HandleFunc("/fat-headers", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Cache-Control", strings.Repeat("x,", 200<<10))
		io.WriteString(rw, "body")
	})
	w.mux.HandleFunc("/fine-headers", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("X-Padding", strings.Repeat("x", 100<<10))
		io.WriteString(rw, "body")
	})
	resp, _ := w.get(t, "/fat-headers", nil)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("400 KiB of origin headers: status %d, want 502", resp.StatusCode)
	}
	resp, body := w.get(t, "/fine-headers", nil)
	if resp.StatusCode != http.StatusOK || string(body) != "body" {
		t.Fatalf("100 KiB of origin headers: %d %q", resp.StatusCode, body)
	}
}

// TestTraceAndMaxForwards: TRACE never reaches an origin (its answer
// would reflect the request's credentials); OPTIONS with Max-Forwards 0
// is answered by the proxy, a larger one forwarded one less (HARDENING 70).
func TestTraceAndMaxForwards(t *testing.T) {
	w := newWorld(t, 64<<10)
	var seen atomic.Int64
	var forwards atomic.Value
	w.mux.HandleFunc("/echo", func(rw http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		forwards.Store(r.Header.Get("Max-Forwards"))
		io.WriteString(rw, "origin")
	})
	send := func(method string, hdr map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, w.origin.URL+"/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Cookie", "secret=1")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := w.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "secret") {
			t.Fatalf("%s: the answer reflects the request's cookie: %q", method, body)
		}
		return resp
	}
	if resp := send(http.MethodTrace, nil); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Fatalf("TRACE: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp := send(http.MethodOptions, map[string]string{"Max-Forwards": "0"}); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Fatalf("OPTIONS, Max-Forwards 0: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp := send(http.MethodOptions, map[string]string{"Max-Forwards": "many"}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("OPTIONS, Max-Forwards many: %d", resp.StatusCode)
	}
	if n := seen.Load(); n != 0 {
		t.Fatalf("the origin got %d requests it should not have", n)
	}
	if resp := send(http.MethodOptions, map[string]string{"Max-Forwards": "3"}); resp.StatusCode != http.StatusOK || forwards.Load() != "2" {
		t.Fatalf("OPTIONS, Max-Forwards 3: %d, the origin saw Max-Forwards %q", resp.StatusCode, forwards.Load())
	}
}

// TestPassThroughStreams: a slow answer that is no torrent (an event
// stream) reaches the client as it comes, not once 16 KiB of it have
// been sniffed for a torrent.
func TestPassThroughStreams(t *testing.T) {
	w := newWorld(t, 64<<10)
	done := make(chan struct{})
	defer close(done)
	w.mux.HandleFunc("/events", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(rw, "data: one\n\n")
		rw.(http.Flusher).Flush()
		select {
		case <-done:
		case <-r.Context().Done():
		}
	})
	resp, err := w.client.Get(w.origin.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "data: one\n" {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream's first event did not reach the client while the stream was open")
	}
}

func TestFallbacks(t *testing.T) {
	w := newWorld(t, 256<<10)
	for _, path := range []string{"/broken.mp3", "/notransform.mp3"} {
		t.Run(path, func(t *testing.T) {
			before := w.originHit.Load()
			resp, body := w.get(t, path, nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, w.content) || resp.Header.Get("ETag") != `"origin-file"` {
				t.Fatalf("status %d, %d bytes, ETag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
			}
			if w.originHit.Load() != before+1 {
				t.Fatal("the file was not fetched plainly")
			}
		})
	}
	if st := w.proxy.Status(); st.Fallbacks != 2 || st.Transformed != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestConcurrentRequestsShareOneTorrent(t *testing.T) {
	w := newWorld(t, 2<<20)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if err := w.fetchEquals("/episode.mp3"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := w.proxy.Status(); st.Transformed != 20 || len(st.Transfers) != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestClientDisconnectReleasesReader(t *testing.T) {
	w := newWorld(t, 4<<20)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+"/episode.mp3", nil)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 1000))
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(w.proxy.Status().Transfers) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(w.proxy.Status().Transfers); n != 0 {
		t.Fatalf("%d transfers still active after the client left", n)
	}
}

func TestLoopsAndConnectPolicy(t *testing.T) {
	w := newWorld(t, 64<<10)
	// A proxied request to the proxy's own address is a loop.
	req, _ := http.NewRequest(http.MethodGet, w.proxyURL.String()+"/status.json", nil)
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusLoopDetected {
		t.Fatalf("self request: status %d", resp.StatusCode)
	}
	// CONNECT to anything but 443, or to the proxy itself, is refused
	// with 403 (HARDENING 48).
	for _, target := range []string{"127.0.0.1:22", w.proxyURL.Host} {
		if status, _ := connectVia(t, w.proxyURL.Host, target); status != http.StatusForbidden {
			t.Fatalf("CONNECT %s: status %d, want 403", target, status)
		}
	}
	// Direct requests get the local endpoints, only with a local Host.
	resp, err = http.Get(w.proxyURL.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest(http.MethodGet, w.proxyURL.String()+"/status.json", nil)
	req.Host = "evil.example"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign Host: %d", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestFirstByteFallback: a torrent no peer and no web seed can deliver is
// answered plainly once the first-byte budget runs out.
func TestFirstByteFallback(t *testing.T) {
	w := newWorld(t, 512<<10)
	w.lonely(t, "/lonely.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			http.Error(rw, "no ranges today", http.StatusServiceUnavailable) // the web seed gets nothing
			return
		}
		rw.Header().Set("ETag", `"origin-file"`)
		rw.Write(w.content)
	})
	resp, body := w.get(t, "/lonely.mp3", nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, w.content) || resp.Header.Get("ETag") != `"origin-file"` {
		t.Fatalf("status %d, %d bytes, ETag %q", resp.StatusCode, len(body), resp.Header.Get("ETag"))
	}
	if st := w.proxy.Status(); st.Fallbacks != 1 {
		t.Fatalf("status %+v", st)
	}
}

// TestServeAfterClose: a Serve that starts after Close (an interrupt
// during start-up) returns at once and closes its listener.
func TestServeAfterClose(t *testing.T) {
	w := newWorld(t, 64<<10)
	w.proxy.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := w.proxy.Serve(ln); err != nil {
		t.Fatal(err)
	}
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatal("the listener is still open")
	}
}

// TestFirstByteFallbackMultipart: a multi-range request falls back as a
// single range does. Its headers wait for the file's first byte, not for
// the first boundary of the multipart answer.
func TestFirstByteFallbackMultipart(t *testing.T) {
	w := newWorld(t, 512<<10)
	w.lonely(t, "/lonely.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if rg := r.Header.Get("Range"); rg != "" && !strings.Contains(rg, ",") {
			http.Error(rw, "no ranges today", http.StatusServiceUnavailable) // the web seed gets nothing
			return
		}
		rw.Header().Set("ETag", `"origin-file"`)
		http.ServeContent(rw, r, "lonely.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	resp, body := w.get(t, "/lonely.mp3", map[string]string{"Range": "bytes=0-9,100-109"})
	if resp.StatusCode != 206 || resp.Header.Get("ETag") != `"origin-file"` || !bytes.Contains(body, w.content[100:110]) {
		t.Fatalf("status %d, ETag %q, %d bytes; want the origin's own 206", resp.StatusCode, resp.Header.Get("ETag"), len(body))
	}
	if st := w.proxy.Status(); st.Fallbacks != 1 {
		t.Fatalf("status %+v", st)
	}
}

// lonely serves, at path on the world's origin, a torrent of the world's
// content that no peer seeds (its tracker knows none): the file itself
// comes only from file, which gets every request that does not ask for
// the torrent.
func (w *world) lonely(t *testing.T, path string, file http.HandlerFunc) {
	t.Helper()
	w.lonelySaying(t, path, nil, file)
}

// lonelySaying is lonely, with the headers said added to the metainfo
// answer.
func (w *world) lonelySaying(t *testing.T, path string, said http.Header, file http.HandlerFunc) {
	t.Helper()
	name := strings.TrimPrefix(path, "/")
	src := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(src, w.content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), src, metainfo.BuildOptions{
		PieceLength:  64 << 10,
		Trackers:     [][]string{{w.origin.URL + path + "/announce"}},
		CreationDate: time.Unix(1_700_000_000, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	torrent, _ := m.Marshal()
	w.mux.HandleFunc(path+"/announce", func(rw http.ResponseWriter, r *http.Request) {
		body, _ := bencode.Marshal(map[string]any{"interval": 1800, "peers": ""})
		rw.Write(body)
	})
	w.mux.HandleFunc(path, func(rw http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			maps.Copy(rw.Header(), said)
			rw.Header().Set("Content-Type", "application/x-bittorrent")
			rw.Write(torrent)
			return
		}
		file(rw, r)
	})
}

// pacFromStatusPage is the PAC file p's status page serves.
func pacFromStatusPage(t *testing.T, p *Proxy) string {
	t.Helper()
	ui := httptest.NewServer(p.LocalHandler())
	defer ui.Close()
	resp, err := http.Get(ui.URL + "/proxy.pac")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(body)
}

func TestPACNamesTheProxyPort(t *testing.T) {
	w := newWorld(t, 64<<10)
	if body, want := pacFromStatusPage(t, w.proxy), "PROXY 127.0.0.1:"+w.proxyURL.Port()+";"; !strings.Contains(body, want) {
		t.Fatalf("PAC from the status listener:\n%s\nwant %q", body, want)
	}
}

// TestPACBeforeServe: a status page that starts before the proxy's Serve
// goroutine runs (as `tbproxy run` starts them) names the proxy's port,
// once AddListener has recorded it, never its own.
func TestPACBeforeServe(t *testing.T) {
	p, err := New(Config{Engine: newEngine(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.AddListener("127.0.0.1:18765")
	if body := pacFromStatusPage(t, p); !strings.Contains(body, "PROXY 127.0.0.1:18765;") {
		t.Fatalf("PAC before Serve:\n%s", body)
	}
	if !p.isSelf("127.0.0.1:18765") {
		t.Fatal("a listener AddListener recorded is not refused as a target")
	}
}

// TestDialUpstreamPolicy: the dial the engine borrows for web seeds and
// trackers refuses loopback unless private upstreams are allowed, and
// never reaches the proxy's own listener.
func TestDialUpstreamPolicy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	strict, err := New(Config{Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if c, err := strict.DialUpstream(context.Background(), "tcp", ln.Addr().String()); !errors.Is(err, errForbiddenTarget) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("loopback dialled with private upstreams off: %v", err)
	}
	// The refusal comes before the connection: a local service that is
	// refused never sees one (HARDENING 41).
	quiet := countingListener(t)
	for _, addr := range []string{quiet.addr, "[::ffff:127.0.0.1]:" + quiet.port} {
		if c, err := strict.DialUpstream(context.Background(), "tcp", addr); !errors.Is(err, errForbiddenTarget) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("%s dialled with private upstreams off: %v", addr, err)
		}
	}
	if n := quiet.accepted(); n != 0 {
		t.Fatalf("a refused upstream saw %d connections", n)
	}
	lenient, err := New(Config{Engine: engine, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lenient.Close()
	c, err := lenient.DialUpstream(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("loopback refused with private upstreams on: %v", err)
	}
	c.Close()
	own := serveProxy(t, lenient)
	awaitServing(t, own)
	if c, err := lenient.DialUpstream(context.Background(), "tcp", own); !errors.Is(err, errForbiddenTarget) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("the proxy's own listener was dialled: %v", err)
	}
}

// awaitServing returns once the proxy answers on addr: Serve has then
// registered the listener as the proxy's own.
func awaitServing(t *testing.T, addr string) {
	t.Helper()
	direct := &http.Client{Transport: &http.Transport{Proxy: nil}}
	defer direct.CloseIdleConnections()
	resp, err := direct.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// quietListener is a local service that counts the connections it gets.
type quietListener struct {
	addr, port string
	n          atomic.Int64
}

func (q *quietListener) accepted() int64 { return q.n.Load() }

// countingListener starts a quietListener on loopback, closed when the
// test ends.
func countingListener(t *testing.T) *quietListener {
	t.Helper()
	q, ok := countingListenerOn(t, "127.0.0.1:0")
	if !ok {
		t.Fatal("cannot listen on 127.0.0.1")
	}
	return q
}

// TestDialPeerPolicy: the engine's peers are dialled under the peer
// policy (HARDENING 43): a peer list that names a service on this
// machine, or the proxy itself, does not make the engine connect to it
// unless private upstreams are allowed; the proxy itself never.
func TestDialPeerPolicy(t *testing.T) {
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	service := countingListener(t)
	strict, err := New(Config{Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	for _, addr := range []string{service.addr, "[::ffff:127.0.0.1]:" + service.port, "0.0.0.0:" + service.port, "localhost:" + service.port} {
		if c, err := strict.DialPeer(context.Background(), "tcp", addr); !errors.Is(err, errForbiddenTarget) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("peer %s dialled with private upstreams off: %v", addr, err)
		}
	}
	if n := service.accepted(); n != 0 {
		t.Fatalf("the local service saw %d connections from refused peer dials", n)
	}
	lenient, err := New(Config{Engine: engine, AllowPrivateUpstream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer lenient.Close()
	c, err := lenient.DialPeer(context.Background(), "tcp", service.addr)
	if err != nil {
		t.Fatalf("a loopback peer refused with private upstreams on: %v", err)
	}
	c.Close()
	own := serveProxy(t, lenient)
	awaitServing(t, own)
	if c, err := lenient.DialPeer(context.Background(), "tcp", own); !errors.Is(err, errForbiddenTarget) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("the proxy's own listener was dialled as a peer: %v", err)
	}
}

// TestSelfOnUnspecifiedListener: a proxy listening on 0.0.0.0:P is
// itself at P on this machine's addresses, and nowhere else: an origin
// elsewhere on port P is not (HARDENING 49).
func TestSelfOnUnspecifiedListener(t *testing.T) {
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	p, err := New(Config{Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.AddSelf("0.0.0.0:18080"); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:18080":    true,
		"[::1]:18080":        true,
		"0.0.0.0:18080":      true,
		"localhost:18080":    true,
		"203.0.113.7:18080":  false, // another machine on the same port
		"198.51.100.1:18080": false,
		"127.0.0.1:18081":    false,
	} {
		if got := p.isSelf(addr); got != want {
			t.Errorf("isSelf(%s) = %v, want %v", addr, got, want)
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			if hp := netip.AddrPortFrom(pfx.Addr(), 18080).String(); !p.isSelf(hp) {
				t.Errorf("isSelf(%s) = false for an address of this machine", hp)
			}
		}
	}
}

// TestWebSeedMode: the proxy's WebSeedMode reaches its torrents. By
// default a new reader's first piece is raced from the origin while the
// seed is still being found; rescue-only leaves the origin alone while
// the seed keeps up.
func TestWebSeedMode(t *testing.T) {
	for _, tc := range []struct {
		mode   swarm.WebSeedMode
		origin bool // the origin served bytes of the file
	}{{swarm.WebSeedRescue, true}, {swarm.WebSeedRescueOnly, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			w := newWorld(t, 512<<10, func(c *Config) { c.WebSeedMode = tc.mode })
			resp, body := w.get(t, "/episode.mp3", nil)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) {
				t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
			}
			st := w.proxy.Status()
			// Either way the origin may be asked for the file's first
			// byte, to confirm it serves the torrent's file (confirmOrigin).
			if hits := w.originHit.Load(); (hits > 0) != tc.origin || (st.FromOrigin > 0) != tc.origin || w.confirms.Load() > 1 {
				t.Fatalf("the origin got %d requests for the file (and %d for its first byte) and sent %d bytes of it; want some: %v",
					hits, w.confirms.Load(), st.FromOrigin, tc.origin)
			}
		})
	}
}

// TestTransformedLogLine: one line per request served from the swarm,
// naming the URL, the torrent, the app and the client's Range.
func TestTransformedLogLine(t *testing.T) {
	logs, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	w := newWorld(t, 256<<10, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	resp, body := w.get(t, "/episode.mp3", map[string]string{"Range": "bytes=10-19", "User-Agent": "podclient/1.0"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, w.content[10:20]) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	text, err := os.ReadFile(logs.Name())
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for l := range strings.SplitSeq(string(text), "\n") {
		if strings.Contains(l, `msg="serving from the swarm"`) {
			line = l
		}
	}
	for _, want := range []string{"url=" + w.origin.URL + "/episode.mp3", "infohash=" + w.meta.InfoHash.String(), "app=podclient/1.0", `range="bytes=10-19"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
}

// TestHead: a HEAD gets the headers its GET would get (RFC 9110, section
// 9.3.2): from the torrent when the GET would be answered from it, and
// the origin's otherwise; no torrent is opened, and the file is never
// fetched (HARDENING 60).
func TestHead(t *testing.T) {
	w := newWorld(t, 256<<10)
	type seen struct{ method, accept, rng string }
	var mu sync.Mutex
	var reqs []seen
	w2 := newWorld(t, 256<<10)                    // a proxy that has seen nothing yet
	stale := append(bytes.Clone(w2.content), 'x') // a file changed since its torrent was made
	w2.mux.HandleFunc("/stale.mp3", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, seen{r.Method, r.Header.Get("Accept"), r.Header.Get("Range")})
		mu.Unlock()
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			rw.Header().Set("Content-Type", "application/x-bittorrent")
			rw.Write(w2.torrent)
			return
		}
		rw.Header().Set("ETag", `"stale-file"`)
		http.ServeContent(rw, r, "stale.mp3", time.Time{}, bytes.NewReader(stale))
	})
	getResp, body := w.get(t, "/episode.mp3", nil)
	if !bytes.Equal(body, w.content) {
		t.Fatal("GET: wrong bytes")
	}
	etag := getResp.Header.Get("ETag")
	head := func(t *testing.T, path string, hdr map[string]string) *http.Response {
		t.Helper()
		resp, body := w.do(t, http.MethodHead, path, hdr)
		if len(body) != 0 {
			t.Fatalf("HEAD %s: a body of %d bytes", path, len(body))
		}
		return resp
	}

	t.Run("the GET's headers", func(t *testing.T) {
		hits, confirms := w.originHit.Load(), w.confirms.Load()
		resp := head(t, "/episode.mp3", nil)
		for _, k := range []string{"ETag", "Content-Length", "Content-Type", "Last-Modified", "Accept-Ranges", "Content-Disposition"} {
			if resp.Header.Get(k) != getResp.Header.Get(k) {
				t.Errorf("%s: HEAD %q, GET %q", k, resp.Header.Get(k), getResp.Header.Get(k))
			}
		}
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(w.content)) {
			t.Errorf("status %d, length %d", resp.StatusCode, resp.ContentLength)
		}
		if n, c := w.originHit.Load()-hits, w.confirms.Load()-confirms; n != 0 || c != 0 {
			t.Errorf("the origin was asked plainly %d times and to confirm %d; the torrent is complete here", n, c)
		}
	})
	t.Run("conditional", func(t *testing.T) {
		if resp := head(t, "/episode.mp3", map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match with the ETag: status %d", resp.StatusCode)
		}
		resp := head(t, "/episode.mp3", map[string]string{"Range": "bytes=10-19", "If-Range": etag})
		if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(w.content)) || resp.ContentLength != 10 {
			t.Errorf("Range with If-Range: status %d, Content-Range %q, length %d", resp.StatusCode, resp.Header.Get("Content-Range"), resp.ContentLength)
		}
		if resp := head(t, "/episode.mp3", map[string]string{"Range": "bytes=10-19", "If-Range": `"other"`}); resp.StatusCode != 200 {
			t.Errorf("Range with a stale If-Range: status %d", resp.StatusCode)
		}
	})
	t.Run("not a torrent, or not usable", func(t *testing.T) {
		if resp := head(t, "/page.html", nil); resp.StatusCode != 200 || resp.Header.Get("ETag") != `"page"` {
			t.Errorf("page: %d %v", resp.StatusCode, resp.Header)
		}
		for _, path := range []string{"/broken.mp3", "/notransform.mp3"} {
			if resp := head(t, path, nil); resp.StatusCode != 200 || resp.Header.Get("ETag") != `"origin-file"` {
				t.Errorf("%s: %d %v", path, resp.StatusCode, resp.Header)
			}
		}
	})
	t.Run("the origin's file differs", func(t *testing.T) {
		resp, _ := w2.do(t, http.MethodHead, "/stale.mp3", nil)
		if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"stale-file"` || resp.ContentLength != int64(len(stale)) {
			t.Errorf("status %d, ETag %q, length %d: not the origin's own answer", resp.StatusCode, resp.Header.Get("ETag"), resp.ContentLength)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reqs {
			if r.method != http.MethodHead && !strings.Contains(r.accept, "application/x-bittorrent") && r.rng != "bytes=0-0" {
				t.Errorf("the origin's file was fetched: %+v", r)
			}
		}
	})
	t.Run("no torrent opened", func(t *testing.T) {
		// w has the torrent from its GET; a fresh proxy must open none.
		resp, _ := w2.do(t, http.MethodHead, "/episode.mp3", nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
			t.Fatalf("fresh proxy: %d %v", resp.StatusCode, resp.Header)
		}
		if _, ok := w2.proxy.cfg.Engine.Torrent(w2.meta.InfoHash); ok {
			t.Error("a HEAD opened the torrent")
		}
		if n, c := w2.originHit.Load(), w2.confirms.Load(); n != 0 || c != 1 {
			t.Errorf("the origin was asked plainly %d times and to confirm %d; want one confirmation", n, c)
		}
	})
}

// headMatchesGet GETs path through the proxy, checks that the GET was
// answered from the torrent, then HEADs it and reports every header the
// two answers disagree on.
func headMatchesGet(t *testing.T, w *world, path string) {
	t.Helper()
	getResp, body := w.get(t, path, nil)
	if getResp.StatusCode != 200 || !bytes.Equal(body, w.content) || !strings.HasPrefix(getResp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("GET %s: status %d, ETag %q, %d bytes: not answered from the torrent", path, getResp.StatusCode, getResp.Header.Get("ETag"), len(body))
	}
	headResp, _ := w.do(t, http.MethodHead, path, nil)
	if headResp.StatusCode != getResp.StatusCode {
		t.Errorf("HEAD %s: status %d, the GET's %d", path, headResp.StatusCode, getResp.StatusCode)
	}
	for _, k := range []string{"ETag", "Content-Length", "Content-Type", "Last-Modified"} {
		if headResp.Header.Get(k) != getResp.Header.Get(k) {
			t.Errorf("HEAD %s: %s %q, the GET's %q", path, k, headResp.Header.Get(k), getResp.Header.Get(k))
		}
	}
}

// TestHeadSniffedMetainfo: an origin that answers the negotiation with
// metainfo not typed as application/x-bittorrent, which a GET sniffs and
// serves from the torrent; with Vary: Accept, and without (HARDENING 59:
// "or fails to send Vary"). A HEAD shows no body to sniff, so the proxy's
// GET of the metainfo tells: the HEAD says what the GET says, and never
// passes the headers of the metainfo document (its length, its ETag) off
// as the file's.
func TestHeadSniffedMetainfo(t *testing.T) {
	w := newWorld(t, 256<<10)
	sniffed := func(vary bool) http.HandlerFunc {
		return func(rw http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
				rw.Header().Set("Content-Type", "application/octet-stream")
				if vary {
					rw.Header().Set("Vary", "Accept")
				}
				rw.Header().Set("ETag", `"origin-torrent"`)
				http.ServeContent(rw, r, "", time.Time{}, bytes.NewReader(w.torrent))
				return
			}
			rw.Header().Set("ETag", `"origin-file"`)
			http.ServeContent(rw, r, "sniffed.mp3", time.Time{}, bytes.NewReader(w.content))
		}
	}
	w.mux.HandleFunc("/sniffed.mp3", sniffed(true))
	w.mux.HandleFunc("/novary/sniffed.mp3", sniffed(false))
	for _, path := range []string{"/sniffed.mp3", "/novary/sniffed.mp3"} {
		headMatchesGet(t, w, path)
	}
	// A small answer that is no torrent is passed on as its GET's is.
	head, _ := w.do(t, http.MethodHead, "/page.html", nil)
	if head.StatusCode != http.StatusOK || head.Header.Get("ETag") != `"page"` || head.Header.Get("Content-Type") != "text/html" {
		t.Errorf("HEAD of a page: status %d, ETag %q, type %q", head.StatusCode, head.Header.Get("ETag"), head.Header.Get("Content-Type"))
	}
}

// TestHeadOriginBusy: an origin that still hands out the metainfo
// but answers plain requests 503 (the load tbproxy exists to take off it).
// The GET is served from the swarm (a confirmation that fails without
// showing another file only delays the headers); the HEAD must say what
// the GET says.
func TestHeadOriginBusy(t *testing.T) {
	w := newWorld(t, 256<<10)
	w.mux.HandleFunc("/busy.mp3", w.torrentOr(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Retry-After", "60")
		http.Error(rw, "busy", http.StatusServiceUnavailable)
	}))
	headMatchesGet(t, w, "/busy.mp3")
}

// TestHeadPlainHeadWithoutLength: an origin whose plain HEAD gives
// no Content-Length (its GETs do, and its Range GETs give the size in
// Content-Range, which is how a GET's confirmation asks). The GET is
// served from the torrent; the HEAD must carry the same validators.
func TestHeadPlainHeadWithoutLength(t *testing.T) {
	w := newWorld(t, 256<<10)
	w.mux.HandleFunc("/nolength.mp3", w.torrentOr(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("ETag", `"origin-file"`)
		if r.Method == http.MethodHead {
			rw.Header().Set("Content-Type", "audio/mpeg")
			rw.WriteHeader(http.StatusOK) // no body written: no Content-Length
			return
		}
		http.ServeContent(rw, r, "nolength.mp3", time.Time{}, bytes.NewReader(w.content))
	}))
	headMatchesGet(t, w, "/nolength.mp3")
}

// TestHeadCountedLikeGet: a HEAD with a validator for a URL that is
// no torrent goes out plainly again, as its GET does; the GET is counted
// (fallback), and so must the HEAD be, as every other HEAD is.
func TestHeadCountedLikeGet(t *testing.T) {
	w := newWorld(t, 64<<10)
	snap := func() totals {
		w.proxy.mu.Lock()
		defer w.proxy.mu.Unlock()
		return w.proxy.totals
	}
	hdr := map[string]string{"If-None-Match": `"other"`}
	before := snap()
	w.get(t, "/page.html", hdr)
	afterGet := snap()
	w.do(t, http.MethodHead, "/page.html", hdr)
	afterHead := snap()
	counted := func(a, b totals) int64 {
		return (b.transformed - a.transformed) + (b.passed - a.passed) + (b.fallbacks - a.fallbacks)
	}
	if n := counted(before, afterGet); n != 1 {
		t.Fatalf("the GET was counted %d times", n)
	}
	if n := counted(afterGet, afterHead); n != 1 {
		t.Errorf("the HEAD was counted %d times (GET: %+v, HEAD: %+v)", n, afterGet, afterHead)
	}
}

// torrentOr answers a request that accepts the torrent with the world's
// metainfo, and any other with plain.
func (w *world) torrentOr(plain http.HandlerFunc) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			rw.Header().Set("Content-Type", "application/x-bittorrent")
			rw.Header().Set("Vary", "Accept")
			rw.Write(w.torrent)
			return
		}
		plain(rw, r)
	}
}

// TestGetWithBody: a GET with a body (a search API's query) and a
// conditional is passed on as it came, body and all, and is answered as
// it is without the proxy. It used to be negotiated with the conditional
// left off and then asked again plainly, with its body already read.
func TestGetWithBody(t *testing.T) {
	w := newWorld(t, 64<<10)
	w.mux.HandleFunc("/search", func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rw.Header().Set("Content-Type", "text/plain")
		rw.Write(append([]byte("query: "), b...))
	})
	search := func(c *http.Client) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, w.origin.URL+"/search", strings.NewReader(`{"q":"x"}`))
		req.Header.Set("If-None-Match", `"old"`)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body
	}
	direct, want := search(http.DefaultClient)
	resp, got := search(w.client)
	if resp.StatusCode != http.StatusOK || string(got) != string(want) {
		t.Fatalf("through the proxy: %d %q; directly: %d %q", resp.StatusCode, got, direct.StatusCode, want)
	}
}

// TestAcceptRedirectNotFollowed: an origin that sends torrent-seeking
// clients to its .torrent with a redirect (Vary: Accept) must not send the
// proxy's client there: a GET and a HEAD get the origin's answer to the
// client's own request, the file.
func TestAcceptRedirectNotFollowed(t *testing.T) {
	w := newWorld(t, 64<<10)
	w.mux.HandleFunc("/redirected.mp3", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Vary", "Accept")
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			http.Redirect(rw, r, "/redirected.mp3.torrent", http.StatusFound)
			return
		}
		rw.Header().Set("ETag", `"origin-file"`)
		http.ServeContent(rw, r, "redirected.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	w.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := w.do(t, method, "/redirected.mp3", nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != `"origin-file"` ||
			(method == http.MethodGet && !bytes.Equal(body, w.content)) {
			t.Errorf("%s: status %d, Location %q, ETag %q, %d bytes; want the file", method, resp.StatusCode,
				resp.Header.Get("Location"), resp.Header.Get("ETag"), len(body))
		}
	}
}

// TestCompressedMetainfo: an origin that compresses its metainfo answer
// (mod_deflate, for a client whose Accept-Encoding allows it), typed as
// BitTorrent's or, without Vary, as application/octet-stream: the proxy
// reads it decoded, and the client gets the file from the torrent, never
// the compressed torrent as the file. A compressed answer that is no
// torrent goes on as it came.
func TestCompressedMetainfo(t *testing.T) {
	w := newWorld(t, 256<<10)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(w.torrent)
	zw.Close()
	compressed := func(ctype string) http.HandlerFunc {
		return func(rw http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
				rw.Header().Set("Content-Type", ctype)
				rw.Header().Set("Content-Encoding", "gzip")
				rw.Write(gz.Bytes())
				return
			}
			rw.Header().Set("ETag", `"origin-file"`)
			http.ServeContent(rw, r, "episode.mp3", time.Time{}, bytes.NewReader(w.content))
		}
	}
	w.mux.HandleFunc("/gz/typed/episode.mp3", compressed("application/x-bittorrent"))
	w.mux.HandleFunc("/gz/octet/episode.mp3", compressed("application/octet-stream"))
	for _, path := range []string{"/gz/typed/episode.mp3", "/gz/octet/episode.mp3"} {
		headMatchesGet(t, w, path)
	}
	var page bytes.Buffer
	zw = gzip.NewWriter(&page)
	zw.Write([]byte("<p>compressed</p>"))
	zw.Close()
	w.mux.HandleFunc("/gz/page.html", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		rw.Header().Set("Content-Encoding", "gzip")
		rw.Write(page.Bytes())
	})
	resp, body := w.get(t, "/gz/page.html", nil)
	if resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(body, page.Bytes()) {
		t.Errorf("a compressed page: Content-Encoding %q, %d bytes; want it as it came", resp.Header.Get("Content-Encoding"), len(body))
	}
}

// TestMultiFileSiblings: a multi-file torrent with no url-list and no
// peers, whose origin serves its files side by side, as the URL's path
// says. A file whose first and last pieces span into its neighbours is
// delivered whole: those pieces' other bytes come from the neighbours'
// URLs, which the URL itself cannot give. With the torrent's name in the
// URL and without.
func TestMultiFileSiblings(t *testing.T) {
	for _, path := range []string{"/with/album/b.mp3", "/without/b.mp3"} {
		w := newWorld(t, 64<<10)
		dir := filepath.Join(t.TempDir(), "album")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string][]byte{"a.mp3": make([]byte, 100_000), "b.mp3": make([]byte, 150_000), "c.mp3": make([]byte, 70_000)}
		for name, data := range files {
			rand.Read(data)
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m, err := metainfo.Build(context.Background(), dir, metainfo.BuildOptions{PieceLength: 32 << 10, CreationDate: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		torrent, _ := m.Marshal()
		prefix := path[:strings.LastIndex(path, "/")+1]
		w.mux.HandleFunc(prefix, func(rw http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
				rw.Header().Set("Content-Type", "application/x-bittorrent")
				rw.Write(torrent)
				return
			}
			http.StripPrefix(strings.TrimSuffix(prefix, "/"), http.FileServer(http.Dir(dir))).ServeHTTP(rw, r)
		})
		resp, body := w.get(t, path, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) || !bytes.Equal(body, files["b.mp3"]) {
			t.Errorf("GET %s: status %d, ETag %q, %d bytes; want b.mp3 from the torrent", path, resp.StatusCode, resp.Header.Get("ETag"), len(body))
		}
	}
}

// TestPassedOnAsItCame: an answer with no Content-Type reaches the client
// with none (Go's server would sniff one), and a client that sends no
// User-Agent reaches the origin with none (Go's client would name
// itself), for the negotiation, a plain refetch and the engine's web seed.
func TestPassedOnAsItCame(t *testing.T) {
	w := newWorld(t, 64<<10)
	var mu sync.Mutex
	var agents []string
	w.mux.HandleFunc("/untyped", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, strings.Join(r.Header.Values("User-Agent"), ","))
		mu.Unlock()
		rw.Header()["Content-Type"] = nil
		io.WriteString(rw, "<html><body>not a page</body></html>")
	})
	req, _ := http.NewRequest(http.MethodGet, w.origin.URL+"/untyped", nil)
	req.Header["User-Agent"] = []string{""}
	resp, err := w.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("Content-Type %q added to an answer that had none", ct)
	}
	// A torrent's web seed and confirmation, and a plain refetch.
	w.lonely(t, "/agentless.mp3", func(rw http.ResponseWriter, r *http.Request) {
		mu.Lock()
		agents = append(agents, strings.Join(r.Header.Values("User-Agent"), ","))
		mu.Unlock()
		http.ServeContent(rw, r, "agentless.mp3", time.Time{}, bytes.NewReader(w.content))
	})
	for _, hdr := range []map[string]string{nil, {"If-None-Match": `"x"`}} {
		req, _ = http.NewRequest(http.MethodGet, w.origin.URL+"/agentless.mp3", nil)
		req.Header["User-Agent"] = []string{""}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err = w.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) < 2 {
		t.Fatalf("the origin was asked %d times", len(agents))
	}
	for _, a := range agents {
		if a != "" {
			t.Errorf("the origin saw User-Agent %q from a client that sent none (all: %q)", a, agents)
			break
		}
	}
}
