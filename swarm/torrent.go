package swarm

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/swarm/internal/bitfield"
	"github.com/tbproxy/tbproxy/swarm/internal/choker"
	"github.com/tbproxy/tbproxy/swarm/internal/peerconn"
	"github.com/tbproxy/tbproxy/swarm/internal/picker"
)

// ErrClosed is returned by a Torrent or Client used after Close, and by a
// Reader whose torrent closed.
var ErrClosed = errors.New("swarm: closed")

// TorrentOptions configures one torrent. The zero value downloads every
// piece and announces to the torrent's own trackers.
type TorrentOptions struct {
	// Lazy fetches only what Readers need (their position plus readahead)
	// instead of every piece: the proxy's mode, where the client asked for
	// one file and may stop early.
	Lazy bool
	// NoTrackers skips the torrent's trackers; peers come from AddPeers and
	// PeerSources only.
	NoTrackers bool
	// Peers are addresses to connect to from the start, as AddPeers; given
	// here they count before web seeds decide that no peer will come.
	Peers []netip.AddrPort
	// PeerSources are further ways to find peers.
	PeerSources []PeerSource
	// NoWebSeeds ignores the torrent's url-list (BEP 19); AddWebSeed
	// still works.
	NoWebSeeds bool
	// WebSeedMode trades origin load against speed; the zero value uses
	// web seeds only to rescue what peers cannot deliver.
	WebSeedMode WebSeedMode
	// StallBudget is how long a reader, or the whole torrent, may go
	// without progress before web seeds step in; 0 means 2 s.
	StallBudget time.Duration
	// SuperSeed makes a complete torrent hide its pieces and offer each
	// peer a few at a time (BEP 16), so that peers trade among themselves
	// and the seed's upload is spent about once: the publisher's mode.
	SuperSeed bool
	// NoPEX turns peer exchange (BEP 11) off for this torrent, and NoLSD
	// local service discovery (BEP 14). Private torrents (BEP 27) never
	// use either, whatever the options.
	NoPEX, NoLSD bool
}

// Origin says how the engine learned of a peer.
type Origin string

// Origins of peers.
const (
	FromIncoming Origin = "incoming" // it connected to us
	FromUser     Origin = "user"     // AddPeers or TorrentOptions.Peers
	FromTracker  Origin = "tracker"
	FromSource   Origin = "source" // one of TorrentOptions.PeerSources
	FromPEX      Origin = "pex"    // peer exchange, BEP 11
	FromLSD      Origin = "lsd"    // local service discovery, BEP 14
)

// Torrent is one torrent in a Client. One run-loop goroutine owns its
// state; the methods send it commands.
type Torrent struct {
	client  *Client
	meta    *metainfo.MetaInfo
	info    *metainfo.Info
	storage Storage
	// writeMu serialises writes to storage: concurrent writes to one file
	// contend for its lock in the kernel, which spins (measured here: three
	// writers of the same bytes cost 1.3–1.6 times the CPU of one, in the
	// same time).
	writeMu sync.Mutex
	opts    TorrentOptions
	log     *slog.Logger

	events  chan peerconn.Event // from peer reader goroutines
	hashed  chan hashResult     // from hash workers
	adopt   chan *handshaken    // connections whose handshake is done
	webData chan webPiece       // pieces from web seed workers
	lost    chan int            // pieces storage could not read back
	cmds    chan func()         // closures run on the loop
	done    chan struct{}       // closed when Close begins
	ctx     context.Context     // cancelled when Close begins, for dials and sources
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the loop and every goroutine it starts

	closeOnce sync.Once

	// Shared with Readers without locks: verified pieces, and a channel
	// closed (and replaced) whenever one more piece is verified.
	verified *atomicBits
	signal   atomic.Pointer[chan struct{}]
	complete chan struct{} // closed once every piece is verified

	nextReader atomic.Int64 // last Reader ID handed out
	downloaded atomic.Int64 // verified payload bytes from peers
	uploaded   atomic.Int64 // payload bytes sent to peers
	// fromWeb and hashFailures are kept outside the loop's state too, so
	// that Stats still reports them once the torrent has closed.
	fromWeb      atomic.Int64 // block bytes accepted from web seeds
	hashFailures atomic.Int64 // pieces that failed their hash

	s loopState // owned by the run loop
}

