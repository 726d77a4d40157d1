//go:build linux

package integration

// These tests prove the harness with third-party peers only: each client
// moves a file to another over 127.0.0.1 and the bytes must match, and
// every process the harness starts must be gone after its cleanup.

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

const (
	harnessFileSize  = 4 << 20
	harnessPieceLen  = 256 << 10
	harnessTransfer  = 90 * time.Second // bound on each download
	harnessFileName  = "payload.bin"
	harnessExitGrace = 10 * time.Second
)

// harnessSeedData writes the test payload into a fresh directory and
// builds a torrent for it without trackers.
func harnessSeedData(t *testing.T, size int64) (seedDir, content, torrent, infoHash string) {
	t.Helper()
	seedDir = t.TempDir()
	content = makeContent(t, seedDir, harnessFileName, size, 42)
	torrent, m := makeTorrent(t, content, harnessPieceLen, nil)
	return seedDir, content, torrent, m.InfoHash.String()
}

func TestHarnessContent(t *testing.T) {
	dir := t.TempDir()
	const size = 3<<20 + 12345 // not a multiple of the write chunk
	a := makeContent(t, dir, "a.bin", size, 7)
	b := makeContent(t, dir, "sub/b.bin", size, 7)
	c := makeContent(t, dir, "c.bin", size, 8)
	sameFile(t, a, b)
	if fi, err := os.Stat(a); err != nil || fi.Size() != size {
		t.Fatalf("size of %s: %v, %v; want %d", a, fi, err, size)
	}
	ha, _, err := fileSHA256(a)
	if err != nil {
		t.Fatal(err)
	}
	hc, _, err := fileSHA256(c)
	if err != nil {
		t.Fatal(err)
	}
	if ha == hc {
		t.Fatal("different seeds gave the same content")
	}
	empty := makeContent(t, dir, "empty.bin", 0, 1)
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Fatalf("empty content: %v, %v", fi, err)
	}
}

// TestHarnessOpentracker checks that the tracker answers on 127.0.0.1
// over HTTP and UDP, serves whitelisted hashes and refuses others.
func TestHarnessOpentracker(t *testing.T) {
	requireTool(t, "opentracker")
	listed := strings.Repeat("ab", 20)
	other := strings.Repeat("cd", 20)
	announce := startOpentracker(t, []string{listed})

	get := func(hexHash, event string) []byte {
		t.Helper()
		h, err := hex.DecodeString(hexHash)
		if err != nil {
			t.Fatal(err)
		}
		q := "?info_hash=" + url.QueryEscape(string(h)) +
			"&peer_id=-HA0001-selftest0000&port=6881&uploaded=0&downloaded=0&left=100&compact=1&event=" + event
		body, err := httpGetLoopback(announce + q)
		if err != nil {
			t.Fatalf("announce: %v", err)
		}
		return body
	}
	if body := get(other, "started"); !bytes.Contains(body, []byte("failure reason")) {
		t.Errorf("announce of an unlisted hash = %q, want a failure", body)
	}
	if body := get(listed, "started"); bytes.Contains(body, []byte("failure reason")) {
		t.Errorf("announce of a listed hash = %q", body)
	}
	t.Cleanup(func() { get(listed, "stopped") })

	// BEP 15 connect on the same port number over UDP.
	u, err := url.Parse(announce)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("udp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	req = binary.BigEndian.AppendUint32(req, 0)          // action: connect
	req = binary.BigEndian.AppendUint32(req, 0x5eed1234) // transaction id
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 64)
	n, err := conn.Read(resp)
	if err != nil {
		t.Fatalf("udp connect: %v", err)
	}
	if n < 16 || binary.BigEndian.Uint32(resp[0:4]) != 0 || binary.BigEndian.Uint32(resp[4:8]) != 0x5eed1234 {
		t.Fatalf("udp connect response % x", resp[:n])
	}
}

