// Package peerconn runs one established peer connection: a reader goroutine
// that decodes messages and hands them to the torrent's run loop as events,
// and a writer goroutine that drains a queue of outgoing messages and
// uploads. It decides nothing: which messages to send, and what a received
// one means, is the run loop's business.
package peerconn

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// BlockSize is the size of the buffers received blocks are copied into.
const BlockSize = 16 << 10

// Config tunes a connection. Zero fields take the documented defaults.
type Config struct {
	Limits wire.Limits
	// IdleTimeout closes a connection that has sent nothing, not even a
	// keep-alive, for this long; 0 means 3 minutes.
	IdleTimeout time.Duration
	// KeepAlive is how long the writer may stay silent before it sends a
	// keep-alive; 0 means 90 seconds.
	KeepAlive time.Duration
	// WriteTimeout bounds one flush to the peer; 0 means 60 seconds.
	WriteTimeout time.Duration
	// ReadBlock reads the bytes of an upload, from verified storage. It
	// runs on the writer goroutine. When it fails the block is not sent:
	// a peer with the fast extension gets a reject, others time out.
	ReadBlock func(index, begin uint32, p []byte) error
	// Fast says the peer speaks BEP 6, so failed uploads are rejected.
	Fast bool
	// Blocks supplies BlockSize buffers (as *[]byte) for received blocks;
	// the run loop puts them back when it has copied the data out.
	Blocks *sync.Pool
}

func (c Config) withDefaults() Config {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 3 * time.Minute
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 90 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Minute
	}
	return c
}

// Event is one message from a peer, or the end of its connection.
type Event struct {
	Conn *Conn
	// Msg is owned by the receiver: Block, when set, is a buffer from
	// Config.Blocks (BlockBuf points at it) and Bitfield and Payload are
	// copies.
	Msg      wire.Message
	BlockBuf *[]byte
	// Err, when set, is the last event of the connection: why it ended.
	Err error
}

// upload is one queued piece message.
type upload struct{ index, begin, length uint32 }

// item is one queued outgoing message: a message, or an upload to read from
// storage when its turn comes. A dropped item (an upload cancelled without
// the fast extension) sends nothing.
type item struct {
	msg     wire.Message
	upload  *upload
	dropped bool
}

// MaxQueue bounds the messages waiting for the writer. A peer that lets
// more pile up does not read what we send, and is closed: its requests and
// cancels would otherwise grow the queue for as long as the write timeout.
const MaxQueue = 1 << 16

// Conn is one peer connection after the handshake.
type Conn struct {
	ID       int            // the run loop's handle for this peer
	Addr     netip.AddrPort // the remote address
	Remote   wire.Handshake // the peer's reserved bits, info-hash and peer-id
	Outgoing bool           // we dialled it

	// Uploaded and Downloaded count block bytes, for rates and stats.
	Uploaded   atomic.Int64
	Downloaded atomic.Int64

	nc  net.Conn
	cfg Config
	dec *wire.Decoder // reader goroutine only

	mu      sync.Mutex
	queue   []item           // waiting for the writer; guarded by mu
	at      map[upload][]int // where queue holds each upload; guarded by mu
	uploads int              // uploads in queue; guarded by mu
	closed  bool             // no more sends; guarded by mu

	wake      chan struct{} // capacity 1: the queue has items
	stop      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New wraps nc, whose handshake is done. br holds any bytes the handshake
// read ahead; it may be nil.
func New(nc net.Conn, br *bufio.Reader, id int, remote wire.Handshake, outgoing bool, cfg Config) *Conn {
	cfg = cfg.withDefaults()
	if br == nil {
		br = bufio.NewReaderSize(nc, 64<<10)
	}
	addr, _ := netip.ParseAddrPort(nc.RemoteAddr().String())
	return &Conn{
		ID:       id,
		Addr:     addr,
		Remote:   remote,
		Outgoing: outgoing,
		nc:       nc,
		cfg:      cfg,
		dec:      wire.NewDecoder(br, cfg.Limits),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
}

// Start runs the reader and writer. Events go to events until the
// connection ends with an Event carrying Err, or until done is closed.
func (c *Conn) Start(events chan<- Event, done <-chan struct{}) {
	c.wg.Go(func() { c.read(events, done) })
	c.wg.Go(c.write)
}

// Send queues m. Slices in m must not change afterwards.
func (c *Conn) Send(m wire.Message) { c.enqueue(item{msg: m}) }

// Upload queues a piece message whose block the writer reads through
// Config.ReadBlock when its turn comes.
func (c *Conn) Upload(index, begin, length uint32) {
	c.enqueue(item{upload: &upload{index, begin, length}})
}

// CancelUpload drops a queued upload the peer cancelled, reporting whether
// it was still queued. With the fast extension a reject takes its place in
// the queue, since every request gets one answer (BEP 6). It costs the
// same however long the queue is.
func (c *Conn) CancelUpload(index, begin, length uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := upload{index, begin, length}
	at := c.at[u]
	if len(at) == 0 {
		return false
	}
	i := at[len(at)-1]
	if len(at) == 1 {
		delete(c.at, u)
	} else {
		c.at[u] = at[:len(at)-1]
	}
	if c.cfg.Fast {
		c.queue[i] = item{msg: wire.Message{ID: wire.Reject, Index: index, Begin: begin, Length: length}}
	} else {
		c.queue[i] = item{dropped: true}
	}
	c.uploads--
	return true
}

// QueuedUploads counts the uploads waiting for the writer.
func (c *Conn) QueuedUploads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.uploads
}

// CancelAllUploads drops every queued upload, as a choke requires, and
// returns them as the reject messages a peer with the fast extension must
// be sent for them (BEP 6).
func (c *Conn) CancelAllUploads() []wire.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dropped []wire.Message
	kept := c.queue[:0]
	for _, it := range c.queue {
		if u := it.upload; u != nil {
			dropped = append(dropped, wire.Message{ID: wire.Reject, Index: u.index, Begin: u.begin, Length: u.length})
			continue
		}
		kept = append(kept, it)
	}
	clear(c.queue[len(kept):])
	c.queue = kept
	c.uploads = 0
	clear(c.at)
	return dropped
}

