//go:build linux

package integration

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// startTrackerOpentracker runs opentracker (the harness's
// startOpentrackerServer) tracking only hashes, and returns its port once
// the whitelist is loaded.
func startTrackerOpentracker(t *testing.T, hashes ...metainfo.Hash) int {
	t.Helper()
	hexes := make([]string, len(hashes))
	for i, h := range hashes {
		hexes[i] = h.HexString()
	}
	return startOpentrackerServer(t, hexes).Port
}