// loopState is everything only the run loop touches.
type loopState struct {
	picker  *picker.Picker
	choker  *choker.Choker
	peers   map[int]*peer                 // connected peers by ID
	nextID  int                           // last peer ID handed out
	freeIDs []int                         // peer IDs to reuse: the picker indexes by them
	known   map[netip.AddrPort]*candidate // peers learned of, not connected
	banned  map[netip.AddrPort]bool       // by banKey: never again
	pieces  map[int]*pieceBuf             // pieces being assembled
	suspect map[int][]blockRecord         // failed pieces' blocks, for smart ban
	dialing int                           // outgoing connections in progress
	rounds  int                           // ticks, for the choke interval
	peerIDs map[[20]byte]int              // connected peer-ids, against duplicates
	stats   counters                      // for Stats
	out     []picker.Block                // scratch for Pick
	senders map[int][]*peer               // pieces being hashed: who sent each block
	lastDL  time.Time                     // when a block last arrived
	blocks  int                           // blocks per full piece

	webSeeds        []*webSeed           // every web seed added, dropped ones too
	webWakeCh       chan struct{}        // closed to wake idle web seed workers
	ready           []*webJob            // rescue jobs prepared for web seed workers
	racing          int                  // first-piece races queued or in flight (webJob.race)
	readers         map[int]*readerState // where each Reader waits, for rescue
	memCharged      int64                // piece memory counted in Client.pieceMem
	webRate         float64              // bytes per second accepted from web seeds, smoothed
	lastFromWeb     int64                // Torrent.fromWeb at the last tick
	started         time.Time            // when the torrent was added
	sourcesAnswered bool                 // a peer source reported, even if it found no one
	yourIP4         netip.Addr           // our IPv4 address as the last peer saw it (BEP 10 yourip), for BEP 40
	yourIP6         netip.Addr           // the same for IPv6
}

type counters struct {
	lost        int // pieces storage lost after they were verified
	wasted      int64
	bans        int
	storageErrs int
	pexSent     int // ut_pex messages sent
	pexTaken    int // ut_pex messages taken
	pexIgnored  int // ut_pex messages ignored: too frequent or malformed
	pexPeers    int // addresses learned through ut_pex
	lsdPeers    int // addresses learned through LSD
}

type candidate struct {
	addr     netip.AddrPort
	origin   Origin // the first source that named it
	failures int
	retryAt  time.Time
	seed     bool // it had every piece when we had too: not worth dialling while we are complete
}

// pieceBuf collects the blocks of one piece until all have arrived.
type pieceBuf struct {
	buf     []byte
	senders []*peer // who sent each block; nil until it arrives
}

// readerState is where a Reader is, and since when it has waited there
// without bytes of that piece arriving.
type readerState struct {
	piece int
	since time.Time
}

// blockRecord remembers who sent a block of a piece that failed its hash,
// and what they sent, so that once a good copy verifies the liar is known.
type blockRecord struct {
	peer  *peer
	block int // index of the block within the piece
	sum   [20]byte
}

// allocID hands out a peer ID, reusing those of dropped peers so the
// picker's per-peer tables stay small.
func (s *loopState) allocID() int {
	if n := len(s.freeIDs); n > 0 {
		id := s.freeIDs[n-1]
		s.freeIDs = s.freeIDs[:n-1]
		return id
	}
	s.nextID++
	return s.nextID
}

