package origin

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

// fixture is a published directory:
//
//	big.bin        2 MiB
//	small.txt      10 KiB
//	skip.log       2 MiB, excluded by a glob
//	sub/big.iso    2 MiB
//	link.bin       symlink to outside/secret.bin, 2 MiB outside the dir
//	inlink.bin     symlink to big.bin
type fixture struct {
	dir, outside string
	big          []byte
	seeder       *recSeeder
	builds       *counter
	pub          *Publisher
	srv          *httptest.Server
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{dir: filepath.Join(root, "pub"), outside: filepath.Join(root, "outside"), big: content(2<<20, 1)}
	writeFile(t, f.dir, "big.bin", f.big, baseTime)
	writeFile(t, f.dir, "small.txt", content(10<<10, 2), baseTime)
	writeFile(t, f.dir, "skip.log", content(2<<20, 3), baseTime)
	writeFile(t, f.dir, "sub/big.iso", content(2<<20, 4), baseTime)
	secret := writeFile(t, f.outside, "secret.bin", content(2<<20, 5), baseTime)
	if err := os.Symlink(secret, filepath.Join(f.dir, "link.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("big.bin", filepath.Join(f.dir, "inlink.bin")); err != nil {
		t.Fatal(err)
	}
	f.seeder, f.builds = &recSeeder{}, &counter{}
	cfg.Dir = f.dir
	cfg.Announce = testAnnounce
	cfg.Seeder = f.seeder
	cfg.build = f.builds.build
	if cfg.Exclude == nil {
		cfg.Exclude = []string{"*.log"}
	}
	f.pub = newPublisher(t, cfg)
	f.srv = serve(t, f.pub, f.dir)
	return f
}

func TestNegotiation(t *testing.T) {
	const torrentType = negotiate.MediaType
	f := newFixture(t, Config{Wait: 10 * time.Second, DataDir: t.TempDir()})
	tests := []struct {
		name    string
		method  string
		path    string
		hdr     []string
		torrent bool
		vary    bool // Vary: Accept expected
		status  int
	}{
		{"torrent accepted", "GET", "/big.bin", []string{"Accept", torrentType}, true, true, 200},
		{"torrent in a list", "GET", "/big.bin", []string{"Accept", "text/html, application/x-bittorrent;q=0.5, */*;q=0.1"}, true, true, 200},
		{"file in a subdirectory", "GET", "/sub/big.iso", []string{"Accept", torrentType}, true, true, 200},
		{"symlink inside the dir", "GET", "/inlink.bin", []string{"Accept", torrentType}, true, true, 200},
		{"head gets the headers", "HEAD", "/big.bin", []string{"Accept", torrentType}, true, true, 200},
		{"q=0 refuses", "GET", "/big.bin", []string{"Accept", torrentType + ";q=0"}, false, true, 200},
		{"wildcard is not enough", "GET", "/big.bin", []string{"Accept", "*/*"}, false, true, 200},
		{"no accept", "GET", "/big.bin", nil, false, true, 200},
		{"post", "POST", "/big.bin", []string{"Accept", torrentType}, false, false, 200},
		{"authorization", "GET", "/big.bin", []string{"Accept", torrentType, "Authorization", "Bearer x"}, false, true, 200},
		{"cookie", "GET", "/big.bin", []string{"Accept", torrentType, "Cookie", "a=b"}, false, true, 200},
		{"small file", "GET", "/small.txt", []string{"Accept", torrentType}, false, false, 200},
		{"excluded glob", "GET", "/skip.log", []string{"Accept", torrentType}, false, false, 200},
		{"directory listing", "GET", "/sub/", []string{"Accept", torrentType}, false, false, 200},
		{"root listing", "GET", "/", []string{"Accept", torrentType}, false, false, 200},
		{"missing file", "GET", "/nope.bin", []string{"Accept", torrentType}, false, false, 404},
		{"symlink out of the dir", "GET", "/link.bin", []string{"Accept", torrentType}, false, false, 200},
	}
	c := f.srv.Client()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, c, tt.method, f.srv.URL+tt.path, tt.hdr...)
			if r.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", r.StatusCode, tt.status)
			}
			if got := r.Header.Get("Content-Type") == torrentType; got != tt.torrent {
				t.Fatalf("torrent %v, want %v (Content-Type %q)", got, tt.torrent, r.Header.Get("Content-Type"))
			}
			if got := varyAccept(r.Header); got != map[bool]int{true: 1}[tt.vary] {
				t.Errorf("Vary %q: %d Accept, want vary %v", r.Header["Vary"], got, tt.vary)
			}
			if tt.torrent && tt.method == "HEAD" && len(r.body) != 0 {
				t.Errorf("HEAD has a body of %d bytes", len(r.body))
			}
			if tt.torrent && tt.method == "HEAD" && r.ContentLength <= 0 {
				t.Errorf("HEAD has Content-Length %d", r.ContentLength)
			}
		})
	}
	// big.bin, sub/big.iso and inlink.bin; never the symlink out of the dir.
	if n := f.builds.n.Load(); n != 3 {
		t.Errorf("%d files hashed, want 3", n)
	}
	for _, res := range f.seeder.allFiles() {
		if strings.HasPrefix(res.Path, f.outside) {
			t.Errorf("seeding from outside the dir: %s", res.Path)
		}
	}
}

