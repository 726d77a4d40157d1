package swarm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
	"github.com/tbproxy/tbproxy/swarm/internal/metadata"
	"github.com/tbproxy/tbproxy/swarm/internal/wire"
	"github.com/tbproxy/tbproxy/tracker"
)

// ErrNoMetadata is returned when no peer gave a magnet link's metadata.
var ErrNoMetadata = errors.New("swarm: no peer gave the torrent's metadata")

// metadataPeers bounds the peers asked at once for a magnet's metadata.
const metadataPeers = 8

// FetchMetadata turns a magnet link into a torrent: it finds peers through
// the magnet's trackers (and x.pe addresses, and extra), asks them for the
// info dictionary over BEP 9, and checks it against the info-hash. Trackers
// and web seeds from the magnet are kept in the result.
func (c *Client) FetchMetadata(ctx context.Context, mg metainfo.Magnet, extra ...netip.AddrPort) (*metainfo.MetaInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	peers := make(chan netip.AddrPort, 256)
	var wg sync.WaitGroup
	defer wg.Wait()
	offer := func(addrs []netip.AddrPort) {
		for _, a := range addrs {
			if c.isSelf(a) {
				continue
			}
			select {
			case peers <- a:
			case <-ctx.Done():
				return
			}
		}
	}
	wg.Go(func() {
		offer(extra)
		for _, pe := range mg.Params["x.pe"] {
			if a, err := netip.ParseAddrPort(pe); err == nil {
				offer([]netip.AddrPort{a})
			}
		}
	})
	for _, tr := range mg.Trackers {
		wg.Go(func() {
			resp, err := c.trackers.Announce(ctx, tr, tracker.AnnounceRequest{
				InfoHash: mg.InfoHash, PeerID: c.peerID, Port: c.port(), Left: 1, Event: tracker.Started, NumWant: 50, Key: c.key,
			})
			if err == nil {
				offer(resp.Peers)
			}
		})
	}
	result := make(chan []byte, 1)
	var mu sync.Mutex
	asm := metadata.NewAssembler(mg.InfoHash) // shared: a piece from any peer counts
	sem := make(chan struct{}, metadataPeers)
	seen := map[netip.AddrPort]bool{}
	tried := 0
	for {
		select {
		case info := <-result:
			return metaFromInfo(info, mg)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (asked %d): %w", ErrNoMetadata, tried, ctx.Err())
		case a := <-peers:
			if seen[a] {
				continue
			}
			seen[a] = true
			tried++
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				info, err := c.metadataFrom(ctx, a, mg.InfoHash, asm, &mu)
				if err != nil {
					c.log.Debug("no metadata from peer", "addr", a, "err", err)
					return
				}
				select {
				case result <- info:
				default:
				}
			})
		}
	}
}

// metadataFrom asks one peer for the metadata, filing its pieces in asm.
func (c *Client) metadataFrom(ctx context.Context, addr netip.AddrPort, ih metainfo.Hash, asm *metadata.Assembler, mu *sync.Mutex) ([]byte, error) {
	nc, br, remote, err := c.connectPeer(ctx, addr, ih)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if remote.PeerID == c.peerID || !remote.SupportsExtended() {
		return nil, errors.New("swarm: peer cannot give metadata")
	}
	ourID, _ := c.ext.Local(metadata.Name)
	hs, _ := extension.MarshalHandshake(extension.Handshake{M: map[string]int{metadata.Name: int(ourID)}, V: c.cfg.ClientName})
	enc := wire.NewEncoder(nc)
	if err := enc.Encode(&wire.Message{ID: wire.Extended, Payload: hs}); err != nil {
		return nil, err
	}
	if err := enc.Flush(); err != nil {
		return nil, err
	}
	dec := wire.NewDecoder(br, wire.Limits{})
	var theirID uint8
	inflight := 0
	var m wire.Message
	for {
		nc.SetDeadline(time.Now().Add(c.cfg.RequestTimeout))
		if err := dec.Decode(&m); err != nil {
			return nil, err
		}
		if m.Keepalive || m.ID != wire.Extended {
			continue
		}
		switch m.ExtendedID {
		case 0:
			h, err := extension.ParseHandshake(m.Payload, extension.Limits{MaxMetadataSize: metadata.MaxSize})
			if err != nil {
				return nil, err
			}
			id, ok := h.M[metadata.Name]
			mu.Lock()
			sized := asm.SetSize(h.MetadataSize)
			mu.Unlock()
			if !ok || id <= 0 || !sized {
				return nil, errors.New("swarm: peer offers no usable metadata")
			}
			theirID = uint8(id)
		case ourID:
			msg, err := metadata.Parse(m.Payload)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			var info []byte
			switch msg.Type {
			case metadata.Data:
				info, err = asm.Add(msg)
			case metadata.Reject:
				asm.Rejected(msg.Piece)
				err = errors.New("swarm: peer rejected a metadata request")
			}
			mu.Unlock()
			inflight--
			if info != nil {
				return append([]byte(nil), info...), nil
			}
			if err != nil {
				return nil, err
			}
		default:
			continue
		}
		// Keep two requests in flight to this peer.
		for theirID != 0 && inflight < 2 {
			mu.Lock()
			i := asm.Next()
			mu.Unlock()
			if i < 0 {
				break
			}
			payload := metadata.Append(nil, metadata.Message{Type: metadata.Request, Piece: i})
			if err := enc.Encode(&wire.Message{ID: wire.Extended, ExtendedID: theirID, Payload: payload}); err != nil {
				return nil, err
			}
			inflight++
		}
		if err := enc.Flush(); err != nil {
			return nil, err
		}
	}
}

// metaFromInfo wraps a verified info dictionary into a torrent with the
// magnet's trackers and web seeds.
func metaFromInfo(info []byte, mg metainfo.Magnet) (*metainfo.MetaInfo, error) {
	t := map[string]any{"info": bencode.RawMessage(info)}
	if len(mg.Trackers) > 0 {
		t["announce"] = mg.Trackers[0]
		var tiers []any
		for _, tr := range mg.Trackers {
			tiers = append(tiers, []any{tr})
		}
		t["announce-list"] = tiers
	}
	if len(mg.WebSeeds) > 0 {
		t["url-list"] = mg.WebSeeds
	}
	data, err := bencode.Marshal(t)
	if err != nil {
		return nil, err
	}
	m, err := metainfo.Parse(data)
	if err != nil {
		return nil, err
	}
	if m.InfoHash != mg.InfoHash {
		return nil, errors.New("swarm: metadata does not match the magnet's info-hash")
	}
	return m, nil
}
