package server

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/tracker"
)

func v4peer(n int) Peer {
	return Peer{ID: idN(n), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), 6881)}
}

func v6peer(n int) Peer {
	a := netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", n))
	return Peer{ID: idN(1_000_000 + n), Addr: netip.AddrPortFrom(a, 6881)}
}

func newTestStore(cfg MemoryConfig) *MemoryStore {
	cfg.Rand = rand.NewPCG(1, 2)
	return NewMemoryStore(cfg)
}

// checkInvariants verifies every swarm's list, index and counts.
func checkInvariants(t *testing.T, s *MemoryStore) {
	t.Helper()
	torrents, peers := 0, 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n := 0
		for sw := sh.newest; sw != nil; sw = sw.older {
			n++
			if sh.swarms[sw.ih] != sw {
				t.Errorf("swarm on list not in map")
			}
		}
		if n != len(sh.swarms) {
			t.Errorf("shard %d: list %d swarms, map %d", i, n, len(sh.swarms))
		}
		for _, sw := range sh.swarms {
			torrents++
			peers += len(sw.entries)
			if len(sw.index) != len(sw.entries) {
				t.Errorf("index %d, entries %d", len(sw.index), len(sw.entries))
			}
			seeds, m := 0, 0
			for j := sw.newest; j >= 0; j = sw.entries[j].older {
				m++
				if m > len(sw.entries) {
					t.Fatal("peer list cycles")
				}
			}
			if m != len(sw.entries) {
				t.Errorf("peer list %d, entries %d", m, len(sw.entries))
			}
			for j, e := range sw.entries {
				if sw.index[e.key] != int32(j) {
					t.Errorf("index of entry %d is %d", j, sw.index[e.key])
				}
				if e.seed {
					seeds++
				}
			}
			if seeds != sw.seeders {
				t.Errorf("seeders %d, counted %d", sw.seeders, seeds)
			}
		}
		sh.mu.Unlock()
	}
	if gt, gp := s.Len(); gt != torrents || gp != peers {
		t.Errorf("Len() = %d, %d; counted %d, %d", gt, gp, torrents, peers)
	}
}

func TestMemoryStoreAnnounce(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	ih := hashN(1)
	type step struct {
		peer       Peer
		ev         tracker.Event
		want       int
		fam        Family
		complete   int
		incomplete int
		downloaded int
		nPeers     int
	}
	seed := func(p Peer) Peer { p.Seed = true; return p }
	tests := []struct {
		name  string
		steps []step
	}{
		{name: "first peer sees nobody", steps: []step{
			{peer: v4peer(1), ev: tracker.Started, want: 50, incomplete: 1, nPeers: 0},
		}},
		{name: "second sees first", steps: []step{
			{peer: v4peer(1), ev: tracker.Started, want: 50, incomplete: 1},
			{peer: seed(v4peer(2)), ev: tracker.Started, want: 50, complete: 1, incomplete: 1, nPeers: 1},
		}},
		{name: "re-announce does not duplicate", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: v4peer(2), want: 50, incomplete: 2, nPeers: 1},
		}},
		{name: "completed counts once", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: seed(v4peer(1)), ev: tracker.Completed, want: 50, complete: 1, downloaded: 1},
			{peer: seed(v4peer(1)), ev: tracker.Completed, want: 50, complete: 1, downloaded: 1},
		}},
		{name: "stopped removes", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: v4peer(2), want: 50, incomplete: 2, nPeers: 1},
			{peer: v4peer(1), ev: tracker.Stopped, want: 50, incomplete: 1},
			{peer: v4peer(3), want: 50, incomplete: 2, nPeers: 1},
		}},
		{name: "stopped unknown torrent", steps: []step{
			{peer: v4peer(1), ev: tracker.Stopped, want: 50},
		}},
		{name: "numwant zero", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: v4peer(2), want: 0, incomplete: 2},
		}},
		{name: "numwant caps", steps: []step{
			{peer: v4peer(1), want: 1, incomplete: 1},
			{peer: v4peer(2), want: 1, incomplete: 2, nPeers: 1},
			{peer: v4peer(3), want: 1, incomplete: 3, nPeers: 1},
			{peer: v4peer(4), want: 2, incomplete: 4, nPeers: 2},
		}},
		{name: "family filter", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: v6peer(1), want: 50, incomplete: 2, nPeers: 1},
			{peer: v6peer(2), want: 50, fam: FamilyIPv6, incomplete: 3, nPeers: 1},
			{peer: v4peer(2), want: 50, fam: FamilyIPv4, incomplete: 4, nPeers: 1},
			{peer: v4peer(3), want: 50, fam: FamilyAny, incomplete: 5, nPeers: 4},
		}},
		{name: "same peer id elsewhere is not returned", steps: []step{
			{peer: v4peer(1), want: 50, incomplete: 1},
			{peer: Peer{ID: idN(1), Addr: v6peer(9).Addr}, want: 50, incomplete: 2, nPeers: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(MemoryConfig{})
			for i, st := range tt.steps {
				peers, c, err := s.Announce(Announce{InfoHash: ih, Peer: st.peer, Event: st.ev, NumWant: st.want, Family: st.fam}, now, nil)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if c.Complete != st.complete || c.Incomplete != st.incomplete || c.Downloaded != st.downloaded {
					t.Errorf("step %d: counts %+v, want complete %d incomplete %d downloaded %d", i, c, st.complete, st.incomplete, st.downloaded)
				}
				if len(peers) != st.nPeers {
					t.Errorf("step %d: %d peers, want %d", i, len(peers), st.nPeers)
				}
				for _, p := range peers {
					if p.Addr == st.peer.Addr || p.ID == st.peer.ID {
						t.Errorf("step %d: announcing peer returned to itself", i)
					}
					if st.fam == FamilyIPv4 && !p.Addr.Addr().Is4() || st.fam == FamilyIPv6 && p.Addr.Addr().Is4() {
						t.Errorf("step %d: peer %v of the wrong family", i, p.Addr)
					}
				}
				checkInvariants(t, s)
			}
		})
	}
}

