//go:build linux

package integration

// Interop tests for package swarm: our engine downloads from, and seeds
// to, real third-party clients (libtorrent, transmission, aria2) on
// 127.0.0.1, finds peers through opentracker over HTTP and UDP, and
// streams through Readers from a rate-limited seed. Every transfer is a
// 64 MiB file of 256 KiB pieces, and every test checks the bytes.
//
// The engine logs at debug level into a ring buffer that is printed when
// a test fails; the third-party processes are stopped by the harness.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm"
)

const (
	swarmFileSize = 64 << 20
	swarmPieceLen = 256 << 10
	swarmFileName = "payload.bin"

	// swarmTransfer bounds one 64 MiB transfer, including transmission's
	// ~13 s wait before its first request and the race detector's cost.
	swarmTransfer = 2 * time.Minute
	// swarmStall fails a transfer early when our engine has had no peer
	// and made no progress for that long, instead of waiting out
	// swarmTransfer.
	swarmStall = 45 * time.Second
	// swarmProgressEvery paces the progress lines a transfer logs.
	swarmProgressEvery = 5 * time.Second
	// swarmCloseTimeout bounds Client.Close in cleanup.
	swarmCloseTimeout = 20 * time.Second

	// swarmStreamLimit is the libtorrent seed's upload limit in the
	// streaming test: 64 MiB then takes about 8 s.
	swarmStreamLimit = 8_000_000

	// swarmLogEnv, when set, prints the engine's log even when a test
	// passes.
	swarmLogEnv = "TBPROXY_SWARM_LOG"
)

// swarmFixture is a 64 MiB payload on disk and a torrent for it.
type swarmFixture struct {
	dir     string // holds content; a seed's save directory
	content string // path of the payload
	torrent string // path of the .torrent (no trackers)
	meta    *metainfo.MetaInfo
	sum     string // hex SHA-256 of the payload
}

// newSwarmFixture writes a payload made from seed and builds its torrent
// without trackers.
func newSwarmFixture(t *testing.T, seed int64) *swarmFixture {
	t.Helper()
	fx := &swarmFixture{dir: t.TempDir()}
	fx.content = makeContent(t, fx.dir, swarmFileName, swarmFileSize, seed)
	fx.torrent, fx.meta = makeTorrent(t, fx.content, swarmPieceLen, nil)
	sum, n, err := fileSHA256(fx.content)
	if err != nil {
		t.Fatal(err)
	}
	if n != swarmFileSize || fx.meta.Info.TotalLength != swarmFileSize || fx.meta.Info.PieceLength != swarmPieceLen {
		t.Fatalf("fixture: %d bytes, torrent of %d bytes in pieces of %d", n, fx.meta.Info.TotalLength, fx.meta.Info.PieceLength)
	}
	fx.sum = sum
	return fx
}

// withTracker builds a second torrent for the same payload that announces
// to url. The info dictionary, and so the info-hash, is unchanged.
func (fx *swarmFixture) withTracker(t *testing.T, url string) (string, *metainfo.MetaInfo) {
	t.Helper()
	path, m := makeTorrent(t, fx.content, swarmPieceLen, []string{url})
	if m.InfoHash != fx.meta.InfoHash {
		t.Fatalf("adding a tracker changed the info-hash: %v, was %v", m.InfoHash, fx.meta.InfoHash)
	}
	return path, m
}

// swarmLeakCheck fails the test if goroutines started during it outlive
// its cleanups. Call it first, so its cleanup runs last.
func swarmLeakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if !t.Failed() {
			goleak.VerifyNone(t, ignore)
		}
	})
}

// newSwarmClient starts a swarm.Client listening on 127.0.0.1 with a
// debug logger whose tail is printed if the test fails (or if
// $TBPROXY_SWARM_LOG is set). Cleanup closes the client, and fails the
// test if Close hangs.
func newSwarmClient(t *testing.T) (*swarm.Client, netip.AddrPort) {
	t.Helper()
	return newSwarmClientWith(t, swarm.Config{})
}

