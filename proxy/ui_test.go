package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// hostileName is a torrent file name that is markup; it has no "/" so it
// can name a real file.
const hostileName = `<img src=x onerror=alert(1)>.mp3`

// hostileUA is a User-Agent that is markup.
const hostileUA = `podcatcher/1.0 <script>alert(1)</script>`

// startSlowDownload starts a transformed GET of path and reads only its
// first bytes, so that the transfer stays active until the returned stop.
func startSlowDownload(t *testing.T, w *world, path string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.origin.URL+path, nil)
	req.Header.Set("User-Agent", hostileUA)
	resp, err := w.client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		cancel()
		resp.Body.Close()
		t.Fatal(err)
	}
	stop = func() {
		cancel()
		resp.Body.Close()
		deadline := time.Now().Add(10 * time.Second)
		for len(w.proxy.Status().Transfers) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(w.proxy.Status().Transfers) == 0 {
		if time.Now().After(deadline) {
			stop()
			t.Fatal("no active transfer")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return stop
}

// addHostileTorrent serves a torrent whose one file is named hostileName
// at /hostile.mp3; its bytes come from the origin as a web seed.
func addHostileTorrent(t *testing.T, w *world) {
	t.Helper()
	path := filepath.Join(t.TempDir(), hostileName)
	if err := os.WriteFile(path, w.content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), path, metainfo.BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	torrent, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	w.mux.HandleFunc("/hostile.mp3", func(rw http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "application/x-bittorrent") {
			rw.Header().Set("Content-Type", "application/x-bittorrent")
			rw.Write(torrent)
			return
		}
		http.ServeContent(rw, r, "hostile.mp3", time.Time{}, strings.NewReader(string(w.content)))
	})
}

// getDirect requests the proxy's own page at path, with the Host given
// (the listener's address when empty).
func getDirect(t *testing.T, base, path, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	c := &http.Client{Transport: &http.Transport{}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

func TestStatusPageDuringTransfer(t *testing.T) {
	w := newWorld(t, 8<<20)
	addHostileTorrent(t, w)
	stop := startSlowDownload(t, w, "/hostile.mp3")
	defer stop()
	base := w.proxyURL.String()

	resp, page := getDirect(t, base, "/", "")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, h := range []struct{ name, want string }{
		{"Content-Security-Policy", "default-src 'self'"},
		{"X-Frame-Options", "DENY"},
		{"Referrer-Policy", "no-referrer"},
		{"X-Content-Type-Options", "nosniff"},
	} {
		if got := resp.Header.Get(h.name); !strings.Contains(got, h.want) {
			t.Errorf("%s: %q, want %q", h.name, got, h.want)
		}
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("the page sends CORS headers")
	}
	tests := []struct {
		name string
		want string
	}{
		{"the URL", w.origin.URL + "/hostile.mp3"},
		{"the file, escaped", "&lt;img src=x onerror=alert(1)&gt;.mp3"},
		{"the app, escaped", "podcatcher/1.0"},
		{"a progress bar", `<progress data-f="progress" max="1000" value="`},
		{"a piece map", `<svg class="pieces" data-f="pieces" viewBox="0 0 `},
		{"verified pieces in it", `class="l4"`},
		{"the swarm/origin split", `data-f="split-swarm"`},
		{"a refresh with scripts off", `<noscript><meta http-equiv="refresh" content="5"></noscript>`},
		{"the script, from a file", `<script src="/ui/app.js" defer></script>`},
		{"the style sheet", `<link rel="stylesheet" href="/ui/style.css">`},
		{"the plot", `<polyline class="swarm" id="plot-swarm" points="`},
		{"no cache section", "No disk cache"},
	}
	for _, tt := range tests {
		if !strings.Contains(page, tt.want) {
			t.Errorf("%s: %q not in the page", tt.name, tt.want)
		}
	}
	for _, bad := range []string{"<img src=x", "<script>alert", "onerror=alert(1)>"} {
		if strings.Contains(page, bad) {
			t.Errorf("hostile markup %q reached the page unescaped", bad)
		}
	}
	if strings.Contains(page, "<script>") || strings.Count(page, "<script") != 1 {
		t.Error("the page has inline script")
	}

	// /status.json has what the script needs.
	resp, body := getDirect(t, base, "/status.json?history", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status.json: %d", resp.StatusCode)
	}
	var st struct {
		Time      time.Time `json:"time"`
		Transfers []struct {
			ID       int64   `json:"id"`
			App      string  `json:"app"`
			AppName  string  `json:"app_name"`
			URL      string  `json:"url"`
			File     string  `json:"file"`
			Size     int64   `json:"size"`
			Sent     int64   `json:"sent"`
			Rate     float64 `json:"download_rate"`
			Peers    int     `json:"peers"`
			Pieces   int     `json:"pieces"`
			PieceMap []int   `json:"piece_map"`
			Origin   int64   `json:"bytes_from_origin"`
		} `json:"transfers"`
		History []HistorySample `json:"history"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Transfers) != 1 {
		t.Fatalf("%d transfers", len(st.Transfers))
	}
	tr := st.Transfers[0]
	if tr.URL != w.origin.URL+"/hostile.mp3" || tr.File != hostileName || tr.Size != int64(len(w.content)) || tr.App != hostileUA || tr.AppName != "podcatcher/1.0" {
		t.Errorf("transfer %+v", tr)
	}
	if tr.Sent <= 0 || tr.Sent >= tr.Size || tr.Pieces != 128 || len(tr.PieceMap) != 128 || tr.Origin <= 0 {
		t.Errorf("progress: sent %d of %d, %d pieces, map of %d, %d bytes from the origin", tr.Sent, tr.Size, tr.Pieces, len(tr.PieceMap), tr.Origin)
	}
	if len(st.History) == 0 || st.Time.IsZero() {
		t.Errorf("history %v at %v", st.History, st.Time)
	}
}

// TestStatusIdle: an idle proxy's status.json lists its transfers as an
// empty array, not null, so that clients can iterate it as it comes.
func TestStatusIdle(t *testing.T) {
	w := newWorld(t, 64<<10)
	resp, body := getDirect(t, w.proxyURL.String(), "/status.json", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status.json: %d", resp.StatusCode)
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if got := string(st["transfers"]); got != "[]" {
		t.Errorf("transfers: %s, want []", got)
	}
}

func TestStatusPageAssets(t *testing.T) {
	w := newWorld(t, 64<<10)
	base := w.proxyURL.String()
	for _, tt := range []struct{ path, ctype, want string }{
		{"/ui/app.js", "text/javascript", "/status.json"},
		{"/ui/style.css", "text/css", "progress"},
	} {
		resp, body := getDirect(t, base, tt.path, "")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), tt.ctype) || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %q", tt.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	if resp, _ := getDirect(t, base, "/ui/page.html", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the template is served: %d", resp.StatusCode)
	}
}

func TestLocalRoutesRefuseForeignHost(t *testing.T) {
	w := newWorld(t, 64<<10)
	for _, path := range []string{"/", "/status.json", "/metrics", "/ui/app.js", "/cache/drop"} {
		for _, host := range []string{"evil.example", "evil.example:" + w.proxyURL.Port(), "127.0.0.1.evil.example"} {
			resp, _ := getDirect(t, w.proxyURL.String(), path, host)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s with Host %s: %d", path, host, resp.StatusCode)
			}
		}
	}
}

// TestProxiedRequestNeverReachesUI: the UI listener, once added as one of
// the proxy's own addresses, is refused as a loop when asked through the
// proxy, by address or by name.
func TestProxiedRequestNeverReachesUI(t *testing.T) {
	w := newWorld(t, 64<<10)
	var hits sync.Map
	ui := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hits.Store(r.URL.Path, true)
		w.proxy.LocalHandler().ServeHTTP(rw, r)
	}))
	defer ui.Close()
	if err := w.proxy.AddSelf(ui.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ui.Listener.Addr().String())
	for _, target := range []string{ui.URL + "/", "http://localhost:" + port + "/status.json"} {
		resp, err := w.client.Get(target)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusLoopDetected {
			t.Errorf("%s through the proxy: %d", target, resp.StatusCode)
		}
	}
	hits.Range(func(k, _ any) bool {
		t.Errorf("the UI was reached through the proxy: %v", k)
		return true
	})
	if err := w.proxy.AddSelf("not an address"); err == nil {
		t.Error("AddSelf took a bad address")
	}
}

// fakeCache is a CacheView with one hostile torrent.
type fakeCache struct {
	mu      sync.Mutex
	dropped []metainfo.Hash // guarded by mu
	err     error           // what Drop returns; guarded by mu
}

var fakeHash = metainfo.Hash{0xab, 0xcd, 0xef, 1, 2, 3}

func (f *fakeCache) Usage() (int64, int64) { return 3 << 30, 10 << 30 }

func (f *fakeCache) Torrents() []CachedTorrent {
	return []CachedTorrent{{
		InfoHash: fakeHash, Name: `<script>alert("cache")</script>`, Size: 5 << 20, DiskBytes: 4 << 20,
		Verified: 0.8, Seeding: true, Uploaded: 12 << 20, LastUse: time.Now().Add(-3 * time.Minute),
	}}
}

func (f *fakeCache) Drop(ih metainfo.Hash) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropped = append(f.dropped, ih)
	return f.err
}

func (f *fakeCache) drops() []metainfo.Hash {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]metainfo.Hash(nil), f.dropped...)
}

// newCacheUI is a proxy with a fake cache, its pages served by an
// httptest server as run.go serves them on --ui-listen.
func newCacheUI(t *testing.T) (*Proxy, *fakeCache, *httptest.Server) {
	t.Helper()
	engine, err := swarm.NewClient(swarm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	fc := &fakeCache{}
	p, err := New(Config{Engine: engine, Cache: fc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := httptest.NewServer(p.LocalHandler())
	t.Cleanup(srv.Close)
	return p, fc, srv
}

var tokenRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func TestCachePageAndDrop(t *testing.T) {
	_, fc, srv := newCacheUI(t)
	resp, page := getDirect(t, srv.URL, "/", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("page: %d", resp.StatusCode)
	}
	for _, want := range []string{
		"&lt;script&gt;alert(&#34;cache&#34;)&lt;/script&gt;",
		fakeHash.String(),
		`<meter id="cache-meter" min="0" max="10737418240" value="3221225472">`,
		"3.0 GiB", "10.0 GiB", "80%", "12.0 MiB", "3 min ago", "not running",
		`<form method="post" action="/cache/drop" class="drop">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("%q not in the page", want)
		}
	}
	if strings.Contains(page, `<script>alert`) {
		t.Error("a cached torrent's name reached the page unescaped")
	}
	m := tokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token in the drop form")
	}
	token := m[1]

	post := func(form url.Values, hdr map[string]string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/cache/drop", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
				continue
			}
			req.Header.Set(k, v)
		}
		c := &http.Client{Transport: &http.Transport{}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		defer c.CloseIdleConnections()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusSeeOther && resp.Header.Get("Location") != "/" {
			t.Errorf("redirected to %q", resp.Header.Get("Location"))
		}
		return resp.StatusCode
	}
	ih := fakeHash.String()
	self := srv.URL
	refused := []struct {
		name string
		form url.Values
		hdr  map[string]string
		want int
	}{
		{"no token", url.Values{"infohash": {ih}}, nil, http.StatusForbidden},
		{"wrong token", url.Values{"infohash": {ih}, "csrf": {token + "x"}}, nil, http.StatusForbidden},
		{"short token", url.Values{"infohash": {ih}, "csrf": {token[:4]}}, nil, http.StatusForbidden},
		{"cross-site origin", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Origin": "http://evil.example"}, http.StatusForbidden},
		{"null origin", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"other local origin", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Origin": "http://127.0.0.1:1"}, http.StatusForbidden},
		{"cross-site referer", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Referer": "http://evil.example/x"}, http.StatusForbidden},
		{"cross-site fetch", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"foreign host", url.Values{"infohash": {ih}, "csrf": {token}}, map[string]string{"Host": "evil.example"}, http.StatusForbidden},
		{"bad info-hash", url.Values{"infohash": {"zz"}, "csrf": {token}}, nil, http.StatusBadRequest},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if got := post(tt.form, tt.hdr); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}
	if d := fc.drops(); len(d) != 0 {
		t.Fatalf("Drop was called by a refused request: %v", d)
	}
	if resp, _ := getDirect(t, srv.URL, "/cache/drop?infohash="+ih+"&csrf="+token, ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /cache/drop: %d", resp.StatusCode)
	}

	accepted := []struct {
		name string
		hdr  map[string]string
	}{
		{"same origin", map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}},
		{"same referer", map[string]string{"Referer": self + "/"}},
		{"no origin (curl)", nil},
		{"token in a header", map[string]string{"X-CSRF-Token": token}},
	}
	for i, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"infohash": {ih}}
			if tt.hdr["X-CSRF-Token"] == "" {
				form.Set("csrf", token)
			}
			if got := post(form, tt.hdr); got != http.StatusSeeOther {
				t.Fatalf("status %d", got)
			}
			if d := fc.drops(); len(d) != i+1 || d[i] != fakeHash {
				t.Fatalf("drops %v", d)
			}
		})
	}

	errs := []struct {
		name string
		err  error
		want int
	}{
		{"unsupported", fmt.Errorf("x: %w", errors.ErrUnsupported), http.StatusNotImplemented},
		{"not cached", fmt.Errorf("x: %w", ErrNotCached), http.StatusNotFound},
		{"failed", errors.New("disk on fire"), http.StatusInternalServerError},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			fc.mu.Lock()
			fc.err = tt.err
			fc.mu.Unlock()
			if got := post(url.Values{"infohash": {ih}, "csrf": {token}}, nil); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}

	// /status.json has the cache for the script.
	_, body := getDirect(t, srv.URL, "/status.json", "")
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Cache == nil || st.Cache.Used != 3<<30 || st.Cache.Limit != 10<<30 || len(st.Cache.Torrents) != 1 || st.Cache.Torrents[0].InfoHash != ih {
		t.Fatalf("cache %+v", st.Cache)
	}
	if strings.Contains(body, token) {
		t.Fatal("status.json gives the CSRF token away")
	}
}

