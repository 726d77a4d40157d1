package choker_test

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/choker"
)

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

// old is a connection time well past the newcomer window.
var old = t0.Add(-time.Hour)

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

// apply returns peers with Choked set from the last round's answer, as the
// engine would after sending the messages.
func apply(peers []choker.Peer, unchoke []int) []choker.Peer {
	out := slices.Clone(peers)
	for i := range out {
		out[i].Choked = !slices.Contains(unchoke, out[i].ID)
	}
	return out
}

func TestLeechingSelection(t *testing.T) {
	p := func(id int, rate float64, mods ...func(*choker.Peer)) choker.Peer {
		peer := choker.Peer{ID: id, Interested: true, DownloadRate: rate, Choked: true, ConnectedAt: old}
		for _, m := range mods {
			m(&peer)
		}
		return peer
	}
	snubbed := func(p *choker.Peer) { p.Snubbed = true }
	uninterested := func(p *choker.Peer) { p.Interested = false }
	unchoked := func(p *choker.Peer) { p.Choked = false }

	tests := []struct {
		name        string
		slots       int
		peers       []choker.Peer
		wantRegular []int
		optimistic  []int // the optimistic unchoke is one of these; empty means none
	}{
		{
			name:  "no peers",
			peers: nil,
		},
		{
			name:        "fewer peers than slots",
			peers:       []choker.Peer{p(1, 10), p(2, 20)},
			wantRegular: []int{1, 2},
		},
		{
			name:        "fastest four plus one optimistic",
			peers:       []choker.Peer{p(1, 10), p(2, 50), p(3, 30), p(4, 40), p(5, 20), p(6, 5), p(7, 1)},
			wantRegular: []int{2, 3, 4, 5},
			optimistic:  []int{1, 6, 7},
		},
		{
			name:        "custom slots",
			slots:       2,
			peers:       []choker.Peer{p(1, 10), p(2, 50), p(3, 30), p(4, 40)},
			wantRegular: []int{2, 4},
			optimistic:  []int{1, 3},
		},
		{
			name:        "snubbed excluded even when fastest",
			peers:       []choker.Peer{p(1, 1000, snubbed), p(2, 10), p(3, 9), p(4, 8), p(5, 7), p(6, 500, snubbed)},
			wantRegular: []int{2, 3, 4, 5},
		},
		{
			name:        "uninterested excluded even when fastest",
			peers:       []choker.Peer{p(1, 1000, uninterested), p(2, 10), p(3, 9), p(4, 8), p(5, 7), p(6, 1, uninterested, unchoked)},
			wantRegular: []int{2, 3, 4, 5},
		},
		{
			name:        "ties go to already unchoked, then lower ID",
			peers:       []choker.Peer{p(9, 0, unchoked), p(1, 0), p(2, 0), p(8, 0, unchoked), p(3, 0)},
			wantRegular: []int{1, 2, 8, 9},
			optimistic:  []int{3},
		},
		{
			name:        "optimistic only among choked peers",
			peers:       []choker.Peer{p(1, 50), p(2, 40), p(3, 30), p(4, 20), p(5, 1, unchoked), p(6, 0)},
			wantRegular: []int{1, 2, 3, 4},
			optimistic:  []int{6},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := choker.New(choker.Config{Slots: tt.slots, Rand: seeded(1)})
			got := c.Round(tt.peers, false, t0)
			if !slices.IsSorted(got) {
				t.Errorf("result %v not sorted", got)
			}
			var extra []int
			for _, id := range got {
				if !slices.Contains(tt.wantRegular, id) {
					extra = append(extra, id)
				}
			}
			for _, id := range tt.wantRegular {
				if !slices.Contains(got, id) {
					t.Fatalf("got %v, missing regular %d", got, id)
				}
			}
			switch {
			case len(tt.optimistic) == 0 && len(extra) != 0:
				t.Fatalf("got %v, unexpected %v", got, extra)
			case len(tt.optimistic) != 0 && (len(extra) != 1 || !slices.Contains(tt.optimistic, extra[0])):
				t.Fatalf("got %v, want one optimistic of %v besides %v", got, tt.optimistic, tt.wantRegular)
			}
		})
	}
}

// leechSwarm is four fast peers that hold the regular slots and six slow
// choked candidates for the optimistic one.
func leechSwarm() []choker.Peer {
	var peers []choker.Peer
	for id := 1; id <= 10; id++ {
		rate := 0.0
		if id <= 4 {
			rate = float64(1000 * id)
		}
		peers = append(peers, choker.Peer{ID: id, Interested: true, DownloadRate: rate, Choked: true, ConnectedAt: old})
	}
	return peers
}

