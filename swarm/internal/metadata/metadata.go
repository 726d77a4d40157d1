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

// Bounds on what lying peers can make an Assembler try.
const (
	// MaxSizes is the most distinct sizes an Assembler assembles. A source
	// claiming yet another size is refused, and once MaxSizes sizes have
	// each failed the hash check the Assembler gives up.
	MaxSizes = 8
	// MaxFailures is the most assemblies that may fail the hash check, of
	// any sizes, before the Assembler gives up.
	MaxFailures = 4 * MaxSizes
)

// Errors of the Assembler.
var (
	// ErrMismatch reports metadata that does not hash to the info-hash; the
	// assembly was discarded.
	ErrMismatch = errors.New("metadata: pieces do not match the info-hash")
	// ErrSize reports a claimed size that is out of bounds, or that would
	// be a distinct size past MaxSizes.
	ErrSize = errors.New("metadata: unusable metadata size")
	// ErrBanned reports a source whose pieces, alone, failed the hash check.
	ErrBanned = errors.New("metadata: source gave metadata that does not match the info-hash")
	// ErrGaveUp reports an Assembler that stopped after MaxSizes sizes or
	// MaxFailures assemblies failed the hash check.
	ErrGaveUp = errors.New("metadata: too much metadata failed the info-hash check")
	// errLeft reports a source used after Leave.
	errLeft = errors.New("metadata: source has left")
)

// Source is one peer taking part in an assembly, known by the size it
// claimed (metadata_size in its BEP 10 handshake).
type Source struct {
	size    int64
	attempt int  // the last assembly it gave a piece to
	banned  bool // its pieces alone failed the hash check
	gone    bool // banned or left: its claim no longer counts
}

// Size is the metadata size the source claimed.
func (s *Source) Size() int64 { return s.size }

// Assembler collects the metadata of the torrent with a known info-hash,
// from sources that may lie about its size or its bytes.
//
// Each source claims a size when it joins. One assembly, of one size and
// one buffer, is under way at a time; it starts when a source of the size
// most sources claim asks for a piece to request, and only those sources
// give it pieces. A whole assembly is checked against the info-hash. When
// the check fails the assembly is discarded: if one source gave every
// piece it is banned, and from then on each assembly takes pieces from one
// source only, so that every later failure names its culprit. The next
// assembly is of whatever size the remaining sources claim most.
//
// At most MaxSizes distinct sizes are assembled, and the Assembler gives
// up once they have all failed or MaxFailures assemblies have, so lying
// sources cost a bounded number of retries, never a wrong torrent, and
// never more than one assembly buffer, of at most MaxSize bytes, at a time.
type Assembler struct {
	hash     [20]byte
	claims   map[int64]int // sources that have not gone, by claimed size
	tried    map[int64]int // failed assemblies, by every size assembled
	failures int           // failed assemblies in all
	err      error         // set once the Assembler has given up
	done     bool          // the metadata is complete and verified

	// The assembly under way; size is 0 when there is none.
	attempt      int // counts assemblies started
	size         int64
	buf          []byte
	have         []bool
	pending      []*Source // the source a missing piece was requested from
	owner        *Source   // the one source of an exclusive assembly
	contributors []*Source // the sources that gave pieces
	received     int
}

// NewAssembler starts collecting the metadata with info-hash ih.
func NewAssembler(ih [20]byte) *Assembler {
	return &Assembler{hash: ih, claims: map[int64]int{}, tried: map[int64]int{}}
}

// Join registers a source that claims the metadata is size bytes. It
// fails with ErrSize for a size out of bounds or past MaxSizes, and with
// ErrGaveUp once the Assembler has given up. Joining allocates nothing.
func (a *Assembler) Join(size int64) (*Source, error) {
	if a.err != nil {
		return nil, a.err
	}
	if err := a.admit(size); err != nil {
		return nil, err
	}
	a.claims[size]++
	return &Source{size: size}, nil
}

// admit reports whether an assembly of size may be attempted.
func (a *Assembler) admit(size int64) error {
	if size <= 0 || size > MaxSize {
		return fmt.Errorf("%w: %d bytes", ErrSize, size)
	}
	if _, ok := a.tried[size]; !ok && len(a.tried) >= MaxSizes {
		return fmt.Errorf("%w: %d bytes, after %d other sizes", ErrSize, size, len(a.tried))
	}
	return nil
}

// Leave removes a source, as when its peer goes away: its requests return
// to the missing pool, and an assembly it alone could finish is dropped.
func (a *Assembler) Leave(s *Source) {
	if !s.gone {
		a.release(s)
	}
}

// release withdraws s's claim and its requests.
func (a *Assembler) release(s *Source) {
	s.gone = true
	if a.claims[s.size]--; a.claims[s.size] <= 0 {
		delete(a.claims, s.size)
	}
	for i, p := range a.pending {
		if p == s {
			a.pending[i] = nil
		}
	}
	if a.size != 0 && !a.done && (a.owner == s || a.claims[a.size] == 0) {
		a.drop()
	}
}

