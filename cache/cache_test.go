package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// The handle must satisfy the engine's interface, structurally.
var _ swarm.Storage = (*Torrent)(nil)

func TestSwarmRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		fix  func(t *testing.T) *fixture
		lazy bool
	}{
		{"single file, short last piece", func(t *testing.T) *fixture { return newFixture(t, 3<<20+123, 256<<10) }, false},
		{"one small piece", func(t *testing.T) *fixture { return newFixture(t, 10_000, 16<<10) }, false},
		{"padding files", func(t *testing.T) *fixture { return paddedFixture(t) }, false},
		{"lazy reader", func(t *testing.T) *fixture { return newFixture(t, 2<<20, 64<<10) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.fix(t)
			seed, _ := f.seed(t, swarm.Config{})
			s := openStore(t, Config{Dir: t.TempDir()})
			h := handle(t, s, f.meta, TorrentOptions{})
			tor := f.leech(t, h, seed, swarm.TorrentOptions{Lazy: tc.lazy})
			if got := readStream(t, tor); !bytes.Equal(got, f.content) {
				t.Fatal("bytes read through the swarm differ")
			}
			waitComplete(t, tor, 30*time.Second)
			if !bytes.Equal(readAll(t, h), f.content) {
				t.Fatal("bytes read from the cache differ")
			}
			data, err := os.ReadFile(filepath.Join(entryDir(s, f.meta), dataName))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, f.content) {
				t.Fatal("data file differs from the content")
			}
			var pad int64
			for _, fl := range f.meta.Info.Files {
				if fl.Padding() {
					pad += fl.Length
				}
			}
			fi, err := os.Stat(filepath.Join(entryDir(s, f.meta), dataName))
			if err != nil {
				t.Fatal(err)
			}
			if got, limit := allocated(fi), f.meta.Info.TotalLength-pad+64<<10; got > limit {
				t.Fatalf("data file occupies %d bytes, want at most %d (padding %d must stay holes)", got, limit, pad)
			}
			if st := s.Stats(); st.BytesUsed > f.meta.Info.TotalLength-pad+8<<10 || st.Misses != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name        string
		closeHandle bool // close the handle before the store
		waitFlush   bool // let the flusher write the record, then close only the store
	}{
		{"handle closed, then store", true, false},
		{"store closed with the handle open", false, false},
		{"recorded by the flusher", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 2<<20, 64<<10)
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir, FlushInterval: 10 * time.Millisecond, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			h, err := s.Torrent(f.meta, TorrentOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var odd []int
			for i := 1; i < f.meta.Info.NumPieces(); i += 2 {
				odd = append(odd, i)
			}
			f.put(t, h, odd...)
			want := verifiedSet(h)
			if tc.waitFlush {
				waitFor(t, 5*time.Second, "a flush", func() bool {
					b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
					return ok && b.count() == len(odd)
				})
			}
			if tc.closeHandle {
				if err := h.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := h.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
				t.Fatalf("read after close: %v", err)
			}
			h.Close()

			s2 := openStore(t, Config{Dir: dir})
			ents := s2.Entries()
			if len(ents) != 1 || ents[0].Verified != len(odd) || ents[0].Complete || ents[0].Rechecking || !ents[0].Seed {
				t.Fatalf("entries %+v", ents)
			}
			h2 := handle(t, s2, ents[0].MetaInfo, TorrentOptions{})
			if got := verifiedSet(h2); !slices.Equal(got, want) {
				t.Fatalf("verified after restart %v, want %v", got, want)
			}
			if st := s2.Stats(); st.Rechecks != 0 || st.Hits != 1 {
				t.Fatalf("stats %+v", st)
			}
			for _, i := range odd {
				buf := make([]byte, f.meta.Info.PieceLen(i))
				if _, err := h2.ReadAt(buf, int64(i)*f.meta.Info.PieceLength); err != nil || !bytes.Equal(buf, f.piece(i)) {
					t.Fatalf("piece %d after restart: %v", i, err)
				}
			}
		})
	}
}

func TestRecordBatched(t *testing.T) {
	// Marking pieces verified writes nothing until the flush interval.
	f := newFixture(t, 1<<20, 16<<10)
	s := openStore(t, Config{Dir: t.TempDir(), FlushInterval: time.Hour})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h)
	if _, ok := recordedPieces(t, entryDir(s, f.meta), f.meta); ok {
		t.Fatal("record written on the data path")
	}
	h.Close()
	if b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta); !ok || !b.full() {
		t.Fatal("record not written when the last handle closed")
	}
}

