package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// The torrent shape used by tests that set NumPieces: 37 pieces (so the last
// bitfield byte has 5 used bits and 3 spare ones) of 32 KiB, the last one
// 5000 bytes.
const (
	testPieces      = 37
	testPieceLen    = 32 << 10
	testLastLen     = 5000
	testBitfieldLen = (testPieces + 7) / 8
)

func testPieceLength(index uint32) uint32 {
	if index == testPieces-1 {
		return testLastLen
	}
	return testPieceLen
}

func testLimits() wire.Limits {
	return wire.Limits{NumPieces: testPieces, PieceLength: testPieceLength}
}

// be32 is the big-endian form of v.
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// cat concatenates byte slices.
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// frame builds a raw message: length prefix 1+len(payload), id, payload.
func frame(id wire.ID, payload ...[]byte) []byte {
	p := cat(payload...)
	return cat(be32(uint32(1+len(p))), []byte{byte(id)}, p)
}

// seq returns n bytes 0, 1, 2, … so that misplaced bytes show.
func seq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	return b
}

func equalMessage(a, b *wire.Message) bool {
	return a.Keepalive == b.Keepalive && a.ID == b.ID &&
		a.Index == b.Index && a.Begin == b.Begin && a.Length == b.Length &&
		bytes.Equal(a.Bitfield, b.Bitfield) && bytes.Equal(a.Block, b.Block) &&
		a.Port == b.Port && a.ExtendedID == b.ExtendedID && bytes.Equal(a.Payload, b.Payload)
}

