package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

// The crash test runs the test binary again as a child that downloads into
// the cache until the parent kills it with SIGKILL.
const (
	crashChildEnv   = "TBPROXY_CACHE_CRASH_CHILD"
	crashDirEnv     = "TBPROXY_CACHE_CRASH_DIR"
	crashTorrentEnv = "TBPROXY_CACHE_CRASH_TORRENT"
	crashSeedEnv    = "TBPROXY_CACHE_CRASH_SEED"
)

// crashChild downloads the torrent into the cache and waits to be killed.
func crashChild() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		return 2
	}
	raw, err := os.ReadFile(os.Getenv(crashTorrentEnv))
	if err != nil {
		return fail(err)
	}
	m, err := metainfo.Parse(raw)
	if err != nil {
		return fail(err)
	}
	seed, err := netip.ParseAddrPort(os.Getenv(crashSeedEnv))
	if err != nil {
		return fail(err)
	}
	s, err := Open(Config{Dir: os.Getenv(crashDirEnv), FlushInterval: 20 * time.Millisecond})
	if err != nil {
		return fail(err)
	}
	h, err := s.Torrent(m, TorrentOptions{})
	if err != nil {
		return fail(err)
	}
	c, err := swarm.NewClient(swarm.Config{})
	if err != nil {
		return fail(err)
	}
	tor, err := c.AddTorrent(m, h, swarm.TorrentOptions{NoTrackers: true})
	if err != nil {
		return fail(err)
	}
	tor.AddPeers(seed)
	time.Sleep(time.Hour) // until SIGKILL
	return 1
}

func TestCrashRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process")
	}
	f := newFixture(t, 24<<20, 64<<10)
	n := f.meta.Info.NumPieces()
	var th throttle
	th.bps.Store(6 << 20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seed, seedTor := f.seed(t, swarm.Config{Listener: slowListener{ln, &th}})

	dir := t.TempDir()
	torrentPath := filepath.Join(t.TempDir(), "t.torrent")
	raw, err := f.meta.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(torrentPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	edir := filepath.Join(dir, f.meta.InfoHash.HexString())
	// Three children in turn, each killed at a random moment once the
	// record has grown; none may lose what an earlier one recorded.
	var recorded bitset
	for cycle := 1; cycle <= 3; cycle++ {
		var stderr bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(),
			crashChildEnv+"=1",
			crashDirEnv+"="+dir,
			crashTorrentEnv+"="+torrentPath,
			crashSeedEnv+"="+seed.Addr().String(),
		)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if b, ok := recordedPieces(t, edir, f.meta); ok && b.count() >= 24*cycle {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child %d recorded too little; stderr:\n%s", cycle, stderr.String())
			}
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.N(30)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()
		now, ok := recordedPieces(t, edir, f.meta)
		if !ok || now.full() {
			t.Fatalf("record after kill %d: ok %v, %d of %d pieces (the kill must come mid-download)", cycle, ok, now.count(), n)
		}
		for i := range n {
			if recorded.n > 0 && recorded.has(i) && !now.has(i) {
				t.Fatalf("kill %d: piece %d was recorded before and is not any more", cycle, i)
			}
		}
		recorded = now
		waitFor(t, 10*time.Second, "the seed to drop the dead child", func() bool { return len(seedTor.Stats().Peers) == 0 })
	}
	var notRecorded int64
	for i := range n {
		if !recorded.has(i) {
			notRecorded += f.meta.Info.PieceLen(i)
		}
	}
	uploadedBefore := seedTor.Stats().Uploaded
	th.bps.Store(0)

	s := openStore(t, Config{Dir: dir})
	h := handle(t, s, f.meta, TorrentOptions{}) // waits for the recheck the crash calls for
	verified := 0
	for i := range n {
		if recorded.has(i) && !h.Verified(i) {
			t.Fatalf("piece %d was recorded but is not verified after the restart", i)
		}
		if h.Verified(i) {
			verified++
		}
	}
	leech := f.leech(t, h, seed, swarm.TorrentOptions{})
	waitComplete(t, leech, 60*time.Second)
	fetched := seedTor.Stats().Uploaded - uploadedBefore
	t.Logf("recorded %d/%d pieces at the last kill, %d verified after reopening (rechecks %d); seed uploaded %d bytes after the restart, bound %d",
		recorded.count(), n, verified, s.Stats().Rechecks, fetched, notRecorded)
	if fetched > notRecorded {
		t.Fatalf("seed uploaded %d bytes after the restart, more than the %d bytes not recorded", fetched, notRecorded)
	}
	if got := leech.Stats().Downloaded; got > notRecorded {
		t.Fatalf("leech downloaded %d bytes, more than the %d not recorded", got, notRecorded)
	}
	if !bytes.Equal(readAll(t, h), f.content) {
		t.Fatal("bytes differ after the crash and the restart")
	}
}