func TestEviction(t *testing.T) {
	const size = 1 << 20
	var fs []*fixture
	for range 5 {
		fs = append(fs, newFixture(t, size, 64<<10))
	}
	dir := t.TempDir()
	var mu sync.Mutex
	var evicted []metainfo.Hash
	var dirExisted []bool
	max := int64(3*size + 16<<10)
	s := openStore(t, Config{Dir: dir, MaxBytes: max, OnEvict: func(ih metainfo.Hash) {
		_, err := os.Stat(filepath.Join(dir, ih.HexString(), dataName))
		mu.Lock()
		evicted = append(evicted, ih)
		dirExisted = append(dirExisted, err == nil)
		mu.Unlock()
	}})
	hs := make([]*Torrent, len(fs))
	add := func(k int) {
		hs[k] = handle(t, s, fs[k].meta, TorrentOptions{})
		fs[k].put(t, hs[k])
	}
	checkBound := func(t *testing.T) {
		if st := s.Stats(); st.BytesUsed > max {
			t.Fatalf("bytes used %d > %d", st.BytesUsed, max)
		}
		if du := diskUsage(t, dir); du > max {
			t.Fatalf("disk usage %d > %d", du, max)
		}
	}
	waitEvictions := func(t *testing.T, n int64) {
		waitFor(t, 5*time.Second, fmt.Sprintf("%d evictions", n), func() bool { return s.Stats().Evictions == n })
	}
	gone := func(k int) bool {
		_, err := os.Stat(entryDir(s, fs[k].meta))
		return errors.Is(err, os.ErrNotExist)
	}

	add(0)
	add(1)
	add(2)
	if st := s.Stats(); st.Evictions != 0 || st.Torrents != 3 {
		t.Fatalf("stats %+v", st)
	}
	hs[0].Touch() // order, oldest first: 1, 2, 0

	t.Run("least recently used goes", func(t *testing.T) {
		add(3)
		waitEvictions(t, 1)
		if !gone(1) || gone(0) || gone(2) || gone(3) {
			t.Fatal("wrong torrent evicted")
		}
		mu.Lock()
		if len(evicted) != 1 || evicted[0] != fs[1].meta.InfoHash || !dirExisted[0] {
			t.Fatalf("OnEvict %v, dir existed %v", evicted, dirExisted)
		}
		mu.Unlock()
		if _, err := hs[1].ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrEvicted) {
			t.Fatalf("read from evicted torrent: %v", err)
		}
		if err := hs[1].WritePiece(0, fs[1].piece(0)); !errors.Is(err, ErrEvicted) {
			t.Fatalf("write to evicted torrent: %v", err)
		}
		checkBound(t)
	})
	t.Run("pinned torrent stays", func(t *testing.T) {
		// Order now 2, 0, 3; 2 has an open reader.
		release := hs[2].Pin()
		defer release()
		add(4)
		waitEvictions(t, 2)
		if gone(2) || !gone(0) || gone(3) || gone(4) {
			t.Fatal("wrong torrent evicted")
		}
		if !bytes.Equal(readAll(t, hs[2]), fs[2].content) {
			t.Fatal("pinned torrent damaged")
		}
		checkBound(t)
	})
	t.Run("evicted torrent comes back fresh", func(t *testing.T) {
		h := handle(t, s, fs[1].meta, TorrentOptions{})
		if h.Verified(0) {
			t.Fatal("evicted torrent still verified")
		}
		if st := s.Stats(); st.Misses != 6 || st.Hits != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// TestEvictionAfterUnpin: a torrent larger than the cache, streamed while
// it was written, is evicted once its last pin is released, not at some
// later write.
func TestEvictionAfterUnpin(t *testing.T) {
	f := newFixture(t, 1<<20, 64<<10)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, MaxBytes: 256 << 10})
	h := handle(t, s, f.meta, TorrentOptions{})
	release := h.Pin()
	f.put(t, h)
	if !bytes.Equal(readAll(t, h), f.content) {
		t.Fatal("pinned torrent damaged")
	}
	time.Sleep(50 * time.Millisecond) // the evictor, woken by the writes, found it pinned
	if st := s.Stats(); st.Evictions != 0 {
		t.Fatalf("a pinned torrent was evicted: %+v", st)
	}
	release()
	waitFor(t, 5*time.Second, "the eviction", func() bool { return s.Stats().Evictions == 1 })
	if du := diskUsage(t, dir); du > 256<<10 {
		t.Fatalf("disk usage %d after the eviction", du)
	}
}

func TestEvictionOrderSurvivesRestart(t *testing.T) {
	var fs []*fixture
	for range 3 {
		fs = append(fs, newFixture(t, 256<<10, 64<<10))
	}
	dir := t.TempDir()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	s, err := Open(Config{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{2, 0, 1} { // last use: 2 oldest, 1 newest
		now = now.Add(time.Minute)
		h, err := s.Torrent(fs[k].meta, TorrentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fs[k].put(t, h)
		h.Close()
	}
	s.Close()

	s2 := openStore(t, Config{Dir: dir, Now: clock})
	var order []metainfo.Hash
	for _, e := range s2.Entries() {
		order = append(order, e.InfoHash)
	}
	want := []metainfo.Hash{fs[1].meta.InfoHash, fs[0].meta.InfoHash, fs[2].meta.InfoHash}
	if !slices.Equal(order, want) {
		t.Fatalf("entries in order %v, want %v", order, want)
	}
	s2.Close()
	// A smaller bound at open evicts the oldest first.
	s3 := openStore(t, Config{Dir: dir, MaxBytes: 600 << 10})
	waitFor(t, 5*time.Second, "eviction at open", func() bool { return s3.Stats().Evictions == 1 })
	if ents := s3.Entries(); len(ents) != 2 || ents[1].InfoHash != fs[0].meta.InfoHash {
		t.Fatalf("entries after eviction %+v", ents)
	}
}

func TestRecheck(t *testing.T) {
	const pl = 64 << 10
	tests := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		wantBad func(n int) []int // pieces that must come back unverified
	}{
		{"flipped bytes, mtime changed", func(t *testing.T, dir string) {
			path := filepath.Join(dir, dataName)
			fl, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range []int64{3*pl + 100, 7*pl + pl - 1} {
				b := make([]byte, 1)
				fl.ReadAt(b, off)
				b[0] ^= 0xff
				fl.WriteAt(b, off)
			}
			fl.Close()
			later := time.Now().Add(time.Hour)
			os.Chtimes(path, later, later)
		}, func(int) []int { return []int{3, 7} }},
		{"truncated data file", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, dataName), 10*pl+5); err != nil {
				t.Fatal(err)
			}
		}, func(n int) []int {
			var bad []int
			for i := 10; i < n; i++ {
				bad = append(bad, i)
			}
			return bad
		}},
		{"corrupt completion record", func(t *testing.T, dir string) {
			path := filepath.Join(dir, recordName)
			b, _ := os.ReadFile(path)
			b[len(b)/2] ^= 1
			os.WriteFile(path, b, 0o600)
		}, func(int) []int { return nil }},
		{"missing completion record", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, recordName))
		}, func(int) []int { return nil }},
		{"completion record with bytes after it", func(t *testing.T, dir string) {
			path := filepath.Join(dir, recordName)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, append(b, make([]byte, 64<<20)...), 0o600)
		}, func(int) []int { return nil }},
		{"completion record is a link to an endless file", func(t *testing.T, dir string) {
			path := filepath.Join(dir, recordName)
			os.Remove(path)
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, func(int) []int { return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 20*pl+1000, pl)
			n := f.meta.Info.NumPieces()
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := s.Torrent(f.meta, TorrentOptions{})
			f.put(t, h)
			h.Close()
			s.Close()
			tc.mutate(t, filepath.Join(dir, f.meta.InfoHash.HexString()))

			s2 := openStore(t, Config{Dir: dir})
			h2 := handle(t, s2, f.meta, TorrentOptions{}) // waits for the recheck
			bad := tc.wantBad(n)
			for i := range n {
				if got, want := h2.Verified(i), !slices.Contains(bad, i); got != want {
					t.Fatalf("piece %d verified %v after recheck, want %v", i, got, want)
				}
			}
			if st := s2.Stats(); st.Rechecks != 1 {
				t.Fatalf("stats %+v", st)
			}
			if len(bad) > 0 {
				if _, err := h2.ReadAt(make([]byte, 10), int64(bad[0])*pl); !errors.Is(err, ErrNotVerified) {
					t.Fatalf("read of a bad piece: %v", err)
				}
			}
			// The swarm repairs exactly the bad pieces.
			seed, _ := f.seed(t, swarm.Config{})
			tor := f.leech(t, h2, seed, swarm.TorrentOptions{})
			waitComplete(t, tor, 30*time.Second)
			var want int64
			for _, i := range bad {
				want += f.meta.Info.PieceLen(i)
			}
			if got := tor.Stats().Downloaded; got != want {
				t.Fatalf("repair downloaded %d bytes, want %d", got, want)
			}
			if !bytes.Equal(readAll(t, h2), f.content) {
				t.Fatal("repaired bytes differ")
			}
			// And the repair is recorded: the next open trusts it all.
			h2.Close()
			s2.Close()
			s3 := openStore(t, Config{Dir: dir})
			if ents := s3.Entries(); len(ents) != 1 || !ents[0].Complete || ents[0].Rechecking {
				t.Fatalf("entries after repair %+v", ents)
			}
		})
	}
}