func TestGlobs(t *testing.T) {
	tests := []struct {
		name             string
		include, exclude []string
		path             string
		want             bool
	}{
		{"no globs", nil, []string{}, "/big.bin", true},
		{"base name include", []string{"*.iso"}, nil, "/sub/big.iso", true},
		{"base name include misses", []string{"*.iso"}, nil, "/big.bin", false},
		{"path include", []string{"/sub/*"}, nil, "/sub/big.iso", true},
		{"path include misses", []string{"/sub/*"}, nil, "/big.bin", false},
		{"exclude wins", []string{"*.bin"}, []string{"big.*"}, "/big.bin", false},
		{"path exclude", nil, []string{"/sub/*"}, "/sub/big.iso", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPublisher(t, Config{Dir: t.TempDir(), Include: tt.include, Exclude: tt.exclude})
			if got := p.included(tt.path); got != tt.want {
				t.Errorf("included(%q) = %v, want %v", tt.path, got, tt.want)
			}
		})
	}
}

func TestPathTraversalNeverHashed(t *testing.T) {
	f := newFixture(t, Config{Wait: 10 * time.Second})
	h := f.pub.Handler(http.FileServer(http.Dir(f.dir)))
	for _, target := range []string{"/sub/../big.bin", "/sub/%2e%2e/big.bin", "/../outside/secret.bin"} {
		t.Run(target, func(t *testing.T) {
			req := httptest.NewRequest("GET", "http://example.test/", nil)
			req.URL.Path = strings.ReplaceAll(target, "%2e", ".")
			req.Header.Set("Accept", negotiate.MediaType)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Header().Get("Content-Type") == negotiate.MediaType {
				t.Fatalf("%s: answered with a torrent", target)
			}
		})
	}
	if n := f.builds.n.Load(); n != 0 {
		t.Errorf("%d files hashed, want none", n)
	}
	if calls := f.seeder.log(); len(calls) != 0 {
		t.Errorf("seeder calls %q", calls)
	}
	d, err := NewDirResolver(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	outside := Resource{Key: "/link.bin", Path: filepath.Join(f.outside, "secret.bin"), Size: 2 << 20, ModTime: baseTime}
	if d.Check(outside) {
		t.Error("Check accepts a file outside the dir")
	}
}

func TestFirstRequestFallsThrough(t *testing.T) {
	f := newFixture(t, Config{})
	f.builds.gate = make(chan struct{})
	c := f.srv.Client()
	url := f.srv.URL + "/big.bin"

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			r := get(t, c, "GET", url, "Accept", negotiate.MediaType)
			if el := time.Since(start); el > time.Second {
				t.Errorf("waited %v for a hash in progress", el)
			}
			if r.torrent() || !bytes.Equal(r.body, f.big) {
				t.Errorf("while hashing: got a torrent or wrong bytes (%d bytes)", len(r.body))
			}
			if varyAccept(r.Header) != 1 {
				t.Errorf("plain answer lacks Vary: Accept: %q", r.Header["Vary"])
			}
		})
	}
	wg.Wait()
	if n := f.builds.n.Load(); n != 1 {
		t.Fatalf("%d builds started, want 1", n)
	}
	close(f.builds.gate)
	_, m := waitTorrent(t, c, url)
	if m.InfoHash != buildHash(t, filepath.Join(f.dir, "big.bin"), "big.bin") {
		t.Error("wrong info-hash")
	}
	if n := f.builds.n.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
}

