package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strconv"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

func TestDecodeHostile(t *testing.T) {
	lim := testLimits()
	noShape := wire.Limits{}
	tests := []struct {
		name string
		in   []byte
		lim  wire.Limits
		// headerOnly marks inputs cut right after the message header: the
		// error must come from the header alone, before the payload is read
		// or any buffer of the declared size is allocated.
		headerOnly bool
		wantID     wire.ID
		wantPrefix bool
	}{
		{"length prefix 0xFFFFFFFF", be32(0xFFFFFFFF), noShape, true, 0, true},
		{"length prefix just above the default", be32(wire.DefaultMaxMessage + 1), noShape, true, 0, true},
		{"length prefix above a custom limit", be32(101), wire.Limits{MaxMessage: 100}, true, 0, true},
		{"unknown id above the limit", cat(be32(2<<20), []byte{0x40}), noShape, true, 0, true},

		{"choke with a payload", cat(be32(2), []byte{byte(wire.Choke)}), noShape, true, wire.Choke, false},
		{"have all with a payload", cat(be32(5), []byte{byte(wire.HaveAll)}), noShape, true, wire.HaveAll, false},
		{"have of 4 bytes", cat(be32(4), []byte{byte(wire.Have)}), noShape, true, wire.Have, false},
		{"have of 6 bytes", cat(be32(6), []byte{byte(wire.Have)}), noShape, true, wire.Have, false},
		{"suggest of 1 MiB", cat(be32(1<<20), []byte{byte(wire.Suggest)}), noShape, true, wire.Suggest, false},
		{"allowed fast of 3 bytes", cat(be32(3), []byte{byte(wire.AllowedFast)}), noShape, true, wire.AllowedFast, false},
		{"request of 12 bytes", cat(be32(12), []byte{byte(wire.Request)}), noShape, true, wire.Request, false},
		{"request of 14 bytes", cat(be32(14), []byte{byte(wire.Request)}), noShape, true, wire.Request, false},
		{"cancel of 1 byte", cat(be32(1), []byte{byte(wire.Cancel)}), noShape, true, wire.Cancel, false},
		{"reject of 17 bytes", cat(be32(17), []byte{byte(wire.Reject)}), noShape, true, wire.Reject, false},
		{"port of 2 bytes", cat(be32(2), []byte{byte(wire.Port)}), noShape, true, wire.Port, false},
		{"port of 4 bytes", cat(be32(4), []byte{byte(wire.Port)}), noShape, true, wire.Port, false},
		{"piece shorter than its header", cat(be32(8), []byte{byte(wire.Piece)}), noShape, true, wire.Piece, false},
		{"piece with an empty block", cat(be32(9), []byte{byte(wire.Piece)}), noShape, true, wire.Piece, false},
		{"piece block of 16 KiB + 1", cat(be32(1+8+16<<10+1), []byte{byte(wire.Piece)}), noShape, true, wire.Piece, false},
		{"piece block of 1 MiB", cat(be32(1+8+1<<20), []byte{byte(wire.Piece)}), noShape, true, wire.Piece, false},
		{"piece block above a custom MaxBlock", cat(be32(1+8+1025), []byte{byte(wire.Piece)}), wire.Limits{MaxBlock: 1024}, true, wire.Piece, false},
		{"extended without extended id", cat(be32(1), []byte{byte(wire.Extended)}), noShape, true, wire.Extended, false},
		{"bitfield one byte short", cat(be32(testBitfieldLen), []byte{byte(wire.Bitfield)}), lim, true, wire.Bitfield, false},
		{"bitfield one byte long", cat(be32(testBitfieldLen+2), []byte{byte(wire.Bitfield)}), lim, true, wire.Bitfield, false},
		{"bitfield empty", cat(be32(1), []byte{byte(wire.Bitfield)}), lim, true, wire.Bitfield, false},
		{"bitfield of 1 MiB", cat(be32(1<<20), []byte{byte(wire.Bitfield)}), lim, true, wire.Bitfield, false},

		{"bitfield with the first spare bit set", frame(wire.Bitfield, []byte{0xff, 0xff, 0xff, 0xff, 0xfc}), lim, false, wire.Bitfield, false},
		{"bitfield with the last spare bit set", frame(wire.Bitfield, []byte{0, 0, 0, 0, 0x01}), lim, false, wire.Bitfield, false},
		{"request of length 0", frame(wire.Request, be32(0), be32(0), be32(0)), noShape, false, wire.Request, false},
		{"cancel of length 0", frame(wire.Cancel, be32(0), be32(0), be32(0)), noShape, false, wire.Cancel, false},
		{"reject of length 0", frame(wire.Reject, be32(0), be32(0), be32(0)), noShape, false, wire.Reject, false},
		{"request above 16 KiB", frame(wire.Request, be32(0), be32(0), be32(16<<10+1)), noShape, false, wire.Request, false},
		{"request of 0xFFFFFFFF", frame(wire.Request, be32(0), be32(0), be32(0xFFFFFFFF)), noShape, false, wire.Request, false},
		{"cancel above 16 KiB", frame(wire.Cancel, be32(0), be32(0), be32(32<<10)), noShape, false, wire.Cancel, false},
		{"reject above 16 KiB", frame(wire.Reject, be32(0), be32(0), be32(32<<10)), noShape, false, wire.Reject, false},
		{"request begin+length overflows", frame(wire.Request, be32(0), be32(0xFFFFFFFF), be32(16<<10)), noShape, false, wire.Request, false},
		{"piece begin+length overflows", frame(wire.Piece, be32(0), be32(0xFFFFFFF0), seq(100)), noShape, false, wire.Piece, false},
		{"request past the piece end", frame(wire.Request, be32(0), be32(testPieceLen-16<<10+1), be32(16<<10)), lim, false, wire.Request, false},
		{"request past the last piece end", frame(wire.Request, be32(testPieces-1), be32(testLastLen-10), be32(11)), lim, false, wire.Request, false},
		{"request starting past the piece", frame(wire.Request, be32(1), be32(testPieceLen), be32(1)), lim, false, wire.Request, false},
		{"cancel past the piece end", frame(wire.Cancel, be32(2), be32(testPieceLen-1), be32(2)), lim, false, wire.Cancel, false},
		{"reject past the piece end", frame(wire.Reject, be32(testPieces-1), be32(testLastLen), be32(1)), lim, false, wire.Reject, false},
		{"piece block past the piece end", frame(wire.Piece, be32(testPieces-1), be32(testLastLen-100), seq(101)), lim, false, wire.Piece, false},
		{"have index = NumPieces", frame(wire.Have, be32(testPieces)), lim, false, wire.Have, false},
		{"have index 0xFFFFFFFF (negative as int32)", frame(wire.Have, be32(0xFFFFFFFF)), lim, false, wire.Have, false},
		{"suggest index out of range", frame(wire.Suggest, be32(testPieces)), lim, false, wire.Suggest, false},
		{"allowed fast index out of range", frame(wire.AllowedFast, be32(1000)), lim, false, wire.AllowedFast, false},
		{"request index out of range", frame(wire.Request, be32(testPieces), be32(0), be32(1)), lim, false, wire.Request, false},
		{"cancel index out of range", frame(wire.Cancel, be32(testPieces), be32(0), be32(1)), lim, false, wire.Cancel, false},
		{"reject index out of range", frame(wire.Reject, be32(0x80000000), be32(0), be32(1)), lim, false, wire.Reject, false},
		{"piece index out of range", frame(wire.Piece, be32(testPieces), be32(0), seq(1)), lim, false, wire.Piece, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := wire.NewDecoder(bytes.NewReader(tc.in), tc.lim)
			var m wire.Message
			err := d.Decode(&m)
			if !errors.Is(err, wire.ErrProtocol) {
				if tc.headerOnly && errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("Decode(%x) = %v: it read past the header instead of refusing it", tc.in, err)
				}
				t.Fatalf("Decode(%x) = %v, want a protocol error", tc.in, err)
			}
			var pe *wire.ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode error %T is not a *ProtocolError", err)
			}
			if pe.Prefix != tc.wantPrefix || (!tc.wantPrefix && pe.ID != tc.wantID) {
				t.Fatalf("ProtocolError{ID: %v, Prefix: %v}, want {ID: %v, Prefix: %v}", pe.ID, pe.Prefix, tc.wantID, tc.wantPrefix)
			}
			if pe.Reason == "" || pe.Error() == "" {
				t.Fatal("empty reason")
			}
			t.Log(err)
		})
	}
}