func TestOpenRemovesUnusableEntries(t *testing.T) {
	f := newFixture(t, 100<<10, 16<<10)
	other := newFixture(t, 100<<10, 16<<10)
	dir := t.TempDir()
	s, _ := Open(Config{Dir: dir})
	for _, fx := range []*fixture{f, other} {
		h, _ := s.Torrent(fx.meta, TorrentOptions{})
		fx.put(t, h)
		h.Close()
	}
	s.Close()
	// Garbage metainfo; metainfo of another torrent; a leftover with no
	// metainfo; a temp file; names the cache does not own.
	os.WriteFile(filepath.Join(dir, f.meta.InfoHash.HexString(), metaName), []byte("garbage"), 0o600)
	wrong := filepath.Join(dir, "0123456789abcdef0123456789abcdef01234567")
	os.Mkdir(wrong, 0o700)
	raw, _ := other.meta.Marshal()
	os.WriteFile(filepath.Join(wrong, metaName), raw, 0o600)
	leftover := filepath.Join(dir, "89abcdef0123456789abcdef0123456789abcdef")
	os.Mkdir(leftover, 0o700)
	os.WriteFile(filepath.Join(leftover, dataName), []byte("x"), 0o600)
	tmp := filepath.Join(dir, other.meta.InfoHash.HexString(), recordName+tmpSuffix)
	os.WriteFile(tmp, []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	os.Mkdir(filepath.Join(dir, "0123456789ABCDEF0123456789ABCDEF01234567"), 0o700)

	s2 := openStore(t, Config{Dir: dir})
	ents := s2.Entries()
	if len(ents) != 1 || ents[0].InfoHash != other.meta.InfoHash || !ents[0].Complete {
		t.Fatalf("entries %+v", ents)
	}
	for _, p := range []string{filepath.Join(dir, f.meta.InfoHash.HexString()), wrong, leftover, tmp} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", p, err)
		}
	}
	for _, p := range []string{"notes.txt", "0123456789ABCDEF0123456789ABCDEF01234567"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s was touched: %v", p, err)
		}
	}
}

func TestWriteFaults(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		memory    int64 // Config.MemoryFallback
		onceEach  bool  // fail only the first write of each faulty piece
		suspends  bool  // the error suspends disk writes
		wantKept  bool  // faulty pieces are durably recorded in the end
		wantRetry bool  // the engine had to fetch faulty pieces again
	}{
		{name: "ENOSPC, served from memory, writes suspended", err: syscall.ENOSPC, suspends: true},
		{name: "EIO, served from memory", err: syscall.EIO},
		{name: "EIO, memory full, fetched again", err: syscall.EIO, memory: -1, onceEach: true, wantKept: true, wantRetry: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const pl = 64 << 10
			f := newFixture(t, 4<<20, pl)
			n := f.meta.Info.NumPieces()
			faulty := func(i int) bool { return i%3 == 1 }
			var failed sync.Map
			hook := func(op string, ih metainfo.Hash, piece int) error {
				if op != FaultWrite || ih != f.meta.InfoHash || !faulty(piece) {
					return nil
				}
				if _, again := failed.LoadOrStore(piece, true); again && tc.onceEach {
					return nil
				}
				return tc.err
			}
			dir := t.TempDir()
			s := openStore(t, Config{Dir: dir, Faults: hook, MemoryFallback: tc.memory})
			h, err := s.Torrent(f.meta, TorrentOptions{})
			if err != nil {
				t.Fatal(err)
			}
			seed, _ := f.seed(t, swarm.Config{})
			tor := f.leech(t, h, seed, swarm.TorrentOptions{Lazy: true})
			if got := readStream(t, tor); !bytes.Equal(got, f.content) {
				t.Fatal("bytes through the swarm differ")
			}
			st := s.Stats()
			nFaulty := 0
			for i := range n {
				if faulty(i) {
					nFaulty++
				}
			}
			wantErrs := int64(nFaulty)
			if tc.suspends {
				wantErrs = 1 // later pieces never reach the disk
			}
			if st.WriteErrors < wantErrs || st.WritesSuspended != tc.suspends {
				t.Fatalf("stats %+v, want ≥ %d write errors", st, wantErrs)
			}
			if retried := tor.Stats().StorageErrors > 0; retried != tc.wantRetry {
				t.Fatalf("engine storage errors %d", tor.Stats().StorageErrors)
			}
			inMemory := int(st.MemoryBytes / pl)
			if !tc.wantRetry && inMemory < nFaulty || tc.wantRetry && inMemory != 0 {
				t.Fatalf("%d pieces in memory, %d faulty", inMemory, nFaulty)
			}
			tor.Close()
			h.Close()
			if st := s.Stats(); st.MemoryBytes != 0 {
				t.Fatalf("memory not freed on release: %+v", st)
			}
			s.Close()

			// Nothing that failed to reach the disk is recorded.
			s2 := openStore(t, Config{Dir: dir})
			h2 := handle(t, s2, f.meta, TorrentOptions{})
			verified := 0
			for i := range n {
				if h2.Verified(i) {
					verified++
					if faulty(i) && !tc.wantKept {
						t.Fatalf("piece %d verified after reopen although its write failed", i)
					}
				}
			}
			if verified != n-inMemory {
				t.Fatalf("%d pieces verified after reopen, want %d", verified, n-inMemory)
			}
		})
	}
}