// newSwarmClientWith is newSwarmClient with cfg, whose ListenAddr and
// Logger it sets.
func newSwarmClientWith(t *testing.T, cfg swarm.Config) (*swarm.Client, netip.AddrPort) {
	t.Helper()
	logs := &lineRing{}
	w := &lineWriter{emit: logs.add}
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.ListenAddr = loopback + ":0"
	c, err := swarm.NewClient(cfg)
	if err != nil {
		t.Fatalf("starting swarm client: %v", err)
	}
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() {
			c.Close()
			close(closed)
		}()
		timer := time.NewTimer(swarmCloseTimeout)
		defer timer.Stop()
		select {
		case <-closed:
		case <-timer.C:
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("swarm.Client.Close did not return within %v; goroutines:\n%s", swarmCloseTimeout, buf)
		}
		w.flush()
		if t.Failed() || os.Getenv(swarmLogEnv) != "" {
			t.Logf("swarm engine log (tail):\n%s", logs.tail(ringLines))
		}
	})
	addr, err := netip.ParseAddrPort(c.Addr().String())
	if err != nil {
		t.Fatalf("swarm client address %v: %v", c.Addr(), err)
	}
	return c, addr
}

// addSwarmTorrent adds m to c; cleanup closes the torrent and then its
// storage.
func addSwarmTorrent(t *testing.T, c *swarm.Client, m *metainfo.MetaInfo, st swarm.Storage, opts swarm.TorrentOptions) *swarm.Torrent {
	t.Helper()
	tor, err := c.AddTorrent(m, st, opts)
	if err != nil {
		t.Fatalf("adding torrent: %v", err)
	}
	t.Cleanup(func() {
		tor.Close()
		st.Close()
	})
	return tor
}

// swarmFileStorage is a disk-backed swarm.Storage for these tests: the
// torrent's bytes in one file, each verified piece written at its offset,
// and the verified set in memory only.
type swarmFileStorage struct {
	info *metainfo.Info
	path string
	f    *os.File

	mu       sync.Mutex
	verified []bool // guarded by mu
	closed   bool   // guarded by mu
}

func newSwarmFileStorage(t *testing.T, info *metainfo.Info) *swarmFileStorage {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(info.TotalLength); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return &swarmFileStorage{info: info, path: path, f: f, verified: make([]bool, info.NumPieces())}
}

func (s *swarmFileStorage) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

func (s *swarmFileStorage) WritePiece(i int, data []byte) error {
	if int64(len(data)) != s.info.PieceLen(i) {
		return fmt.Errorf("file storage: piece %d is %d bytes, want %d", i, len(data), s.info.PieceLen(i))
	}
	_, err := s.f.WriteAt(data, int64(i)*s.info.PieceLength)
	return err
}

func (s *swarmFileStorage) MarkVerified(i int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verified[i] = true
	return nil
}

func (s *swarmFileStorage) Verified(i int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.verified[i]
}

func (s *swarmFileStorage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.f.Close()
}

// filledMemoryStorage holds the whole payload, verified, as a seed.
func filledMemoryStorage(t *testing.T, fx *swarmFixture) *swarm.MemoryStorage {
	t.Helper()
	f, err := os.Open(fx.content)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := swarm.NewMemoryStorage(&fx.meta.Info)
	if err := st.Fill(f); err != nil {
		t.Fatalf("filling seed storage: %v", err)
	}
	return st
}

// storageSHA256 hashes the first size bytes a storage holds.
func storageSHA256(st swarm.Storage, size int64) (string, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.NewSectionReader(st, 0, size), make([]byte, 1<<20))
	if err != nil {
		return "", err
	}
	if n != size {
		return "", fmt.Errorf("storage holds %d bytes, want %d", n, size)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// describeStats renders a torrent's stats for logs and failures.
func describeStats(s swarm.Stats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "verified %d/%d pieces, downloaded %d, uploaded %d, wasted %d, hash failures %d, bans %d, storage errors %d, %d peers",
		s.PiecesVerified, s.Pieces, s.Downloaded, s.Uploaded, s.Wasted, s.HashFailures, s.Bans, s.StorageErrors, len(s.Peers))
	for _, p := range s.Peers {
		fmt.Fprintf(&b, "\n  %v %q outgoing=%v down=%d (%.1f MB/s) up=%d (%.1f MB/s) inflight=%d choked=%v choking=%v interested=%v",
			p.Addr, p.Client, p.Outgoing, p.Downloaded, p.DownloadRate/1e6, p.Uploaded, p.UploadRate/1e6,
			p.InFlight, p.Choked, p.Choking, p.Interested)
	}
	return b.String()
}