// optimisticOf returns the one unchoked ID above 4.
func optimisticOf(t *testing.T, unchoke []int) int {
	t.Helper()
	if len(unchoke) != 5 || !reflect.DeepEqual(unchoke[:4], []int{1, 2, 3, 4}) {
		t.Fatalf("unchoke %v, want 1..4 plus one optimistic", unchoke)
	}
	return unchoke[4]
}

func TestOptimisticRotation(t *testing.T) {
	tests := []struct {
		name  string
		every int
	}{
		{"default period", 0},
		{"every round", 1},
		{"every five rounds", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			period := tt.every
			if period == 0 {
				period = choker.DefaultOptimisticEvery
			}
			run := func() []int {
				c := choker.New(choker.Config{OptimisticEvery: tt.every, Rand: seeded(42)})
				peers := leechSwarm()
				var seq []int
				for range 10 * period {
					u := c.Round(peers, false, t0)
					seq = append(seq, optimisticOf(t, u))
					peers = apply(peers, u)
				}
				return seq
			}
			seq := run()
			for i := 1; i < len(seq); i++ {
				changed := seq[i] != seq[i-1]
				if due := i%period == 0; changed != due {
					t.Fatalf("round %d: optimistic %d after %d (changed %v, due %v); sequence %v", i, seq[i], seq[i-1], changed, due, seq)
				}
			}
			if again := run(); !reflect.DeepEqual(seq, again) {
				t.Fatalf("same seed gave %v then %v", seq, again)
			}
		})
	}
}

func TestOptimisticReplacedEarly(t *testing.T) {
	tests := []struct {
		name   string
		change func(p *choker.Peer)
	}{
		{"loses interest", func(p *choker.Peer) { p.Interested = false }},
		{"snubbed", func(p *choker.Peer) { p.Snubbed = true }},
		{"earns a regular slot", func(p *choker.Peer) { p.DownloadRate = 1e9 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := choker.New(choker.Config{OptimisticEvery: 100, Rand: seeded(7)})
			peers := leechSwarm()
			u := c.Round(peers, false, t0)
			first := u[len(u)-1]
			peers = apply(peers, u)
			for i := range peers {
				if peers[i].ID == first {
					tt.change(&peers[i])
				}
			}
			u = c.Round(peers, false, t0)
			if len(u) != 5 {
				t.Fatalf("unchoke %v, want five", u)
			}
			opt := -1
			for _, id := range u {
				if id > 4 && id != first {
					opt = id
				}
			}
			if opt < 0 {
				t.Fatalf("unchoke %v: no new optimistic besides %d", u, first)
			}
		})
	}
}

func TestOptimisticDisconnected(t *testing.T) {
	c := choker.New(choker.Config{OptimisticEvery: 100, Rand: seeded(3)})
	peers := leechSwarm()
	u := c.Round(peers, false, t0)
	first := optimisticOf(t, u)
	peers = slices.DeleteFunc(apply(peers, u), func(p choker.Peer) bool { return p.ID == first })
	if second := optimisticOf(t, c.Round(peers, false, t0)); second == first {
		t.Fatalf("disconnected peer %d kept its slot", first)
	}
}

func TestOptimisticStaysWhenAlone(t *testing.T) {
	c := choker.New(choker.Config{OptimisticEvery: 1, Rand: seeded(3)})
	peers := leechSwarm()[:5] // four regulars and one candidate
	for range 5 {
		u := c.Round(peers, false, t0)
		if optimisticOf(t, u) != 5 {
			t.Fatalf("unchoke %v, want 5 to stay optimistic", u)
		}
		peers = apply(peers, u)
	}
}

func TestNewcomerWeighting(t *testing.T) {
	tests := []struct {
		name       string
		connected  time.Time
		wantWeight float64
	}{
		{"connected just now", t0, 3},
		{"connected 59 s ago", t0.Add(-59 * time.Second), 3},
		{"clock skew: connected in the future", t0.Add(time.Second), 3},
		{"connected a minute ago", t0.Add(-time.Minute), 1},
		{"connected an hour ago", old, 1},
		{"zero time", time.Time{}, 1},
	}
	const rounds = 30000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := choker.New(choker.Config{OptimisticEvery: 1, Rand: seeded(2024)})
			peers := leechSwarm()[:8] // candidates 5..8
			peers[4].ConnectedAt = tt.connected
			counts := map[int]int{}
			for range rounds {
				// Not applying the answer keeps every candidate choked, so
				// each round is an independent draw.
				counts[optimisticOf(t, c.Round(peers, false, t0))]++
			}
			others := float64(counts[6]+counts[7]+counts[8]) / 3
			ratio := float64(counts[5]) / others
			if ratio < tt.wantWeight*0.9 || ratio > tt.wantWeight*1.1 {
				t.Fatalf("peer 5 picked %d times, others %.0f on average: ratio %.2f, want about %v", counts[5], others, ratio, tt.wantWeight)
			}
		})
	}
}