func TestWriteSuspension(t *testing.T) {
	f := newFixture(t, 8*16<<10, 16<<10)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var calls atomic.Int32
	var full atomic.Bool
	full.Store(true)
	s := openStore(t, Config{Dir: t.TempDir(), Now: clock, WriteRetry: time.Minute,
		Faults: func(op string, _ metainfo.Hash, _ int) error {
			if op != FaultWrite {
				return nil
			}
			calls.Add(1)
			if full.Load() {
				return syscall.ENOSPC
			}
			return nil
		}})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h, 0)
	f.put(t, h, 1)
	if calls.Load() != 1 || !s.Stats().WritesSuspended {
		t.Fatalf("%d write attempts while suspended; stats %+v", calls.Load(), s.Stats())
	}
	full.Store(false)
	advance(59 * time.Second)
	f.put(t, h, 2)
	if calls.Load() != 1 {
		t.Fatal("wrote before the retry time")
	}
	advance(time.Second)
	f.put(t, h, 3)
	if calls.Load() != 2 || s.Stats().WritesSuspended {
		t.Fatalf("writes not resumed; stats %+v", s.Stats())
	}
	got := make([]byte, 4*16<<10)
	if _, err := h.ReadAt(got, 0); err != nil || !bytes.Equal(got, f.content[:len(got)]) {
		t.Fatal("pieces from memory and disk differ")
	}
}

func TestSyncFault(t *testing.T) {
	f := newFixture(t, 256<<10, 64<<10)
	var fail atomic.Bool
	fail.Store(true)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, FlushInterval: 5 * time.Millisecond, Faults: func(op string, _ metainfo.Hash, _ int) error {
		if op == FaultSync && fail.Load() {
			return syscall.EIO
		}
		return nil
	}})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h)
	time.Sleep(50 * time.Millisecond)
	if _, ok := recordedPieces(t, entryDir(s, f.meta), f.meta); ok {
		t.Fatal("record written although the data sync failed")
	}
	fail.Store(false)
	waitFor(t, 5*time.Second, "the record", func() bool {
		b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
		return ok && b.full()
	})
}

func TestReadFault(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"EIO", syscall.EIO},
		{"EBADMSG", syscall.EBADMSG},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 1<<20, 64<<10)
			const bad = 5
			var fail atomic.Bool
			dir := t.TempDir()
			s := openStore(t, Config{Dir: dir, FlushInterval: 5 * time.Millisecond, Faults: func(op string, _ metainfo.Hash, piece int) error {
				if op == FaultRead && piece == bad && fail.Load() {
					return tc.err
				}
				return nil
			}})
			h := handle(t, s, f.meta, TorrentOptions{})
			f.put(t, h)
			fail.Store(true)
			buf := make([]byte, 3*64<<10)
			n, err := h.ReadAt(buf, (bad-1)*64<<10)
			var lost interface{ LostPiece() int }
			if !errors.As(err, &lost) || lost.LostPiece() != bad || !errors.Is(err, tc.err) {
				t.Fatalf("read error %v", err)
			}
			if n != 64<<10 || !bytes.Equal(buf[:n], f.piece(bad-1)) {
				t.Fatalf("read %d bytes before the bad piece", n)
			}
			if h.Verified(bad) || s.Stats().ReadErrors != 1 {
				t.Fatalf("bad piece still verified; stats %+v", s.Stats())
			}
			fail.Store(false)
			if _, err := h.ReadAt(buf[:10], bad*64<<10); !errors.As(err, &lost) || !errors.Is(err, ErrNotVerified) {
				t.Fatalf("read of the dropped piece: %v", err)
			}
			waitFor(t, 5*time.Second, "the drop to be recorded", func() bool {
				b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
				return ok && !b.has(bad) && b.count() == f.meta.Info.NumPieces()-1
			})
			// Fetched again, it is served again.
			f.put(t, h, bad)
			if !bytes.Equal(readAll(t, h), f.content) {
				t.Fatal("bytes differ after the piece came back")
			}
		})
	}
}