// TestDecodeAccepts covers the edges just inside each limit, and unknown IDs.
func TestDecodeAccepts(t *testing.T) {
	lim := testLimits()
	tests := []struct {
		name string
		in   []byte
		lim  wire.Limits
		want wire.Message
	}{
		{"bitfield with every real piece", frame(wire.Bitfield, []byte{0xff, 0xff, 0xff, 0xff, 0xf8}), lim,
			wire.Message{ID: wire.Bitfield, Bitfield: []byte{0xff, 0xff, 0xff, 0xff, 0xf8}}},
		{"bitfield with no spare bits", frame(wire.Bitfield, []byte{0xff, 0xff}), wire.Limits{NumPieces: 16},
			wire.Message{ID: wire.Bitfield, Bitfield: []byte{0xff, 0xff}}},
		{"bitfield of any length while NumPieces is unknown", frame(wire.Bitfield, []byte{0xff, 0xff, 0xff}), wire.Limits{},
			wire.Message{ID: wire.Bitfield, Bitfield: []byte{0xff, 0xff, 0xff}}},
		{"have of the last piece", frame(wire.Have, be32(testPieces-1)), lim,
			wire.Message{ID: wire.Have, Index: testPieces - 1}},
		{"have of any index while NumPieces is unknown", frame(wire.Have, be32(0xFFFFFFFF)), wire.Limits{},
			wire.Message{ID: wire.Have, Index: 0xFFFFFFFF}},
		{"request ending at the piece end", frame(wire.Request, be32(0), be32(testPieceLen-16<<10), be32(16<<10)), lim,
			wire.Message{ID: wire.Request, Begin: testPieceLen - 16<<10, Length: 16 << 10}},
		{"request ending at 2^32-1", frame(wire.Request, be32(0), be32(0xFFFFFFFF-1), be32(1)), wire.Limits{},
			wire.Message{ID: wire.Request, Begin: 0xFFFFFFFF - 1, Length: 1}},
		{"piece of exactly MaxBlock", frame(wire.Piece, be32(1), be32(0), seq(16<<10)), lim,
			wire.Message{ID: wire.Piece, Index: 1, Length: 16 << 10, Block: seq(16 << 10)}},
		{"piece under a larger MaxBlock", frame(wire.Piece, be32(1), be32(0), seq(32<<10)), wire.Limits{MaxBlock: 32 << 10},
			wire.Message{ID: wire.Piece, Index: 1, Length: 32 << 10, Block: seq(32 << 10)}},
		{"message of exactly MaxMessage", frame(0x40, seq(99)), wire.Limits{MaxMessage: 100},
			wire.Message{ID: 0x40, Payload: seq(99)}},
		{"unknown id 10", frame(10, []byte("abc")), lim, wire.Message{ID: 10, Payload: []byte("abc")}},
		{"unknown id 21 (BEP 52 hash request)", frame(21, seq(48)), lim, wire.Message{ID: 21, Payload: seq(48)}},
		{"unknown id 255, empty", frame(255), lim, wire.Message{ID: 255}},
		{"unknown id, larger than the read buffer", frame(0x80, seq(200<<10)), lim, wire.Message{ID: 0x80, Payload: seq(200 << 10)}},
		{"port 0", frame(wire.Port, []byte{0, 0}), lim, wire.Message{ID: wire.Port}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := wire.NewDecoder(bytes.NewReader(tc.in), tc.lim)
			m := wire.Message{Keepalive: true, Index: 77, Payload: []byte("stale")} // Decode must clear it
			if err := d.Decode(&m); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !equalMessage(&m, &tc.want) {
				t.Fatalf("Decode = %+v, want %+v", m, tc.want)
			}
		})
	}
}