func TestHarnessTransfers(t *testing.T) {
	t.Run("libtorrent-to-libtorrent", func(t *testing.T) {
		seedDir, content, torrent, _ := harnessSeedData(t, harnessFileSize)
		start := time.Now()
		seed := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: seedDir, Seed: true, SeedMode: true})
		leechDir := t.TempDir()
		leech := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: leechDir, Peers: []string{seed.Addr()}})
		if err := leech.WaitFinished(harnessTransfer); err != nil {
			t.Fatal(err)
		}
		sameFile(t, content, filepath.Join(leechDir, harnessFileName))
		t.Logf("libtorrent seed :%d -> libtorrent leech :%d in %v",
			seed.Port(), leech.Port(), time.Since(start).Round(time.Millisecond))
	})

	t.Run("libtorrent-to-aria2", func(t *testing.T) {
		// aria2 cannot be told to dial a peer, so both announce to
		// opentracker and aria2 dials the seed it hears about.
		requireTool(t, "aria2c")
		seedDir, content, torrent, hash := harnessSeedData(t, harnessFileSize)
		start := time.Now()
		tracker := startOpentrackerServer(t, []string{hash})
		seed := startLibtorrent(t, LTOpts{
			Torrent: torrent, SaveDir: seedDir, Seed: true, SeedMode: true,
			Trackers: []string{tracker.AnnounceURL},
		})
		tracker.WaitSwarm(t, hash, 1, 0, startTimeout)
		leechDir := t.TempDir()
		leech := startAria2(t, AriaOpts{Torrent: torrent, Dir: leechDir, Tracker: tracker.AnnounceURL})
		if err := leech.WaitFinished(harnessTransfer); err != nil {
			t.Fatal(err)
		}
		if !leech.Proc().Wait(harnessExitGrace) {
			t.Fatal("aria2 with --seed-time=0 kept running after its download")
		}
		if code := leech.Proc().ExitCode(); code != 0 {
			t.Fatalf("aria2 exit status %d", code)
		}
		sameFile(t, content, filepath.Join(leechDir, harnessFileName))
		t.Logf("libtorrent seed :%d -> aria2 leech :%d via %s in %v",
			seed.Port(), leech.Port(), tracker.AnnounceURL, time.Since(start).Round(time.Millisecond))
	})

	t.Run("libtorrent-to-transmission", func(t *testing.T) {
		// transmission ignores loopback peers from trackers, so the seed
		// dials it.
		requireTool(t, "transmission-cli")
		seedDir, content, torrent, _ := harnessSeedData(t, harnessFileSize)
		start := time.Now()
		leechDir := t.TempDir()
		leech := startTransmission(t, TROpts{Torrent: torrent, Dir: leechDir})
		seed := startLibtorrent(t, LTOpts{
			Torrent: torrent, SaveDir: seedDir, Seed: true, SeedMode: true,
			Peers: []string{leech.Addr()},
		})
		if err := leech.WaitFinished(harnessTransfer); err != nil {
			t.Fatal(err)
		}
		sameFile(t, content, filepath.Join(leechDir, harnessFileName))
		t.Logf("libtorrent seed :%d -> transmission leech :%d in %v",
			seed.Port(), leech.Port(), time.Since(start).Round(time.Millisecond))
	})
}

// TestHarnessCleanup starts one of everything, plus a process that
// ignores SIGTERM, and checks after all their cleanups that no process
// or process group is left and no goroutine outlived them.
func TestHarnessCleanup(t *testing.T) {
	for _, tool := range []string{"libtorrent", "aria2c", "transmission-cli", "opentracker"} {
		requireTool(t, tool)
	}
	type started struct {
		name string
		pid  int
	}
	var all []started
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs after every cleanup registered below.
	t.Cleanup(func() {
		for _, s := range all {
			if err := syscall.Kill(s.pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("%s (pid %d) still exists after cleanup: kill 0 = %v", s.name, s.pid, err)
			}
			if err := syscall.Kill(-s.pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process group of %s (%d) still exists after cleanup: kill 0 = %v", s.name, s.pid, err)
			}
		}
		goleak.VerifyNone(t, ignore)
	})

	seedDir, _, torrent, hash := harnessSeedData(t, 1<<20)
	tracker := startOpentrackerServer(t, []string{hash})
	all = append(all, started{"opentracker", tracker.proc.PID()})
	lt := startLibtorrent(t, LTOpts{Torrent: torrent, SaveDir: seedDir, Seed: true, Trackers: []string{tracker.AnnounceURL}})
	all = append(all, started{"libtorrent", lt.Proc().PID()})
	a2 := startAria2(t, AriaOpts{Torrent: torrent, Dir: seedDir, Seed: true, Tracker: tracker.AnnounceURL})
	all = append(all, started{"aria2c", a2.Proc().PID()})
	tr := startTransmission(t, TROpts{Torrent: torrent, Dir: seedDir})
	all = append(all, started{"transmission-cli", tr.Proc().PID()})
	if err := tr.WaitFinished(harnessTransfer); err != nil {
		t.Errorf("transmission seed never reported seeding: %v", err)
	}
	// A process that ignores SIGTERM, with a child, needs the SIGKILL.
	stubborn := startProc(t, "/bin/sh", "-c", `trap "" TERM; sleep 600 & wait`)
	all = append(all, started{"stubborn sh", stubborn.PID()})

	// Stop is idempotent and may also be called early by a test.
	lt.Proc().Stop()
	lt.Proc().Stop()
	if code := lt.Proc().ExitCode(); code != 0 {
		t.Errorf("libtorrent peer exit status after SIGTERM = %d, want 0", code)
	}
}
