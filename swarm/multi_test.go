package swarm

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestManyTorrentsBetweenTwoClients: one client seeds several torrents,
// another streams them all at once, one connection each. Every stream
// completes (the scale bench once saw one stall: its pieces found the
// shared hash queue full and were never submitted). With a tight
// PieceMemory the leech keeps its piece buffers near it and still
// completes.
func TestManyTorrentsBetweenTwoClients(t *testing.T) {
	t.Run("default", func(t *testing.T) { manyTorrents(t, 0) })
	t.Run("tight-memory", func(t *testing.T) { manyTorrents(t, 1<<20) })
}

func manyTorrents(t *testing.T, pieceMemory int64) {
	const n, pieceLen = 6, 256 << 10
	seed := newClient(t, Config{})
	leech := newClient(t, Config{PieceMemory: pieceMemory})
	var fixtures []*fixture
	var tors, seeds []*Torrent
	for range n {
		f := newFixture(t, 16<<20, pieceLen)
		stor := f.seedOn(t, seed, TorrentOptions{})
		tor, err := leech.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, Lazy: true})
		if err != nil {
			t.Fatal(err)
		}
		fixtures = append(fixtures, f)
		seeds = append(seeds, stor)
		tors = append(tors, tor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var peak int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				peak = max(peak, leech.pieceMem.Load())
			case <-stop:
				return
			}
		}
	})
	var wg sync.WaitGroup
	for i, tor := range tors {
		tor.AddPeers(netip.MustParseAddrPort(seed.Addr().String()))
		wg.Go(func() {
			r := tor.NewReader(ctx)
			defer r.Close()
			got, err := io.ReadAll(r)
			switch {
			case err != nil:
				t.Errorf("torrent %d: %v; leech %+v; seed %+v", i, err, tor.Stats().Peers, seeds[i].Stats().Peers)
			case !bytes.Equal(got, fixtures[i].content):
				t.Errorf("torrent %d: streamed %d bytes that differ from the %d expected", i, len(got), len(fixtures[i].content))
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	t.Logf("peak piece memory %d KiB", peak>>10)
	if pieceMemory > 0 {
		// Each torrent may start one piece past the budget, and one more
		// when it has none started.
		if limit := pieceMemory + 2*n*pieceLen; peak > limit {
			t.Errorf("piece memory peaked at %d bytes, past %d", peak, limit)
		}
	}
	for _, tor := range tors {
		tor.Close()
	}
	if m := leech.pieceMem.Load(); m != 0 {
		t.Errorf("closed torrents leave %d bytes of piece memory charged", m)
	}
}
