package swarm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
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
//
// It returns as soon as it has the metadata or gives up, ending its
// announces and peer connections first. The trackers that answered its
// "started" are told "stopped" when it gives up; when it succeeds, the
// torrent the caller adds next announces to them in its place.
func (c *Client) FetchMetadata(ctx context.Context, mg metainfo.Magnet, extra ...netip.AddrPort) (_ *metainfo.MetaInfo, err error) {
	ctx, cancel := context.WithCancel(ctx)
	peers := make(chan netip.AddrPort, 256)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var answered []string // trackers that took our "started"
	defer func() {
		cancel()
		wg.Wait()
		if err != nil {
			c.stopAnnounces(mg.InfoHash, answered)
		}
	}()
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
				mu.Lock()
				answered = append(answered, tr)
				mu.Unlock()
				offer(resp.Peers)
			}
		})
	}
	result := make(chan []byte, 1)
	gaveUp := make(chan error, 1)
	fetch := newMetaFetch(mg.InfoHash) // shared: a piece from any peer counts
	sem := make(chan struct{}, metadataPeers)
	seen := map[netip.AddrPort]bool{}
	tried := 0
	var queued []netip.AddrPort // peers found, waiting for a slot
	for {
		var slot chan struct{} // nil, which never sends, while no peer waits
		if len(queued) > 0 {
			slot = sem
		}
		select {
		case info := <-result:
			return metaFromInfo(info, mg)
		case err := <-gaveUp:
			return nil, fmt.Errorf("%w (asked %d): %w", ErrNoMetadata, tried, err)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (asked %d): %w", ErrNoMetadata, tried, ctx.Err())
		case a := <-peers:
			if !seen[a] {
				seen[a] = true
				queued = append(queued, a)
			}
		case slot <- struct{}{}:
			a := queued[0]
			queued = queued[1:]
			tried++
			wg.Go(func() {
				defer func() { <-sem }()
				info, err := c.metadataFrom(ctx, a, mg.InfoHash, fetch)
				switch {
				case info != nil:
					select {
					case result <- info:
					default:
					}
				case errors.Is(err, metadata.ErrGaveUp):
					select {
					case gaveUp <- err:
					default:
					}
				default:
					c.log.Debug("no metadata from peer", "addr", a, "err", err)
				}
			})
		}
	}
}

// stopAnnounces tells trackers, at once and within stopTimeout, that we
// stopped on torrent ih.
func (c *Client) stopAnnounces(ih metainfo.Hash, trackers []string) {
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, tr := range trackers {
		wg.Go(func() {
			c.trackers.Announce(ctx, tr, tracker.AnnounceRequest{
				InfoHash: ih, PeerID: c.peerID, Port: c.port(), Left: 1, Event: tracker.Stopped, Key: c.key,
			})
		})
	}
	wg.Wait()
}

// metaFetch is what the peers asked for one magnet's metadata share: the
// assembler, and a channel closed at each change to it, so that a peer
// waiting for pieces to request looks again.
type metaFetch struct {
	mu      sync.Mutex
	asm     *metadata.Assembler
	changed chan struct{}
}

func newMetaFetch(ih metainfo.Hash) *metaFetch {
	return &metaFetch{asm: metadata.NewAssembler(ih), changed: make(chan struct{})}
}

// notify wakes the waiting peers. The caller holds f.mu.
func (f *metaFetch) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// join registers a peer that claims the metadata is size bytes.
func (f *metaFetch) join(size int64) (*metadata.Source, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.asm.Join(size)
	if err == nil {
		f.notify() // the new claim may change which size is assembled next
	}
	return s, err
}

// leave removes a peer that has gone.
func (f *metaFetch) leave(s *metadata.Source) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asm.Leave(s)
	f.notify()
}

// next returns a piece to request from s, or -1, with the channel that
// the next change closes.
func (f *metaFetch) next(s *metadata.Source) (int, <-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i, err := f.asm.Next(s)
	return i, f.changed, err
}