func TestTransient(t *testing.T) {
	f := newFixture(t, 512<<10, 64<<10)
	tests := []struct {
		name    string
		promote bool
	}{
		{"deleted on release", false},
		{"made persistent by a cacheable request", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, Config{Dir: dir, FlushInterval: 5 * time.Millisecond})
			h, err := s.Torrent(f.meta, TorrentOptions{Transient: true})
			if err != nil {
				t.Fatal(err)
			}
			f.put(t, h)
			if h.Seeding() {
				t.Fatal("transient torrent offered for seeding")
			}
			time.Sleep(30 * time.Millisecond) // flushes would have run
			edir := entryDir(s, f.meta)
			names := dirNames(t, edir)
			if !slices.Equal(names, []string{dataName}) {
				t.Fatalf("transient entry holds %v", names)
			}
			if ents := s.Entries(); len(ents) != 1 || !ents[0].Transient || ents[0].Seed {
				t.Fatalf("entries %+v", ents)
			}
			if tc.promote {
				h2 := handle(t, s, f.meta, TorrentOptions{})
				if !h2.Verified(0) {
					t.Fatal("promoted entry lost its pieces")
				}
			}
			h.Close()
			if tc.promote {
				waitFor(t, 5*time.Second, "the record", func() bool {
					_, ok := recordedPieces(t, edir, f.meta)
					return ok
				})
				if ents := s.Entries(); len(ents) != 1 || ents[0].Transient || !ents[0].Complete {
					t.Fatalf("entries %+v", ents)
				}
				return
			}
			if _, err := os.Stat(edir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("transient entry left on disk: %v", err)
			}
			if st := s.Stats(); st.Torrents != 0 || st.BytesUsed != 0 {
				t.Fatalf("stats %+v", st)
			}
			if _, err := h.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
				t.Fatalf("read after release: %v", err)
			}
		})
	}
}

func TestTransientLeftAfterCrashIsRemoved(t *testing.T) {
	f := newFixture(t, 128<<10, 64<<10)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir})
	h := handle(t, s, f.meta, TorrentOptions{Transient: true})
	f.put(t, h)
	// Copy the directory aside as a crash would leave it, then reopen.
	edir := entryDir(s, f.meta)
	crashDir := t.TempDir()
	copyDir(t, edir, filepath.Join(crashDir, filepath.Base(edir)))
	s2 := openStore(t, Config{Dir: crashDir})
	if ents := s2.Entries(); len(ents) != 0 {
		t.Fatalf("entries %+v", ents)
	}
	if names := dirNames(t, crashDir); len(names) != 0 {
		t.Fatalf("left on disk: %v", names)
	}
}

func TestPathSafety(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "cache")
	f := newFixture(t, 100<<10, 16<<10)
	// A caller hands over metainfo with hostile names; none may be used.
	m := *f.meta
	m.Info.Name = "../../x"
	m.Info.Files = []metainfo.File{{Path: []string{"../../x"}, Length: m.Info.TotalLength}}
	s := openStore(t, Config{Dir: dir})
	h := handle(t, s, &m, TorrentOptions{})
	f.put(t, h)
	h.Close()
	if names := dirNames(t, base); !slices.Equal(names, []string{"cache"}) {
		t.Fatalf("outside the cache: %v", names)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{m.InfoHash.HexString()}) {
		t.Fatalf("in the cache: %v", names)
	}
	if names := dirNames(t, filepath.Join(dir, m.InfoHash.HexString())); !slices.Equal(names, []string{recordName, dataName, metaName}) {
		t.Fatalf("in the entry: %v", names)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode %v, %v", fi.Mode(), err)
	}
}

func TestSeedPolicy(t *testing.T) {
	f := newFixture(t, 256<<10, 64<<10)
	size := int64(256 << 10)
	tests := []struct {
		name     string
		policy   SeedPolicy
		uploaded int64
		after    time.Duration // time since completion
		want     bool
	}{
		{"while cached", SeedPolicy{}, 100 * size, 1000 * time.Hour, true},
		{"ratio not reached", SeedPolicy{Ratio: 2}, 2*size - 1, 0, true},
		{"ratio reached", SeedPolicy{Ratio: 2}, 2 * size, 0, false},
		{"time not reached", SeedPolicy{Duration: time.Hour}, 0, 59 * time.Minute, true},
		{"time reached", SeedPolicy{Duration: time.Hour}, 0, time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_700_000_000, 0)
			clock := func() time.Time { return now }
			dir := t.TempDir()
			s, err := Open(Config{Dir: dir, Seed: tc.policy, Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			h, _ := s.Torrent(f.meta, TorrentOptions{})
			f.put(t, h)
			h.AddUploaded(tc.uploaded)
			now = now.Add(tc.after)
			if got := h.Seeding(); got != tc.want {
				t.Fatalf("seeding %v, want %v", got, tc.want)
			}
			h.Close()
			s.Close()
			// The inputs survive a restart.
			s2 := openStore(t, Config{Dir: dir, Seed: tc.policy, Now: clock})
			ents := s2.Entries()
			if len(ents) != 1 || ents[0].Seed != tc.want || ents[0].Uploaded != tc.uploaded || !ents[0].Completed.Equal(now.Add(-tc.after)) {
				t.Fatalf("entries %+v", ents)
			}
		})
	}
}

func TestConcurrent(t *testing.T) {
	const pieces = 16
	var fs []*fixture
	for range 6 {
		fs = append(fs, newFixture(t, pieces*32<<10, 32<<10))
	}
	s := openStore(t, Config{Dir: t.TempDir(), MaxBytes: 3 * pieces * 32 << 10, FlushInterval: time.Millisecond})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 12 {
		f := fs[w%len(fs)]
		wg.Go(func() {
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				h, err := s.Torrent(f.meta, TorrentOptions{Transient: round%5 == 4})
				if err != nil {
					t.Error(err)
					return
				}
				release := func() {}
				if w%3 == 0 {
					release = h.Pin()
				}
				for i := w % 2; i < pieces; i += 2 {
					if err := h.WritePiece(i, f.piece(i)); err != nil {
						if !errors.Is(err, ErrEvicted) {
							t.Error(err)
						}
						break
					}
					if err := h.MarkVerified(i); err != nil && !errors.Is(err, ErrEvicted) {
						t.Error(err)
					}
					buf := make([]byte, 40<<10)
					off := int64(i) * 32 << 10
					n, err := h.ReadAt(buf, off)
					if errors.Is(err, io.EOF) {
						err = nil
					}
					if err == nil && !bytes.Equal(buf[:n], f.content[off:off+int64(n)]) {
						t.Errorf("piece %d read back wrong", i)
					}
					var lost interface{ LostPiece() int }
					if err != nil && !errors.Is(err, ErrEvicted) && !(errors.As(err, &lost) && errors.Is(err, ErrNotVerified)) {
						t.Error(err)
					}
					h.Verified(i)
					h.Touch()
				}
				release()
				h.Close()
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			s.Stats()
			s.Entries()
		}
	})
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	st := s.Stats()
	t.Logf("stats %+v", st)
	if st.Evictions == 0 {
		t.Fatal("no eviction happened; the test did not exercise it")
	}
}