// seedSwarm returns n interested peers with distinct upload rates, all
// choked, plus two uninterested ones (IDs 1000 and 1001).
func seedSwarm(n int) []choker.Peer {
	var peers []choker.Peer
	for id := 1; id <= n; id++ {
		peers = append(peers, choker.Peer{ID: id, Interested: true, UploadRate: float64(id * 100), Choked: true, ConnectedAt: old})
	}
	peers = append(peers,
		choker.Peer{ID: 1000, UploadRate: 1e9, Choked: true, ConnectedAt: old},
		choker.Peer{ID: 1001, UploadRate: 1e9, Choked: false, ConnectedAt: old},
	)
	return peers
}

func TestSeedingRoundRobin(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		slots int
		every int
	}{
		{"twelve peers, defaults", 12, 0, 0},
		{"thirty peers, two slots, turns of one round", 30, 2, 1},
		{"seven peers, four slots, turns of four", 7, 4, 4},
		{"fewer peers than slots", 3, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			slots, every := tt.slots, tt.every
			if slots == 0 {
				slots = choker.DefaultSlots
			}
			if every == 0 {
				every = choker.DefaultOptimisticEvery
			}
			k := slots + 1
			window := (tt.n + k - 1) / k * every // ceil(N/(Slots+1)) turns
			c := choker.New(choker.Config{Slots: tt.slots, OptimisticEvery: tt.every, Rand: seeded(5)})
			peers := seedSwarm(tt.n)
			var history [][]int
			for range 10 * window {
				u := c.Round(peers, true, t0)
				if len(u) != min(k, tt.n) {
					t.Fatalf("round %d unchoked %v, want %d peers", len(history), u, min(k, tt.n))
				}
				for _, id := range u {
					if id >= 1000 {
						t.Fatalf("uninterested peer %d unchoked", id)
					}
				}
				history = append(history, u)
				peers = apply(peers, u)
			}
			// Every peer is unchoked at least once in every window.
			for start := 0; start+window <= len(history); start++ {
				seen := map[int]bool{}
				for _, u := range history[start : start+window] {
					for _, id := range u {
						seen[id] = true
					}
				}
				if len(seen) != tt.n {
					t.Fatalf("rounds %d..%d unchoked only %d of %d peers: %v", start, start+window-1, len(seen), tt.n, history[start:start+window])
				}
			}
			// A turn lasts exactly `every` rounds when, at every turn's
			// end, enough peers are waiting to take all the slots.
			if tt.n >= 2*k {
				for id := 1; id <= tt.n; id++ {
					run := 0
					for _, u := range history {
						if slices.Contains(u, id) {
							run++
							continue
						}
						if run != 0 && run != every {
							t.Fatalf("peer %d unchoked for %d rounds in a row, want %d", id, run, every)
						}
						run = 0
					}
				}
			}
		})
	}
}

func TestSeedingPrefersFastAndRecent(t *testing.T) {
	c := choker.New(choker.Config{Slots: 1, Rand: seeded(1)})
	peers := seedSwarm(4) // rates 100..400
	// First round: everyone waiting equally, so the fastest two win.
	u := c.Round(peers, true, t0)
	if !reflect.DeepEqual(u, []int{3, 4}) {
		t.Fatalf("first round %v, want [3 4]", u)
	}
	peers = apply(peers, u)
	// Peers in their turn keep it even if a waiting peer became faster.
	peers[0].UploadRate = 1e6
	if u = c.Round(peers, true, t0); !reflect.DeepEqual(u, []int{3, 4}) {
		t.Fatalf("second round %v, want [3 4] to keep their turn", u)
	}
	peers = apply(peers, u)
	c.Round(peers, true, t0)
	// Turn over: the waiting peers take over, then the first two return.
	if u = c.Round(peers, true, t0); !reflect.DeepEqual(u, []int{1, 2}) {
		t.Fatalf("fourth round %v, want [1 2]", u)
	}
}

func TestSeedingKeepsFastestWhenNobodyWaits(t *testing.T) {
	c := choker.New(choker.Config{Slots: 1, OptimisticEvery: 1, Rand: seeded(1)})
	peers := seedSwarm(3)
	u := c.Round(peers, true, t0)
	if !reflect.DeepEqual(u, []int{2, 3}) {
		t.Fatalf("first round %v, want [2 3]", u)
	}
	peers = apply(peers, u)
	// Peer 1 waits; one expired peer gives way, and the faster stays.
	if u = c.Round(peers, true, t0); !reflect.DeepEqual(u, []int{1, 3}) {
		t.Fatalf("second round %v, want [1 3]", u)
	}
}

