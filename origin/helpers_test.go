package origin

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testAnnounce = "http://127.0.0.1:1/announce"

// content returns n deterministic pseudo-random bytes.
func content(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeFile writes data to dir/name with a fixed modification time, so
// that every test controls when a file "changes".
func writeFile(t testing.TB, dir, name string, data []byte, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

var baseTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// counter wraps metainfo.Build and counts the files it hashes.
type counter struct {
	n    atomic.Int32
	gate chan struct{} // when not nil, each build waits for a receive
}

func (c *counter) build(ctx context.Context, path string, opts metainfo.BuildOptions) (*metainfo.MetaInfo, error) {
	c.n.Add(1)
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return metainfo.Build(ctx, path, opts)
}

// recSeeder records the Seeder calls in order.
type recSeeder struct {
	mu    sync.Mutex
	calls []string // "seed <ih>" or "unseed <ih>"
	files map[metainfo.Hash][]Resource
}

func (s *recSeeder) Seed(m *metainfo.MetaInfo, files []Resource) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "seed "+m.InfoHash.String())
	if s.files == nil {
		s.files = make(map[metainfo.Hash][]Resource)
	}
	s.files[m.InfoHash] = files
	return nil
}

func (s *recSeeder) Unseed(ih metainfo.Hash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "unseed "+ih.String())
}

// filesOf returns the files ih was last seeded from.
func (s *recSeeder) filesOf(ih metainfo.Hash) []Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.files[ih]
}

// allFiles returns every file ever seeded.
func (s *recSeeder) allFiles() []Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Resource
	for _, f := range s.files {
		out = append(out, f...)
	}
	return out
}

func (s *recSeeder) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// waitCalls polls until the seeder's log equals want.
func (s *recSeeder) waitCalls(t testing.TB, want ...string) {
	t.Helper()
	eventually(t, 5*time.Second, func() bool { return slices.Equal(s.log(), want) }, func() string {
		return "seeder calls " + strings.Join(s.log(), ", ") + "; want " + strings.Join(want, ", ")
	})
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newPublisher(t testing.TB, cfg Config) *Publisher {
	t.Helper()
	p, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// serve starts a loopback server for p over http.FileServer(dir).
func serve(t testing.TB, p *Publisher, dir string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(p.Handler(FileServer(http.Dir(dir))))
	t.Cleanup(srv.Close)
	return srv
}

type response struct {
	*http.Response
	body []byte
}

func (r response) torrent() bool {
	return r.StatusCode == http.StatusOK && r.Header.Get("Content-Type") == negotiate.MediaType
}

func get(t testing.TB, c *http.Client, method, url string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp, body}
}

// waitTorrent asks for url's torrent until it is served, and returns it.
func waitTorrent(t testing.TB, c *http.Client, url string) (response, *metainfo.MetaInfo) {
	t.Helper()
	var r response
	eventually(t, 10*time.Second, func() bool {
		r = get(t, c, "GET", url, "Accept", negotiate.MediaType)
		return r.torrent()
	}, func() string { return "no torrent for " + url })
	m, err := metainfo.Parse(r.body)
	if err != nil {
		t.Fatal(err)
	}
	return r, m
}

// varyAccept counts the Accept tokens in h's Vary.
func varyAccept(h http.Header) int {
	n := 0
	for _, line := range h["Vary"] {
		for f := range strings.SplitSeq(line, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "Accept") {
				n++
			}
		}
	}
	return n
}

func buildHash(t testing.TB, file, name string) metainfo.Hash {
	t.Helper()
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	pl := max(metainfo.AutoPieceLength(st.Size()), minPieceLength)
	m, err := metainfo.Build(context.Background(), file, metainfo.BuildOptions{Name: name, PieceLength: pl})
	if err != nil {
		t.Fatal(err)
	}
	return m.InfoHash
}

// resourceOf is the Resource of the file at path, as a Resolver gives it.
func resourceOf(t testing.TB, key, path string) Resource {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileResource(key, path, st)
}

// with is res changed by f.
func with(res Resource, f func(*Resource)) Resource {
	f(&res)
	return res
}