func TestStoreClosed(t *testing.T) {
	f := newFixture(t, 64<<10, 16<<10)
	s, err := Open(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := s.Torrent(f.meta, TorrentOptions{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Torrent(f.meta, TorrentOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Torrent after Close: %v", err)
	}
	if err := h.WritePiece(0, f.piece(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadArguments(t *testing.T) {
	f := newFixture(t, 100<<10, 16<<10)
	s := openStore(t, Config{Dir: t.TempDir()})
	h := handle(t, s, f.meta, TorrentOptions{})
	tests := []struct {
		name string
		err  error
	}{
		{"piece out of range", h.WritePiece(f.meta.Info.NumPieces(), nil)},
		{"short piece", h.WritePiece(0, make([]byte, 10))},
		{"marked before written", h.MarkVerified(1)},
		{"negative offset", func() error { _, err := h.ReadAt(make([]byte, 1), -1); return err }()},
		{"unverified read", func() error { _, err := h.ReadAt(make([]byte, 1), 0); return err }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := s.Torrent(nil, TorrentOptions{}); err == nil {
		t.Fatal("nil metainfo accepted")
	}
	if _, err := Open(Config{}); err == nil {
		t.Fatal("empty directory accepted")
	}
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range dirNames(t, from) {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReseedAfterRestart(t *testing.T) {
	full := newFixture(t, 3<<20, 128<<10)
	half := newFixture(t, 2<<20, 128<<10)
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f      *fixture
		pieces []int
	}{{full, nil}, {half, []int{0, 1, 2, 3, 4, 5, 6, 7}}} {
		h, _ := s.Torrent(c.f.meta, TorrentOptions{})
		c.f.put(t, h, c.pieces...)
		h.Close()
	}
	s.Close()

	// After a restart, with no origin: every entry goes back into the
	// engine from the cache alone and is seeded.
	s2 := openStore(t, Config{Dir: dir})
	reseeder := newClient(t, swarm.Config{})
	ents := s2.Entries()
	if len(ents) != 2 {
		t.Fatalf("entries %+v", ents)
	}
	for _, e := range ents {
		if !e.Seed {
			t.Fatalf("entry %s not offered for seeding", e.InfoHash)
		}
		h := handle(t, s2, e.MetaInfo, TorrentOptions{})
		if _, err := reseeder.AddTorrent(e.MetaInfo, h, swarm.TorrentOptions{NoTrackers: true}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("complete torrent to concurrent leeches", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 3 {
			tor := full.leech(t, swarm.NewMemoryStorage(&full.meta.Info), reseeder, swarm.TorrentOptions{Lazy: true})
			wg.Go(func() {
				if got := readStream(t, tor); !bytes.Equal(got, full.content) {
					t.Error("bytes from the reseeded torrent differ")
				}
			})
		}
		wg.Wait()
	})
	t.Run("partial torrent seeds what it has", func(t *testing.T) {
		tor := half.leech(t, swarm.NewMemoryStorage(&half.meta.Info), reseeder, swarm.TorrentOptions{Lazy: true})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := tor.NewReader(ctx)
		defer r.Close()
		r.SetReadahead(128 << 10)
		got := make([]byte, 1<<20)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, half.content[:1<<20]) {
			t.Fatal("bytes from the partial torrent differ")
		}
	})
}

func TestRemove(t *testing.T) {
	var evicted []metainfo.Hash
	s := openStore(t, Config{Dir: t.TempDir(), OnEvict: func(ih metainfo.Hash) { evicted = append(evicted, ih) }})
	f := newFixture(t, 1<<20, 64<<10)
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h)
	release := h.Pin()
	if err := s.Remove(f.meta.InfoHash); !errors.Is(err, ErrPinned) {
		t.Fatalf("removing a pinned torrent: %v", err)
	}
	release()
	if err := s.Remove(f.meta.InfoHash); err != nil {
		t.Fatal(err)
	}
	if len(evicted) != 1 || evicted[0] != f.meta.InfoHash {
		t.Fatalf("OnEvict calls %v", evicted)
	}
	if _, err := os.Stat(entryDir(s, f.meta)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("directory still there: %v", err)
	}
	if _, err := h.ReadAt(make([]byte, 10), 0); !errors.Is(err, ErrEvicted) {
		t.Fatalf("handle after remove: %v", err)
	}
	if err := s.Remove(f.meta.InfoHash); !errors.Is(err, ErrNotCached) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestOnDiskAndOpenFile(t *testing.T) {
	f := paddedFixture(t)
	pl := f.meta.Info.PieceLength
	// Piece 1's write fails, so it is kept in memory: verified, but not on
	// disk for a sendfile.
	s := openStore(t, Config{Dir: t.TempDir(), Faults: func(op string, _ metainfo.Hash, piece int) error {
		if op == FaultWrite && piece == 1 {
			return syscall.ENOSPC
		}
		return nil
	}})
	h := handle(t, s, f.meta, TorrentOptions{})
	if h.OnDisk(0, 1) {
		t.Fatal("OnDisk before any piece was written")
	}
	f.put(t, h, 0, 2, 1) // a full disk suspends later writes
	if !h.Verified(1) {
		t.Fatal("piece 1 is not held in memory")
	}
	if !h.OnDisk(0, pl) || !h.OnDisk(2*pl, 10) {
		t.Fatal("written pieces are not on disk")
	}
	if h.OnDisk(pl-1, 2) || h.OnDisk(0, 3*pl) || h.OnDisk(-1, 2) || h.OnDisk(0, 0) || h.OnDisk(2*pl, f.meta.Info.TotalLength) {
		t.Fatal("a range touching a memory-only piece, or outside the torrent, is on disk")
	}
	file, err := h.OpenFile()
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	got := make([]byte, pl)
	if _, err := file.ReadAt(got, 0); err != nil || !bytes.Equal(got, f.piece(0)) {
		t.Fatalf("the file's first piece differs (err %v)", err)
	}
	h.Close()
	if h.OnDisk(0, pl) {
		t.Fatal("OnDisk after Close")
	}
	if _, err := h.OpenFile(); !errors.Is(err, ErrClosed) {
		t.Fatalf("OpenFile after Close: %v", err)
	}
}

// TestWriteChunks checks that a write split into writeChunk pieces lands
// whole and in place, whatever its length against writeChunk.
func TestWriteChunks(t *testing.T) {
	for _, n := range []int{0, 1, writeChunk - 1, writeChunk, writeChunk + 1, 5*writeChunk/2 + 7} {
		path := filepath.Join(t.TempDir(), "data")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + n)
		}
		const off = 13
		err = writeChunks(f, p, off)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := append(make([]byte, off), p...)
		if n == 0 {
			want = nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d bytes at %d: the file holds %d bytes, not the ones written", n, off, len(got))
		}
	}
}

// TestChangedBehindTheCachesBack: a data file changed by another program
// while the cache has it open. Its pieces are hashed again before they are
// read: the changed one is dropped as lost (and fetched again), the others
// are served, neither a read nor the sendfile path (OnDisk) hands out the
// changed bytes, and no record vouches for them, so that the next Open
// does not trust them either.
func TestChangedBehindTheCachesBack(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 1<<20, pieceLen)
	const bad = 5
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, FlushInterval: 5 * time.Millisecond})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h)
	data := filepath.Join(entryDir(s, f.meta), dataName)
	waitFor(t, 5*time.Second, "the record", func() bool {
		b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
		return ok && b.full()
	})

	// Another program writes zeros into piece 5. Its write gets an mtime
	// of its own, as a write some time after the cache's would.
	w, err := os.OpenFile(data, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 100), bad*pieceLen+10); err != nil {
		t.Fatal(err)
	}
	w.Close()
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(data, later, later); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the change to be seen", func() bool {
		b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
		return ok && b.count() == 0
	})
	if h.OnDisk(bad*pieceLen, pieceLen) || h.OnDisk(0, pieceLen) {
		t.Fatal("OnDisk vouches for a piece not hashed since the change")
	}

	buf := make([]byte, 3*pieceLen)
	n, err := h.ReadAt(buf, (bad-1)*pieceLen)
	var lost interface{ LostPiece() int }
	if !errors.As(err, &lost) || lost.LostPiece() != bad || !errors.Is(err, ErrChangedOnDisk) {
		t.Fatalf("read across the changed piece: %d bytes, %v", n, err)
	}
	if n != pieceLen || !bytes.Equal(buf[:n], f.piece(bad-1)) {
		t.Fatalf("read %d bytes before the changed piece", n)
	}
	if h.Verified(bad) || !h.Verified(bad-1) || !h.OnDisk((bad-1)*pieceLen, pieceLen) {
		t.Fatal("after the read: the changed piece should be dropped, the one before it trusted again")
	}
	waitFor(t, 5*time.Second, "the record of the hashed piece", func() bool {
		b, ok := recordedPieces(t, entryDir(s, f.meta), f.meta)
		return ok && b.count() == 1 && b.has(bad-1)
	})

	// Closed now, the cache's record names only what was hashed again;
	// the next Open trusts nothing more, and finds the changed piece bad.
	h.Close()
	s.Close()
	s2 := openStore(t, Config{Dir: dir})
	h2 := handle(t, s2, f.meta, TorrentOptions{})
	if h2.Verified(bad) {
		t.Fatal("the changed piece is trusted after a restart")
	}
	for i := range f.meta.Info.NumPieces() {
		if i != bad && !h2.Verified(i) {
			t.Fatalf("piece %d lost after a restart", i)
		}
	}
	f.put(t, h2, bad)
	if !bytes.Equal(readAll(t, h2), f.content) {
		t.Fatal("bytes differ once the piece was fetched again")
	}
}