// TestDropRefusedWhileStreaming: a torrent being streamed is not dropped.
func TestDropRefusedWhileStreaming(t *testing.T) {
	p, fc, srv := newCacheUI(t)
	// A transfer with no torrent: enough for the check, not for a page.
	id := p.addTransfer(&transfer{infohash: fakeHash})
	defer p.removeTransfer(id)
	form := url.Values{"infohash": {fakeHash.String()}, "csrf": {p.csrfToken()}}
	r, err := http.PostForm(srv.URL+"/cache/drop", form)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if r.StatusCode != http.StatusConflict || len(fc.drops()) != 0 {
		t.Fatalf("status %d, drops %v", r.StatusCode, fc.drops())
	}
}

// TestSamplerStopsOnClose: the goroutine that samples the totals starts
// with Serve and has ended when Close returns.
func TestSamplerStopsOnClose(t *testing.T) {
	engine, err := swarm.NewClient(swarm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	before := goleak.IgnoreCurrent()
	p, err := New(Config{Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(p.history()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sampler recorded nothing")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before)
	// A Serve after Close starts no sampler.
	p.startSampler()
	goleak.VerifyNone(t, before)
}

// TestLocalHandlerClients: the status listener answers the proxy's own
// clients only: loopback and the allowed networks (HARDENING 47); a
// status page on a LAN address shows nothing to anyone else.
func TestLocalHandlerClients(t *testing.T) {
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	p, err := New(Config{Engine: engine, AllowedClients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for remote, want := range map[string]int{
		"127.0.0.1:5000":    http.StatusOK,
		"[::1]:5000":        http.StatusOK,
		"192.0.2.7:5000":    http.StatusOK,
		"198.51.100.7:5000": http.StatusForbidden,
		"[2001:db8::1]:500": http.StatusForbidden,
	} {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:8081/healthz", nil)
		r.RemoteAddr = remote
		rw := httptest.NewRecorder()
		p.LocalHandler().ServeHTTP(rw, r)
		if rw.Code != want {
			t.Errorf("/healthz from %s: %d, want %d", remote, rw.Code, want)
		}
	}
}
