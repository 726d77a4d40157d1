//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// TestTrackerOpentracker runs package tracker's clients against Debian's
// opentracker over HTTP and UDP on loopback. It skips (or, with CI set,
// fails) when opentracker is not installed.
func TestTrackerOpentracker(t *testing.T) {
	hashHTTP := metainfo.Hash([]byte("tbproxy-http-swarm-1"))
	hashUDP := metainfo.Hash([]byte("tbproxy-udp-swarm-01"))
	hashUDPPath := metainfo.Hash([]byte("tbproxy-udp-swarm-02"))
	notListed := metainfo.Hash([]byte("tbproxy-not-listed-3"))
	port := startTrackerOpentracker(t, hashHTTP, hashUDP, hashUDPPath)

	c := &tracker.Client{UDP: tracker.UDPClient{BaseTimeout: 250 * time.Millisecond, Retries: 3}}
	base := hostPort(port)
	tests := []struct {
		name string
		url  string
		hash metainfo.Hash
	}{
		{"http", "http://" + base + "/announce", hashHTTP},
		{"udp", "udp://" + base, hashUDP},
		{"udp with BEP 41 path", "udp://" + base + "/announce", hashUDPPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			peer := func(n byte, port uint16) tracker.AnnounceRequest {
				return tracker.AnnounceRequest{
					InfoHash: tt.hash,
					PeerID:   [20]byte([]byte(fmt.Sprintf("-TB0001-peer%08d", n))),
					Port:     port,
					Left:     1 << 20,
					Event:    tracker.Started,
					NumWant:  50,
					Key:      uint32(n),
				}
			}
			first, second := peer(1, 40001), peer(2, 40002)
			if _, err := c.Announce(ctx, tt.url, first); err != nil {
				t.Fatalf("first announce: %v", err)
			}
			resp, err := c.Announce(ctx, tt.url, second)
			if err != nil {
				t.Fatalf("second announce: %v", err)
			}
			want := netip.MustParseAddrPort("127.0.0.1:40001")
			if !slices.Contains(resp.Peers, want) {
				t.Errorf("second peer sees %v; want it to include %v", resp.Peers, want)
			}
			if resp.Interval < tracker.DefaultMinInterval || resp.Interval > tracker.DefaultMaxInterval {
				t.Errorf("interval %v outside the clamp", resp.Interval)
			}
			if resp.Incomplete != 2 {
				t.Errorf("incomplete = %d; want 2 leechers", resp.Incomplete)
			}

			scrape, err := c.Scrape(ctx, tt.url, []metainfo.Hash{tt.hash})
			if err != nil {
				t.Fatalf("scrape: %v", err)
			}
			if got := scrape[tt.hash]; got.Incomplete != 2 {
				t.Errorf("scrape = %+v; want 2 leechers", got)
			}

			refused := first
			refused.InfoHash = notListed
			_, err = c.Announce(ctx, tt.url, refused)
			var fe *tracker.FailureError
			if !errors.As(err, &fe) {
				t.Errorf("announce of a hash not whitelisted: err = %v; want a *tracker.FailureError", err)
			} else {
				t.Logf("refusal: %v", fe)
			}

			for _, p := range []tracker.AnnounceRequest{first, second} {
				p.Event = tracker.Stopped
				if _, err := c.Announce(ctx, tt.url, p); err != nil {
					t.Errorf("stopped announce: %v", err)
				}
			}
		})
	}
}

// startTrackerOpentracker runs opentracker on 127.0.0.1, TCP and UDP on
// one free port, tracking only hashes (Debian's build is whitelist-only),
// and returns the port once the whitelist is loaded. The harness's
// process cleanup stops it.
//
// Flags: -i before -p and -P, since an address applies to the ports that
// follow it; -d DIR because, as root, opentracker chroots there and drops
// to nobody, which is why DIR is world-readable and -w names the
// whitelist relative to it.
func startTrackerOpentracker(t *testing.T, hashes ...metainfo.Hash) int {
	t.Helper()
	requireTool(t, "opentracker")
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var list strings.Builder
	for _, h := range hashes {
		list.WriteString(h.HexString() + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freeTCPUDPPort(t)
	ps := strconv.Itoa(port)
	p := startProcWith(t, procConfig{dir: dir}, "opentracker",
		"-i", loopback, "-p", ps, "-P", ps, "-d", dir, "-w", "whitelist")
	waitTCP(t, p, port, startTimeout)

	// opentracker reads its whitelist on a thread of its own after it
	// starts listening: poll with a "stopped" announce until the first
	// hash is authorised.
	probe := tracker.AnnounceRequest{InfoHash: hashes[0], PeerID: [20]byte([]byte("-TB0001-probe0000000")), Port: 1, Event: tracker.Stopped}
	c := &tracker.HTTPClient{}
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Announce(ctx, "http://"+hostPort(port)+"/announce", probe)
		cancel()
		if err == nil {
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("opentracker never authorised %v: %v\n%s", hashes[0], err, p.Tail(50))
		}
		select {
		case <-p.Done():
			t.Fatalf("opentracker exited:\n%s", p.Tail(50))
		case <-tick.C:
		}
	}
}