func TestMemoryStoreSampleDistinct(t *testing.T) {
	s := newTestStore(MemoryConfig{})
	now := time.Unix(1_700_000_000, 0)
	ih := hashN(1)
	for i := range 1000 {
		s.Announce(Announce{InfoHash: ih, Peer: v4peer(i), NumWant: 0}, now, nil)
	}
	seen := map[netip.AddrPort]int{}
	for round := range 200 {
		me := v4peer(round)
		peers, _, _ := s.Announce(Announce{InfoHash: ih, Peer: me, NumWant: 50}, now, nil)
		if len(peers) != 50 {
			t.Fatalf("%d peers", len(peers))
		}
		uniq := map[netip.AddrPort]bool{}
		for _, p := range peers {
			if uniq[p.Addr] {
				t.Fatalf("peer %v twice in one reply", p.Addr)
			}
			if p.Addr == me.Addr {
				t.Fatal("self returned")
			}
			uniq[p.Addr] = true
			seen[p.Addr]++
		}
	}
	// 200 samples of 50 out of 1000 reach nearly all peers.
	if len(seen) < 900 {
		t.Errorf("only %d of 1000 peers ever sampled", len(seen))
	}
	checkInvariants(t, s)
}

func TestMemoryStoreExpiry(t *testing.T) {
	clock := newClock()
	s := newTestStore(MemoryConfig{TTL: time.Minute})
	a, b := hashN(1), hashN(2)
	ann := func(ih [20]byte, p Peer) ([]Peer, tracker.ScrapeResponse) {
		peers, c, err := s.Announce(Announce{InfoHash: ih, Peer: p, NumWant: 50}, clock.Now(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return peers, c
	}
	ann(a, v4peer(1))
	ann(b, v4peer(1))
	clock.Advance(40 * time.Second)
	ann(a, v4peer(2))
	clock.Advance(30 * time.Second) // peer 1 is 70 s old, peer 2 30 s
	if peers, c := ann(a, v4peer(3)); len(peers) != 1 || peers[0].Addr != v4peer(2).Addr || c.Incomplete != 2 {
		t.Errorf("after expiry: peers %v, counts %+v", peers, c)
	}
	// Swarm b had no announce for 70 s: the announce on a, same shard or
	// not, or a scrape, must not report it.
	if _, ok := s.Scrape(b, clock.Now()); ok {
		t.Error("expired swarm still scraped")
	}
	checkInvariants(t, s)
	clock.Advance(2 * time.Minute)
	if n := s.Expire(clock.Now()); n != 2 {
		t.Errorf("Expire dropped %d peers, want 2", n)
	}
	if tor, p := s.Len(); tor != 0 || p != 0 {
		t.Errorf("after Expire: %d torrents, %d peers", tor, p)
	}
	checkInvariants(t, s)
}

func TestMemoryStoreExpireSwarmsOnAnnounce(t *testing.T) {
	clock := newClock()
	s := newTestStore(MemoryConfig{TTL: time.Minute})
	// Many swarms that all go idle; one announce per shard afterwards
	// reclaims them without a sweep.
	for i := range 1000 {
		s.Announce(Announce{InfoHash: hashN(i), Peer: v4peer(i)}, clock.Now(), nil)
	}
	clock.Advance(2 * time.Minute)
	for i := range 256 {
		var ih [20]byte
		ih[0] = byte(i)
		s.Announce(Announce{InfoHash: ih, Peer: v4peer(1)}, clock.Now(), nil)
	}
	if tor, p := s.Len(); tor != 256 || p != 256 {
		t.Errorf("%d torrents, %d peers; want 256, 256", tor, p)
	}
	checkInvariants(t, s)
}

func TestMemoryStoreCaps(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	t.Run("torrents", func(t *testing.T) {
		s := newTestStore(MemoryConfig{MaxTorrents: 100})
		full := 0
		for i := range 100_000 {
			_, _, err := s.Announce(Announce{InfoHash: hashN(i), Peer: v4peer(i)}, now, nil)
			if errors.Is(err, ErrFull) {
				full++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if tor, p := s.Len(); tor != 100 || p != 100 || full != 100_000-100 {
			t.Errorf("%d torrents, %d peers, %d refused", tor, p, full)
		}
		// A known torrent still takes announces.
		if _, _, err := s.Announce(Announce{InfoHash: hashN(0), Peer: v4peer(5)}, now, nil); err != nil {
			t.Error(err)
		}
		checkInvariants(t, s)
	})
	t.Run("peers per torrent evicts oldest", func(t *testing.T) {
		s := newTestStore(MemoryConfig{MaxPeersPerTorrent: 50})
		ih := hashN(1)
		clock := newClock()
		for i := range 100_000 {
			clock.Advance(time.Millisecond)
			if _, _, err := s.Announce(Announce{InfoHash: ih, Peer: v4peer(i)}, clock.Now(), nil); err != nil {
				t.Fatal(err)
			}
		}
		if tor, p := s.Len(); tor != 1 || p != 50 {
			t.Errorf("%d torrents, %d peers", tor, p)
		}
		peers, _, _ := s.Announce(Announce{InfoHash: ih, Peer: v4peer(99_999), NumWant: 100}, clock.Now(), nil)
		for _, p := range peers {
			if n, _ := strconv.Atoi(string(p.ID[8:])); n < 99_950 { // the newest 50 survive
				t.Errorf("old peer %q survived", p.ID)
			}
		}
		checkInvariants(t, s)
	})
	t.Run("peers in all", func(t *testing.T) {
		s := newTestStore(MemoryConfig{MaxPeers: 1000})
		full := 0
		for i := range 100_000 {
			_, _, err := s.Announce(Announce{InfoHash: hashN(i % 500), Peer: v4peer(i)}, now, nil)
			if errors.Is(err, ErrFull) {
				full++
			}
		}
		if tor, p := s.Len(); tor != 500 || p != 1000 || full != 99_000 {
			t.Errorf("%d torrents, %d peers, %d refused", tor, p, full)
		}
		checkInvariants(t, s)
	})
	t.Run("full with a new torrent leaves nothing behind", func(t *testing.T) {
		s := newTestStore(MemoryConfig{MaxPeers: 1})
		s.Announce(Announce{InfoHash: hashN(1), Peer: v4peer(1)}, now, nil)
		if _, _, err := s.Announce(Announce{InfoHash: hashN(2), Peer: v4peer(2)}, now, nil); !errors.Is(err, ErrFull) {
			t.Errorf("got %v", err)
		}
		if tor, p := s.Len(); tor != 1 || p != 1 {
			t.Errorf("%d torrents, %d peers", tor, p)
		}
		checkInvariants(t, s)
	})
}

// TestMemoryStoreRandomOps mixes announces, stops, expiry and eviction and
// checks the structure after each step.
func TestMemoryStoreRandomOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	clock := newClock()
	s := newTestStore(MemoryConfig{MaxPeersPerTorrent: 20, MaxTorrents: 8, MaxPeers: 100, TTL: 10 * time.Second})
	for i := range 20_000 {
		clock.Advance(time.Duration(rng.IntN(100)) * time.Millisecond)
		ev := []tracker.Event{tracker.None, tracker.Started, tracker.Completed, tracker.Stopped}[rng.IntN(4)]
		p := v4peer(rng.IntN(60))
		p.Seed = rng.IntN(2) == 0
		ih := hashN(rng.IntN(12))
		s.Announce(Announce{InfoHash: ih, Peer: p, Event: ev, NumWant: rng.IntN(30)}, clock.Now(), nil)
		if rng.IntN(50) == 0 {
			s.Scrape(ih, clock.Now())
		}
		if rng.IntN(500) == 0 {
			s.Expire(clock.Now())
		}
		if i%97 == 0 {
			checkInvariants(t, s)
			if t.Failed() {
				t.Fatalf("after step %d", i)
			}
		}
	}
	checkInvariants(t, s)
}
