package wire_test

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/tbproxy/tbproxy/swarm/internal/wire"
)

func testHandshake() wire.Handshake {
	h := wire.Handshake{}
	copy(h.InfoHash[:], "0123456789abcdefghij")
	copy(h.PeerID[:], "-TB0001-abcdefghijkl")
	h.SetExtended(true)
	h.SetFast(true)
	return h
}

func TestHandshakeRoundTrip(t *testing.T) {
	all := testHandshake()
	all.Reserved = [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		h    wire.Handshake
	}{
		{"zero", wire.Handshake{}},
		{"extended and fast", testHandshake()},
		{"every reserved bit", all},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.WriteHandshake(&buf, tc.h); err != nil {
				t.Fatal(err)
			}
			if buf.Len() != wire.HandshakeLen {
				t.Fatalf("wrote %d bytes, want %d", buf.Len(), wire.HandshakeLen)
			}
			if !bytes.HasPrefix(buf.Bytes(), []byte("\x13BitTorrent protocol")) {
				t.Fatalf("wrote %q, want the BEP 3 prefix", buf.Bytes()[:20])
			}
			got, err := wire.ReadHandshake(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.h {
				t.Fatalf("ReadHandshake = %+v, want %+v", got, tc.h)
			}
		})
	}
}

func TestReservedBits(t *testing.T) {
	tests := []struct {
		name                string
		set                 func(h *wire.Handshake)
		want                [8]byte
		extended, fast, dht bool
	}{
		{"none", func(h *wire.Handshake) {}, [8]byte{}, false, false, false},
		{"extended", func(h *wire.Handshake) { h.SetExtended(true) }, [8]byte{5: 0x10}, true, false, false},
		{"fast", func(h *wire.Handshake) { h.SetFast(true) }, [8]byte{7: 0x04}, false, true, false},
		{"dht", func(h *wire.Handshake) { h.SetDHT(true) }, [8]byte{7: 0x01}, false, false, true},
		{"all three", func(h *wire.Handshake) {
			h.SetExtended(true)
			h.SetFast(true)
			h.SetDHT(true)
		}, [8]byte{5: 0x10, 7: 0x05}, true, true, true},
		{"set then cleared", func(h *wire.Handshake) {
			h.SetExtended(true)
			h.SetFast(true)
			h.SetDHT(true)
			h.SetExtended(false)
			h.SetFast(false)
			h.SetDHT(false)
		}, [8]byte{}, false, false, false},
		{"clearing keeps unknown bits", func(h *wire.Handshake) {
			h.Reserved = [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
			h.SetFast(false)
		}, [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb}, true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h wire.Handshake
			tc.set(&h)
			if h.Reserved != tc.want {
				t.Errorf("Reserved = %x, want %x", h.Reserved, tc.want)
			}
			if h.SupportsExtended() != tc.extended || h.SupportsFast() != tc.fast || h.SupportsDHT() != tc.dht {
				t.Errorf("Supports extended/fast/dht = %v/%v/%v, want %v/%v/%v",
					h.SupportsExtended(), h.SupportsFast(), h.SupportsDHT(), tc.extended, tc.fast, tc.dht)
			}
		})
	}
}

func TestReadHandshakeBadProtocol(t *testing.T) {
	valid := wire.AppendHandshake(nil, testHandshake())
	withPstr := func(pstrlen byte, pstr string) []byte {
		return cat([]byte{pstrlen}, []byte(pstr), valid[20:])
	}
	tests := []struct {
		name string
		in   []byte
		// rest is how many input bytes must remain unread (-1: any): a
		// wrong pstrlen is refused after one byte.
		rest int
	}{
		{"pstrlen 0", withPstr(0, ""), 48},
		{"pstrlen 18", withPstr(18, "BitTorrent protoco"), 18 + 48},
		{"pstrlen 20", withPstr(20, "BitTorrent protocol!"), 20 + 48},
		{"pstrlen 255", withPstr(255, string(bytes.Repeat([]byte{'x'}, 255))), 255 + 48},
		// A string of the right length is compared after the head is read;
		// the peer id is not read.
		{"wrong case", withPstr(19, "bittorrent protocol"), 20},
		{"last byte wrong", withPstr(19, "BitTorrent protocoL"), 20},
		{"http request", []byte("GET /announce HTTP/1.1\r\nHost: x\r\n\r\n" + string(make([]byte, 40))), -1},
		{"encrypted handshake noise", bytes.Repeat([]byte{0xa7}, 96), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(tc.in)
			_, err := wire.ReadHandshake(r)
			if !errors.Is(err, wire.ErrBadProtocol) {
				t.Fatalf("ReadHandshake = %v, want ErrBadProtocol", err)
			}
			if tc.rest >= 0 && r.Len() != tc.rest {
				t.Errorf("%d bytes left unread, want %d", r.Len(), tc.rest)
			}
		})
	}
}

func TestReadHandshakeTruncated(t *testing.T) {
	valid := wire.AppendHandshake(nil, testHandshake())
	for cut := range len(valid) {
		t.Run("cut at "+strconv.Itoa(cut), func(t *testing.T) {
			_, err := wire.ReadHandshake(bytes.NewReader(valid[:cut]))
			want := io.ErrUnexpectedEOF
			if cut == 0 {
				want = io.EOF
			}
			if !errors.Is(err, want) {
				t.Fatalf("ReadHandshake of %d bytes = %v, want an error wrapping %v", cut, err, want)
			}
		})
	}
}

func TestReadHandshakeTwoPhase(t *testing.T) {
	h := testHandshake()
	stream := cat(wire.AppendHandshake(nil, h), frame(wire.Unchoke))

	r := bytes.NewReader(stream)
	head, err := wire.ReadHandshakeHead(r)
	if err != nil {
		t.Fatal(err)
	}
	if head.Reserved != h.Reserved || head.InfoHash != h.InfoHash || head.PeerID != [20]byte{} {
		t.Fatalf("ReadHandshakeHead = %+v, want reserved and info-hash of %+v and no peer id", head, h)
	}
	if !head.SupportsFast() || !head.SupportsExtended() {
		t.Fatal("reserved bits lost by ReadHandshakeHead")
	}
	if want := 20 + 5; r.Len() != want {
		t.Fatalf("ReadHandshakeHead left %d bytes, want %d: it read into the peer id", r.Len(), want)
	}
	id, err := wire.ReadPeerID(r)
	if err != nil {
		t.Fatal(err)
	}
	if id != h.PeerID {
		t.Fatalf("ReadPeerID = %q, want %q", id, h.PeerID)
	}

	// The handshake readers never read past the handshake: the first message is intact.
	var m wire.Message
	if err := wire.NewDecoder(r, wire.Limits{}).Decode(&m); err != nil || m.ID != wire.Unchoke {
		t.Fatalf("first message after the handshake = %+v, %v; want unchoke", m, err)
	}
}

func TestReadPeerIDTruncated(t *testing.T) {
	for _, n := range []int{0, 1, 19} {
		t.Run(strconv.Itoa(n)+" bytes", func(t *testing.T) {
			if _, err := wire.ReadPeerID(bytes.NewReader(make([]byte, n))); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("ReadPeerID = %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func TestWriteHandshakeError(t *testing.T) {
	if err := wire.WriteHandshake(errWriter{}, testHandshake()); err == nil {
		t.Fatal("no error from a failing writer")
	}
}