func newTorrent(c *Client, m *metainfo.MetaInfo, st Storage, opts TorrentOptions) *Torrent {
	info := &m.Info
	n := info.NumPieces()
	t := &Torrent{
		client:   c,
		meta:     m,
		info:     info,
		storage:  st,
		opts:     opts,
		log:      c.log.With("torrent", m.InfoHash.String()[:8]),
		events:   make(chan peerconn.Event, 256),
		hashed:   make(chan hashResult, 16),
		adopt:    make(chan *handshaken),
		webData:  make(chan webPiece),
		lost:     make(chan int, 64),
		cmds:     make(chan func()),
		done:     make(chan struct{}),
		verified: newAtomicBits(n),
		complete: make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	sig := make(chan struct{})
	t.signal.Store(&sig)
	t.s = loopState{
		picker: picker.New(picker.Config{
			NumPieces:   n,
			PieceLength: info.PieceLength,
			TotalLength: info.TotalLength,
			Rand:        rnd,
		}),
		choker:    choker.New(choker.Config{Slots: c.cfg.UploadSlots}),
		peers:     map[int]*peer{},
		known:     map[netip.AddrPort]*candidate{},
		banned:    map[netip.AddrPort]bool{},
		pieces:    map[int]*pieceBuf{},
		suspect:   map[int][]blockRecord{},
		senders:   map[int][]*peer{},
		readers:   map[int]*readerState{},
		webWakeCh: make(chan struct{}),
		started:   c.now(),
		peerIDs:   map[[20]byte]int{},
		blocks:    int((info.PieceLength + blockSize - 1) / blockSize),
	}
	done := 0
	for i := range n {
		if st.Verified(i) {
			t.s.picker.SetHave(i)
			t.verified.set(i)
			done++
		}
	}
	if !opts.Lazy {
		t.s.picker.SetWanted(0, n)
	}
	t.addCandidates(opts.Peers, FromUser)
	if done == n {
		close(t.complete)
	}
	return t
}

func (t *Torrent) start() {
	t.wg.Go(t.run)
	if tiers := t.meta.Trackers(); len(tiers) > 0 && !t.opts.NoTrackers {
		t.startSource(&trackerSource{client: t.client, tiers: tiers}, FromTracker)
	}
	for _, src := range t.opts.PeerSources {
		t.startSource(src, FromSource)
	}
	if !t.opts.NoWebSeeds {
		for _, u := range t.meta.URLList {
			if err := t.AddWebSeed(WebSeed{URL: u}); err != nil {
				t.log.Info("ignoring web seed", "url", redactURL(u), "err", err)
			}
		}
	}
}

// pexEnabled reports whether this torrent exchanges peers (BEP 11).
func (t *Torrent) pexEnabled() bool {
	return !t.client.cfg.NoPEX && !t.opts.NoPEX && !t.info.Private
}

// lsdEnabled reports whether this torrent is announced and found on the
// local network (BEP 14).
func (t *Torrent) lsdEnabled() bool {
	return t.client.cfg.LSD.Enabled && !t.opts.NoLSD && !t.info.Private
}

// writePiece writes verified piece i to storage, one write at a time.
func (t *Torrent) writePiece(i int, buf []byte) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	return t.storage.WritePiece(i, buf)
}

// InfoHash is the torrent's v1 info-hash.
func (t *Torrent) InfoHash() metainfo.Hash { return t.meta.InfoHash }

// Info is the torrent's validated info dictionary.
func (t *Torrent) Info() *metainfo.Info { return t.info }

// MetaInfo is the torrent's metainfo.
func (t *Torrent) MetaInfo() *metainfo.MetaInfo { return t.meta }

// Complete is closed once every piece has been verified. A piece that
// storage loses later is fetched again; Stats tells the current state.
func (t *Torrent) Complete() <-chan struct{} { return t.complete }

// Done is closed when the torrent is closing.
func (t *Torrent) Done() <-chan struct{} { return t.done }

// HavePiece reports whether piece i is verified.
func (t *Torrent) HavePiece(i int) bool { return t.verified.has(i) }

// AddPeers gives the torrent addresses to connect to.
func (t *Torrent) AddPeers(addrs ...netip.AddrPort) {
	t.do(func() { t.addCandidates(addrs, FromUser) })
}

// DownloadAll switches a lazy torrent to fetching every piece.
func (t *Torrent) DownloadAll() {
	t.do(func() {
		t.s.picker.SetWanted(0, t.info.NumPieces())
		t.updateInterestAll()
		t.fillAll()
	})
}

// do runs f on the loop and waits for it; it reports false if the torrent
// closed first.
func (t *Torrent) do(f func()) bool {
	ran := make(chan struct{})
	select {
	case t.cmds <- func() { f(); close(ran) }:
	case <-t.done:
		return false
	}
	select {
	case <-ran:
		return true
	case <-t.done:
		return false
	}
}

// Close stops the torrent: it disconnects every peer, tells trackers it
// stopped, and returns once every goroutine it started has ended. It does
// not close the storage, which belongs to the caller.
func (t *Torrent) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		t.cancel()
		t.client.forget(t)
	})
	t.wg.Wait()
	return nil
}

