//go:build linux

package integration

// Interop tests for peer discovery in package swarm: peer exchange (BEP 11,
// ut_pex) in both directions with python3-libtorrent, on 127.0.0.1.

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

const (
	discoveryFileSize = 8 << 20
	discoveryPieceLen = 256 << 10
	// discoveryWait bounds how long a peer may take to be learned and
	// connected: libtorrent sends its first ut_pex message within a few
	// seconds of a second peer connecting.
	discoveryWait = 30 * time.Second
)

// discoveryFixture writes an 8 MiB payload and its torrent (no trackers).
func discoveryFixture(t *testing.T, seed int64) (dir, content, torrent string, m *metainfo.MetaInfo) {
	t.Helper()
	dir = t.TempDir()
	content = makeContent(t, dir, swarmFileName, discoveryFileSize, seed)
	torrent, m = makeTorrent(t, content, discoveryPieceLen, nil)
	return dir, content, torrent, m
}

// waitUntil polls cond every 100 ms until it holds, failing the test with
// what() after d.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func describeLT(name string, l *LTPeer) string {
	var b strings.Builder
	s := l.LastStatus()
	b.WriteString(name + ": " + s.State)
	for _, p := range s.Peers {
		b.WriteString(" " + hostPort(p.Port))
		if p.Source&LTSourcePEX != 0 {
			b.WriteString("(pex)")
		}
	}
	return b.String()
}

// TestPEXFromLibtorrent: a libtorrent seed A is connected to a slow
// libtorrent leech B (B dialled A and told it its port: when A dialled B
// through connect_peer instead, libtorrent 2.0.8 was seen to leave B out
// of its messages). Our engine C, given only A's address,
// learns B's address from A's ut_pex message, dials B, and downloads. C
// starts lazy, fetching nothing, so that it is still a leech connected to
// A when A's message comes (two seeds part).
func TestPEXFromLibtorrent(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	dir, content, torrent, m := discoveryFixture(t, 601)
	// B stays a leech for the whole test: 8 MiB at 100 kB/s.
	a := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: dir, Seed: true, SeedMode: true, PEX: true})
	b := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: t.TempDir(), DownloadLimit: 100_000, Peers: []string{a.Addr()}})
	waitUntil(t, discoveryWait, func() bool { return len(a.LastStatus().Peers) == 1 },
		func() string { return "A never connected to B; " + describeLT("A", a) })

	c, cAddr := newSwarmClient(t)
	t.Logf("A %s, B %s, our engine C %v", a.Addr(), b.Addr(), cAddr)
	st := newSwarmFileStorage(t, &m.Info)
	tor := addSwarmTorrent(t, c, m, st, swarm.TorrentOptions{NoTrackers: true, Lazy: true})
	aAddr, bAddr := netip.MustParseAddrPort(a.Addr()), netip.MustParseAddrPort(b.Addr())
	tor.AddPeers(aAddr)
	var viaPEX swarm.PeerStats
	waitUntil(t, discoveryWait, func() bool {
		for _, p := range tor.Stats().Peers {
			if p.Addr == bAddr && p.Origin == swarm.FromPEX && p.Outgoing {
				viaPEX = p
				return true
			}
		}
		return false
	}, func() string {
		return "our engine never dialled B through PEX: " + describeStats(tor.Stats()) + "; " + describeLT("A", a)
	})
	s := tor.Stats()
	t.Logf("connected to B %v (%q) learned through ut_pex; %d messages taken, %d addresses learned", viaPEX.Addr, viaPEX.Client, s.PEXReceived, s.PEXPeers)
	if s.PEXReceived < 1 || s.PEXPeers < 1 {
		t.Errorf("PEX counters: %d messages taken, %d addresses learned", s.PEXReceived, s.PEXPeers)
	}
	tor.DownloadAll()
	select {
	case <-tor.Complete():
	case <-time.After(swarmTransfer):
		t.Fatalf("download not complete: %s", describeStats(tor.Stats()))
	}
	if s := tor.Stats(); s.HashFailures != 0 || s.BytesVerified != discoveryFileSize {
		t.Errorf("after the download: %s", describeStats(s))
	}
	st.Close()
	sameFile(t, content, st.path)
}

// TestPEXToLibtorrent: our engine C is connected to a libtorrent seed S.
// A libtorrent leech L, given only C's address, learns S's address from
// C's ut_pex message, connects to S, and downloads everything from it (C
// fetches nothing: its torrent is lazy and has no reader).
func TestPEXToLibtorrent(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	dir, content, torrent, m := discoveryFixture(t, 602)
	s := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: dir, Seed: true, SeedMode: true})
	sAddr := netip.MustParseAddrPort(s.Addr())

	c, cAddr := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, m, swarm.NewMemoryStorage(&m.Info), swarm.TorrentOptions{NoTrackers: true, Lazy: true})
	tor.AddPeers(sAddr)
	waitUntil(t, discoveryWait, func() bool { return len(tor.Stats().Peers) == 1 },
		func() string { return "our engine never connected to S: " + describeStats(tor.Stats()) })

	leechDir := t.TempDir()
	// L downloads slowly enough (8 MiB at 1 MB/s) that its connection to
	// S shows in its status lines before two seeds part.
	l := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: leechDir, PEX: true, DownloadLimit: 1_000_000, Peers: []string{cAddr.String()}})
	waitUntil(t, discoveryWait, func() bool {
		for _, p := range l.LastStatus().Peers {
			if p.Port == int(sAddr.Port()) && p.Source&LTSourcePEX != 0 {
				return true
			}
		}
		return false
	}, func() string {
		return "L never connected to S through PEX; " + describeLT("L", l) + "; our engine: " + describeStats(tor.Stats())
	})
	if st := tor.Stats(); st.PEXSent < 1 {
		t.Errorf("our engine sent %d ut_pex messages", st.PEXSent)
	}
	if err := l.WaitFinished(swarmTransfer); err != nil {
		t.Fatalf("L: %v; %s", err, describeLT("L", l))
	}
	sameFile(t, content, filepath.Join(leechDir, swarmFileName))
	if st := tor.Stats(); st.Uploaded != 0 || st.Downloaded != 0 {
		t.Errorf("our engine moved payload: %s", describeStats(st))
	}
}
