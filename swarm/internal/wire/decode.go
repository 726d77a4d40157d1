package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Defaults for the zero fields of Limits.
const (
	// DefaultMaxMessage admits a 1 MiB payload plus the largest message
	// header (13 bytes), and so a bitfield for 8 Mi pieces, well past what
	// metainfo accepts.
	DefaultMaxMessage = 1<<20 + 13
	// DefaultMaxBlock is the block size every client requests (16 KiB);
	// libtorrent and others refuse larger requests.
	DefaultMaxBlock = 16 << 10
)

// readBufferSize sizes the bufio.Reader that NewDecoder adds: several
// 16 KiB piece messages, so that most payloads are decoded in place.
const readBufferSize = 64 << 10

// ErrProtocol is matched, under errors.Is, by every *ProtocolError.
var ErrProtocol = errors.New("wire: protocol violation")

// ProtocolError reports a message that breaks the protocol or the Limits.
// The connection it came from should be closed; the stream cannot be
// resynchronised after it.
type ProtocolError struct {
	ID     ID     // the offending message's ID; zero when Prefix is set
	Prefix bool   // the length prefix itself was refused, before the ID byte was read
	Reason string // what was wrong, for logs
}

func (e *ProtocolError) Error() string {
	if e.Prefix {
		return "wire: bad length prefix: " + e.Reason
	}
	return "wire: bad " + e.ID.String() + " message: " + e.Reason
}

// Unwrap returns ErrProtocol, so that errors.Is(err, ErrProtocol) holds.
func (e *ProtocolError) Unwrap() error { return ErrProtocol }

func violation(id ID, format string, args ...any) error {
	return &ProtocolError{ID: id, Reason: fmt.Sprintf(format, args...)}
}

// Limits bounds what a Decoder accepts. The zero value is usable: it applies
// the default sizes and checks nothing that needs the torrent's shape.
type Limits struct {
	// MaxMessage bounds the length prefix (ID plus payload). Zero means
	// DefaultMaxMessage.
	MaxMessage uint32

	// MaxBlock bounds the length of request, cancel and reject messages and
	// the block of a piece message. Zero means DefaultMaxBlock.
	MaxBlock uint32

	// NumPieces is the torrent's piece count, or zero (or negative) while it
	// is not known, as on a magnet link before the metadata has arrived.
	// When set, a bitfield must have exactly (NumPieces+7)/8 bytes with its
	// spare bits clear, and every piece index must be below NumPieces.
	NumPieces int

	// PieceLength, when set, gives the length of the piece at index. Then
	// begin+length of request, cancel, reject and piece messages must not pass
	// the end of the piece. When NumPieces is set it is called only with
	// indices below NumPieces; otherwise it must accept any index, and
	// returning 0 refuses every span in that piece.
	PieceLength func(index uint32) uint32
}

func (l Limits) withDefaults() Limits {
	if l.MaxMessage == 0 {
		l.MaxMessage = DefaultMaxMessage
	}
	if l.MaxBlock == 0 {
		l.MaxBlock = DefaultMaxBlock
	}
	if l.NumPieces < 0 {
		l.NumPieces = 0
	}
	return l
}

// A Decoder reads peer wire messages from a stream, after the handshake.
//
// Payloads are not copied out of the read buffer: a payload that fits the
// bufio.Reader is returned in place, a larger one is read into a buffer
// that the Decoder keeps while it is no larger than a read buffer or a block.
// Either way the Message's slices are valid only until the next Decode.
// After any error other than io.EOF the stream position is undefined, so the
// caller should close the connection.
type Decoder struct {
	br  *bufio.Reader // the stream; the Decoder is its only reader
	lim Limits        // defaults applied

	big     []byte // payloads larger than br can buffer; reused up to keepCap
	keepCap int    // big is dropped at the next Decode when its capacity exceeds this
}