func (t *Torrent) run() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// Stalls are looked for more often than once a second, so a reader
	// waits little longer than the budget before web seeds step in.
	stall := time.NewTicker(max(t.stallBudget()/4, 50*time.Millisecond))
	defer stall.Stop()
	defer t.shutdown()
	for {
		select {
		case ev := <-t.events:
			t.onPeerEvent(ev)
		case res := <-t.hashed:
			t.onHashed(res)
		case hs := <-t.adopt:
			t.adoptConn(hs)
		case wp := <-t.webData:
			t.onWebPiece(wp)
		case i := <-t.lost:
			t.pieceLost(i)
		case f := <-t.cmds:
			f()
		case now := <-tick.C:
			t.onTick(now)
		case now := <-stall.C:
			t.rescueStalled(now)
			if len(t.s.webSeeds) > 0 && t.peersStalled(now) {
				t.webWake()
			}
		case <-t.done:
			return
		}
	}
}

// shutdown runs on the loop as it ends: close every connection. Their
// reader goroutines may be blocked handing events to the loop; closing
// t.done already released them.
func (t *Torrent) shutdown() {
	t.client.pieceMem.Add(-t.s.memCharged)
	t.s.memCharged = 0
	for _, p := range t.s.peers {
		p.conn.Close()
	}
	t.client.conns.Add(-int64(len(t.s.peers)))
	clear(t.s.peers)
	for _, pb := range t.s.pieces {
		t.client.putPiece(pb.buf)
	}
	// Drain adoption attempts that raced with the close.
	for {
		select {
		case hs := <-t.adopt:
			hs.conn.Close()
		default:
			return
		}
	}
}

// notifyVerified wakes every Reader waiting for a piece.
func (t *Torrent) notifyVerified() {
	next := make(chan struct{})
	old := t.signal.Swap(&next)
	close(*old)
}

// waitCh returns a channel closed when the next piece is verified.
func (t *Torrent) waitCh() <-chan struct{} { return *t.signal.Load() }

// ourWire is our verified set in BEP 3 layout.
func (t *Torrent) ourWire() []byte {
	bf := bitfield.New(t.info.NumPieces())
	for i := range t.info.NumPieces() {
		if t.verified.has(i) {
			bf.Set(i)
		}
	}
	return bf.Wire()
}

// startSource runs a peer source on a goroutine owned by the torrent.
func (t *Torrent) startSource(src PeerSource, origin Origin) {
	t.wg.Go(func() {
		src.Run(t.ctx, t.sourceView(), func(addrs []netip.AddrPort) {
			select {
			case t.cmds <- func() {
				t.s.sourcesAnswered = true
				t.addCandidates(addrs, origin)
			}:
			case <-t.done:
			}
		})
	})
}

// banKey is what a ban holds on to: the IP address, as peers are
// identified by address; but on loopback, where every peer shares one
// address, the address and port.
func banKey(a netip.AddrPort) netip.AddrPort {
	ip := a.Addr().Unmap()
	if ip.IsLoopback() {
		return netip.AddrPortFrom(ip, a.Port())
	}
	return netip.AddrPortFrom(ip, 0)
}

// lostPiecer is what a storage error says when it lost a piece: the cache's
// read errors implement it.
type lostPiecer interface{ LostPiece() int }

// reportLost tells the loop, from any goroutine and without blocking, that
// storage lost a piece. A report dropped here is made again on the next
// failed read.
func (t *Torrent) reportLost(err error) bool {
	var lp lostPiecer
	if !errors.As(err, &lp) {
		return false
	}
	select {
	case t.lost <- lp.LostPiece():
	default:
	}
	return true
}

// pieceLost takes a piece storage lost out of the verified set, so it is
// neither served nor uploaded until it is fetched and verified again.
func (t *Torrent) pieceLost(i int) {
	if i < 0 || i >= t.info.NumPieces() || !t.verified.has(i) {
		return
	}
	t.verified.clear(i)
	t.s.picker.Lost(i)
	t.s.stats.lost++
	t.log.Warn("storage lost a piece; fetching it again", "piece", i)
	t.updateInterestAll()
	t.fillAll()
	t.webWake()
}