// swarmDownload is what waitSwarmComplete observed.
type swarmDownload struct {
	start, first, end time.Time                 // wait began; first piece verified; complete
	peers             map[netip.AddrPort]bool   // every peer seen connected, and whether we dialled it
	encryption        map[netip.AddrPort]string // PeerStats.Encryption of every peer seen
}

func (d swarmDownload) logRate(t *testing.T, from string) {
	t.Helper()
	mb := float64(swarmFileSize) / 1e6
	all := d.end.Sub(d.start)
	steady := d.end.Sub(d.first)
	rate := func(d time.Duration) float64 {
		if d <= 0 {
			return 0
		}
		return mb / d.Seconds()
	}
	t.Logf("from %s: 64 MiB in %v = %.1f MB/s; %.1f MB/s from the first verified piece (%v after start)",
		from, all.Round(time.Millisecond), rate(all), rate(steady), d.first.Sub(d.start).Round(time.Millisecond))
}

// waitSwarmComplete waits for tor to verify every piece, logging progress,
// and fails the test after timeout.
func waitSwarmComplete(t *testing.T, tor *swarm.Torrent, timeout time.Duration) swarmDownload {
	t.Helper()
	d := swarmDownload{start: time.Now(), peers: map[netip.AddrPort]bool{}, encryption: map[netip.AddrPort]string{}}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	nextLog := time.Now().Add(swarmProgressEvery)
	lastMove, lastVerified := d.start, 0
	for {
		select {
		case <-tor.Complete():
			d.end = time.Now()
			if d.first.IsZero() {
				d.first = d.end
			}
			return d
		case <-deadline.C:
			t.Fatalf("download not complete after %v: %s", timeout, describeStats(tor.Stats()))
		case now := <-poll.C:
			s := tor.Stats()
			if d.first.IsZero() && s.PiecesVerified > 0 {
				d.first = now
			}
			for _, p := range s.Peers {
				d.peers[p.Addr] = p.Outgoing
				d.encryption[p.Addr] = p.Encryption
			}
			if len(s.Peers) > 0 || s.PiecesVerified != lastVerified {
				lastMove, lastVerified = now, s.PiecesVerified
			}
			if now.Sub(lastMove) > swarmStall {
				t.Fatalf("download stalled: no peer and no progress for %v: %s", swarmStall, describeStats(s))
			}
			if now.After(nextLog) {
				nextLog = now.Add(swarmProgressEvery)
				t.Logf("progress after %v: %s", now.Sub(d.start).Round(time.Second), describeStats(s))
			}
		}
	}
}

// checkSwarmDownload checks a completed download: every byte identical,
// every byte counted once, nothing failed.
func checkSwarmDownload(t *testing.T, fx *swarmFixture, tor *swarm.Torrent, st swarm.Storage) {
	t.Helper()
	s := tor.Stats()
	if !s.Complete || s.PiecesVerified != s.Pieces || s.BytesVerified != swarmFileSize {
		t.Errorf("stats after completion: %s", describeStats(s))
	}
	if s.Downloaded != swarmFileSize {
		t.Errorf("Stats.Downloaded = %d, want %d", s.Downloaded, swarmFileSize)
	}
	if s.HashFailures != 0 || s.Bans != 0 || s.StorageErrors != 0 {
		t.Errorf("hash failures %d, bans %d, storage errors %d; want none", s.HashFailures, s.Bans, s.StorageErrors)
	}
	if s.Wasted != 0 {
		t.Logf("wasted %d bytes (duplicates or unrequested)", s.Wasted)
	}
	sum, err := storageSHA256(st, swarmFileSize)
	if err != nil {
		t.Fatalf("reading back the storage: %v", err)
	}
	if sum != fx.sum {
		t.Fatalf("storage holds sha256 %s, the payload is %s", sum, fx.sum)
	}
}

// downloadFromSeed has our engine fetch fx from the seed at addr, which it
// dials, onto a disk-backed storage, and checks the result.
func downloadFromSeed(t *testing.T, fx *swarmFixture, from string, addr netip.AddrPort) {
	t.Helper()
	st := newSwarmFileStorage(t, &fx.meta.Info)
	c, _ := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, fx.meta, st, swarm.TorrentOptions{NoTrackers: true})
	tor.AddPeers(addr)
	d := waitSwarmComplete(t, tor, swarmTransfer)
	checkSwarmDownload(t, fx, tor, st)
	sameFile(t, fx.content, st.path)
	if _, ok := d.peers[addr]; !ok {
		t.Errorf("the seed %v never showed as a peer; peers seen: %v", addr, d.peers)
	}
	d.logRate(t, from)
}