// TestDecodeDoesNotAllocateDeclaredSize checks allocation, not just
// reading: a hostile prefix, and a legal but lying one, cost far less memory
// than they declare.
func TestDecodeDoesNotAllocateDeclaredSize(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		lim      wire.Limits
		maxBytes uint64
	}{
		{"prefix 0xFFFFFFFF", be32(0xFFFFFFFF), wire.Limits{}, 32 << 10},
		{"bitfield of 1 MiB for 37 pieces", cat(be32(1<<20), []byte{byte(wire.Bitfield)}), testLimits(), 32 << 10},
		{"piece of 1 MiB", cat(be32(1+8+1<<20), []byte{byte(wire.Piece)}), wire.Limits{}, 32 << 10},
		// Legal under the limit, but the peer sends 10 bytes and stops: the
		// buffer grows with what arrives, not with what was declared.
		{"1 MiB unknown message cut short", cat(be32(1<<20), []byte{0x40}, seq(10)), wire.Limits{}, 256 << 10},
		{"256 MiB limit, 200 MiB message cut short", cat(be32(200<<20), []byte{0x40}, seq(10)), wire.Limits{MaxMessage: 256 << 20}, 256 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := wire.NewDecoder(bytes.NewReader(tc.in), tc.lim)
			var m wire.Message
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := d.Decode(&m)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("Decode succeeded")
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > tc.maxBytes {
				t.Fatalf("Decode allocated %d bytes, want at most %d (err %v)", got, tc.maxBytes, err)
			}
		})
	}
}