// NewDecoder returns a Decoder reading r. If r is a *bufio.Reader it is used
// as is (and must not be read by anyone else afterwards); otherwise it is
// wrapped in one of 64 KiB.
func NewDecoder(r io.Reader, lim Limits) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, readBufferSize)
	}
	d := &Decoder{br: br}
	d.SetLimits(lim)
	return d
}

// SetLimits replaces the Decoder's limits, for instance once the metadata of
// a magnet link has arrived and NumPieces becomes known. The zero fields take
// their defaults.
func (d *Decoder) SetLimits(lim Limits) {
	d.lim = lim.withDefaults()
	d.keepCap = max(readBufferSize, int(min(d.lim.MaxBlock, d.lim.MaxMessage))+pieceHeaderLen)
}

// Limits returns the limits in force, with defaults applied.
func (d *Decoder) Limits() Limits { return d.lim }

// Decode reads the next message into m, overwriting every field of m.
//
// It returns io.EOF, unwrapped, only when the stream ends cleanly between two
// messages; a stream that ends inside a message gives an error wrapping
// io.ErrUnexpectedEOF. A message that breaks the protocol or the Limits gives
// a *ProtocolError, detected from its header alone whenever the header
// suffices, so that nothing of a hostile declared size is read or allocated.
// A message with an ID this package does not know is not an error: it is
// returned with its raw Payload, bounded by MaxMessage, for the caller to
// ignore.
func (d *Decoder) Decode(m *Message) error {
	if cap(d.big) > d.keepCap {
		d.big = nil // a rare large message must not pin its buffer for the connection's life
	}
	*m = Message{}

	prefix, err := d.br.Peek(4)
	if err != nil {
		if len(prefix) == 0 && err == io.EOF {
			return io.EOF
		}
		return fmt.Errorf("wire: reading length prefix: %w", noEOF(err))
	}
	n := binary.BigEndian.Uint32(prefix)
	_, _ = d.br.Discard(4) // cannot fail: the bytes are buffered
	if n == 0 {
		m.Keepalive = true
		return nil
	}
	if n > d.lim.MaxMessage {
		return &ProtocolError{Prefix: true, Reason: fmt.Sprintf("length %d exceeds limit %d", n, d.lim.MaxMessage)}
	}

	b, err := d.br.ReadByte()
	if err != nil {
		return fmt.Errorf("wire: reading message id: %w", noEOF(err))
	}
	m.ID = ID(b)
	size := n - 1
	if err := d.checkSize(m.ID, size); err != nil {
		return err
	}

	var p []byte
	if size > 0 {
		if p, err = d.payload(int(size)); err != nil {
			return fmt.Errorf("wire: reading %s message: %w", m.ID, noEOF(err))
		}
	}
	return d.fill(m, p)
}

// checkSize refuses, from the header alone, a payload size that the message
// ID cannot have.
func (d *Decoder) checkSize(id ID, size uint32) error {
	fixed, tail, known := shape(id)
	switch {
	case !known:
		return nil // bounded by MaxMessage already
	case !tail:
		if size != uint32(fixed) {
			return violation(id, "payload of %d bytes, want %d", size, fixed)
		}
	case size < uint32(fixed):
		return violation(id, "payload of %d bytes, want at least %d", size, fixed)
	case id == Piece:
		block := size - uint32(fixed)
		if block == 0 {
			return violation(id, "empty block")
		}
		if block > d.lim.MaxBlock {
			return violation(id, "block of %d bytes exceeds limit %d", block, d.lim.MaxBlock)
		}
	case id == Bitfield && d.lim.NumPieces > 0:
		if want := (uint64(d.lim.NumPieces) + 7) / 8; uint64(size) != want {
			return violation(id, "%d bytes for %d pieces, want %d", size, d.lim.NumPieces, want)
		}
	}
	return nil
}

