package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/negotiate"
	"github.com/tbproxy/tbproxy/swarm"
)

// storageFixture is one published file with its torrent and storage.
type storageFixture struct {
	file    string
	data    []byte
	mi      *metainfo.MetaInfo
	res     Resource
	st      *FileStorage
	changes atomic.Int32
}

func newStorageFixture(t testing.TB, size int) *storageFixture {
	t.Helper()
	f := &storageFixture{data: content(size, 21)}
	f.file = writeFile(t, t.TempDir(), "f.bin", f.data, baseTime)
	var err error
	f.mi, err = metainfo.Build(context.Background(), f.file, metainfo.BuildOptions{PieceLength: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	f.res = resourceOf(t, "/f.bin", f.file)
	f.st, err = NewFileStorage(&f.mi.Info, []Resource{f.res}, func() { f.changes.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	return f
}

func TestFileStorageReads(t *testing.T) {
	f := newStorageFixture(t, 1<<20+12345)
	size := int64(len(f.data))
	tests := []struct {
		name    string
		off     int64
		n       int
		wantN   int
		wantErr error
	}{
		{"start", 0, 16 << 10, 16 << 10, nil},
		{"middle", 300000, 7777, 7777, nil},
		{"last byte", size - 1, 1, 1, nil},
		{"across the end", size - 10, 20, 10, io.EOF},
		{"at the end", size, 1, 0, io.EOF},
		{"whole", 0, int(size), int(size), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := make([]byte, tt.n)
			n, err := f.st.ReadAt(p, tt.off)
			if n != tt.wantN || !errors.Is(err, tt.wantErr) && err != tt.wantErr {
				t.Fatalf("ReadAt = %d, %v; want %d, %v", n, err, tt.wantN, tt.wantErr)
			}
			if !bytes.Equal(p[:n], f.data[tt.off:tt.off+int64(n)]) {
				t.Fatal("bytes differ")
			}
		})
	}
	if _, err := f.st.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("negative offset read")
	}
	for i := range f.mi.Info.NumPieces() {
		if !f.st.Verified(i) {
			t.Fatalf("piece %d not verified", i)
		}
	}
	if f.st.Verified(f.mi.Info.NumPieces()) || f.st.Verified(-1) {
		t.Error("a piece out of range is verified")
	}
	if err := f.st.WritePiece(0, f.data[:64<<10]); !errors.Is(err, ErrReadOnly) {
		t.Errorf("WritePiece = %v", err)
	}
	if err := f.st.MarkVerified(0); err != nil {
		t.Errorf("MarkVerified = %v", err)
	}
	if f.changes.Load() != 0 || f.st.Changed() {
		t.Error("change reported for an unchanged file")
	}
	f.st.Close()
	if _, err := f.st.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v", err)
	}
	if f.changes.Load() != 0 {
		t.Error("Close reported as a change")
	}
}

func TestFileStorageRefusesChangedBytes(t *testing.T) {
	tests := []struct {
		name   string
		change func(t *testing.T, f *storageFixture)
		served bool // the storage may keep serving: its bytes still match
	}{
		{"rewritten in place", func(t *testing.T, f *storageFixture) {
			w, err := os.OpenFile(f.file, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if _, err := w.WriteAt([]byte("changed"), 100); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rewritten, size and time kept (cp -p)", func(t *testing.T, f *storageFixture) {
			writeFile(t, filepath.Dir(f.file), filepath.Base(f.file), content(len(f.data), 23), baseTime)
		}, false},
		{"truncated", func(t *testing.T, f *storageFixture) {
			if err := os.Truncate(f.file, 1000); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"touched", func(t *testing.T, f *storageFixture) {
			mt := baseTime.Add(time.Second)
			if err := os.Chtimes(f.file, mt, mt); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"replaced by rename", func(t *testing.T, f *storageFixture) {
			tmp := f.file + ".new"
			writeFile(t, filepath.Dir(f.file), filepath.Base(tmp), content(len(f.data), 22), baseTime.Add(time.Second))
			if err := os.Rename(tmp, f.file); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"deleted", func(t *testing.T, f *storageFixture) {
			if err := os.Remove(f.file); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newStorageFixture(t, 256<<10)
			tt.change(t, f)
			p := make([]byte, 1000)
			for range 3 {
				n, err := f.st.ReadAt(p, 0)
				if tt.served {
					if err != nil || !bytes.Equal(p[:n], f.data[:1000]) {
						t.Fatalf("ReadAt = %d, %v; or other bytes", n, err)
					}
					continue
				}
				if n != 0 || !errors.Is(err, ErrChanged) {
					t.Fatalf("ReadAt = %d, %v; want ErrChanged", n, err)
				}
			}
			want := int32(1)
			if tt.served {
				want = 0
			}
			if got := f.changes.Load(); got != want {
				t.Errorf("onChange called %d times, want %d", got, want)
			}
		})
	}
}

func TestNewFileStorageChecks(t *testing.T) {
	f := newStorageFixture(t, 100<<10)
	tests := []struct {
		name  string
		files []Resource
	}{
		{"wrong time", []Resource{with(f.res, func(r *Resource) { r.ModTime = r.ModTime.Add(time.Hour) })}},
		{"wrong size", []Resource{with(f.res, func(r *Resource) { r.Size++ })}},
		{"another inode", []Resource{with(f.res, func(r *Resource) { r.Inode++ })}},
		{"another change time", []Resource{with(f.res, func(r *Resource) { r.Changed = r.Changed.Add(-time.Second) })}},
		{"missing", []Resource{with(f.res, func(r *Resource) { r.Path += ".gone" })}},
		{"count", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if st, err := NewFileStorage(&f.mi.Info, tt.files, nil); err == nil {
				st.Close()
				t.Fatal("no error")
			}
		})
	}
}

// swarmSeeder is the wiring's Seeder, for tests: a swarm client seeding
// from FileStorage, each storage reporting changes to the publisher.
type swarmSeeder struct {
	c   *swarm.Client
	pub atomic.Pointer[Publisher]

	mu       sync.Mutex
	torrents map[metainfo.Hash]*swarm.Torrent
	stores   map[metainfo.Hash]*FileStorage
	unseeded chan metainfo.Hash
}

func (s *swarmSeeder) Seed(m *metainfo.MetaInfo, files []Resource) error {
	st, err := NewFileStorage(&m.Info, files, func() { s.pub.Load().Invalidate(m.InfoHash) })
	if err != nil {
		return err
	}
	tor, err := s.c.AddTorrent(m, st, swarm.TorrentOptions{NoTrackers: true, NoWebSeeds: true})
	if err != nil {
		st.Close()
		return err
	}
	s.mu.Lock()
	s.torrents[m.InfoHash], s.stores[m.InfoHash] = tor, st
	s.mu.Unlock()
	return nil
}

func (s *swarmSeeder) Unseed(ih metainfo.Hash) {
	s.mu.Lock()
	tor, st := s.torrents[ih], s.stores[ih]
	delete(s.torrents, ih)
	delete(s.stores, ih)
	s.mu.Unlock()
	if tor != nil {
		tor.Close()
		st.Close()
	}
	s.unseeded <- ih
}

func newSwarmClient(t testing.TB) *swarm.Client {
	t.Helper()
	c, err := swarm.NewClient(swarm.Config{ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSwarmDownloadsFromFileStorage(t *testing.T) {
	dir := t.TempDir()
	data := content(3<<20+777, 31)
	writeFile(t, dir, "movie.mp4", data, baseTime)

	seeder := &swarmSeeder{
		c:        newSwarmClient(t),
		torrents: make(map[metainfo.Hash]*swarm.Torrent),
		stores:   make(map[metainfo.Hash]*FileStorage),
		unseeded: make(chan metainfo.Hash, 4),
	}
	pub := newPublisher(t, Config{Dir: dir, Announce: testAnnounce, Seeder: seeder})
	seeder.pub.Store(pub)
	srv := serve(t, pub, dir)
	_, m := waitTorrent(t, srv.Client(), srv.URL+"/movie.mp4")
	eventually(t, 5*time.Second, func() bool {
		_, ok := seeder.c.Torrent(m.InfoHash)
		return ok
	}, func() string { return "not seeded" })
	seedAddr := netip.MustParseAddrPort(seeder.c.Addr().String())

	leech := newSwarmClient(t)
	tor, err := leech.AddTorrent(m, swarm.NewMemoryStorage(&m.Info), swarm.TorrentOptions{NoTrackers: true, NoWebSeeds: true, Peers: []netip.AddrPort{seedAddr}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tor.Complete():
	case <-time.After(30 * time.Second):
		t.Fatalf("download incomplete: %+v", tor.Stats())
	}
	r := tor.NewReader(t.Context())
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded %d bytes (%v), differing from the file", len(got), err)
	}
	if s := tor.Stats(); s.Downloaded < int64(len(data)) || s.HashFailures != 0 {
		t.Errorf("stats %+v", s)
	}

	// The file changes under the running torrent: the next upload read
	// refuses, the publisher re-checks and the torrent is unseeded.
	writeFile(t, dir, "movie.mp4", content(len(data), 32), baseTime.Add(time.Minute))
	leech2 := newSwarmClient(t)
	tor2, err := leech2.AddTorrent(m, swarm.NewMemoryStorage(&m.Info), swarm.TorrentOptions{NoTrackers: true, NoWebSeeds: true, Peers: []netip.AddrPort{seedAddr}})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ih := <-seeder.unseeded:
		if ih != m.InfoHash {
			t.Fatalf("unseeded %s", ih)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("changed file still seeded")
	}
	if s := tor2.Stats(); s.HashFailures != 0 || s.PiecesVerified != 0 {
		t.Errorf("changed bytes reached a peer: %+v", s)
	}
	if _, ok := seeder.c.Torrent(m.InfoHash); ok {
		t.Error("swarm still has the stale torrent")
	}
	if got := pub.Torrents(); len(got) != 0 {
		t.Errorf("publisher still lists %+v", got)
	}
	// The next negotiation publishes the new bytes and seeds them.
	_, m2 := waitTorrent(t, srv.Client(), srv.URL+"/movie.mp4")
	if m2.InfoHash == m.InfoHash {
		t.Error("same info-hash for changed bytes")
	}
}

func TestSeedOfAChangedFileIsDropped(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "f.bin", content(2<<20, 61), baseTime)
	builds := &counter{gate: make(chan struct{})}
	seeder := &changingSeeder{recSeeder: &recSeeder{}, dir: dir}
	pub := newPublisher(t, Config{Dir: dir, Seeder: seeder, build: builds.build})
	srv := serve(t, pub, dir)
	get(t, srv.Client(), "GET", srv.URL+"/f.bin", "Accept", negotiate.MediaType)
	close(builds.gate)
	// The file changes between its hash and its seed: NewFileStorage
	// refuses, and the publisher drops the version.
	eventually(t, 5*time.Second, func() bool {
		log := seeder.log()
		return len(log) == 1 && strings.HasPrefix(log[0], "unseed ") && len(pub.Torrents()) == 0
	}, func() string { return fmt.Sprint("seeder calls ", seeder.log(), " torrents ", pub.Torrents()) })
}

// changingSeeder rewrites the file before opening its storage.
type changingSeeder struct {
	*recSeeder
	dir string
}

func (s *changingSeeder) Seed(m *metainfo.MetaInfo, files []Resource) error {
	file, mt := filepath.Join(s.dir, "f.bin"), baseTime.Add(time.Minute)
	if err := os.WriteFile(file, content(2<<20, 62), 0o644); err != nil {
		return err
	}
	if err := os.Chtimes(file, mt, mt); err != nil {
		return err
	}
	st, err := NewFileStorage(&m.Info, files, nil)
	if err != nil {
		return err
	}
	st.Close()
	return s.recSeeder.Seed(m, files)
}
