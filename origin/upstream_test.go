package origin

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
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
)

// fakeUpstream is a web server with one file per path, each with an ETag,
// that counts the requests it gets.
type fakeUpstream struct {
	srv *httptest.Server

	mu      sync.Mutex
	files   map[string]upFile
	fetches map[string]int // GETs from the fetcher (no X-Forwarded-For)
	proxied map[string]int // requests through the reverse proxy
	heads   atomic.Int32
	failing atomic.Bool // every request answered 503
}

type upFile struct {
	data   []byte
	etag   string
	header http.Header // extra headers
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	u := &fakeUpstream{files: make(map[string]upFile), fetches: make(map[string]int), proxied: make(map[string]int)}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *fakeUpstream) set(p string, f upFile) {
	u.mu.Lock()
	u.files[p] = f
	u.mu.Unlock()
}

func (u *fakeUpstream) count(p string) (fetches, proxied int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.fetches[p], u.proxied[p]
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	f, ok := u.files[r.URL.Path]
	switch {
	case r.Method == http.MethodHead:
		u.heads.Add(1)
	case r.Header.Get("X-Forwarded-For") == "":
		u.fetches[r.URL.Path]++
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		u.proxied[r.URL.Path]++
	}
	u.mu.Unlock()
	if u.failing.Load() {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	for k, v := range f.header {
		w.Header()[k] = v
	}
	w.Header().Set("Etag", f.etag)
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}

type upFixture struct {
	up     *fakeUpstream
	u      *Upstream
	pub    *Publisher
	srv    *httptest.Server
	seeder *recSeeder
	cache  string
}

func newUpFixture(t *testing.T) *upFixture {
	f := &upFixture{up: newFakeUpstream(t), seeder: &recSeeder{}, cache: t.TempDir()}
	base, _ := url.Parse(f.up.srv.URL)
	var err error
	f.u, err = NewUpstream(UpstreamConfig{Upstream: base, CacheDir: f.cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.u.Close() })
	f.pub = newPublisher(t, Config{Resolver: f.u, DataDir: t.TempDir(), Announce: testAnnounce, Seeder: f.seeder})
	f.srv = httptest.NewServer(f.pub.Handler(f.u.Handler()))
	t.Cleanup(f.srv.Close)
	return f
}

func TestUpstreamPublishes(t *testing.T) {
	f := newUpFixture(t)
	v1 := content(2<<20, 41)
	f.up.set("/pub/a.iso", upFile{data: v1, etag: `"v1"`})
	c := f.srv.Client()
	url := f.srv.URL + "/pub/a.iso"

	// The first request passes through, with the upstream's own headers.
	r := get(t, c, "GET", url, "Accept", negotiate.MediaType)
	if r.torrent() || !bytes.Equal(r.body, v1) || r.Header.Get("Etag") != `"v1"` || r.Header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("first request: status %d, %d bytes, headers %v", r.StatusCode, len(r.body), r.Header)
	}
	_, m := waitTorrent(t, c, url)
	ih1 := m.InfoHash
	if len(m.URLList) != 1 || m.URLList[0] != url || m.Announce != testAnnounce {
		t.Errorf("url-list %q announce %q", m.URLList, m.Announce)
	}
	ref := writeFile(t, t.TempDir(), "a.iso", v1, baseTime)
	if ih1 != buildHash(t, ref, "a.iso") {
		t.Error("info-hash differs from the upstream's bytes")
	}
	for range 5 {
		if r := get(t, c, "GET", url, "Accept", negotiate.MediaType); !r.torrent() || varyAccept(r.Header) != 1 {
			t.Fatalf("ready torrent not served: status %d, Vary %q", r.StatusCode, r.Header["Vary"])
		}
	}
	if fetches, _ := f.up.count("/pub/a.iso"); fetches != 1 {
		t.Errorf("fetched %d times, want once", fetches)
	}
	f.seeder.waitCalls(t, "seed "+ih1.String())
	if files := f.seeder.filesOf(ih1); len(files) != 1 || filepath.Dir(filepath.Dir(files[0].Path)) != f.u.cfg.CacheDir {
		t.Errorf("seeding from %v, not the cache", files)
	}

	// Plain answers get Vary: Accept exactly once, and Range still works.
	if r := get(t, c, "GET", url); r.torrent() || varyAccept(r.Header) != 1 || !bytes.Equal(r.body, v1) {
		t.Errorf("plain: Vary %q", r.Header["Vary"])
	}
	if r := get(t, c, "GET", url, "Range", "bytes=5-9"); r.StatusCode != 206 || !bytes.Equal(r.body, v1[5:10]) || varyAccept(r.Header) != 1 {
		t.Errorf("range: status %d, Vary %q", r.StatusCode, r.Header["Vary"])
	}
	// Credentials reach the upstream, but never get a torrent.
	if r := get(t, c, "GET", url, "Accept", negotiate.MediaType, "Authorization", "Basic eDp5"); r.torrent() || !bytes.Equal(r.body, v1) {
		t.Error("a torrent for a request with credentials")
	}

	// A new version upstream: fetched once more, a new torrent, the old one
	// unseeded and its copy deleted.
	v2 := content(2<<20, 42)
	f.up.set("/pub/a.iso", upFile{data: v2, etag: `"v2"`})
	var m2 *metainfo.MetaInfo
	eventually(t, 10*time.Second, func() bool {
		r := get(t, c, "GET", url, "Accept", negotiate.MediaType)
		if !r.torrent() {
			return false
		}
		var err error
		m2, err = metainfo.Parse(r.body)
		return err == nil && m2.InfoHash != ih1
	}, func() string { return "no torrent for the new version" })
	ref2 := writeFile(t, t.TempDir(), "a.iso", v2, baseTime)
	if m2.InfoHash != buildHash(t, ref2, "a.iso") {
		t.Error("info-hash differs from the new bytes")
	}
	f.seeder.waitCalls(t, "seed "+ih1.String(), "unseed "+ih1.String(), "seed "+m2.InfoHash.String())
	if fetches, _ := f.up.count("/pub/a.iso"); fetches != 2 {
		t.Errorf("fetched %d times, want twice", fetches)
	}
	des, _ := os.ReadDir(filepath.Join(f.u.cfg.CacheDir, keyDir("/pub/a.iso")))
	if len(des) != 1 {
		t.Errorf("cache holds %d copies", len(des))
	}
}