func TestUninterestedNeverUnchoked(t *testing.T) {
	modes := []struct {
		name    string
		cfg     choker.Config
		seeding bool
	}{
		{"leeching", choker.Config{}, false},
		{"seeding", choker.Config{}, true},
		{"unlimited", choker.Config{Unlimited: true}, false},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			m.cfg.Rand = seeded(9)
			c := choker.New(m.cfg)
			var peers []choker.Peer
			for id := 1; id <= 20; id++ {
				peers = append(peers, choker.Peer{
					ID: id, Interested: id%2 == 0, DownloadRate: float64(id), UploadRate: float64(id),
					Choked: id%3 == 0, ConnectedAt: t0,
				})
			}
			for round := range 50 {
				u := c.Round(peers, m.seeding, t0)
				for _, id := range u {
					if id%2 != 0 {
						t.Fatalf("round %d: uninterested peer %d unchoked", round, id)
					}
				}
				peers = apply(peers, u)
			}
		})
	}
}

func TestUnlimited(t *testing.T) {
	tests := []struct {
		name    string
		seeding bool
	}{{"leeching", false}, {"seeding", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := choker.New(choker.Config{Unlimited: true, Slots: 1})
			peers := []choker.Peer{
				{ID: 5, Interested: true, Choked: true},
				{ID: 3, Interested: true, Snubbed: true, Choked: false},
				{ID: 4, Interested: false, Choked: false},
				{ID: 1, Interested: true, DownloadRate: 10},
				{ID: 2, Interested: true, UploadRate: 10},
				{ID: 1, Interested: false}, // a repeated ID is ignored
			}
			if got := c.Round(peers, tt.seeding, t0); !reflect.DeepEqual(got, []int{1, 2, 3, 5}) {
				t.Fatalf("got %v, want [1 2 3 5]", got)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	if got := choker.New(choker.Config{}).Interval(); got != 10*time.Second {
		t.Errorf("default Interval %v", got)
	}
	if got := choker.New(choker.Config{Interval: time.Second}).Interval(); got != time.Second {
		t.Errorf("Interval %v", got)
	}
	// A nil Rand still works.
	if got := choker.New(choker.Config{}).Round(leechSwarm(), false, t0); len(got) != 5 {
		t.Errorf("unchoke %v, want five", got)
	}
}

// TestSeedingFairnessBound checks the bound documented on Round over many
// random configurations, with upload rates that change every round.
func TestSeedingFairnessBound(t *testing.T) {
	rng := seeded(77)
	for trial := range 300 {
		n, slots, every := 1+rng.IntN(40), 1+rng.IntN(6), 1+rng.IntN(5)
		k := slots + 1
		window := (n + k - 1) / k * every
		c := choker.New(choker.Config{Slots: slots, OptimisticEvery: every, Rand: seeded(uint64(trial))})
		peers := seedSwarm(n)
		var history [][]int
		for range 6 * window {
			for i := range peers {
				peers[i].UploadRate = float64(rng.IntN(1000))
			}
			u := c.Round(peers, true, t0)
			history = append(history, u)
			peers = apply(peers, u)
		}
		for start := 0; start+window <= len(history); start++ {
			seen := map[int]bool{}
			for _, u := range history[start : start+window] {
				for _, id := range u {
					seen[id] = true
				}
			}
			if len(seen) != n {
				t.Fatalf("n=%d slots=%d every=%d: rounds %d..%d unchoked %d peers", n, slots, every, start, start+window-1, len(seen))
			}
		}
	}
}

func TestSeedingNewcomerWaitsItsTurn(t *testing.T) {
	c := choker.New(choker.Config{Slots: 1, OptimisticEvery: 1, Rand: seeded(1)})
	peers := seedSwarm(4)[:4]
	u := c.Round(peers, true, t0) // [3 4]; 1 and 2 wait
	peers = apply(peers, u)
	peers = append(peers, choker.Peer{ID: 5, Interested: true, UploadRate: 1e9, Choked: true, ConnectedAt: t0})
	if u = c.Round(peers, true, t0); !reflect.DeepEqual(u, []int{1, 2}) {
		t.Fatalf("got %v, want the longer-waiting [1 2] before newcomer 5", u)
	}
	peers = apply(peers, u)
	if u = c.Round(peers, true, t0); !slices.Contains(u, 5) {
		t.Fatalf("got %v, want newcomer 5 in the next turn", u)
	}
}