func TestSwarmDownloadFromLibtorrentSeed(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	fx := newSwarmFixture(t, 101)
	seed := startLibtorrent(t, LTOpts{Torrent: fx.torrent, SaveDir: fx.dir, Seed: true, SeedMode: true})
	downloadFromSeed(t, fx, "libtorrent "+seed.Addr(), netip.MustParseAddrPort(seed.Addr()))
}

func TestSwarmDownloadFromTransmissionSeed(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "transmission-cli")
	fx := newSwarmFixture(t, 102)
	// transmission checks the data first; it seeds once it says so.
	// It would ignore us as a loopback peer from a tracker, so we dial it.
	seed := startTransmission(t, TROpts{Torrent: fx.torrent, Dir: fx.dir})
	if err := seed.WaitFinished(swarmTransfer); err != nil {
		t.Fatalf("transmission seed: %v", err)
	}
	downloadFromSeed(t, fx, "transmission "+seed.Addr(), netip.MustParseAddrPort(seed.Addr()))
}

func TestSwarmDownloadFromAria2Seed(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "aria2c")
	fx := newSwarmFixture(t, 103)
	// A seeding aria2 accepts incoming peers, so no tracker is needed.
	seed := startAria2(t, AriaOpts{Torrent: fx.torrent, Dir: fx.dir, Seed: true})
	downloadFromSeed(t, fx, "aria2 "+seed.Addr(), netip.MustParseAddrPort(seed.Addr()))
}

// startSwarmSeed has our engine seed fx from memory with opts (m replaces
// fx.meta when not nil) and returns the torrent and our address.
func startSwarmSeed(t *testing.T, fx *swarmFixture, m *metainfo.MetaInfo, opts swarm.TorrentOptions) (*swarm.Torrent, netip.AddrPort) {
	t.Helper()
	if m == nil {
		m = fx.meta
	}
	st := filledMemoryStorage(t, fx)
	c, addr := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, m, st, opts)
	select {
	case <-tor.Complete():
	default:
		t.Fatalf("a torrent added with full storage is not complete: %s", describeStats(tor.Stats()))
	}
	return tor, addr
}

