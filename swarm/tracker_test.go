package swarm

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// recordingAnnouncer is a scripted tracker.Announcer that records requests.
type recordingAnnouncer struct {
	mu   sync.Mutex
	reqs []tracker.AnnounceRequest
	resp tracker.AnnounceResponse
}

func (a *recordingAnnouncer) Announce(ctx context.Context, u string, req tracker.AnnounceRequest) (tracker.AnnounceResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs = append(a.reqs, req)
	return a.resp, nil
}

func (a *recordingAnnouncer) requests() []tracker.AnnounceRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]tracker.AnnounceRequest(nil), a.reqs...)
}

// TestTrackerIDEchoed: the "tracker id" a tracker gives is sent back on
// the announces to it that follow, "stopped" included (BEP 3).
func TestTrackerIDEchoed(t *testing.T) {
	f := newFixture(t, 64<<10, 16<<10)
	ann := &recordingAnnouncer{resp: tracker.AnnounceResponse{
		Interval: time.Millisecond, MinInterval: time.Millisecond, TrackerID: "tid-42",
	}}
	c := newClient(t, Config{Trackers: ann})
	m := *f.meta
	m.Announce = "http://tracker.invalid/announce"
	tor, err := c.AddTorrent(&m, NewMemoryStorage(&m.Info), TorrentOptions{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a second announce", func() bool { return len(ann.requests()) >= 2 })
	tor.Close()
	reqs := ann.requests()
	for i, r := range reqs[1:] {
		if r.TrackerID != "tid-42" {
			t.Errorf("announce %d (event %v) sent tracker id %q, want the %q the tracker gave", i+1, r.Event, r.TrackerID, "tid-42")
		}
	}
}

// TestTrackerDialUsesConfigDial: with only Config.Dial set, the default
// tracker client dials UDP trackers through it too (HTTPDial nil means
// Dial), so that an address policy there holds for announces.
func TestTrackerDialUsesConfigDial(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var mu sync.Mutex
	var udpDials int
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network == "udp" || network == "udp4" {
			mu.Lock()
			udpDials++
			mu.Unlock()
		}
		return d.DialContext(ctx, network, addr)
	}
	f := newFixture(t, 64<<10, 16<<10)
	c := newClient(t, Config{Dial: dial})
	m := *f.meta
	m.Announce = "udp://" + pc.LocalAddr().String() + "/announce"
	tor, err := c.AddTorrent(&m, NewMemoryStorage(&m.Info), TorrentOptions{Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	// The tracker socket receives the connect request either way.
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	if _, _, err := pc.ReadFrom(buf); err != nil {
		t.Fatalf("no connect request reached the tracker: %v", err)
	}
	tor.Close()
	mu.Lock()
	defer mu.Unlock()
	if udpDials == 0 {
		t.Errorf("the UDP tracker was dialled without Config.Dial (HTTPDial nil means Dial)")
	}
}

// blockingAnnouncer is a tracker that never answers: it returns only when
// the announce's context ends (a dead UDP tracker retries for ~2 hours).
type blockingAnnouncer struct{}

func (blockingAnnouncer) Announce(ctx context.Context, u string, req tracker.AnnounceRequest) (tracker.AnnounceResponse, error) {
	<-ctx.Done()
	return tracker.AnnounceResponse{}, ctx.Err()
}

// TestFetchMetadataDoesNotWaitForDeadTracker: once the metadata arrives,
// FetchMetadata ends its announces and returns; a tracker of the magnet
// that never answers does not hold it until the caller's deadline.
func TestFetchMetadataDoesNotWaitForDeadTracker(t *testing.T) {
	f := newFixture(t, 256<<10, 16<<10)
	seedClient, _ := f.seed(t)
	leech := newClient(t, Config{Trackers: blockingAnnouncer{}})
	mg := metainfo.Magnet{InfoHash: f.meta.InfoHash, Length: -1, Trackers: []string{"udp://tracker.invalid:6969/announce"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	m, err := leech.FetchMetadata(ctx, mg, addrOf(seedClient))
	took := time.Since(start)
	if err != nil {
		t.Fatalf("FetchMetadata: %v (after %v)", err, took)
	}
	if m.InfoHash != f.meta.InfoHash {
		t.Fatal("wrong metadata")
	}
	if took > 30*time.Second {
		t.Errorf("FetchMetadata returned after %v: it waited for the dead tracker", took.Round(time.Millisecond))
	}
}

// TestFetchMetadataStopsWhenItGivesUp: FetchMetadata announces "started"
// to the magnet's trackers; when it gives up, the trackers that answered
// are told "stopped", so that they stop handing us out as a peer of a
// torrent we do not have (BEP 3).
func TestFetchMetadataStopsWhenItGivesUp(t *testing.T) {
	ann := &recordingAnnouncer{resp: tracker.AnnounceResponse{Interval: time.Hour, MinInterval: time.Hour}}
	c := newClient(t, Config{Trackers: ann})
	mg := metainfo.Magnet{InfoHash: metainfo.Hash{9, 9, 9}, Length: -1, Trackers: []string{"http://tracker.invalid/announce"}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := c.FetchMetadata(ctx, mg); err == nil {
		t.Fatal("FetchMetadata found metadata nobody has")
	}
	var started, stopped int
	for _, r := range ann.requests() {
		switch r.Event {
		case tracker.Started:
			started++
		case tracker.Stopped:
			stopped++
		}
	}
	if started != 1 || stopped != 1 {
		t.Errorf("announced started %d and stopped %d times, want once each", started, stopped)
	}
}