// drop discards the assembly under way and frees its buffer.
func (a *Assembler) drop() {
	a.size = 0
	a.buf, a.have, a.pending = nil, nil, nil
	a.owner, a.contributors = nil, nil
	a.received = 0
}

// Err reports ErrGaveUp once the Assembler has given up, nil before.
func (a *Assembler) Err() error { return a.err }

// Size is the size of the assembly under way, 0 when there is none.
func (a *Assembler) Size() int64 { return a.size }

// check reports why s may take no further part, if it may not.
func (a *Assembler) check(s *Source) error {
	switch {
	case a.err != nil:
		return a.err
	case s.banned:
		return ErrBanned
	case s.gone:
		return errLeft
	}
	return nil
}

// Next returns a piece to request from s, or -1 when there is none for it
// now: the pieces of its size are all requested or the assembly under way
// is of another size. It starts an assembly of s's size, allocating its
// buffer, when none is under way and no other size is claimed by more
// sources. An error means s should be dropped.
func (a *Assembler) Next(s *Source) (int, error) {
	if err := a.check(s); err != nil {
		return -1, err
	}
	if err := a.admit(s.size); err != nil {
		return -1, err // MaxSizes other sizes have been assembled
	}
	if a.done {
		return -1, nil
	}
	if a.size == 0 {
		if !a.preferred(s.size) {
			return -1, nil
		}
		a.begin(s.size)
	}
	if a.size != s.size || a.owner != nil && a.owner != s {
		return -1, nil
	}
	for i := range a.have {
		if !a.have[i] && a.pending[i] == nil {
			a.pending[i] = s
			if a.failures > 0 {
				a.owner = s // after a failure, one source per assembly
			}
			return i, nil
		}
	}
	return -1, nil
}

// preferred reports whether no admissible size is better than size: one
// claimed by more sources, or by as many with fewer failed assemblies.
func (a *Assembler) preferred(size int64) bool {
	n, f := a.claims[size], a.tried[size]
	for other, m := range a.claims {
		if a.admit(other) == nil && (m > n || m == n && a.tried[other] < f) {
			return false
		}
	}
	return true
}

// begin starts an assembly of size bytes.
func (a *Assembler) begin(size int64) {
	if _, ok := a.tried[size]; !ok {
		a.tried[size] = 0
	}
	a.attempt++
	a.size = size
	n := Pieces(size)
	a.buf = make([]byte, size)
	a.have = make([]bool, n)
	a.pending = make([]*Source, n)
}

// Rejected returns piece i to the missing pool, as when s rejects it.
func (a *Assembler) Rejected(s *Source, i int) {
	if a.size == s.size && i >= 0 && i < len(a.pending) && a.pending[i] == s {
		a.pending[i] = nil
	}
}

// Add files a data message from s. It returns the complete, verified info
// dictionary once the last piece arrives, nil before then. A piece that
// answers no request of the assembly under way, such as one requested
// before an assembly was discarded, is ignored. ErrMismatch means the
// assembly failed the hash check and was discarded; s may go on unless a
// later call reports ErrBanned. Any other error means s should be dropped.
func (a *Assembler) Add(s *Source, m Message) ([]byte, error) {
	if m.Type != Data || m.TotalSize != s.size {
		return nil, fmt.Errorf("%w: piece %d of %d bytes from a source of %d", ErrBad, m.Piece, m.TotalSize, s.size)
	}
	if err := a.check(s); err != nil {
		return nil, err
	}
	if a.done || a.size != s.size || m.Piece < 0 || m.Piece >= len(a.pending) || a.pending[m.Piece] != s {
		return nil, nil
	}
	a.pending[m.Piece] = nil
	want := PieceSize
	if m.Piece == len(a.have)-1 {
		want = int(a.size) - m.Piece*PieceSize
	}
	if len(m.Payload) != want {
		return nil, fmt.Errorf("%w: piece %d is %d bytes, want %d", ErrBad, m.Piece, len(m.Payload), want)
	}
	copy(a.buf[m.Piece*PieceSize:], m.Payload)
	a.have[m.Piece] = true
	a.received++
	if s.attempt != a.attempt {
		s.attempt = a.attempt
		a.contributors = append(a.contributors, s)
	}
	if a.received < len(a.have) {
		return nil, nil
	}
	if sha1.Sum(a.buf) != a.hash {
		a.fail()
		return nil, ErrMismatch
	}
	a.done = true
	return a.buf, nil
}

// fail discards an assembly that failed the hash check, bans its source
// when it had only one, and gives up when too much has failed.
func (a *Assembler) fail() {
	a.failures++
	a.tried[a.size]++
	if len(a.contributors) == 1 {
		s := a.contributors[0]
		if !s.gone {
			a.release(s)
		}
		s.banned = true
	}
	a.drop()
	failedSizes := 0
	for _, n := range a.tried {
		if n > 0 {
			failedSizes++
		}
	}
	if failedSizes >= MaxSizes || a.failures >= MaxFailures {
		a.err = fmt.Errorf("%w: %d assemblies of %d sizes failed", ErrGaveUp, a.failures, failedSizes)
	}
}