// cachedAllButLast caches every piece of a 1 MiB torrent of 64 KiB pieces
// but the last, records them, and waits long enough that a later write
// gets another mtime (file times are kept at the kernel's clock tick).
func cachedAllButLast(t *testing.T) (f *fixture, dir string, s *Store, h *Torrent, last int) {
	f = newFixture(t, 1<<20, 64<<10)
	last = f.meta.Info.NumPieces() - 1
	dir = t.TempDir()
	s = openStore(t, Config{Dir: dir, FlushInterval: time.Hour})
	h = handle(t, s, f.meta, TorrentOptions{})
	for i := range last {
		f.put(t, h, i)
	}
	if err := s.flush(h.e, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	return f, dir, s, h, last
}

// TestOutsideChangeNotTakenForOwnWrite: another program changes a
// verified piece, and the download writes one more piece before the
// flusher looks, as it does many times a second. The write looks first,
// so the change is not taken for the cache's own: the piece is hashed
// before it is read, and no record vouches for it after a restart.
func TestOutsideChangeNotTakenForOwnWrite(t *testing.T) {
	const pieceLen = 64 << 10
	f, dir, s, h, last := cachedAllButLast(t)
	const bad = 3
	w, err := os.OpenFile(filepath.Join(entryDir(s, f.meta), dataName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 100), bad*pieceLen+10); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(5 * time.Millisecond)
	f.put(t, h, last)
	if err := s.flush(h.e, false); err != nil {
		t.Fatal(err)
	}
	if h.OnDisk(bad*pieceLen, pieceLen) {
		t.Errorf("OnDisk vouches for piece %d, changed behind the cache's back", bad)
	}
	buf := make([]byte, pieceLen)
	if _, err := h.ReadAt(buf, bad*pieceLen); !errors.Is(err, ErrChangedOnDisk) {
		t.Fatalf("read of the changed piece: %v", err)
	}
	h.Close()
	s.Close()
	s2 := openStore(t, Config{Dir: dir})
	h2 := handle(t, s2, f.meta, TorrentOptions{})
	if h2.Verified(bad) {
		t.Errorf("after a restart the changed piece %d is trusted", bad)
	}
}

// TestFailedWriteIsTheCachesOwn: a piece write that fails part way (here
// EFBIG from RLIMIT_FSIZE; ENOSPC or EIO likewise) has changed the file's
// mtime. That change is the cache's own: no piece becomes suspect, the
// record names the others, and the next Open trusts them without hashing.
func TestFailedWriteIsTheCachesOwn(t *testing.T) {
	const pieceLen = 64 << 10
	f, dir, s, h, last := cachedAllButLast(t)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(last*pieceLen + 20<<10) // the first 16 KiB chunk goes through
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	werr := h.WritePiece(last, f.piece(last))
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if werr != nil {
		t.Fatalf("WritePiece: %v (kept in memory expected)", werr)
	}
	if st := s.Stats(); st.WriteErrors != 1 {
		t.Fatalf("the write did not fail: %+v", st)
	}
	if err := s.flush(h.e, false); err != nil {
		t.Fatal(err)
	}
	h.e.mu.Lock()
	suspect := h.e.suspect.count()
	h.e.mu.Unlock()
	if suspect != 0 {
		t.Errorf("%d of %d pieces suspect after the cache's own failed write", suspect, last)
	}
	if rec, ok := recordedPieces(t, entryDir(s, f.meta), f.meta); !ok || rec.count() != last {
		t.Errorf("record names %d pieces, want %d", rec.count(), last)
	}
	h.Close()
	s.Close()
	s2 := openStore(t, Config{Dir: dir})
	handle(t, s2, f.meta, TorrentOptions{})
	if r := s2.Stats().Rechecks; r != 0 {
		t.Errorf("the next Open hashed the torrent again (%d rechecks)", r)
	}
}

// TestConcurrentWritesAreTheCachesOwn: pieces written at once, as the
// engine's hash workers write them, never make the cache take its own
// writes for a change behind its back.
func TestConcurrentWritesAreTheCachesOwn(t *testing.T) {
	f := newFixture(t, 4<<20, 16<<10)
	n := f.meta.Info.NumPieces()
	s := openStore(t, Config{Dir: t.TempDir(), FlushInterval: time.Hour})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h, 0)
	const workers = 4
	for i := 1; i+workers <= n; i += workers {
		var wg sync.WaitGroup
		for k := range workers {
			wg.Go(func() {
				if err := h.WritePiece(i+k, f.piece(i+k)); err != nil {
					t.Error(err)
				}
				h.MarkVerified(i + k)
			})
		}
		wg.Wait()
		if m := h.e.checkOutside(); m > 0 {
			t.Fatalf("after concurrent writes of pieces %d..%d: %d pieces made suspect by the cache's own writes", i, i+workers-1, m)
		}
	}
}