// waitLeech waits for a third-party leecher (finished is its
// WaitFinished) while logging our seed's progress. It fails early if our
// seed has had no peer and uploaded nothing for swarmStall.
func waitLeech(t *testing.T, tor *swarm.Torrent, leech string, finished func(time.Duration) error) {
	t.Helper()
	start := time.Now()
	res := make(chan error, 1)
	go func() { res <- finished(swarmTransfer) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	nextLog := start.Add(swarmProgressEvery)
	lastMove, lastUploaded := start, int64(0)
	for {
		select {
		case err := <-res:
			if err != nil {
				t.Fatalf("%s: %v; our seed: %s", leech, err, describeStats(tor.Stats()))
			}
			el := time.Since(start)
			t.Logf("%s finished in %v (%.1f MB/s including its start-up)", leech, el.Round(time.Millisecond),
				float64(swarmFileSize)/1e6/el.Seconds())
			return
		case now := <-tick.C:
			s := tor.Stats()
			if len(s.Peers) > 0 || s.Uploaded != lastUploaded {
				lastMove, lastUploaded = now, s.Uploaded
			}
			if now.Sub(lastMove) > swarmStall {
				t.Fatalf("%s: our seed has had no peer and uploaded nothing for %v: %s", leech, swarmStall, describeStats(s))
			}
			if now.After(nextLog) {
				nextLog = now.Add(swarmProgressEvery)
				t.Logf("seeding to %s, after %v: %s", leech, now.Sub(start).Round(time.Second), describeStats(s))
			}
		}
	}
}

// checkSwarmSeeded checks that the leecher's file is the payload and that
// all of it came from us.
func checkSwarmSeeded(t *testing.T, fx *swarmFixture, tor *swarm.Torrent, leechFile string) {
	t.Helper()
	sameFile(t, fx.content, leechFile)
	s := tor.Stats()
	if s.Uploaded < swarmFileSize {
		t.Errorf("our seed uploaded %d bytes, want at least %d: %s", s.Uploaded, swarmFileSize, describeStats(s))
	}
	if s.HashFailures != 0 || s.Bans != 0 || s.StorageErrors != 0 || s.Downloaded != 0 {
		t.Errorf("a seed's stats: %s", describeStats(s))
	}
}

func TestSwarmSeedsToLibtorrent(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	fx := newSwarmFixture(t, 201)
	tor, addr := startSwarmSeed(t, fx, nil, swarm.TorrentOptions{NoTrackers: true})
	leechDir := t.TempDir()
	leech := startLibtorrent(t, LTOpts{Torrent: fx.torrent, SaveDir: leechDir, Peers: []string{addr.String()}})
	waitLeech(t, tor, "libtorrent leech "+leech.Addr(), leech.WaitFinished)
	checkSwarmSeeded(t, fx, tor, filepath.Join(leechDir, swarmFileName))
}

func TestSwarmSeedsToAria2(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "aria2c")
	requireTool(t, "opentracker")
	// aria2 cannot be told to dial a peer: both announce to opentracker,
	// and aria2 dials the seed it hears about.
	fx := newSwarmFixture(t, 202)
	ot := startOpentrackerServer(t, []string{fx.meta.InfoHash.HexString()})
	torrent, m := fx.withTracker(t, ot.AnnounceURL)
	tor, _ := startSwarmSeed(t, fx, m, swarm.TorrentOptions{})
	ot.WaitSwarm(t, fx.meta.InfoHash.HexString(), 1, 0, startTimeout)
	leechDir := t.TempDir()
	leech := startAria2(t, AriaOpts{Torrent: torrent, Dir: leechDir})
	waitLeech(t, tor, "aria2 leech "+leech.Addr(), leech.WaitFinished)
	checkSwarmSeeded(t, fx, tor, filepath.Join(leechDir, swarmFileName))
}

func TestSwarmSeedsToTransmission(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "transmission-cli")
	// transmission ignores loopback peers from trackers, so our seed must
	// dial the address it is given.
	fx := newSwarmFixture(t, 203)
	leechDir := t.TempDir()
	leech := startTransmission(t, TROpts{Torrent: fx.torrent, Dir: leechDir})
	tor, _ := startSwarmSeed(t, fx, nil, swarm.TorrentOptions{NoTrackers: true})
	tor.AddPeers(netip.MustParseAddrPort(leech.Addr()))
	waitLeech(t, tor, "transmission leech "+leech.Addr(), leech.WaitFinished)
	checkSwarmSeeded(t, fx, tor, filepath.Join(leechDir, swarmFileName))
}

// trackerDownload has a libtorrent seed announce to opentracker at the
// URL that tracker picks, and our engine, given only the torrent with
// that URL, find the seed there and download.
func trackerDownload(t *testing.T, url func(*Opentracker) string) {
	t.Helper()
	requireTool(t, "libtorrent")
	requireTool(t, "opentracker")
	fx := newSwarmFixture(t, 301)
	hash := fx.meta.InfoHash.HexString()
	ot := startOpentrackerServer(t, []string{hash})
	announce := url(ot)
	torrent, m := fx.withTracker(t, announce)
	seed := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: fx.dir, Seed: true, SeedMode: true})
	ot.WaitSwarm(t, hash, 1, 0, startTimeout)

	st := newSwarmFileStorage(t, &m.Info)
	c, _ := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, m, st, swarm.TorrentOptions{})
	d := waitSwarmComplete(t, tor, swarmTransfer)
	checkSwarmDownload(t, fx, tor, st)
	sameFile(t, fx.content, st.path)
	seedAddr := netip.MustParseAddrPort(seed.Addr())
	if outgoing, ok := d.peers[seedAddr]; !ok || !outgoing {
		t.Errorf("we never dialled the seed %v (the tracker's answer); peers seen (address: we dialled): %v", seedAddr, d.peers)
	}
	d.logRate(t, "libtorrent "+seed.Addr()+" found via "+announce)
}

func TestSwarmTrackerAnnounceHTTP(t *testing.T) {
	swarmLeakCheck(t)
	trackerDownload(t, func(o *Opentracker) string { return o.AnnounceURL })
}