// rejected returns piece i, which s refused, to the missing pool.
func (f *metaFetch) rejected(s *metadata.Source, i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asm.Rejected(s, i)
	f.notify()
}

// add files a piece from s, returning a copy of the verified metadata
// once it is complete.
func (f *metaFetch) add(s *metadata.Source, m metadata.Message) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, err := f.asm.Add(s, m)
	if err != nil {
		f.notify() // a failed assembly frees the way for another
	}
	return bytes.Clone(info), err
}

// metaPeer is one peer asked for a magnet's metadata.
type metaPeer struct {
	c       *Client
	nc      net.Conn
	enc     *wire.Encoder
	fetch   *metaFetch
	ourID   uint8            // our ut_metadata id, on its messages to us
	theirID uint8            // its ut_metadata id, on our messages to it
	src     *metadata.Source // nil until its extension handshake
	asked   map[int]int      // requests not yet answered, by piece
	waiting int              // the sum of asked
	changed <-chan struct{}  // closed when there may be pieces to request; nil when it has enough
}

// metadataWindow is the number of requests kept in flight to one peer.
const metadataWindow = 2

// metadataFrom asks one peer for the metadata, filing its pieces in fetch.
func (c *Client) metadataFrom(ctx context.Context, addr netip.AddrPort, ih metainfo.Hash, fetch *metaFetch) ([]byte, error) {
	nc, br, remote, err := c.connectPeer(ctx, addr, ih)
	if err != nil {
		return nil, err
	}
	quit := make(chan struct{})
	var reader sync.WaitGroup
	defer func() {
		close(quit)
		nc.Close()
		reader.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	if remote.PeerID == c.peerID || !remote.SupportsExtended() {
		return nil, errors.New("swarm: peer cannot give metadata")
	}
	ourID, _ := c.ext.Local(metadata.Name)
	p := &metaPeer{c: c, nc: nc, enc: wire.NewEncoder(nc), fetch: fetch, ourID: ourID, asked: map[int]int{}}
	defer func() {
		if p.src != nil {
			fetch.leave(p.src)
		}
	}()
	hs, _ := extension.MarshalHandshake(extension.Handshake{M: map[string]int{metadata.Name: int(ourID)}, V: c.cfg.ClientName})
	if err := p.send(&wire.Message{ID: wire.Extended, Payload: hs}); err != nil {
		return nil, err
	}
	nc.SetReadDeadline(time.Now().Add(c.cfg.RequestTimeout)) // for its extension handshake
	msgs := make(chan wire.Message)
	readErr := make(chan error, 1)
	reader.Go(func() { readMetadataMessages(wire.NewDecoder(br, wire.Limits{}), ourID, msgs, readErr, quit) })
	return p.run(ctx, msgs, readErr)
}

// readMetadataMessages decodes messages until the connection fails, and
// passes on the extension handshakes and the ut_metadata messages (those
// with id ours), each with its own copy of the payload.
func readMetadataMessages(dec *wire.Decoder, ours uint8, out chan<- wire.Message, errc chan<- error, quit <-chan struct{}) {
	var m wire.Message
	for {
		if err := dec.Decode(&m); err != nil {
			errc <- err
			return
		}
		if m.Keepalive || m.ID != wire.Extended || (m.ExtendedID != 0 && m.ExtendedID != ours) {
			continue
		}
		select {
		case out <- wire.Message{ID: wire.Extended, ExtendedID: m.ExtendedID, Payload: bytes.Clone(m.Payload)}:
		case <-quit:
			return
		}
	}
}

// run handles the peer's messages, and requests pieces whenever the
// assembler has some for it, until the metadata is complete or the peer
// is of no more use.
func (p *metaPeer) run(ctx context.Context, msgs <-chan wire.Message, readErr <-chan error) ([]byte, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-readErr:
			return nil, err
		case m := <-msgs:
			var info []byte
			var err error
			if m.ExtendedID == 0 {
				err = p.handshake(m.Payload)
			} else {
				info, err = p.answer(m.Payload)
			}
			if info != nil || err != nil {
				return info, err
			}
		case <-p.changed:
		}
		if err := p.request(); err != nil {
			return nil, err
		}
	}
}