func TestMetainfoResponse(t *testing.T) {
	f := newFixture(t, Config{DataDir: t.TempDir()})
	c := f.srv.Client()
	url := f.srv.URL + "/big.bin"
	r, m := waitTorrent(t, c, url)

	if m.Announce != testAnnounce {
		t.Errorf("announce %q", m.Announce)
	}
	if !slices.Equal(m.URLList, []string{url}) {
		t.Errorf("url-list %q, want [%q]", m.URLList, url)
	}
	if want := buildHash(t, filepath.Join(f.dir, "big.bin"), "big.bin"); m.InfoHash != want {
		t.Errorf("info-hash %s, want %s", m.InfoHash, want)
	}
	if m.Info.Name != "big.bin" || m.Info.MultiFile || m.Info.TotalLength != int64(len(f.big)) {
		t.Errorf("info %q multi %v length %d", m.Info.Name, m.Info.MultiFile, m.Info.TotalLength)
	}
	if m.Info.PieceLength != max(metainfo.AutoPieceLength(int64(len(f.big))), minPieceLength) {
		t.Errorf("piece length %d", m.Info.PieceLength)
	}
	if m.CreatedBy != CreatedBy || !m.CreationDate.Equal(baseTime) {
		t.Errorf("created by %q on %v", m.CreatedBy, m.CreationDate)
	}
	etag := r.Header.Get("Etag")
	if !strings.HasPrefix(etag, `"mi-`+m.InfoHash.String()+"-") || !strings.HasSuffix(etag, `"`) {
		t.Errorf("ETag %q", etag)
	}
	if varyAccept(r.Header) != 1 || r.Header.Get("Cache-Control") != "no-cache" || r.ContentLength != int64(len(r.body)) {
		t.Errorf("headers %v", r.Header)
	}
	if d := negotiate.Decide(r.Response, true, r.body); !d.Transform {
		t.Errorf("the proxy would not transform this answer: %s", d.Reason)
	}

	tests := []struct {
		name   string
		inm    string
		status int
	}{
		{"same etag", etag, http.StatusNotModified},
		{"weak form", "W/" + etag, http.StatusNotModified},
		{"star", "*", http.StatusNotModified},
		{"other etag", `"mi-other"`, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r2 := get(t, c, "GET", url, "Accept", negotiate.MediaType, "If-None-Match", tt.inm)
			if r2.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", r2.StatusCode, tt.status)
			}
			if r2.Header.Get("Etag") != etag || varyAccept(r2.Header) != 1 {
				t.Errorf("headers %v", r2.Header)
			}
			if tt.status == http.StatusNotModified && len(r2.body) != 0 {
				t.Error("304 with a body")
			}
		})
	}

	// Another Host gets its own url-list, and so another ETag.
	r3 := get(t, c, "GET", url, "Accept", negotiate.MediaType, "Host", "mirror.example")
	m3, err := metainfo.Parse(r3.body)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m3.URLList, []string{"http://mirror.example/big.bin"}) || r3.Header.Get("Etag") == etag || m3.InfoHash != m.InfoHash {
		t.Errorf("url-list %q etag %q", m3.URLList, r3.Header.Get("Etag"))
	}
}

