//go:build linux

package integration

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/swarm"
)

// TestLSDWithLibtorrent: a libtorrent seed with local service discovery on
// and our engine with LSD on the loopback interface, on BEP 14's group and
// port, find each other with no tracker and no address given, and our
// engine downloads. It uses the standard group and port, which libtorrent
// cannot change, so another LSD speaker on this host could be heard too.
func TestLSDWithLibtorrent(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	dir, content, torrent, m := discoveryFixture(t, 701)
	seed := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: dir, Seed: true, SeedMode: true, LSD: true})
	c, err := swarm.NewClient(swarm.Config{
		ListenAddr: loopback + ":0",
		LSD:        swarm.LSDConfig{Enabled: true, Interface: "lo"},
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	st := newSwarmFileStorage(t, &m.Info)
	tor := addSwarmTorrent(t, c, m, st, swarm.TorrentOptions{NoTrackers: true})
	sAddr := netip.MustParseAddrPort(seed.Addr())
	// Whichever side hears the other's announce first dials: we show the
	// seed as a peer of origin lsd, or as an incoming one.
	var how swarm.Origin
	deadline := time.Now().Add(swarmTransfer)
	for {
		for _, p := range tor.Stats().Peers {
			if p.Origin == swarm.FromLSD || p.Origin == swarm.FromIncoming {
				how = p.Origin
			}
		}
		select {
		case <-tor.Complete():
		default:
			if time.Now().After(deadline) {
				t.Fatalf("not found or not complete: %s; %s", describeStats(tor.Stats()), describeLT("seed", seed))
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	s := tor.Stats()
	switch {
	case s.LSDPeers > 0:
		t.Logf("we heard the libtorrent seed %v announce itself and dialled it", sAddr)
	case how == swarm.FromIncoming:
		t.Logf("the libtorrent seed %v heard our announce and dialled us", sAddr)
	default:
		t.Errorf("complete, but no peer through LSD either way: %s", describeStats(s))
	}
	st.Close()
	sameFile(t, content, st.path)
}
