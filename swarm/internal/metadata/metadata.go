// Package metadata implements BEP 9, ut_metadata: the messages that carry
// a torrent's info dictionary between peers in 16 KiB pieces, and an
// Assembler that collects the pieces of a torrent known only by its
// info-hash (a magnet link) and checks them against it.
//
// It is pure: no sockets, no goroutines. The engine sends and receives the
// messages over the BEP 10 extension protocol.
package metadata

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"

	"github.com/tbproxy/tbproxy/bencode"
)

// Name is the extension's name in the BEP 10 handshake.
const Name = "ut_metadata"

// PieceSize is the size of every metadata piece but the last.
const PieceSize = 16 << 10

// MaxSize bounds the metadata a peer may announce: libtorrent's limit.
const MaxSize = 30 << 20

// Message types.
const (
	Request = 0
	Data    = 1
	Reject  = 2
)

// ErrBad reports a malformed or hostile ut_metadata message.
var ErrBad = errors.New("metadata: bad ut_metadata message")

// Message is one ut_metadata message.
type Message struct {
	Type      int
	Piece     int
	TotalSize int64  // data messages only
	Payload   []byte // data messages: the piece's bytes, aliasing the input
}

type header struct {
	MsgType   int   `bencode:"msg_type"`
	Piece     int   `bencode:"piece"`
	TotalSize int64 `bencode:"total_size,omitempty"`
}

// Parse reads a message: a bencoded dictionary, followed by the piece's
// bytes for a data message.
func Parse(b []byte) (Message, error) {
	dec := bencode.NewDecoder(bytes.NewReader(b))
	dec.Limits = bencode.Limits{MaxDepth: 4, MaxSize: 1 << 10, MaxTokens: 64}
	var h header
	if err := dec.Decode(&h); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	m := Message{Type: h.MsgType, Piece: h.Piece, TotalSize: h.TotalSize}
	rest := b[dec.InputOffset():]
	switch {
	case h.Piece < 0 || h.Piece > MaxSize/PieceSize:
		return Message{}, fmt.Errorf("%w: piece %d", ErrBad, h.Piece)
	case h.MsgType == Data:
		if h.TotalSize <= 0 || h.TotalSize > MaxSize || len(rest) > PieceSize {
			return Message{}, fmt.Errorf("%w: data of %d bytes, total %d", ErrBad, len(rest), h.TotalSize)
		}
		m.Payload = rest
	case h.MsgType == Request || h.MsgType == Reject:
		if len(rest) != 0 {
			return Message{}, fmt.Errorf("%w: trailing bytes", ErrBad)
		}
	default:
		return Message{}, fmt.Errorf("%w: type %d", ErrBad, h.MsgType)
	}
	return m, nil
}

// Append encodes m after dst.
func Append(dst []byte, m Message) []byte {
	h := header{MsgType: m.Type, Piece: m.Piece}
	if m.Type == Data {
		h.TotalSize = m.TotalSize
	}
	b, _ := bencode.Marshal(h) // a struct of integers always encodes
	dst = append(dst, b...)
	return append(dst, m.Payload...)
}

// Pieces is the number of pieces of metadata of size bytes.
func Pieces(size int64) int { return int((size + PieceSize - 1) / PieceSize) }

// Serve answers a request for piece i of info (our raw info dictionary):
// the data, or a reject when there is no such piece.
func Serve(info []byte, i int) Message {
	if i < 0 || i >= Pieces(int64(len(info))) {
		return Message{Type: Reject, Piece: i}
	}
	end := min((i+1)*PieceSize, len(info))
	return Message{Type: Data, Piece: i, TotalSize: int64(len(info)), Payload: info[i*PieceSize : end]}
}

// Assembler collects the metadata of the torrent with a known info-hash.
// The first peer that states a size fixes it; pieces that do not fit it
// are refused, and the whole is checked against the info-hash, so a lying
// peer costs a retry, never a wrong torrent.
type Assembler struct {
	hash     [20]byte
	size     int64
	buf      []byte
	have     []bool
	pending  []bool // requested and not yet answered
	received int
}

// NewAssembler starts collecting the metadata with info-hash ih.
func NewAssembler(ih [20]byte) *Assembler { return &Assembler{hash: ih} }

// SetSize records the size a peer announced (metadata_size in its BEP 10
// handshake). It reports false for a size that is out of bounds or that
// contradicts one already set.
func (a *Assembler) SetSize(size int64) bool {
	if size <= 0 || size > MaxSize {
		return false
	}
	if a.size != 0 {
		return a.size == size
	}
	a.size = size
	n := Pieces(size)
	a.buf = make([]byte, size)
	a.have = make([]bool, n)
	a.pending = make([]bool, n)
	return true
}

// Size is the metadata size, 0 until set.
func (a *Assembler) Size() int64 { return a.size }

// Next returns a piece to request, or -1 when every missing piece is
// already requested.
func (a *Assembler) Next() int {
	for i := range a.have {
		if !a.have[i] && !a.pending[i] {
			a.pending[i] = true
			return i
		}
	}
	return -1
}

// Rejected returns piece i to the missing pool, as when a peer rejects it
// or goes away.
func (a *Assembler) Rejected(i int) {
	if i >= 0 && i < len(a.pending) {
		a.pending[i] = false
	}
}

// ErrMismatch reports metadata that does not hash to the info-hash; the
// assembler has started over.
var ErrMismatch = errors.New("metadata: pieces do not match the info-hash")

// Add files a data message. It returns the complete, verified info
// dictionary once the last piece arrives, nil before then.
func (a *Assembler) Add(m Message) ([]byte, error) {
	if a.size == 0 || m.Type != Data || m.TotalSize != a.size || m.Piece < 0 || m.Piece >= len(a.have) {
		return nil, fmt.Errorf("%w: unexpected piece %d of %d bytes", ErrBad, m.Piece, m.TotalSize)
	}
	want := PieceSize
	if m.Piece == len(a.have)-1 {
		want = int(a.size) - m.Piece*PieceSize
	}
	if len(m.Payload) != want {
		a.pending[m.Piece] = false
		return nil, fmt.Errorf("%w: piece %d is %d bytes, want %d", ErrBad, m.Piece, len(m.Payload), want)
	}
	a.pending[m.Piece] = false
	if a.have[m.Piece] {
		return nil, nil
	}
	copy(a.buf[m.Piece*PieceSize:], m.Payload)
	a.have[m.Piece] = true
	a.received++
	if a.received < len(a.have) {
		return nil, nil
	}
	if sha1.Sum(a.buf) != a.hash {
		clear(a.have)
		a.received = 0
		return nil, ErrMismatch
	}
	return a.buf, nil
}