// TestPlainFileSaid: with PlainIsFile, the metainfo answer says what a
// plain request gets (the length and Last-Modified of the file server's
// answer), which matches the torrent's file; without it, nothing is said.
func TestPlainFileSaid(t *testing.T) {
	for _, says := range []bool{true, false} {
		t.Run(fmt.Sprint("PlainIsFile=", says), func(t *testing.T) {
			f := newFixture(t, Config{PlainIsFile: says})
			// A name without an extension: the file server sniffs its type.
			writeFile(t, f.dir, "track", append([]byte("ID3\x03\x00"), content(2<<20, 9)...), baseTime)
			c := f.srv.Client()
			for _, name := range []string{"/big.bin", "/inlink.bin", "/sub/big.iso", "/track"} {
				r, m := waitTorrent(t, c, f.srv.URL+name)
				pf, err := negotiate.ParsePlainFile(r.Header)
				if !says {
					if !errors.Is(err, negotiate.ErrNoPlainFile) {
						t.Fatalf("%s: said %+v, %v; want nothing said", name, pf, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				plain := get(t, c, "GET", f.srv.URL+name)
				lm, err := http.ParseTime(plain.Header.Get("Last-Modified"))
				if err != nil || pf.Size != plain.ContentLength || !pf.LastModified.Equal(lm) || pf.ContentType != plain.Header.Get("Content-Type") {
					t.Errorf("%s: said %+v; the plain answer has length %d, Last-Modified %q, Content-Type %q",
						name, pf, plain.ContentLength, plain.Header.Get("Last-Modified"), plain.Header.Get("Content-Type"))
				}
				if name == "/track" && pf.ContentType != "audio/mpeg" {
					t.Errorf("%s: said type %q, want the sniffed audio/mpeg", name, pf.ContentType)
				}
				if pf.Size != m.Info.TotalLength || !pf.LastModified.Equal(negotiate.ModTime(m)) {
					t.Errorf("%s: said %+v; the torrent has %d bytes, made %v", name, pf, m.Info.TotalLength, negotiate.ModTime(m))
				}
			}
		})
	}
}

func TestPlainKeepsFileServerBehaviour(t *testing.T) {
	f := newFixture(t, Config{})
	c := f.srv.Client()
	url := f.srv.URL + "/big.bin"
	waitTorrent(t, c, url) // negotiation must not disturb what follows

	r := get(t, c, "GET", url, "Range", "bytes=100-199")
	if r.StatusCode != http.StatusPartialContent || !bytes.Equal(r.body, f.big[100:200]) {
		t.Fatalf("range: status %d, %d bytes", r.StatusCode, len(r.body))
	}
	if r.Header.Get("Content-Range") != "bytes 100-199/2097152" || varyAccept(r.Header) != 1 {
		t.Errorf("range headers %v", r.Header)
	}
	// A torrent-accepting Range request for a ready file gets the whole
	// metainfo, never a slice of it.
	if r := get(t, c, "GET", url, "Range", "bytes=0-9", "Accept", negotiate.MediaType); !r.torrent() {
		t.Errorf("range with the torrent type: status %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}

	r = get(t, c, "GET", url)
	lm := r.Header.Get("Last-Modified")
	if r.StatusCode != 200 || lm != baseTime.Format(http.TimeFormat) || r.Header.Get("Accept-Ranges") != "bytes" || !bytes.Equal(r.body, f.big) {
		t.Errorf("plain: status %d, headers %v", r.StatusCode, r.Header)
	}
	if r := get(t, c, "GET", url, "If-Modified-Since", lm); r.StatusCode != http.StatusNotModified || varyAccept(r.Header) != 1 {
		t.Errorf("conditional: status %d, Vary %q", r.StatusCode, r.Header["Vary"])
	}
	if r := get(t, c, "GET", f.srv.URL+"/small.txt"); r.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("small.txt Content-Type %q", r.Header.Get("Content-Type"))
	}
	if r := get(t, c, "GET", f.srv.URL+"/"); r.StatusCode != 200 || !bytes.Contains(r.body, []byte(`<a href="big.bin">`)) {
		t.Errorf("listing: status %d: %s", r.StatusCode, r.body)
	}

	// The wrapped handler's own validators and type survive (HARDENING 91).
	h := f.pub.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"orig"`)
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeFile(w, r, filepath.Join(f.dir, "big.bin"))
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/big.bin", nil)
	req.Header.Set("Accept", negotiate.MediaType)
	req.Header.Set("Authorization", "Basic eDp5")
	h.ServeHTTP(rec, req)
	if rec.Header().Get("Etag") != `"orig"` || rec.Header().Get("Content-Type") != "video/mp4" || varyAccept(rec.Header()) != 1 {
		t.Errorf("wrapped handler's headers changed: %v", rec.Header())
	}
}

func TestPersistence(t *testing.T) {
	root := t.TempDir()
	dir, data := filepath.Join(root, "pub"), filepath.Join(root, "data")
	file := writeFile(t, dir, "big.bin", content(3<<20, 7), baseTime)

	p1 := newPublisher(t, Config{Dir: dir, DataDir: data, Announce: testAnnounce})
	srv1 := serve(t, p1, dir)
	_, m1 := waitTorrent(t, srv1.Client(), srv1.URL+"/big.bin")
	srv1.Close()
	p1.Close()
	des, _ := os.ReadDir(data)
	if len(des) != 1 || !isRecordName(des[0].Name()) || strings.Contains(des[0].Name(), "big") {
		t.Fatalf("data dir holds %v", des)
	}

	t.Run("load seeds and answers at once", func(t *testing.T) {
		seeder, builds := &recSeeder{}, &counter{}
		p := newPublisher(t, Config{Dir: dir, DataDir: data, Announce: testAnnounce, Seeder: seeder, build: builds.build, Wait: -1})
		if n, err := p.Load(); n != 1 || err != nil {
			t.Fatalf("Load = %d, %v", n, err)
		}
		seeder.waitCalls(t, "seed "+m1.InfoHash.String())
		if files := seeder.filesOf(m1.InfoHash); len(files) != 1 || files[0].Path != file {
			t.Errorf("seeding from %v", files)
		}
		srv := serve(t, p, dir)
		r := get(t, srv.Client(), "GET", srv.URL+"/big.bin", "Accept", negotiate.MediaType)
		if !r.torrent() {
			t.Fatal("a loaded torrent was not served at once")
		}
		if builds.n.Load() != 0 {
			t.Error("hashed again")
		}
		if got := p.Torrents(); len(got) != 1 || got[0].InfoHash != m1.InfoHash || got[0].Path != file {
			t.Errorf("Torrents() = %+v", got)
		}
	})

	t.Run("a request finds the record without load", func(t *testing.T) {
		builds := &counter{}
		p := newPublisher(t, Config{Dir: dir, DataDir: data, Announce: testAnnounce, build: builds.build})
		srv := serve(t, p, dir)
		_, m := waitTorrent(t, srv.Client(), srv.URL+"/big.bin")
		if m.InfoHash != m1.InfoHash || builds.n.Load() != 0 {
			t.Errorf("info-hash %s, %d builds", m.InfoHash, builds.n.Load())
		}
	})

	t.Run("a stale record is dropped at load", func(t *testing.T) {
		writeFile(t, dir, "big.bin", content(3<<20, 8), baseTime.Add(time.Hour))
		seeder := &recSeeder{}
		p := newPublisher(t, Config{Dir: dir, DataDir: data, Seeder: seeder})
		if n, err := p.Load(); n != 0 || err != nil {
			t.Fatalf("Load = %d, %v", n, err)
		}
		if des, _ := os.ReadDir(data); len(des) != 0 {
			t.Errorf("stale record kept: %v", des)
		}
		if len(seeder.log()) != 0 {
			t.Errorf("seeded %v", seeder.log())
		}
	})

	t.Run("a corrupt record is dropped", func(t *testing.T) {
		name := filepath.Join(data, recordName(Resource{Key: "/x"}))
		if err := os.WriteFile(name, []byte("{not json"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := newPublisher(t, Config{Dir: dir, DataDir: data})
		if n, err := p.Load(); n != 0 || err != nil {
			t.Fatalf("Load = %d, %v", n, err)
		}
		if _, err := os.Stat(name); !os.IsNotExist(err) {
			t.Error("corrupt record kept")
		}
	})
}

func TestChangedFileGetsNewTorrent(t *testing.T) {
	data := t.TempDir()
	f := newFixture(t, Config{DataDir: data, Wait: 10 * time.Second})
	c := f.srv.Client()
	url := f.srv.URL + "/big.bin"
	_, m1 := waitTorrent(t, c, url)
	ih1 := m1.InfoHash.String()
	f.seeder.waitCalls(t, "seed "+ih1)

	t.Run("new bytes", func(t *testing.T) {
		writeFile(t, f.dir, "big.bin", content(2<<20, 99), baseTime.Add(time.Minute))
		_, m2 := waitTorrent(t, c, url)
		if m2.InfoHash == m1.InfoHash {
			t.Fatal("same info-hash for new bytes")
		}
		if m2.InfoHash != buildHash(t, filepath.Join(f.dir, "big.bin"), "big.bin") {
			t.Error("wrong info-hash for the new bytes")
		}
		f.seeder.waitCalls(t, "seed "+ih1, "unseed "+ih1, "seed "+m2.InfoHash.String())
		eventually(t, 5*time.Second, func() bool {
			des, _ := os.ReadDir(data)
			return len(des) == 1
		}, func() string { return "old record not removed" })
		if got := f.pub.Torrents(); len(got) != 1 || got[0].InfoHash != m2.InfoHash {
			t.Errorf("Torrents() = %+v", got)
		}
	})

	t.Run("new bytes, same size and time (cp -p)", func(t *testing.T) {
		before := f.seeder.log()
		_, m2 := waitTorrent(t, c, url)
		writeFile(t, f.dir, "big.bin", content(2<<20, 98), baseTime.Add(time.Minute)) // the time "new bytes" left
		_, m3 := waitTorrent(t, c, url)
		if m3.InfoHash == m2.InfoHash {
			t.Fatal("same info-hash for new bytes of the same size and time")
		}
		if m3.InfoHash != buildHash(t, filepath.Join(f.dir, "big.bin"), "big.bin") {
			t.Error("wrong info-hash for the new bytes")
		}
		// Seeding is asynchronous: wait for it, so that the next step
		// starts from a settled log.
		f.seeder.waitCalls(t, append(before, "unseed "+m2.InfoHash.String(), "seed "+m3.InfoHash.String())...)
	})

	t.Run("touched: same bytes, new time", func(t *testing.T) {
		before := f.seeder.log()
		_, m2 := waitTorrent(t, c, url)
		ih2 := m2.InfoHash.String()
		mt := baseTime.Add(2 * time.Minute)
		if err := os.Chtimes(filepath.Join(f.dir, "big.bin"), mt, mt); err != nil {
			t.Fatal(err)
		}
		_, m3 := waitTorrent(t, c, url)
		if m3.InfoHash != m2.InfoHash || !m3.CreationDate.Equal(mt) {
			t.Errorf("touch: info-hash %s, creation %v", m3.InfoHash, m3.CreationDate)
		}
		// Unseed of the old version comes before the seed of the new one,
		// though they share the info-hash.
		f.seeder.waitCalls(t, append(before, "unseed "+ih2, "seed "+ih2)...)
	})

	t.Run("vanished", func(t *testing.T) {
		if err := os.Remove(filepath.Join(f.dir, "big.bin")); err != nil {
			t.Fatal(err)
		}
		m := f.pub.Torrents()[0]
		f.pub.Invalidate(m.InfoHash)
		if len(f.pub.Torrents()) != 0 {
			t.Error("torrent of a removed file kept")
		}
		eventually(t, 5*time.Second, func() bool {
			log := f.seeder.log()
			return log[len(log)-1] == "unseed "+m.InfoHash.String()
		}, func() string { return fmt.Sprint("seeder calls ", f.seeder.log()) })
	})
}

func TestTwoURLsOneTorrent(t *testing.T) {
	root := t.TempDir()
	data := content(2<<20, 11)
	writeFile(t, root, "a/f.bin", data, baseTime)
	writeFile(t, root, "b/f.bin", data, baseTime)
	seeder := &recSeeder{}
	p := newPublisher(t, Config{Dir: root, Seeder: seeder, Wait: 10 * time.Second})
	srv := serve(t, p, root)
	_, ma := waitTorrent(t, srv.Client(), srv.URL+"/a/f.bin")
	_, mb := waitTorrent(t, srv.Client(), srv.URL+"/b/f.bin")
	if ma.InfoHash != mb.InfoHash {
		t.Fatal("same name and bytes, different info-hash")
	}
	ih := ma.InfoHash.String()
	seeder.waitCalls(t, "seed "+ih)

	// The seeded copy changes: the other one takes over the seed.
	writeFile(t, root, "a/f.bin", content(2<<20, 12), baseTime.Add(time.Minute))
	p.Invalidate(ma.InfoHash)
	seeder.waitCalls(t, "seed "+ih, "unseed "+ih, "seed "+ih)
	if files := seeder.filesOf(ma.InfoHash); files[0].Key != "/b/f.bin" {
		t.Errorf("seeding %v", files)
	}
}

func TestConfigErrors(t *testing.T) {
	file := writeFile(t, t.TempDir(), "f", []byte("x"), baseTime)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no dir", Config{}},
		{"missing dir", Config{Dir: filepath.Join(t.TempDir(), "nope")}},
		{"dir is a file", Config{Dir: file}},
		{"bad glob", Config{Dir: t.TempDir(), Include: []string{"["}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPublisher(tt.cfg)
			if err == nil {
				p.Close()
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "origin: ") {
				t.Errorf("error %q lacks the prefix", err)
			}
		})
	}
}

func TestCloseStopsHashing(t *testing.T) {
	f := newFixture(t, Config{Wait: -1})
	f.builds.gate = make(chan struct{}) // never opened: Close must cancel
	r := get(t, f.srv.Client(), "GET", f.srv.URL+"/big.bin", "Accept", negotiate.MediaType)
	if r.torrent() {
		t.Fatal("torrent without a hash")
	}
	eventually(t, 5*time.Second, func() bool { return f.builds.n.Load() == 1 }, func() string { return "no build" })
	done := make(chan struct{})
	go func() { f.pub.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a build")
	}
	if r := get(t, f.srv.Client(), "GET", f.srv.URL+"/big.bin", "Accept", negotiate.MediaType); r.torrent() || r.StatusCode != 200 {
		t.Errorf("after Close: status %d torrent %v", r.StatusCode, r.torrent())
	}
	if _, err := f.pub.Load(); err != nil {
		t.Errorf("Load without a data dir: %v", err)
	}
}

func TestDirResolver(t *testing.T) {
	root := t.TempDir()
	dir, outside := filepath.Join(root, "pub"), filepath.Join(root, "outside")
	writeFile(t, dir, "a/file.bin", []byte("inside"), baseTime)
	writeFile(t, outside, "secret.bin", []byte("secret"), baseTime)
	for link, target := range map[string]string{
		"ext":        outside,                  // a directory outside
		"alias":      "a",                      // a directory inside
		"a/up.bin":   "../a/file.bin",          // a file inside, relative
		"escape.bin": "../outside/secret.bin",  // a file outside, relative
		"loop":       "loop",                   // a link to itself
		"dangling":   filepath.Join(root, "x"), // nothing
	} {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(dir, "a", "file.bin")
	d, err := NewDirResolver(filepath.Join(root, ".", "pub"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want string // real path, or "" for not published
	}{
		{"/a/file.bin", real},
		{"/a//file.bin", real},
		{"/alias/file.bin", real},
		{"/a/up.bin", real},
		{"/ext/secret.bin", ""},
		{"/escape.bin", ""},
		{"/a/../../outside/secret.bin", ""},
		{"/a", ""},
		{"/a/file.bin/x", ""},
		{"/loop", ""},
		{"/dangling", ""},
		{"/missing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.URL.Path = tt.path
			res, ok := d.Resolve(req, true)
			if ok != (tt.want != "") || res.Path != tt.want {
				t.Fatalf("Resolve = %+v, %v; want %q", res, ok, tt.want)
			}
			if ok && (!d.Check(res) || res.Size != 6 || !res.ModTime.Equal(baseTime)) {
				t.Errorf("resource %+v does not check", res)
			}
		})
	}
}
