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
// another streams them all at once over one connection each. Every
// stream completes (the scale bench once saw the fourth stall).
func TestManyTorrentsBetweenTwoClients(t *testing.T) {
	const n = 6
	seed := newClient(t, Config{})
	leech := newClient(t, Config{})
	var fixtures []*fixture
	var tors, seeds []*Torrent
	for range n {
		f := newFixture(t, 16<<20, 256<<10)
		st := NewMemoryStorage(&f.meta.Info)
		if err := st.Fill(bytes.NewReader(f.content)); err != nil {
			t.Fatal(err)
		}
		stor, err := seed.AddTorrent(f.meta, st, TorrentOptions{NoTrackers: true})
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, stor)
		tor, err := leech.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, Lazy: true})
		if err != nil {
			t.Fatal(err)
		}
		fixtures = append(fixtures, f)
		tors = append(tors, tor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
}