// payload returns the next n bytes of the stream, consumed.
func (d *Decoder) payload(n int) ([]byte, error) {
	if n <= d.br.Size() {
		p, err := d.br.Peek(n)
		if err != nil {
			return nil, err
		}
		_, _ = d.br.Discard(n)
		return p, nil
	}
	// Grow while the bytes arrive, so that a declared length costs memory
	// only in proportion to what the peer actually sends.
	b := d.big[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), d.br.Size())))
			copy(nb, b)
			b = nb
		}
		k, err := io.ReadFull(d.br, b[len(b):min(n, cap(b))])
		b = b[:len(b)+k]
		if err != nil {
			d.big = b[:0]
			return nil, err
		}
	}
	d.big = b[:0]
	return b, nil
}

// fill decodes payload p of message m.ID into m and checks it against the
// limits that need its content.
func (d *Decoder) fill(m *Message, p []byte) error {
	be := binary.BigEndian
	switch m.ID {
	case Have, Suggest, AllowedFast:
		m.Index = be.Uint32(p)
		return d.checkIndex(m.ID, m.Index)
	case Request, Cancel, Reject:
		m.Index = be.Uint32(p)
		m.Begin = be.Uint32(p[4:])
		m.Length = be.Uint32(p[8:])
		if m.Length == 0 {
			return violation(m.ID, "zero length")
		}
		if m.Length > d.lim.MaxBlock {
			return violation(m.ID, "length %d exceeds limit %d", m.Length, d.lim.MaxBlock)
		}
		return d.checkSpan(m.ID, m.Index, m.Begin, m.Length)
	case Piece:
		m.Index = be.Uint32(p)
		m.Begin = be.Uint32(p[4:])
		m.Block = p[8:]
		m.Length = uint32(len(m.Block))
		return d.checkSpan(m.ID, m.Index, m.Begin, m.Length)
	case Bitfield:
		m.Bitfield = nonEmpty(p)
		return d.checkSpareBits(p)
	case Port:
		m.Port = be.Uint16(p)
	case Extended:
		m.ExtendedID = p[0]
		m.Payload = nonEmpty(p[1:])
	case Choke, Unchoke, Interested, NotInterested, HaveAll, HaveNone:
	default:
		m.Payload = nonEmpty(p)
	}
	return nil
}

func (d *Decoder) checkIndex(id ID, index uint32) error {
	if d.lim.NumPieces > 0 && uint64(index) >= uint64(d.lim.NumPieces) {
		return violation(id, "piece index %d out of range (%d pieces)", index, d.lim.NumPieces)
	}
	return nil
}

// checkSpan checks that [begin, begin+length) is a valid index and lies
// within its piece. The sum is computed in 64 bits: begin+length may wrap
// in 32.
func (d *Decoder) checkSpan(id ID, index, begin, length uint32) error {
	if err := d.checkIndex(id, index); err != nil {
		return err
	}
	end := uint64(begin) + uint64(length)
	if end > 1<<32-1 {
		return violation(id, "begin %d + length %d overflows", begin, length)
	}
	if d.lim.PieceLength != nil {
		if pl := d.lim.PieceLength(index); end > uint64(pl) {
			return violation(id, "begin %d + length %d passes the end of piece %d (%d bytes)", begin, length, index, pl)
		}
	}
	return nil
}

// checkSpareBits refuses a bitfield that claims pieces past the last one.
//
// BEP 3 says the spare bits "are set to zero", and the reference clients
// send them so. A peer that sets them is broken or probing, and accepting
// its bitfield would let a count of set bits, or a picker that ranges over
// bytes, see pieces that do not exist; refusing it keeps the invariant that
// every set bit names a real piece. libtorrent only checks the length, so
// this is the stricter choice, taken knowingly.
func (d *Decoder) checkSpareBits(p []byte) error {
	if d.lim.NumPieces <= 0 || len(p) == 0 {
		return nil
	}
	used := d.lim.NumPieces % 8
	if used == 0 {
		return nil
	}
	if spare := p[len(p)-1] & (0xFF >> used); spare != 0 {
		return violation(Bitfield, "spare bits set past piece %d", d.lim.NumPieces-1)
	}
	return nil
}

// nonEmpty maps an empty slice to nil, so that a decoded Message compares
// equal to one built by hand.
func nonEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
