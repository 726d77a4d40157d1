package swarm

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

// PeerSource finds peers for a torrent. Trackers are one; a user of swarm
// can plug in more (a DHT, a LAN directory, a static list).
type PeerSource interface {
	// Run looks for peers until ctx ends, passing each batch it finds to
	// found (an empty batch says the source answered but knew no one). It
	// runs on a goroutine of its own, owned by the torrent.
	Run(ctx context.Context, t SourceView, found func([]netip.AddrPort))
}

// SourceView is what a peer source may know of the torrent it serves.
type SourceView interface {
	InfoHash() metainfo.Hash
	// PeerID is this client's peer-id.
	PeerID() [20]byte
	// Port is this client's peer listening port, 0 when it does not listen.
	Port() uint16
	// Progress gives the payload bytes verified from peers, sent to peers,
	// and still missing, as trackers want them.
	Progress() (downloaded, uploaded, left int64)
	// Complete is closed once every piece is verified.
	Complete() <-chan struct{}
}

// PeerID is the client's peer-id.
func (t *Torrent) PeerID() [20]byte { return t.client.peerID }

// Port is the client's listening port, or 0.
func (t *Torrent) Port() uint16 { return t.client.port() }

// Progress implements SourceView.
func (t *Torrent) Progress() (downloaded, uploaded, left int64) {
	var have int64
	for i := range t.info.NumPieces() {
		if t.verified.has(i) {
			have += t.info.PieceLen(i)
		}
	}
	return t.downloaded.Load(), t.uploaded.Load(), t.info.TotalLength - have
}

func (t *Torrent) sourceView() SourceView { return t }

// trackerSource announces to a torrent's trackers in BEP 12 order, with
// backoff on failure, and reports started, completed and stopped.
type trackerSource struct {
	client *Client
	tiers  [][]string
}

// stopTimeout bounds the "stopped" announce made while closing.
const stopTimeout = 3 * time.Second

func (s *trackerSource) Run(ctx context.Context, v SourceView, found func([]netip.AddrPort)) {
	tiers := tracker.NewTiers(s.tiers, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	if tiers.Len() == 0 {
		return
	}
	event := tracker.Started
	complete := v.Complete()
	select {
	case <-complete:
		complete = nil // nothing to report: it was complete from the start
	default:
	}
	var last string            // the tracker that last answered, told when we stop
	ids := map[string]string{} // the tracker ids trackers gave, sent back to them (BEP 3)
	announce := func(ctx context.Context, url string, ev tracker.Event) (tracker.AnnounceResponse, error) {
		down, up, left := v.Progress()
		return s.client.trackers.Announce(ctx, url, tracker.AnnounceRequest{
			InfoHash:   v.InfoHash(),
			PeerID:     v.PeerID(),
			Port:       v.Port(),
			Downloaded: down,
			Uploaded:   up,
			Left:       left,
			Event:      ev,
			NumWant:    200,
			Key:        s.client.key,
			TrackerID:  ids[url],
		})
	}
	defer func() {
		if last == "" {
			return
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		announce(stopCtx, last, tracker.Stopped)
	}()
	for {
		url, wait := tiers.Next(s.client.now())
		if wait > 0 {
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		resp, err := announce(ctx, url, event)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.client.log.Info("announce failed", "tracker", redactURL(url), "err", err)
			tiers.Failure(url, s.client.now())
			continue
		}
		tiers.Success(url)
		last = url
		if resp.TrackerID != "" {
			ids[url] = resp.TrackerID
		}
		event = tracker.None
		found(resp.Peers) // even none: then web seeds need not wait for peers
		interval := max(resp.Interval, resp.MinInterval, time.Second)
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-complete:
			timer.Stop()
			complete = nil
			event = tracker.Completed
		}
	}
}

// sleep waits for d or until ctx ends, reporting whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