// stream is a valid message stream with one message of every kind, and the
// offsets at which its messages end.
func stream(t testing.TB) (data []byte, boundaries map[int]bool, count int) {
	t.Helper()
	boundaries = map[int]bool{0: true}
	for _, tc := range sampleMessages() {
		m := tc.m
		if m.ID == wire.Piece {
			m.Block = m.Block[:min(len(m.Block), 40)] // keep the quadratic cut test quick
			m.Length = uint32(len(m.Block))
		}
		data = wire.AppendMessage(data, &m)
		boundaries[len(data)] = true
		count++
	}
	return data, boundaries, count
}

func TestDecodeTruncatedStream(t *testing.T) {
	data, boundaries, count := stream(t)
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"default buffer", func(r io.Reader) io.Reader { return r }},
		// A 16-byte bufio.Reader of the caller's: larger payloads take the
		// copying path.
		{"small caller bufio", func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 16) }},
		{"one byte per read", func(r io.Reader) io.Reader { return &oneByteReader{r} }},
	}
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			for cut := 0; cut <= len(data); cut++ {
				d := wire.NewDecoder(rd.wrap(bytes.NewReader(data[:cut])), testLimits())
				var m wire.Message
				n := 0
				var err error
				for n <= count {
					if err = d.Decode(&m); err != nil {
						break
					}
					n++
				}
				switch {
				case boundaries[cut]:
					if err != io.EOF {
						t.Fatalf("cut at %d (a boundary): error %v, want io.EOF", cut, err)
					}
				case !errors.Is(err, io.ErrUnexpectedEOF):
					t.Fatalf("cut at %d (inside a message): error %v, want io.ErrUnexpectedEOF", cut, err)
				case errors.Is(err, io.EOF):
					t.Fatalf("cut at %d: error %v also matches io.EOF", cut, err)
				}
				if cut == len(data) && n != count {
					t.Fatalf("decoded %d messages of %d", n, count)
				}
			}
		})
	}
}