// sampleMessages holds one message of every kind, valid under testLimits,
// with the fields Decode sets (Length of a piece included).
func sampleMessages() []struct {
	name string
	m    wire.Message
} {
	block := seq(wire.DefaultMaxBlock)
	return []struct {
		name string
		m    wire.Message
	}{
		{"keepalive", wire.Message{Keepalive: true}},
		{"choke", wire.Message{ID: wire.Choke}},
		{"unchoke", wire.Message{ID: wire.Unchoke}},
		{"interested", wire.Message{ID: wire.Interested}},
		{"not interested", wire.Message{ID: wire.NotInterested}},
		{"have", wire.Message{ID: wire.Have, Index: 36}},
		{"bitfield", wire.Message{ID: wire.Bitfield, Bitfield: []byte{0xff, 0x00, 0xa5, 0x5a, 0xa8}}},
		{"request", wire.Message{ID: wire.Request, Index: 3, Begin: 16 << 10, Length: 16 << 10}},
		{"request last piece end", wire.Message{ID: wire.Request, Index: 36, Begin: 4000, Length: 1000}},
		{"piece", wire.Message{ID: wire.Piece, Index: 2, Begin: 16 << 10, Length: 16 << 10, Block: block}},
		{"piece one byte", wire.Message{ID: wire.Piece, Index: 36, Begin: testLastLen - 1, Length: 1, Block: []byte{9}}},
		{"cancel", wire.Message{ID: wire.Cancel, Index: 0, Begin: 0, Length: 1}},
		{"port", wire.Message{ID: wire.Port, Port: 6881}},
		{"suggest", wire.Message{ID: wire.Suggest, Index: 7}},
		{"have all", wire.Message{ID: wire.HaveAll}},
		{"have none", wire.Message{ID: wire.HaveNone}},
		{"reject", wire.Message{ID: wire.Reject, Index: 5, Begin: 32<<10 - 16<<10, Length: 16 << 10}},
		{"allowed fast", wire.Message{ID: wire.AllowedFast, Index: 11}},
		{"extended handshake", wire.Message{ID: wire.Extended, ExtendedID: 0, Payload: []byte("d1:md11:ut_metadatai3eee")}},
		{"extended empty body", wire.Message{ID: wire.Extended, ExtendedID: 3}},
		{"unknown id with payload", wire.Message{ID: 21, Payload: []byte("hash request")}},
		{"unknown id empty", wire.Message{ID: 0xff}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range sampleMessages() {
		t.Run(tc.name, func(t *testing.T) {
			enc := wire.AppendMessage(nil, &tc.m)

			var viaEncoder bytes.Buffer
			e := wire.NewEncoder(&viaEncoder)
			if err := e.Encode(&tc.m); err != nil {
				t.Fatal(err)
			}
			if err := e.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(viaEncoder.Bytes(), enc) {
				t.Fatalf("Encoder wrote %x, AppendMessage %x", viaEncoder.Bytes(), enc)
			}

			d := wire.NewDecoder(bytes.NewReader(enc), testLimits())
			var got wire.Message
			if err := d.Decode(&got); err != nil {
				t.Fatalf("Decode(%x): %v", enc, err)
			}
			if !equalMessage(&got, &tc.m) {
				t.Fatalf("Decode(%x) = %+v, want %+v", enc, got, tc.m)
			}
			if err := d.Decode(&got); err != io.EOF {
				t.Fatalf("second Decode = %v, want io.EOF", err)
			}
		})
	}
}

// TestWireBytes pins the exact layout of each kind against hand-written hex.
func TestWireBytes(t *testing.T) {
	tests := []struct {
		name string
		m    wire.Message
		hex  string
	}{
		{"keepalive", wire.Message{Keepalive: true, ID: wire.Have, Index: 9}, "00000000"},
		{"choke", wire.Message{ID: wire.Choke}, "0000000100"},
		{"not interested", wire.Message{ID: wire.NotInterested}, "0000000103"},
		{"have", wire.Message{ID: wire.Have, Index: 0x2a}, "00000005040000002a"},
		{"bitfield", wire.Message{ID: wire.Bitfield, Bitfield: []byte{0x80, 0x01}}, "00000003058001"},
		{"request", wire.Message{ID: wire.Request, Index: 1, Begin: 0x4000, Length: 0x4000}, "0000000d06000000010000400000004000"},
		{"piece", wire.Message{ID: wire.Piece, Index: 1, Begin: 2, Length: 99, Block: []byte{0xaa, 0xbb}}, "0000000b070000000100000002aabb"},
		{"cancel", wire.Message{ID: wire.Cancel, Index: 1, Begin: 2, Length: 3}, "0000000d08000000010000000200000003"},
		{"port", wire.Message{ID: wire.Port, Port: 0x1ae1}, "00000003091ae1"},
		{"suggest", wire.Message{ID: wire.Suggest, Index: 1}, "000000050d00000001"},
		{"have all", wire.Message{ID: wire.HaveAll}, "000000010e"},
		{"have none", wire.Message{ID: wire.HaveNone}, "000000010f"},
		{"reject", wire.Message{ID: wire.Reject, Index: 1, Begin: 2, Length: 3}, "0000000d10000000010000000200000003"},
		{"allowed fast", wire.Message{ID: wire.AllowedFast, Index: 1}, "000000051100000001"},
		{"extended", wire.Message{ID: wire.Extended, ExtendedID: 2, Payload: []byte("de")}, "000000041402" + "6465"},
		{"unknown", wire.Message{ID: 0x30, Payload: []byte{1, 2}}, "00000003300102"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(wire.AppendMessage(nil, &tc.m)); got != tc.hex {
				t.Errorf("AppendMessage = %s, want %s", got, tc.hex)
			}
		})
	}
}

func TestEncoderPiece(t *testing.T) {
	block := seq(16 << 10)
	want := wire.AppendMessage(nil, &wire.Message{ID: wire.Piece, Index: 4, Begin: 32 << 10, Block: block})
	tests := []struct {
		name  string
		write func(e *wire.Encoder) error
	}{
		{"Encode", func(e *wire.Encoder) error {
			return e.Encode(&wire.Message{ID: wire.Piece, Index: 4, Begin: 32 << 10, Block: block})
		}},
		{"WritePiece", func(e *wire.Encoder) error { return e.WritePiece(4, 32<<10, block) }},
		{"WritePieceHeader and Write", func(e *wire.Encoder) error {
			if err := e.WritePieceHeader(4, 32<<10, uint32(len(block))); err != nil {
				return err
			}
			_, err := e.Write(block)
			return err
		}},
		{"AppendPieceHeader", func(e *wire.Encoder) error {
			_, err := e.Write(append(wire.AppendPieceHeader(nil, 4, 32<<10, uint32(len(block))), block...))
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := wire.NewEncoder(&buf)
			if err := tc.write(e); err != nil {
				t.Fatal(err)
			}
			if e.Buffered() == 0 && buf.Len() == 0 {
				t.Fatal("nothing written")
			}
			if err := e.Flush(); err != nil {
				t.Fatal(err)
			}
			if e.Buffered() != 0 {
				t.Fatalf("Buffered() = %d after Flush", e.Buffered())
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("wrote %d bytes differing from AppendMessage's %d", buf.Len(), len(want))
			}
		})
	}
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("boom") }

func TestEncoderErrors(t *testing.T) {
	tests := []struct {
		name  string
		write func(e *wire.Encoder) error
	}{
		{"flush", func(e *wire.Encoder) error {
			_ = e.Encode(&wire.Message{ID: wire.Choke}) // buffered: cannot fail yet
			return e.Flush()
		}},
		{"large block", func(e *wire.Encoder) error { return e.WritePiece(0, 0, make([]byte, 200<<10)) }},
		{"piece header too long to frame", func(e *wire.Encoder) error { return e.WritePieceHeader(0, 0, 0xFFFFFFFF) }},
		{"large bitfield", func(e *wire.Encoder) error {
			return e.Encode(&wire.Message{ID: wire.Bitfield, Bitfield: make([]byte, 200<<10)})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(wire.NewEncoder(errWriter{})); err == nil {
				t.Fatal("no error from a failing writer")
			}
		})
	}
}

func TestAppendPieceHeaderTooLong(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a block a length prefix cannot frame")
		}
	}()
	wire.AppendPieceHeader(nil, 0, 0, 0xFFFFFFFF-8)
}

