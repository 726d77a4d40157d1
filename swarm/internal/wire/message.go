package wire

import (
	"encoding/binary"
	"math"
	"strconv"
)

// ID identifies a peer wire message: the byte after the length prefix.
type ID uint8

// Message IDs of BEP 3, BEP 5 (port), BEP 6 (fast extension) and BEP 10
// (extension protocol).
const (
	Choke         ID = 0
	Unchoke       ID = 1
	Interested    ID = 2
	NotInterested ID = 3
	Have          ID = 4
	Bitfield      ID = 5
	Request       ID = 6
	Piece         ID = 7
	Cancel        ID = 8
	Port          ID = 9
	Suggest       ID = 0x0D
	HaveAll       ID = 0x0E
	HaveNone      ID = 0x0F
	Reject        ID = 0x10
	AllowedFast   ID = 0x11
	Extended      ID = 20
)

// String returns the message's name as the BEPs spell it, or
// "unknown(N)" for an ID this package does not know.
func (id ID) String() string {
	switch id {
	case Choke:
		return "choke"
	case Unchoke:
		return "unchoke"
	case Interested:
		return "interested"
	case NotInterested:
		return "not interested"
	case Have:
		return "have"
	case Bitfield:
		return "bitfield"
	case Request:
		return "request"
	case Piece:
		return "piece"
	case Cancel:
		return "cancel"
	case Port:
		return "port"
	case Suggest:
		return "suggest piece"
	case HaveAll:
		return "have all"
	case HaveNone:
		return "have none"
	case Reject:
		return "reject request"
	case AllowedFast:
		return "allowed fast"
	case Extended:
		return "extended"
	}
	return "unknown(" + strconv.Itoa(int(id)) + ")"
}

// Known reports whether id is one of the IDs this package decodes into fields.
// Messages with other IDs are passed through with their raw Payload.
func (id ID) Known() bool {
	_, _, ok := shape(id)
	return ok
}

// shape gives the size of the fixed fields that follow id on the wire, and
// whether a variable-length tail (block, bitfield or payload) follows them.
func shape(id ID) (fixed int, tail bool, known bool) {
	switch id {
	case Choke, Unchoke, Interested, NotInterested, HaveAll, HaveNone:
		return 0, false, true
	case Have, Suggest, AllowedFast:
		return 4, false, true
	case Request, Cancel, Reject:
		return 12, false, true
	case Port:
		return 2, false, true
	case Piece:
		return 8, true, true
	case Bitfield:
		return 0, true, true
	case Extended:
		return 1, true, true
	}
	return 0, true, false
}

// Message is one peer wire message, flat so that one value can be reused for
// every Decode. Only the fields that belong to ID are meaningful; Decode
// zeroes the others.
//
// After Decode, Bitfield, Block and Payload alias the Decoder's buffer and
// are valid only until the next call to Decode. Copy what must be kept.
type Message struct {
	Keepalive bool // a zero-length frame; when set, every other field is ignored
	ID        ID

	Index  uint32 // have, request, piece, cancel, suggest, reject, allowed fast
	Begin  uint32 // request, piece, cancel, reject: byte offset within the piece
	Length uint32 // request, cancel, reject; for piece, Decode sets len(Block) and encoding ignores it

	Bitfield []byte // bitfield: piece 0 is the high bit of the first byte
	Block    []byte // piece: the block's data

	Port       uint16 // port: the peer's DHT port
	ExtendedID uint8  // extended: 0 is the BEP 10 handshake, others as the peers agreed
	Payload    []byte // extended: the bencoded body after ExtendedID; unknown IDs: the whole payload
}

// Length prefix, ID and the fields of a piece message before its block.
const pieceHeaderLen = 4 + 1 + 8

// maxPieceBlock is the largest block a length prefix can frame.
const maxPieceBlock = math.MaxUint32 - 1 - 8

// AppendMessage appends the wire form of m to dst and returns the extended
// slice. It does not allocate when dst has room. It frames what it is given
// and does not validate it: the engine builds its own messages.
//
// It panics if the message would be longer than a length prefix can state
// (4 GiB), which no caller can do by accident.
func AppendMessage(dst []byte, m *Message) []byte {
	dst, tail := appendHead(dst, m)
	return append(dst, tail...)
}

// layout gives the size of m's fixed fields and its variable-length tail.
func layout(m *Message) (fixed int, tail []byte) {
	fixed, hasTail, known := shape(m.ID)
	if hasTail {
		switch {
		case m.ID == Piece:
			tail = m.Block
		case m.ID == Bitfield:
			tail = m.Bitfield
		case m.ID == Extended || !known:
			tail = m.Payload
		}
	}
	return fixed, tail
}

// frameLen is the value of m's length prefix, computed without overflow.
func frameLen(fixed int, tail []byte) uint64 { return 1 + uint64(fixed) + uint64(len(tail)) }

// appendHead appends everything of m up to its variable-length tail, and
// returns that tail so that a writer can send it without copying it.
func appendHead(dst []byte, m *Message) (head, tail []byte) {
	if m.Keepalive {
		return binary.BigEndian.AppendUint32(dst, 0), nil
	}
	fixed, tail := layout(m)
	n := frameLen(fixed, tail)
	if n > math.MaxUint32 {
		panic("wire: message longer than a length prefix can state")
	}
	be := binary.BigEndian
	dst = be.AppendUint32(dst, uint32(n))
	dst = append(dst, byte(m.ID))
	switch m.ID {
	case Have, Suggest, AllowedFast:
		dst = be.AppendUint32(dst, m.Index)
	case Request, Cancel, Reject:
		dst = be.AppendUint32(dst, m.Index)
		dst = be.AppendUint32(dst, m.Begin)
		dst = be.AppendUint32(dst, m.Length)
	case Piece:
		dst = be.AppendUint32(dst, m.Index)
		dst = be.AppendUint32(dst, m.Begin)
	case Port:
		dst = be.AppendUint16(dst, m.Port)
	case Extended:
		dst = append(dst, m.ExtendedID)
	}
	return dst, tail
}

// AppendPieceHeader appends the header of a piece message carrying a block
// of length bytes: everything but the block itself. The caller sends the
// block from its own buffer right after it. Like AppendMessage, it panics if
// length is too large for the length prefix.
func AppendPieceHeader(dst []byte, index, begin, length uint32) []byte {
	if length > maxPieceBlock {
		panic("wire: message longer than a length prefix can state")
	}
	be := binary.BigEndian
	dst = be.AppendUint32(dst, 1+8+length)
	dst = append(dst, byte(Piece))
	dst = be.AppendUint32(dst, index)
	return be.AppendUint32(dst, begin)
}