// oneByteReader returns at most one byte per Read, as a slow peer would.
type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// TestDecodeLargeThenSmall checks that a payload larger than the read
// buffer decodes, and that the stream stays in step after it.
func TestDecodeLargeThenSmall(t *testing.T) {
	big := wire.Message{ID: wire.Extended, ExtendedID: 1, Payload: seq(300 << 10)}
	small := wire.Message{ID: wire.Have, Index: 3}
	data := cat(wire.AppendMessage(nil, &big), wire.AppendMessage(nil, &small), wire.AppendMessage(nil, &big))
	d := wire.NewDecoder(bytes.NewReader(data), testLimits())
	for i, want := range []*wire.Message{&big, &small, &big} {
		var m wire.Message
		if err := d.Decode(&m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !equalMessage(&m, want) {
			t.Fatalf("message %d: got ID %v with %d payload bytes, want ID %v with %d", i, m.ID, len(m.Payload), want.ID, len(want.Payload))
		}
	}
}

func TestDecoderSetLimits(t *testing.T) {
	in := cat(frame(wire.Have, be32(100)), frame(wire.Have, be32(100)))
	d := wire.NewDecoder(bytes.NewReader(in), wire.Limits{})
	var m wire.Message
	if err := d.Decode(&m); err != nil {
		t.Fatalf("with NumPieces unknown: %v", err)
	}
	d.SetLimits(testLimits())
	if err := d.Decode(&m); !errors.Is(err, wire.ErrProtocol) {
		t.Fatalf("after SetLimits: %v, want a protocol error", err)
	}
}

func TestLimitsDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   wire.Limits
		want wire.Limits
	}{
		{"zero", wire.Limits{}, wire.Limits{MaxMessage: wire.DefaultMaxMessage, MaxBlock: wire.DefaultMaxBlock}},
		{"negative pieces", wire.Limits{NumPieces: -5}, wire.Limits{MaxMessage: wire.DefaultMaxMessage, MaxBlock: wire.DefaultMaxBlock}},
		{"explicit", wire.Limits{MaxMessage: 7, MaxBlock: 3, NumPieces: 9}, wire.Limits{MaxMessage: 7, MaxBlock: 3, NumPieces: 9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := wire.NewDecoder(bytes.NewReader(nil), tc.in).Limits()
			if got.MaxMessage != tc.want.MaxMessage || got.MaxBlock != tc.want.MaxBlock || got.NumPieces != tc.want.NumPieces {
				t.Fatalf("Limits() = %+v, want %+v", got, tc.want)
			}
		})
	}
	if wire.DefaultMaxMessage != 1<<20+13 || wire.DefaultMaxBlock != 16<<10 {
		t.Fatal("defaults changed")
	}
}

func TestDecodeReadError(t *testing.T) {
	boom := errors.New("boom")
	data := frame(wire.Piece, be32(0), be32(0), seq(100))
	for cut := range len(data) {
		t.Run("fail at "+strconv.Itoa(cut), func(t *testing.T) {
			r := io.MultiReader(bytes.NewReader(data[:cut]), &errReader{boom})
			var m wire.Message
			if err := wire.NewDecoder(r, wire.Limits{}).Decode(&m); !errors.Is(err, boom) {
				t.Fatalf("Decode = %v, want the reader's error", err)
			}
		})
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// TestDecodeZeroAllocs decodes 10 000 messages of mixed kinds from one
// stream and requires that, after the first, no Decode allocates.
func TestDecodeZeroAllocs(t *testing.T) {
	const n = 10000
	samples := sampleMessages()
	var data []byte
	for i := range n {
		data = wire.AppendMessage(data, &samples[i%len(samples)].m)
	}
	d := wire.NewDecoder(bytes.NewReader(data), testLimits())
	var m wire.Message
	var failed error
	// AllocsPerRun calls the function once more as a warm-up: n calls in all.
	allocs := testing.AllocsPerRun(n-1, func() {
		if err := d.Decode(&m); err != nil && failed == nil {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if err := d.Decode(&m); err != io.EOF {
		t.Fatalf("after %d messages: %v, want io.EOF", n, err)
	}
	if allocs != 0 {
		t.Fatalf("Decode allocates %v times per message after warm-up", allocs)
	}
}

// TestDecodeBlockNotCopied checks that a piece block is returned from the
// read buffer in place: two Decodes of equal-sized blocks give the same
// backing array regions of one buffer.
func TestDecodeBlockNotCopied(t *testing.T) {
	block := seq(16 << 10)
	data := cat(frame(wire.Piece, be32(0), be32(0), block), frame(wire.Piece, be32(0), be32(16<<10), block))
	br := bufio.NewReaderSize(bytes.NewReader(data), 64<<10)
	// Fill the caller's buffer, then learn where it lives.
	whole, _ := br.Peek(len(data))
	d := wire.NewDecoder(br, testLimits())
	var m wire.Message
	for i := range 2 {
		if err := d.Decode(&m); err != nil {
			t.Fatal(err)
		}
		off := i*len(data)/2 + 13
		if &m.Block[0] != &whole[off] {
			t.Fatalf("block %d is not the read buffer's bytes at %d: it was copied", i, off)
		}
	}
}