func TestSwarmTrackerAnnounceUDP(t *testing.T) {
	swarmLeakCheck(t)
	trackerDownload(t, func(o *Opentracker) string { return o.UDPURL })
}

// TestSwarmReaderStreaming streams from a rate-limited libtorrent seed
// through a lazy torrent: Readers get the bytes at their positions long
// before the rest, judged by how much else is verified, not by the clock.
func TestSwarmReaderStreaming(t *testing.T) {
	swarmLeakCheck(t)
	requireTool(t, "libtorrent")
	fx := newSwarmFixture(t, 401)
	seed := startLibtorrent(t, LTOpts{Torrent: fx.torrent, SaveDir: fx.dir, Seed: true, SeedMode: true, UploadLimit: swarmStreamLimit})
	content, err := os.Open(fx.content)
	if err != nil {
		t.Fatal(err)
	}
	defer content.Close()
	want := func(off int64, n int) []byte {
		b := make([]byte, n)
		if _, err := content.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		return b
	}

	st := swarm.NewMemoryStorage(&fx.meta.Info)
	c, _ := newSwarmClient(t)
	tor := addSwarmTorrent(t, c, fx.meta, st, swarm.TorrentOptions{Lazy: true, NoTrackers: true})
	tor.AddPeers(netip.MustParseAddrPort(seed.Addr()))
	ctx, cancel := context.WithTimeout(t.Context(), swarmTransfer)
	defer cancel()
	pieces := fx.meta.Info.NumPieces()
	start := time.Now()

	// The first MiB, from the start.
	const chunk = 1 << 20
	r1 := tor.NewReader(ctx)
	defer r1.Close()
	got := make([]byte, chunk)
	if _, err := io.ReadFull(r1, got); err != nil {
		t.Fatalf("reading the first MiB: %v; %s", err, describeStats(tor.Stats()))
	}
	s := tor.Stats()
	t.Logf("first MiB after %v with %d/%d pieces verified", time.Since(start).Round(time.Millisecond), s.PiecesVerified, s.Pieces)
	if s.PiecesVerified >= pieces/2 {
		t.Errorf("the first MiB arrived only with %d/%d pieces verified; want fewer than %d", s.PiecesVerified, pieces, pieces/2)
	}
	if !bytes.Equal(got, want(0, chunk)) {
		t.Fatal("the first MiB differs from the payload")
	}

	// A second Reader at 48 MiB, while the first half is mostly missing.
	const mid = 48 << 20
	r2 := tor.NewReader(ctx)
	if _, err := r2.Seek(mid, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(r2, got); err != nil {
		t.Fatalf("reading a MiB at 48 MiB: %v; %s", err, describeStats(tor.Stats()))
	}
	lowHalf := 0
	for i := range pieces / 2 {
		if tor.HavePiece(i) {
			lowHalf++
		}
	}
	s = tor.Stats()
	t.Logf("the MiB at 48 MiB after %v with %d/%d pieces verified, %d of the first %d", time.Since(start).Round(time.Millisecond),
		s.PiecesVerified, s.Pieces, lowHalf, pieces/2)
	if lowHalf >= pieces/4 {
		t.Errorf("%d of the first %d pieces were verified before the MiB at 48 MiB arrived; want most of them missing", lowHalf, pieces/2)
	}
	if !bytes.Equal(got, want(mid, chunk)) {
		t.Fatal("the MiB at 48 MiB differs from the payload")
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}

	// Everything, through the first Reader.
	if _, err := r1.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, r1, make([]byte, 256<<10))
	if err != nil {
		t.Fatalf("reading everything after %d bytes: %v; %s", n, err, describeStats(tor.Stats()))
	}
	if n != swarmFileSize {
		t.Fatalf("read %d bytes through the Reader, want %d", n, swarmFileSize)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != fx.sum {
		t.Fatalf("streamed sha256 %s, payload %s", sum, fx.sum)
	}
	el := time.Since(start)
	t.Logf("streamed 64 MiB in %v (%.1f MB/s against a %.0f MB/s limit)", el.Round(time.Millisecond),
		float64(swarmFileSize)/1e6/el.Seconds(), float64(swarmStreamLimit)/1e6)
	if _, err := r1.Read(got[:1]); !errors.Is(err, io.EOF) {
		t.Errorf("Read at the end = %v, want io.EOF", err)
	}
	checkSwarmDownload(t, fx, tor, st)
}
