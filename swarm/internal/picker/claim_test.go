package picker

import "testing"

func TestClaim(t *testing.T) {
	p := newTest(t, 4, 4)
	p.SetWantedAll()
	web, peer := PeerID(1), PeerID(2)
	p.AddPeer(web)
	p.PeerHaveAll(web)
	p.AddPeer(peer)
	p.PeerHaveAll(peer)

	// A fresh piece is claimed whole.
	if !p.Untouched(0) {
		t.Fatal("fresh piece not untouched")
	}
	got := p.Claim(web, 0, nil)
	if len(got) != 4 || p.Untouched(0) || p.InFlight(web) != 4 {
		t.Fatalf("claimed %v, in flight %d", got, p.InFlight(web))
	}
	ok(t, p)

	// Ordinary picking skips claimed blocks.
	for _, b := range p.Pick(peer, 8, nil) { // short of endgame
		if b.Piece == 0 {
			t.Fatalf("picked claimed block %v", b)
		}
	}
	ok(t, p)

	// A piece partly requested elsewhere: only the free blocks are claimed.
	p.Rejected(peer, blk(1, 0))
	p.Rejected(peer, blk(1, 1))
	got = p.Claim(web, 1, nil)
	if len(got) != 2 || got[0] != blk(1, 0) || got[1] != blk(1, 1) {
		t.Fatalf("claimed %v from a split piece", got)
	}
	ok(t, p)

	// The claimant's blocks complete the piece like any peer's.
	var done bool
	for k := range 4 {
		var accepted bool
		accepted, done, _ = p.Received(web, blk(0, k))
		if !accepted {
			t.Fatalf("block %d refused", k)
		}
	}
	if !done {
		t.Fatal("piece not done")
	}
	p.Verified(0)
	if got := p.Claim(web, 0, nil); len(got) != 0 || p.Wanted(0) && p.Untouched(0) {
		t.Fatalf("claimed %v of a piece we have", got)
	}
	ok(t, p)
}

func TestLost(t *testing.T) {
	p := newTest(t, 4, 2)
	peer := PeerID(1)
	p.AddPeer(peer)
	p.PeerBitfield(peer, bf(4, 0, 1))
	p.SetHave(0)
	p.SetHave(1)
	ok(t, p)
	if p.Interesting(peer) {
		t.Fatal("interested in a peer with nothing new")
	}
	p.Lost(0)
	ok(t, p)
	if p.Have(0) || !p.Interesting(peer) {
		t.Fatal("a lost piece is not wanted again")
	}
	got := p.Pick(peer, 10, nil)
	if len(got) != 2 || got[0].Piece != 0 {
		t.Fatalf("picked %v, want piece 0 again", got)
	}
	ok(t, p)
	p.Lost(3) // not ours: nothing happens
	ok(t, p)
}

// TestClaimSolo: the endgame duplicates a Claim's blocks to other peers,
// but not a ClaimSolo's, until the claimant releases them.
func TestClaimSolo(t *testing.T) {
	for _, solo := range []bool{false, true} {
		p := New(Config{PieceLength: 4 * bs, TotalLength: 8 * bs})
		p.SetWantedAll()
		web, a, b := PeerID(1), PeerID(2), PeerID(3)
		for _, id := range []PeerID{web, a, b} {
			p.AddPeer(id)
			p.PeerHaveAll(id)
		}
		claim := p.Claim
		if solo {
			claim = p.ClaimSolo
		}
		if got := claim(web, 0, nil); len(got) != 4 {
			t.Fatalf("claimed %v", got)
		}
		if got := p.Pick(a, 4, nil); len(got) != 4 || got[0].Piece != 1 {
			t.Fatalf("peer a picked %v, want piece 1", got)
		}
		ok(t, p)
		// Endgame: every block is in flight.
		dupsOf0 := 0
		for _, blk := range p.Pick(b, all, nil) {
			if blk.Piece == 0 {
				dupsOf0++
			}
		}
		if want := map[bool]int{false: 4, true: 0}[solo]; dupsOf0 != want {
			t.Fatalf("solo %v: %d endgame duplicates of the claimed piece, want %d", solo, dupsOf0, want)
		}
		ok(t, p)
		if !solo {
			continue
		}
		// Released, the piece is anyone's again.
		p.Release(web)
		got := p.Pick(b, all, nil)
		if len(got) != 4 || got[0].Piece != 0 {
			t.Fatalf("after the release peer b picked %v, want piece 0", got)
		}
		ok(t, p)
	}
}
