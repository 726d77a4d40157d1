package swarm

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestSuperSeedSpendsUploadOnce: lazy leeches stream a torrent at once
// from a super-seed and from each other. Each gets the right bytes, and
// the seed uploads far less than a copy each. A lone leech streams all
// 128 pieces: offers it took up in full never block new ones.
func TestSuperSeedSpendsUploadOnce(t *testing.T) {
	for _, n := range []int{1, 4} {
		t.Run(strconv.Itoa(n), func(t *testing.T) { superSeedRun(t, n) })
	}
}

func superSeedRun(t *testing.T, n int) {
	f := newFixture(t, 8<<20, 64<<10)
	seed := newClient(t, Config{})
	stor := f.seedOn(t, seed, TorrentOptions{SuperSeed: true})
	var clients []*Client
	for range n {
		clients = append(clients, newClient(t, Config{}))
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, c := range clients {
		tor, err := c.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true, Lazy: true})
		if err != nil {
			t.Fatal(err)
		}
		addrs := []netip.AddrPort{addrOf(seed)}
		for _, o := range clients[:i] {
			addrs = append(addrs, addrOf(o))
		}
		tor.AddPeers(addrs...)
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r := tor.NewReader(ctx)
			defer r.Close()
			got, err := io.ReadAll(r)
			if err == nil && !bytes.Equal(got, f.content) {
				err = io.ErrShortWrite
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("leech %d: %v", i, err)
		}
	}
	up := stor.Stats().Uploaded
	t.Logf("the super-seed uploaded %.2f copies for %d leeches", float64(up)/float64(len(f.content)), n)
	if up > int64(min(n, 2)*len(f.content)) {
		t.Fatalf("the super-seed uploaded %d bytes, more than two copies of %d", up, len(f.content))
	}
}

// TestSuperSeedHearsOfPiecesFromOthers: a leech that takes an offered
// piece from another seed still announces it to the super-seed, which
// otherwise holds the offer (and its slot) until it goes stale, and never
// learns that the leech finished.
func TestSuperSeedHearsOfPiecesFromOthers(t *testing.T) {
	f := newFixture(t, 4<<20, 64<<10)
	super := newClient(t, Config{})
	superTor := f.seedOn(t, super, TorrentOptions{SuperSeed: true})
	plain, _ := f.seed(t)
	leech := newClient(t, Config{})
	tor, err := leech.AddTorrent(f.meta, NewMemoryStorage(&f.meta.Info), TorrentOptions{NoTrackers: true})
	if err != nil {
		t.Fatal(err)
	}
	tor.AddPeers(addrOf(super), addrOf(plain))
	select {
	case <-tor.Complete():
	case <-time.After(30 * time.Second):
		t.Fatal("the download did not complete")
	}
	// The super-seed knows the leech has every piece once it heard of each:
	// then the two are seeds, and it lets the leech go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		lacking := -1
		superTor.do(func() { lacking = superTor.leeches() })
		if lacking == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the super-seed still counts %d peer(s) lacking pieces after the leech completed", lacking)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := superTor.Stats()
	t.Logf("the super-seed uploaded %d of %d bytes", st.Uploaded, len(f.content))
}
