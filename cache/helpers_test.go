package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// fixture is a torrent of random content.
type fixture struct {
	content []byte // the torrent's byte stream, padding included
	meta    *metainfo.MetaInfo
}

func newFixture(t testing.TB, size int, pieceLen int64) *fixture {
	t.Helper()
	content := make([]byte, size)
	rand.Read(content)
	path := filepath.Join(t.TempDir(), "content.bin")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Build(context.Background(), path, metainfo.BuildOptions{PieceLength: pieceLen})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{content: content, meta: m}
}

// fileSpec is one file of a hand-built torrent.
type fileSpec struct {
	path    []string
	length  int
	padding bool
}

// buildFixture builds a multi-file torrent by hand, so that it can hold
// BEP 47 padding files (zeros in the byte stream).
func buildFixture(t testing.TB, name string, pieceLen int64, files []fileSpec) *fixture {
	t.Helper()
	var content []byte
	var list []map[string]any
	for _, f := range files {
		part := make([]byte, f.length)
		fd := map[string]any{"length": f.length, "path": f.path}
		if f.padding {
			fd["attr"] = "p"
		} else {
			rand.Read(part)
		}
		content = append(content, part...)
		list = append(list, fd)
	}
	var pieces []byte
	for off := 0; off < len(content); off += int(pieceLen) {
		sum := sha1.Sum(content[off:min(len(content), off+int(pieceLen))])
		pieces = append(pieces, sum[:]...)
	}
	info, err := bencode.Marshal(map[string]any{
		"name": name, "piece length": pieceLen, "pieces": pieces, "files": list,
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bencode.Marshal(map[string]any{"info": bencode.RawMessage(info)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metainfo.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{content: content, meta: m}
}

// paddedFixture has two BEP 47 padding files, 1,436 KiB of its 3 MiB.
func paddedFixture(t testing.TB) *fixture {
	return buildFixture(t, "padded", 1<<20, []fileSpec{
		{path: []string{"a"}, length: 100 << 10},
		{path: []string{".pad", "943104"}, length: 924 << 10, padding: true},
		{path: []string{"b"}, length: 3 << 19},
		{path: []string{".pad", "524288"}, length: 512 << 10, padding: true},
		{path: []string{"c"}, length: 10 << 10},
	})
}

func (f *fixture) piece(i int) []byte {
	pl := f.meta.Info.PieceLength
	return f.content[int64(i)*pl : int64(i)*pl+f.meta.Info.PieceLen(i)]
}

// put writes and verifies the given pieces, or all of them.
func (f *fixture) put(t testing.TB, h *Torrent, pieces ...int) {
	t.Helper()
	if pieces == nil {
		for i := range f.meta.Info.NumPieces() {
			pieces = append(pieces, i)
		}
	}
	for _, i := range pieces {
		if err := h.WritePiece(i, f.piece(i)); err != nil {
			t.Fatalf("writing piece %d: %v", i, err)
		}
		if err := h.MarkVerified(i); err != nil {
			t.Fatalf("marking piece %d: %v", i, err)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TBPROXY_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openStore opens a store that the test closes at its end.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func handle(t testing.TB, s *Store, m *metainfo.MetaInfo, opts TorrentOptions) *Torrent {
	t.Helper()
	h, err := s.Torrent(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func entryDir(s *Store, m *metainfo.MetaInfo) string {
	return filepath.Join(s.cfg.Dir, m.InfoHash.HexString())
}

// readAll reads the whole torrent back through a handle.
func readAll(t testing.TB, h *Torrent) []byte {
	t.Helper()
	buf := make([]byte, h.e.info.TotalLength)
	if _, err := h.ReadAt(buf, 0); err != nil {
		t.Fatalf("reading back: %v", err)
	}
	return buf
}

func verifiedSet(h *Torrent) []bool {
	v := make([]bool, h.e.info.NumPieces())
	for i := range v {
		v[i] = h.Verified(i)
	}
	return v
}

// recordedPieces reads an entry's completion record straight from disk.
func recordedPieces(t testing.TB, dir string, m *metainfo.MetaInfo) (bitset, bool) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, recordName))
	if errors.Is(err, fs.ErrNotExist) {
		return bitset{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	rec, err := decodeRecord(raw, m.InfoHash, &m.Info)
	if err != nil {
		return bitset{}, false
	}
	return rec.verified, true
}

// diskUsage sums the allocated bytes of every file under dir.
func diskUsage(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += allocated(fi)
			}
		}
		return nil
	})
	return n
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Swarm helpers: a real engine over loopback.

func newClient(t testing.TB, cfg swarm.Config) *swarm.Client {
	t.Helper()
	if cfg.ListenAddr == "" && cfg.Listener == nil {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	c, err := swarm.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c *swarm.Client) netip.AddrPort {
	return netip.MustParseAddrPort(c.Addr().String())
}

// seed starts a client that holds all of f in memory.
func (f *fixture) seed(t testing.TB, cfg swarm.Config) (*swarm.Client, *swarm.Torrent) {
	t.Helper()
	c := newClient(t, cfg)
	st := swarm.NewMemoryStorage(&f.meta.Info)
	if err := st.Fill(bytes.NewReader(f.content)); err != nil {
		t.Fatal(err)
	}
	tor, err := c.AddTorrent(f.meta, st, swarm.TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	return c, tor
}

// leech adds f to a new client with st as its storage and points it at
// the seed.
func (f *fixture) leech(t testing.TB, st swarm.Storage, seed *swarm.Client, opts swarm.TorrentOptions) *swarm.Torrent {
	t.Helper()
	c := newClient(t, swarm.Config{})
	opts.NoTrackers = true
	tor, err := c.AddTorrent(f.meta, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	tor.AddPeers(addrOf(seed))
	return tor
}

func waitComplete(t testing.TB, tor *swarm.Torrent, d time.Duration) {
	t.Helper()
	select {
	case <-tor.Complete():
	case <-time.After(d):
		s := tor.Stats()
		t.Fatalf("not complete after %v: %d/%d pieces, %d storage errors", d, s.PiecesVerified, s.Pieces, s.StorageErrors)
	}
}

// readStream reads the whole torrent through a swarm.Reader.
func readStream(t testing.TB, tor *swarm.Torrent) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := tor.NewReader(ctx)
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading through swarm: %v", err)
	}
	return got
}

// throttle slows a seed's uploads so that a download can be caught
// half-way.
type throttle struct{ bps atomic.Int64 } // 0: unthrottled

type slowListener struct {
	net.Listener
	th *throttle
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{c, l.th}, nil
}

type slowConn struct {
	net.Conn
	th *throttle
}

func (c slowConn) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(len(p)-n, 16<<10)
		if r := c.th.bps.Load(); r > 0 {
			time.Sleep(time.Duration(int64(k) * int64(time.Second) / r))
		}
		w, err := c.Conn.Write(p[n : n+k])
		n += w
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