// handshake joins the peer to the fetch with the size its extension
// handshake claims. Later handshakes are ignored: the claim stands.
func (p *metaPeer) handshake(payload []byte) error {
	if p.src != nil {
		return nil
	}
	h, err := extension.ParseHandshake(payload, extension.Limits{MaxMetadataSize: metadata.MaxSize})
	if err != nil {
		return err
	}
	id, ok := h.M[metadata.Name]
	if !ok || id <= 0 || h.MetadataSize <= 0 {
		return errors.New("swarm: peer offers no metadata")
	}
	src, err := p.fetch.join(h.MetadataSize)
	if err != nil {
		return fmt.Errorf("swarm: peer offers no usable metadata: %w", err)
	}
	p.src, p.theirID = src, uint8(id)
	p.arm()
	return nil
}

// answer files the peer's answer to one of our requests. A peer may not
// answer what we did not ask; it may ask us, and is ignored.
func (p *metaPeer) answer(payload []byte) ([]byte, error) {
	msg, err := metadata.Parse(payload)
	if err != nil {
		return nil, err
	}
	if msg.Type == metadata.Request || p.src == nil {
		return nil, nil
	}
	if p.asked[msg.Piece] == 0 {
		return nil, fmt.Errorf("swarm: peer answered metadata piece %d, never requested", msg.Piece)
	}
	if p.asked[msg.Piece]--; p.asked[msg.Piece] == 0 {
		delete(p.asked, msg.Piece)
	}
	p.waiting--
	p.arm()
	if msg.Type == metadata.Reject {
		p.fetch.rejected(p.src, msg.Piece)
		return nil, errors.New("swarm: peer rejected a metadata request")
	}
	info, err := p.fetch.add(p.src, msg)
	if errors.Is(err, metadata.ErrMismatch) {
		// Not necessarily this peer's fault; the assembler bans it if it is.
		p.c.log.Debug("metadata failed the info-hash check", "addr", p.nc.RemoteAddr(), "size", p.src.Size())
		err = nil
	}
	return info, err
}

// request keeps metadataWindow requests in flight to the peer, as far as
// the assembler has pieces for it.
func (p *metaPeer) request() error {
	if p.src == nil {
		return nil
	}
	sent := false
	p.changed = nil // with a full window, only an answer matters
	for p.waiting < metadataWindow {
		i, changed, err := p.fetch.next(p.src)
		if err != nil {
			return err
		}
		if i < 0 {
			p.changed = changed
			break
		}
		payload := metadata.Append(nil, metadata.Message{Type: metadata.Request, Piece: i})
		if err := p.enc.Encode(&wire.Message{ID: wire.Extended, ExtendedID: p.theirID, Payload: payload}); err != nil {
			return err
		}
		p.asked[i]++
		p.waiting++
		sent = true
	}
	if !sent {
		return nil
	}
	p.arm()
	return p.flush()
}

// arm sets the read deadline: a peer we wait on must answer within
// RequestTimeout of our request or of its last answer, whatever else it
// sends; a peer we ask nothing may stay silent.
func (p *metaPeer) arm() {
	var d time.Time
	if p.waiting > 0 {
		d = time.Now().Add(p.c.cfg.RequestTimeout)
	}
	p.nc.SetReadDeadline(d)
}

// send writes one message at once.
func (p *metaPeer) send(m *wire.Message) error {
	if err := p.enc.Encode(m); err != nil {
		return err
	}
	return p.flush()
}

// flush writes what is buffered, within RequestTimeout.
func (p *metaPeer) flush() error {
	p.nc.SetWriteDeadline(time.Now().Add(p.c.cfg.RequestTimeout))
	return p.enc.Flush()
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
