//go:build linux

package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// newEngine starts one of our swarm clients on loopback, stopped by the
// test's cleanup. TBPROXY_DEBUG=1 shows its logs.
func newEngine(t testing.TB, cfg swarm.Config) *swarm.Client {
	t.Helper()
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = hostPort(0)
	}
	if os.Getenv("TBPROXY_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := swarm.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// withWebSeeds returns m with its url-list replaced.
func withWebSeeds(t testing.TB, m *metainfo.MetaInfo, urls ...string) *metainfo.MetaInfo {
	t.Helper()
	c := *m
	c.URLList = urls
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := metainfo.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// storedBytes reads back every byte of a complete torrent's storage.
func storedBytes(t testing.TB, st *swarm.MemoryStorage, size int64) []byte {
	t.Helper()
	b := make([]byte, size)
	if _, err := st.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func waitDone(t testing.TB, tor *swarm.Torrent, d time.Duration) {
	t.Helper()
	select {
	case <-tor.Complete():
	case <-time.After(d):
		s := tor.Stats()
		t.Fatalf("not complete after %v: %d/%d pieces, %d bytes from peers, %d from web seeds", d, s.PiecesVerified, s.Pieces, s.Downloaded, s.FromWebSeeds)
	}
}

// TestWebSeedFromNginx: a torrent with no peers and a url-list pointing at
// nginx downloads completely, single-file and multi-file.
func TestWebSeedFromNginx(t *testing.T) {
	root := t.TempDir()
	single := makeContent(t, filepath.Join(root, "pub"), "episode.mp3", 24<<20+333, 11)
	album := filepath.Join(root, "album")
	makeContent(t, album, "01 intro.mp3", 3<<20+1, 12)
	makeContent(t, album, "cd 2/02 naïve.mp3", 5<<20, 13)
	makeContent(t, album, "notes.txt", 100, 14)
	ngx := startNginx(t, root)

	tests := []struct {
		name    string
		content string
		urlList string
	}{
		{"single file, url ends in slash", single, ngx.URL + "/pub/"},
		{"single file, exact url", single, ngx.URL + "/pub/episode.mp3"},
		{"multi file", album, ngx.URL + "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, m := makeTorrent(t, tt.content, 256<<10, nil)
			m = withWebSeeds(t, m, tt.urlList)
			st := swarm.NewMemoryStorage(&m.Info)
			tor, err := newEngine(t, swarm.Config{}).AddTorrent(m, st, swarm.TorrentOptions{NoTrackers: true})
			if err != nil {
				t.Fatal(err)
			}
			waitDone(t, tor, 60*time.Second)
			want := concatFiles(t, tt.content, m)
			if !bytes.Equal(storedBytes(t, st, m.Info.TotalLength), want) {
				t.Fatal("bytes differ from the files nginx served")
			}
			if s := tor.Stats(); s.FromWebSeeds != m.Info.TotalLength {
				t.Fatalf("%d bytes from web seeds, want %d", s.FromWebSeeds, m.Info.TotalLength)
			}
		})
	}
}

// concatFiles reads a torrent's files from disk in torrent order.
func concatFiles(t testing.TB, content string, m *metainfo.MetaInfo) []byte {
	t.Helper()
	if !m.Info.MultiFile {
		b, err := os.ReadFile(content)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var all []byte
	for _, f := range m.Info.Files {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(content), filepath.FromSlash(f.DisplayPath())))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestWebSeedRescuesWhenSeedDies: a reader streams from a libtorrent seed;
// the seed is killed halfway; the reader never waits much longer than the
// stall budget, and the file completes from the origin.
func TestWebSeedRescuesWhenSeedDies(t *testing.T) {
	requireTool(t, "libtorrent")
	root := t.TempDir()
	content := makeContent(t, filepath.Join(root, "pub"), "show.mp3", 32<<20, 21)
	torrentPath, m := makeTorrent(t, content, 256<<10, nil)
	ngx := startNginx(t, root)
	seed := startLibtorrent(t, LTOpts{Torrent: torrentPath, SaveDir: filepath.Dir(content), Seed: true, SeedMode: true, UploadLimit: 8 << 20})

	const budget = 2 * time.Second
	st := swarm.NewMemoryStorage(&m.Info)
	tor, err := newEngine(t, swarm.Config{}).AddTorrent(m, st, swarm.TorrentOptions{
		NoTrackers:  true,
		Lazy:        true,
		StallBudget: budget,
		Peers:       []netip.AddrPort{netip.MustParseAddrPort(seed.Addr())},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tor.AddWebSeed(swarm.WebSeed{URL: ngx.URL + "/pub/show.mp3", Origin: true}); err != nil {
		t.Fatal(err)
	}
	// Read only once the seed is connected: a seed slower than the stall
	// budget to connect (a loaded CI machine) would rightly leave the whole
	// file to the origin, and this test is about losing a working seed.
	deadline := time.Now().Add(30 * time.Second)
	for len(tor.Stats().Peers) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := tor.NewReader(ctx)
	defer r.Close()
	var got bytes.Buffer
	buf := make([]byte, 256<<10)
	var worst time.Duration
	killed := false
	last := time.Now()
	for {
		n, err := r.Read(buf)
		got.Write(buf[:n])
		if gap := time.Since(last); gap > worst && killed {
			worst = gap
		}
		last = time.Now()
		if !killed && got.Len() >= int(m.Info.TotalLength/2) {
			originBefore := ngx.BytesSent(t, "/pub/show.mp3")
			t.Logf("half read; the origin had sent %d bytes; killing the seed", originBefore)
			seed.Proc().Stop()
			killed = true
			last = time.Now()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(content)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatal("streamed bytes differ")
	}
	s := tor.Stats()
	t.Logf("longest wait after the kill %v; %d bytes from the peer, %d from the origin", worst, s.Downloaded, s.FromWebSeeds)
	if worst > budget+time.Second+time.Second/2 {
		t.Fatalf("the reader waited %v after the seed died, budget %v", worst, budget)
	}
	if s.FromWebSeeds == 0 || s.Downloaded == 0 {
		t.Fatal("expected bytes from both the peer and the origin")
	}
}

// TestWebSeedSparingWithLibtorrentSeed: when a peer keeps up, the origin
// serves less than 10% of the bytes.
func TestWebSeedSparingWithLibtorrentSeed(t *testing.T) {
	requireTool(t, "libtorrent")
	root := t.TempDir()
	content := makeContent(t, filepath.Join(root, "pub"), "big.bin", 64<<20, 31)
	torrentPath, m := makeTorrent(t, content, 256<<10, nil)
	ngx := startNginx(t, root)
	seed := startLibtorrent(t, LTOpts{Torrent: torrentPath, SaveDir: filepath.Dir(content), Seed: true, SeedMode: true})
	m = withWebSeeds(t, m, ngx.URL+"/pub/big.bin")
	st := swarm.NewMemoryStorage(&m.Info)
	tor, err := newEngine(t, swarm.Config{}).AddTorrent(m, st, swarm.TorrentOptions{
		NoTrackers: true,
		Peers:      []netip.AddrPort{netip.MustParseAddrPort(seed.Addr())},
		// A seed slow to connect on a loaded CI machine is not a seed that
		// fails to keep up: give it longer than the default 2 s to start.
		StallBudget: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, tor, 2*time.Minute)
	want, err := os.ReadFile(content)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(storedBytes(t, st, m.Info.TotalLength), want) {
		t.Fatal("bytes differ")
	}
	sent := ngx.BytesSent(t, "")
	t.Logf("origin sent %d of %d bytes (%.1f%%)", sent, m.Info.TotalLength, 100*float64(sent)/float64(m.Info.TotalLength))
	if sent*10 >= m.Info.TotalLength {
		t.Fatalf("the origin served %d of %d bytes", sent, m.Info.TotalLength)
	}
}