func TestNewEncoderUsesBufioWriter(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriterSize(&buf, 32)
	e := wire.NewEncoder(bw)
	if err := e.Encode(&wire.Message{ID: wire.Interested}); err != nil {
		t.Fatal(err)
	}
	if bw.Buffered() != 5 {
		t.Fatalf("caller's bufio.Writer holds %d bytes, want 5: it was not used", bw.Buffered())
	}
}

func TestAppendMessageAllocs(t *testing.T) {
	dst := make([]byte, 0, 64<<10)
	block := seq(16 << 10)
	msgs := []wire.Message{
		{ID: wire.Request, Index: 1, Begin: 2, Length: 3},
		{ID: wire.Piece, Index: 1, Begin: 2, Block: block},
		{ID: wire.Extended, ExtendedID: 1, Payload: []byte("de")},
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range msgs {
			dst = wire.AppendMessage(dst[:0], &msgs[i])
		}
	})
	if allocs != 0 {
		t.Fatalf("AppendMessage allocates %v times per run with room in dst", allocs)
	}
}

func TestEncoderAllocs(t *testing.T) {
	e := wire.NewEncoder(io.Discard)
	block := seq(16 << 10)
	req := wire.Message{ID: wire.Request, Index: 1, Begin: 2, Length: 3}
	allocs := testing.AllocsPerRun(1000, func() {
		_ = e.Encode(&req)
		_ = e.WritePiece(1, 0, block)
	})
	if allocs != 0 {
		t.Fatalf("Encoder allocates %v times per run", allocs)
	}
}

func TestIDString(t *testing.T) {
	tests := []struct {
		id    wire.ID
		want  string
		known bool
	}{
		{wire.Choke, "choke", true},
		{wire.Unchoke, "unchoke", true},
		{wire.Interested, "interested", true},
		{wire.NotInterested, "not interested", true},
		{wire.Have, "have", true},
		{wire.Bitfield, "bitfield", true},
		{wire.Request, "request", true},
		{wire.Piece, "piece", true},
		{wire.Cancel, "cancel", true},
		{wire.Port, "port", true},
		{wire.Suggest, "suggest piece", true},
		{wire.HaveAll, "have all", true},
		{wire.HaveNone, "have none", true},
		{wire.Reject, "reject request", true},
		{wire.AllowedFast, "allowed fast", true},
		{wire.Extended, "extended", true},
		{10, "unknown(10)", false},
		{21, "unknown(21)", false},
		{255, "unknown(255)", false},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.id.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if got := tc.id.Known(); got != tc.known {
				t.Errorf("Known() = %v, want %v", got, tc.known)
			}
		})
	}
}