func TestUpstreamNotPublished(t *testing.T) {
	f := newUpFixture(t)
	big := content(2<<20, 43)
	f.up.set("/small", upFile{data: content(1000, 44), etag: `"s"`})
	f.up.set("/private", upFile{data: big, etag: `"p"`, header: http.Header{"Cache-Control": {"private, max-age=60"}}})
	f.up.set("/nostore", upFile{data: big, etag: `"n"`, header: http.Header{"Cache-Control": {"no-store"}}})
	f.up.set("/cookie-vary", upFile{data: big, etag: `"c"`, header: http.Header{"Vary": {"Cookie"}}})
	f.up.set("/gzip", upFile{data: big, etag: `"g"`, header: http.Header{"Content-Encoding": {"gzip"}}})
	f.up.set("/query", upFile{data: big, etag: `"q"`})
	f.up.set("/long-etag", upFile{data: big, etag: `"` + strings.Repeat("e", maxValidator) + `"`})
	c := f.srv.Client()
	tests := []struct {
		name, path string
		vary       bool
	}{
		{"small", "/small", false},
		{"private", "/private", true},
		{"no-store", "/nostore", true},
		{"vary cookie", "/cookie-vary", true},
		{"content coding, so no known size", "/gzip", false},
		{"query", "/query?x=1", true},
		{"etag over maxValidator bytes", "/long-etag", true},
		{"missing", "/missing", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 3 {
				r := get(t, c, "GET", f.srv.URL+tt.path, "Accept", negotiate.MediaType, "Accept-Encoding", "identity")
				if r.torrent() {
					t.Fatal("published")
				}
				if got := varyAccept(r.Header) == 1; got != tt.vary {
					t.Errorf("Vary %q, want Accept %v", r.Header["Vary"], tt.vary)
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // a wrongly queued fetch would show
	f.up.mu.Lock()
	defer f.up.mu.Unlock()
	for p, n := range f.up.fetches {
		t.Errorf("fetched %s %d times", p, n)
	}
}

// A 304 carries the Vary: Accept its 200 would (RFC 9110 §15.4.5): for a
// path whose size is unknown, and for one last seen large, but not for one
// last seen below MinSize.
func TestUpstreamNotModifiedVary(t *testing.T) {
	f := newUpFixture(t)
	f.up.set("/a.iso", upFile{data: content(2<<20, 77), etag: `"v1"`})
	f.up.set("/small", upFile{data: content(1000, 78), etag: `"s"`})
	c := f.srv.Client()
	etags := map[string]string{"/a.iso": `"v1"`, "/small": `"s"`}
	check := func(path string, vary int) {
		t.Helper()
		r := get(t, c, "GET", f.srv.URL+path, "If-None-Match", etags[path])
		if r.StatusCode != http.StatusNotModified || varyAccept(r.Header) != vary {
			t.Errorf("%s: status %d, Vary %q; want 304 with Vary: Accept %d times", path, r.StatusCode, r.Header["Vary"], vary)
		}
	}
	if r := get(t, c, "GET", f.srv.URL+"/a.iso"); r.StatusCode != 200 || varyAccept(r.Header) != 1 {
		t.Fatalf("200: status %d, Vary %q", r.StatusCode, r.Header["Vary"])
	}
	check("/a.iso", 1) // no version seen yet
	check("/small", 1)
	for _, path := range []string{"/a.iso", "/small"} {
		get(t, c, "GET", f.srv.URL+path, "Accept", negotiate.MediaType) // the Publisher asks the upstream which version is current
	}
	check("/a.iso", 1)
	check("/small", 0)
}

func TestUpstreamDown(t *testing.T) {
	f := newUpFixture(t)
	f.up.srv.Close()
	r := get(t, f.srv.Client(), "GET", f.srv.URL+"/x", "Accept", negotiate.MediaType)
	if r.StatusCode != http.StatusBadGateway || bytes.Contains(r.body, []byte("127.0.0.1")) {
		t.Errorf("status %d body %q", r.StatusCode, r.body)
	}
}

// TestUpstreamDownKeepsPublishing: an upstream that fails (503) or is
// gone leaves the version it said last standing: the stored copy's
// torrent is still answered, so proxies get it from the publisher's seed,
// while plain requests get the upstream's failure.
func TestUpstreamDownKeepsPublishing(t *testing.T) {
	f := newUpFixture(t)
	f.up.set("/a.iso", upFile{data: content(2<<20, 47), etag: `"v1"`})
	c := f.srv.Client()
	url := f.srv.URL + "/a.iso"
	_, m := waitTorrent(t, c, url)

	f.up.failing.Store(true)
	if r := get(t, c, "GET", url, "Accept", negotiate.MediaType); !r.torrent() {
		t.Fatalf("upstream answering 503: status %d, type %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if r := get(t, c, "GET", url); r.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a plain request while the upstream answers 503: status %d", r.StatusCode)
	}
	f.up.srv.Close()
	r := get(t, c, "GET", url, "Accept", negotiate.MediaType)
	if !r.torrent() {
		t.Fatalf("upstream gone: status %d, type %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if m2, err := metainfo.Parse(r.body); err != nil || m2.InfoHash != m.InfoHash {
		t.Errorf("upstream gone: another torrent (%v)", err)
	}
	if r := get(t, c, "GET", url); r.StatusCode != http.StatusBadGateway {
		t.Errorf("a plain request with the upstream gone: status %d", r.StatusCode)
	}
}

func TestUpstreamRestartKeepsCopies(t *testing.T) {
	up := newFakeUpstream(t)
	data := content(2<<20, 45)
	up.set("/a.bin", upFile{data: data, etag: `"v1"`, header: http.Header{"Last-Modified": {baseTime.Format(http.TimeFormat)}}})
	base, _ := url.Parse(up.srv.URL)
	cache, dataDir := t.TempDir(), t.TempDir()
	var ih metainfo.Hash
	for round := range 2 {
		u, err := NewUpstream(UpstreamConfig{Upstream: base, CacheDir: cache, Revalidate: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		builds := &counter{}
		pub, err := NewPublisher(Config{Resolver: u, DataDir: dataDir, build: builds.build})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := pub.Load(); err != nil || n != round {
			t.Errorf("round %d: Load = %d, %v", round, n, err)
		}
		srv := httptest.NewServer(pub.Handler(u.Handler()))
		_, m := waitTorrent(t, srv.Client(), srv.URL+"/a.bin")
		if round == 0 {
			ih = m.InfoHash
		} else if m.InfoHash != ih || builds.n.Load() != 0 {
			t.Errorf("after restart: info-hash %s, %d builds", m.InfoHash, builds.n.Load())
		}
		if !m.CreationDate.Equal(baseTime) {
			t.Errorf("creation date %v, want the upstream's Last-Modified", m.CreationDate)
		}
		srv.Close()
		pub.Close()
		u.Close()
	}
	if fetches, _ := up.count("/a.bin"); fetches != 1 {
		t.Errorf("fetched %d times across a restart", fetches)
	}
	if heads := up.heads.Load(); heads != 2 {
		t.Errorf("%d HEADs, want one per start with Revalidate", heads)
	}
}

func TestNewUpstreamErrors(t *testing.T) {
	mustURL := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	tests := []struct {
		name string
		cfg  UpstreamConfig
	}{
		{"no url", UpstreamConfig{CacheDir: t.TempDir()}},
		{"ftp", UpstreamConfig{Upstream: mustURL("ftp://127.0.0.1/"), CacheDir: t.TempDir()}},
		{"query", UpstreamConfig{Upstream: mustURL("http://127.0.0.1/?a=1"), CacheDir: t.TempDir()}},
		{"user", UpstreamConfig{Upstream: mustURL("http://u:p@127.0.0.1/"), CacheDir: t.TempDir()}},
		{"no cache dir", UpstreamConfig{Upstream: mustURL("http://127.0.0.1/")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u, err := NewUpstream(tt.cfg); err == nil {
				u.Close()
				t.Fatal("no error")
			}
		})
	}
}

func TestUpstreamBasePath(t *testing.T) {
	up := newFakeUpstream(t)
	data := content(2<<20, 46)
	up.set("/mirror/a.bin", upFile{data: data, etag: `"x"`})
	base, _ := url.Parse(up.srv.URL + "/mirror/")
	u, err := NewUpstream(UpstreamConfig{Upstream: base, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	pub := newPublisher(t, Config{Resolver: u})
	srv := httptest.NewServer(pub.Handler(u.Handler()))
	defer srv.Close()
	if r := get(t, srv.Client(), "GET", srv.URL+"/a.bin"); !bytes.Equal(r.body, data) {
		t.Fatalf("proxied %d bytes, status %d", len(r.body), r.StatusCode)
	}
	_, m := waitTorrent(t, srv.Client(), srv.URL+"/a.bin")
	if m.Info.TotalLength != int64(len(data)) || m.Info.Name != "a.bin" {
		t.Errorf("torrent %q of %s bytes", m.Info.Name, strconv.FormatInt(m.Info.TotalLength, 10))
	}
}