func (c *Conn) enqueue(it item) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= MaxQueue {
		c.mu.Unlock()
		c.closeAsync()
		return
	}
	if u := it.upload; u != nil {
		if c.at == nil {
			c.at = map[upload][]int{}
		}
		c.at[*u] = append(c.at[*u], len(c.queue))
		c.uploads++
	}
	c.queue = append(c.queue, it)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// SetLimits changes the decoder's limits; the torrent calls it only before
// Start.
func (c *Conn) SetLimits(l wire.Limits) { c.dec.SetLimits(l) }

// Close ends the connection and waits for its goroutines.
func (c *Conn) Close() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.queue = nil
		c.mu.Unlock()
		close(c.stop)
		c.nc.Close()
	})
	c.wg.Wait()
}

func (c *Conn) read(events chan<- Event, done <-chan struct{}) {
	emit := func(ev Event) bool {
		select {
		case events <- ev:
			return true
		case <-done:
		case <-c.stop:
		}
		if ev.BlockBuf != nil {
			c.cfg.Blocks.Put(ev.BlockBuf)
		}
		return false
	}
	var m wire.Message
	for {
		c.nc.SetReadDeadline(time.Now().Add(c.cfg.IdleTimeout))
		if err := c.dec.Decode(&m); err != nil {
			select {
			case <-c.stop:
				err = net.ErrClosed
			default:
			}
			emit(Event{Conn: c, Err: err})
			c.closeAsync()
			return
		}
		if m.Keepalive {
			continue
		}
		ev := Event{Conn: c, Msg: m}
		switch {
		case m.ID == wire.Piece:
			buf := c.cfg.Blocks.Get().(*[]byte)
			ev.BlockBuf = buf
			ev.Msg.Block = (*buf)[:copy(*buf, m.Block)]
			c.Downloaded.Add(int64(len(m.Block)))
		case m.Bitfield != nil:
			ev.Msg.Bitfield = append([]byte(nil), m.Bitfield...)
		case m.Payload != nil:
			ev.Msg.Payload = append([]byte(nil), m.Payload...)
		}
		if !emit(ev) {
			return
		}
	}
}

// closeAsync closes the socket so the writer stops, without waiting for
// the goroutine that calls it.
func (c *Conn) closeAsync() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.nc.Close()
}

var errUploadTooLarge = errors.New("peerconn: upload larger than a block")

func (c *Conn) write() {
	bw := bufio.NewWriterSize(c.nc, 128<<10)
	enc := wire.NewEncoder(bw)
	block := make([]byte, BlockSize)
	keepalive := time.NewTimer(c.cfg.KeepAlive)
	defer keepalive.Stop()
	var batch []item
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		case <-keepalive.C:
			batch = append(batch[:0], item{msg: wire.Message{Keepalive: true}})
			if err := c.flushBatch(enc, bw, batch, block); err != nil {
				c.closeAsync()
				return
			}
			keepalive.Reset(c.cfg.KeepAlive)
			continue
		}
		for {
			c.mu.Lock()
			batch, c.queue = c.queue, batch[:0]
			c.uploads = 0
			clear(c.at)
			c.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			if err := c.flushBatch(enc, bw, batch, block); err != nil {
				c.closeAsync()
				return
			}
			clear(batch)
		}
		keepalive.Reset(c.cfg.KeepAlive)
	}
}

func (c *Conn) flushBatch(enc *wire.Encoder, bw *bufio.Writer, batch []item, block []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	for i := range batch {
		it := &batch[i]
		if it.dropped {
			continue
		}
		if u := it.upload; u != nil {
			if u.length > BlockSize {
				return errUploadTooLarge
			}
			p := block[:u.length]
			if err := c.cfg.ReadBlock(u.index, u.begin, p); err != nil {
				if c.cfg.Fast {
					if err := enc.Encode(&wire.Message{ID: wire.Reject, Index: u.index, Begin: u.begin, Length: u.length}); err != nil {
						return err
					}
				}
				continue
			}
			if err := enc.WritePiece(u.index, u.begin, p); err != nil {
				return err
			}
			c.Uploaded.Add(int64(u.length))
			continue
		}
		if err := enc.Encode(&it.msg); err != nil {
			return err
		}
	}
	return bw.Flush()
}