// TestOutsideChangeBeforeMarkVerified: the engine writes a piece
// and marks it verified later (a web seed's piece is written by its reader
// and marked by a hash worker after the torrent's loop has taken it). When
// another program changes that piece in between, and the cache looks at
// the file in between (another piece's write, or the flusher), the change
// must not be taken for the cache's own: the piece must not be served,
// nor recorded, with the changed bytes.
func TestOutsideChangeBeforeMarkVerified(t *testing.T) {
	const pieceLen = 64 << 10
	f := newFixture(t, 1<<20, pieceLen)
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, FlushInterval: time.Hour})
	h := handle(t, s, f.meta, TorrentOptions{})
	f.put(t, h, 0, 1)
	if err := s.flush(h.e, false); err != nil {
		t.Fatal(err)
	}
	const target = 2
	if err := h.WritePiece(target, f.piece(target)); err != nil { // written; MarkVerified pending
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // another mtime
	w, err := os.OpenFile(filepath.Join(entryDir(s, f.meta), dataName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(make([]byte, 100), target*pieceLen+10); err != nil {
		t.Fatal(err)
	}
	w.Close()
	time.Sleep(5 * time.Millisecond)
	f.put(t, h, 3) // another piece's write looks at the file first
	if err := h.MarkVerified(target); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, pieceLen)
	_, rerr := h.ReadAt(buf, target*pieceLen)
	if rerr == nil && !bytes.Equal(buf, f.piece(target)) {
		t.Errorf("ReadAt of piece %d served bytes changed behind the cache's back", target)
	} else if rerr != nil && !errors.Is(rerr, ErrChangedOnDisk) {
		t.Fatalf("ReadAt: %v", rerr)
	}
	if h.OnDisk(target*pieceLen, pieceLen) {
		t.Errorf("OnDisk vouches for piece %d (sendfile would serve the changed bytes)", target)
	}
	if err := s.flush(h.e, false); err != nil {
		t.Fatal(err)
	}
	h.Close()
	s.Close()
	s2 := openStore(t, Config{Dir: dir})
	h2 := handle(t, s2, f.meta, TorrentOptions{})
	if h2.Verified(target) {
		got := make([]byte, pieceLen)
		if _, err := h2.ReadAt(got, target*pieceLen); err == nil && !bytes.Equal(got, f.piece(target)) {
			t.Errorf("after a restart piece %d is trusted and read with the changed bytes (rechecks %d)", target, s2.Stats().Rechecks)
		}
	}
}
