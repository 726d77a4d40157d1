package wire_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

// FuzzDecode feeds arbitrary bytes to a Decoder that knows the torrent's
// shape, and to one that does not. Neither may panic; every message either
// accepts must satisfy the limits, re-encode, and decode again to itself; and
// a stream that ends cleanly must be exactly the re-encoding of its messages.
// The second pass reads through a 16-byte bufio.Reader, so that payloads
// take the copying path rather than being decoded in place.
// The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(frame(wire.Request, be32(1), be32(0), be32(16<<10)))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkStream(t, bytes.NewReader(data), data, testLimits())
		checkStream(t, bufio.NewReaderSize(bytes.NewReader(data), 16), data, wire.Limits{MaxMessage: 64 << 10, MaxBlock: 1024})
	})
}

func checkStream(t *testing.T, r io.Reader, data []byte, lim wire.Limits) {
	d := wire.NewDecoder(r, lim)
	lim = d.Limits()
	var reencoded []byte
	var m wire.Message
	for {
		err := d.Decode(&m)
		if err == io.EOF {
			if !bytes.Equal(reencoded, data) {
				t.Fatalf("clean EOF, but the messages re-encode to %x, not the input %x", reencoded, data)
			}
			return
		}
		if err != nil {
			var pe *wire.ProtocolError
			if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.As(err, &pe) {
				t.Fatalf("Decode error %v is neither truncation nor a ProtocolError", err)
			}
			return
		}
		checkLimits(t, &m, lim)
		enc := wire.AppendMessage(nil, &m)
		reencoded = append(reencoded, enc...)

		var again wire.Message
		if err := wire.NewDecoder(bufio.NewReaderSize(bytes.NewReader(enc), 16), lim).Decode(&again); err != nil {
			t.Fatalf("re-encoded %+v as %x, which fails to decode: %v", m, enc, err)
		}
		if !equalMessage(&m, &again) {
			t.Fatalf("decoded %+v, re-encoded as %x, decoded again as %+v", m, enc, again)
		}
	}
}

// checkLimits asserts what an accepted message promises the engine.
func checkLimits(t *testing.T, m *wire.Message, lim wire.Limits) {
	if m.Keepalive {
		return
	}
	inRange := func(index uint32) {
		if lim.NumPieces > 0 && uint64(index) >= uint64(lim.NumPieces) {
			t.Fatalf("accepted %v with index %d of %d pieces", m.ID, index, lim.NumPieces)
		}
	}
	within := func() {
		end := uint64(m.Begin) + uint64(m.Length)
		if m.Length == 0 || m.Length > lim.MaxBlock || end > 1<<32-1 {
			t.Fatalf("accepted %v with begin %d length %d", m.ID, m.Begin, m.Length)
		}
		if lim.PieceLength != nil && end > uint64(lim.PieceLength(m.Index)) {
			t.Fatalf("accepted %v past the end of piece %d", m.ID, m.Index)
		}
	}
	switch m.ID {
	case wire.Have, wire.Suggest, wire.AllowedFast:
		inRange(m.Index)
	case wire.Request, wire.Cancel, wire.Reject:
		inRange(m.Index)
		within()
	case wire.Piece:
		inRange(m.Index)
		if int(m.Length) != len(m.Block) {
			t.Fatalf("piece Length %d for a block of %d", m.Length, len(m.Block))
		}
		within()
	case wire.Bitfield:
		if lim.NumPieces > 0 {
			if len(m.Bitfield) != (lim.NumPieces+7)/8 {
				t.Fatalf("accepted a bitfield of %d bytes for %d pieces", len(m.Bitfield), lim.NumPieces)
			}
			for i := lim.NumPieces; i < len(m.Bitfield)*8; i++ {
				if m.Bitfield[i/8]&(0x80>>(i%8)) != 0 {
					t.Fatalf("accepted a bitfield with spare bit %d set", i)
				}
			}
		}
	}
	if got := len(m.Bitfield) + len(m.Block) + len(m.Payload); got >= int(lim.MaxMessage) {
		t.Fatalf("accepted %d payload bytes under MaxMessage %d", got, lim.MaxMessage)
	}
}

// FuzzHandshake feeds arbitrary bytes to ReadHandshake. It must not panic,
// must never read past the handshake, and a handshake it accepts must be the
// input's first HandshakeLen bytes; the two-phase read must agree with it.
// The seed corpus is in testdata/fuzz/FuzzHandshake.
func FuzzHandshake(f *testing.F) {
	f.Add(wire.AppendHandshake(nil, testHandshake()))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := wire.ReadHandshake(r)

		r2 := bytes.NewReader(data)
		head, err2 := wire.ReadHandshakeHead(r2)
		if err2 == nil {
			head.PeerID, err2 = wire.ReadPeerID(r2)
		}
		if (err == nil) != (err2 == nil) || (err == nil && head != h) {
			t.Fatalf("ReadHandshake = %+v, %v; two-phase read = %+v, %v", h, err, head, err2)
		}

		if err != nil {
			if !errors.Is(err, wire.ErrBadProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if consumed := len(data) - r.Len(); consumed != wire.HandshakeLen {
			t.Fatalf("consumed %d bytes, want %d", consumed, wire.HandshakeLen)
		}
		if enc := wire.AppendHandshake(nil, h); !bytes.Equal(enc, data[:wire.HandshakeLen]) {
			t.Fatalf("re-encoded as %x, input was %x", enc, data[:wire.HandshakeLen])
		}
	})
}

// TestDecodeSeedsMeanWhatTheySay keeps the hand-named FuzzDecode seeds
// honest: "hostile-…" seeds must be refused as protocol errors,
// "truncated-…" ones must end in io.ErrUnexpectedEOF, and the others must
// decode cleanly to io.EOF under the fuzz target's limits. Seeds that the
// fuzzer names by hash (checked-in crashers) are left to FuzzDecode itself.
func TestDecodeSeedsMeanWhatTheySay(t *testing.T) {
	hashName := regexp.MustCompile(`^[0-9a-f]{16,}$`)
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("%d FuzzDecode seeds, want at least 8", len(files))
	}
	for _, file := range files {
		name := filepath.Base(file)
		if hashName.MatchString(name) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data := readSeed(t, file)
			d := wire.NewDecoder(bytes.NewReader(data), testLimits())
			var m wire.Message
			var err error
			for err == nil {
				err = d.Decode(&m)
			}
			switch {
			case strings.HasPrefix(name, "hostile-"):
				if !errors.Is(err, wire.ErrProtocol) {
					t.Fatalf("ended with %v, want a protocol error", err)
				}
			case strings.HasPrefix(name, "truncated-"):
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("ended with %v, want io.ErrUnexpectedEOF", err)
				}
			case err != io.EOF:
				t.Fatalf("ended with %v, want io.EOF", err)
			}
		})
	}
}

// readSeed reads a one-argument []byte corpus file in the "go test fuzz v1"
// format.
func readSeed(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	header, body, ok := strings.Cut(strings.TrimSpace(string(raw)), "\n")
	if !ok || header != "go test fuzz v1" || !strings.HasPrefix(body, "[]byte(") || !strings.HasSuffix(body, ")") {
		t.Fatalf("%s is not a one-value []byte corpus file", file)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(body, "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return []byte(s)
}
