package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// TestURLFileSurvivesRestart: the URLs a proxy served from torrents are
// written to Config.URLFile when it closes, and a proxy started on the
// same file answers them from the cache while their origin cannot be
// reached, a GET and a HEAD alike, as its first run did (the engine
// keeps the torrent, as tbproxy's reseeding does after a restart).
func TestURLFileSurvivesRestart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "urls.json")
	w := newWorld(t, 512<<10, func(c *Config) { c.URLFile = file })
	w.fetchWhole(t)
	w.proxy.Close()
	w.origin.Close()

	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := parseURLFile(data)
	if err != nil || len(saved) != 1 || saved[0].url != w.origin.URL+"/episode.mp3" || saved[0].ih != w.meta.InfoHash {
		t.Fatalf("saved %+v, %v; want the one URL served, with its torrent", saved, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file's mode: %v, %v", fi.Mode(), err)
	}

	checkOffline(t, Config{Engine: w.proxy.cfg.Engine, URLFile: file}, w)
}

// TestOfflineFromStore: after a restart the engine may not run a torrent
// the cache holds whole (its seeding ended, or reseeding has not reached
// it yet); the answer from the cache takes it from a Store that can tell
// (WholeStore).
func TestOfflineFromStore(t *testing.T) {
	w := newWorld(t, 512<<10)
	w.origin.Close()
	file := filepath.Join(t.TempDir(), "urls.json")
	data, _ := json.Marshal(urlFile{Version: urlFileVersion, URLs: []urlEntry{
		{URL: w.origin.URL + "/episode.mp3", InfoHash: w.meta.InfoHash.HexString(), At: time.Now()},
	}})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	engine, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	checkOffline(t, Config{Engine: engine, URLFile: file, Store: wholeStore{w.meta, w.content}}, w)
}

// wholeStore holds one torrent whole, in memory.
type wholeStore struct {
	m       *metainfo.MetaInfo
	content []byte
}

func (s wholeStore) Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error) {
	st := swarm.NewMemoryStorage(&m.Info)
	return st, st.Fill(bytes.NewReader(s.content))
}

func (wholeStore) Pin(metainfo.Hash) func() { return func() {} }

func (s wholeStore) Whole(ih metainfo.Hash) (*metainfo.MetaInfo, bool) {
	return s.m, ih == s.m.InfoHash
}

// checkOffline serves a proxy of cfg, and checks that it answers w's
// episode, whose origin is closed, from the cache, a GET and a HEAD
// alike, and a page it never transformed with a 502.
func checkOffline(t *testing.T, cfg Config, w *world) {
	t.Helper()
	cfg.AllowPrivateUpstream = true
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	proxyURL, _ := url.Parse("http://" + serveProxy(t, p))
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	resp, err := client.Get(w.origin.URL + "/episode.mp3")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, w.content) {
		t.Fatalf("with the origin gone: status %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, err = client.Head(w.origin.URL + "/episode.mp3")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(w.content)) ||
		!strings.HasPrefix(resp.Header.Get("ETag"), `"bt-`) {
		t.Fatalf("HEAD with the origin gone: status %d, length %d, ETag %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("ETag"))
	}
	resp, err = client.Get(w.origin.URL + "/page.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a page never transformed: status %d, want 502", resp.StatusCode)
	}
}

// TestURLFileHostile: a file of URLs that is not whole, not ours, too big,
// or holds entries that are not valid costs no start-up: what cannot be
// used is left out.
func TestURLFileHostile(t *testing.T) {
	ih := metainfo.Hash{1, 2, 3}
	at := time.Unix(1_700_000_000, 0).UTC()
	entry := func(u, h string, at time.Time) urlEntry { return urlEntry{URL: u, InfoHash: h, At: at} }
	file := func(version int, es ...urlEntry) string {
		b, _ := json.Marshal(urlFile{Version: version, URLs: es})
		return string(b)
	}
	good := entry("http://example.com/a.mp3", ih.HexString(), at)
	for _, tc := range []struct {
		name, data string
		want       int // entries used; -1 for an error
	}{
		{"valid", file(1, good), 1},
		{"empty", file(1), 0},
		{"another version", file(2, good), -1},
		{"not JSON", "{\"version\":1,\"urls\":[", -1},
		{"not an object", "[]", -1},
		{"bad entries left out", file(1, good,
			entry("ftp://example.com/a", ih.HexString(), at),
			entry("/relative", ih.HexString(), at),
			entry("http://example.com/"+strings.Repeat("x", maxSavedURL), ih.HexString(), at),
			entry("http://example.com/b", "nothex", at),
			entry("http://example.com/c", ih.HexString(), time.Time{}),
		), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseURLFile([]byte(tc.data))
			if tc.want < 0 {
				if err == nil {
					t.Fatalf("no error, %d entries", len(got))
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("%d entries, %v; want %d", len(got), err, tc.want)
			}
		})
	}

	// More than maxConfirmed: the newest are kept, oldest first.
	var many []urlEntry
	for i := range maxConfirmed + 10 {
		many = append(many, entry(fmt.Sprintf("http://example.com/%d", i), ih.HexString(), at))
	}
	got, err := parseURLFile([]byte(file(1, many...)))
	if err != nil || len(got) != maxConfirmed || got[0].url != "http://example.com/10" {
		t.Fatalf("%d entries from %q, %v", len(got), got[0].url, err)
	}

	// A file over maxURLFile is not read, and the proxy starts anyway.
	dir := t.TempDir()
	big := filepath.Join(dir, "urls.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), maxURLFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, 64<<10)
	p, err := New(Config{Engine: w.proxy.cfg.Engine, URLFile: big})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n, err := p.loadURLs(big); err == nil {
		t.Fatalf("a file of %d bytes was read: %d URLs", maxURLFile+1, n)
	}
	if n, err := p.loadURLs(filepath.Join(dir, "missing.json")); n != 0 || err != nil {
		t.Fatalf("a missing file: %d, %v", n, err)
	}
}

func FuzzParseURLFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"urls":[{"url":"http://example.com/a.mp3","infohash":"0102030000000000000000000000000000000000","at":"2023-11-14T22:13:20Z"}]}`))
	f.Add([]byte(`{"version":1,"urls":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseURLFile(data)
		if err != nil {
			return
		}
		if len(got) > maxConfirmed {
			t.Fatalf("%d entries", len(got))
		}
		for _, e := range got {
			if !savableURL(e.url) || e.at.IsZero() {
				t.Fatalf("entry %+v used", e)
			}
		}
	})
}

// countingStore counts its opens.
type countingStore struct {
	memoryStore
	opens *atomic.Int32
}

func (s countingStore) Open(m *metainfo.MetaInfo, transient bool) (swarm.Storage, error) {
	s.opens.Add(1)
	return s.memoryStore.Open(m, transient)
}

// TestReseedOpensOnce: the reseeding of a cached torrent and a request
// for it open its storage once between them: they take the same path
// (Proxy.torrent), so that neither closes the other's handle.
func TestReseedOpensOnce(t *testing.T) {
	var opens atomic.Int32
	w := newWorld(t, 256<<10, func(c *Config) { c.Store = countingStore{opens: &opens} })
	for range 2 {
		if err := w.proxy.Reseed(w.meta); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := w.proxy.cfg.Engine.Torrent(w.meta.InfoHash); !ok {
		t.Fatal("the reseeded torrent does not run")
	}
	if err := w.fetchEquals("/episode.mp3"); err != nil {
		t.Fatal(err)
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("the storage was opened %d times", n)
	}
}
