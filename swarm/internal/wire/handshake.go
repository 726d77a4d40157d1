package wire

import (
	"errors"
	"fmt"
	"io"
)

// Protocol is the protocol string that opens every BEP 3 handshake.
const Protocol = "BitTorrent protocol"

// HandshakeLen is the size of a complete handshake on the wire:
// pstrlen, pstr, reserved bytes, info-hash and peer-id.
const HandshakeLen = 1 + len(Protocol) + 8 + 20 + 20

// headLen is the part of the handshake that ReadHandshakeHead consumes.
const headLen = 1 + len(Protocol) + 8 + 20

// ErrBadProtocol reports a handshake whose protocol string is not
// "BitTorrent protocol" (or whose pstrlen is not 19). An encrypted (MSE)
// connection also fails this way, since this package does not speak MSE.
var ErrBadProtocol = errors.New("wire: not a bittorrent handshake")

// Reserved holds the eight reserved handshake bytes, in which peers
// advertise the extensions they support.
type Reserved [8]byte

// Bits of Reserved, as byte index and mask.
const (
	extendedByte, extendedMask = 5, 0x10 // BEP 10 extension protocol
	fastByte, fastMask         = 7, 0x04 // BEP 6 fast extension
	dhtByte, dhtMask           = 7, 0x01 // BEP 5 DHT (the peer will send a port message)
)

// SupportsExtended reports the BEP 10 extension-protocol bit.
func (r Reserved) SupportsExtended() bool { return r[extendedByte]&extendedMask != 0 }

// SupportsFast reports the BEP 6 fast-extension bit.
func (r Reserved) SupportsFast() bool { return r[fastByte]&fastMask != 0 }

// SupportsDHT reports the BEP 5 DHT bit.
func (r Reserved) SupportsDHT() bool { return r[dhtByte]&dhtMask != 0 }

// SetExtended sets or clears the BEP 10 extension-protocol bit.
func (r *Reserved) SetExtended(on bool) { r.set(extendedByte, extendedMask, on) }

// SetFast sets or clears the BEP 6 fast-extension bit.
func (r *Reserved) SetFast(on bool) { r.set(fastByte, fastMask, on) }

// SetDHT sets or clears the BEP 5 DHT bit.
func (r *Reserved) SetDHT(on bool) { r.set(dhtByte, dhtMask, on) }

func (r *Reserved) set(i int, mask byte, on bool) {
	if on {
		r[i] |= mask
	} else {
		r[i] &^= mask
	}
}

// Handshake is the BEP 3 handshake less its constant protocol string. The
// methods of Reserved (SupportsFast, SetExtended, …) are promoted to it.
type Handshake struct {
	Reserved          // extension bits; unknown bits are kept as received
	InfoHash [20]byte // the torrent; the caller checks it is one it serves
	PeerID   [20]byte // the remote client's self-chosen id; zero after ReadHandshakeHead
}

// AppendHandshake appends the 68-byte wire form of h to dst.
func AppendHandshake(dst []byte, h Handshake) []byte {
	dst = append(dst, byte(len(Protocol)))
	dst = append(dst, Protocol...)
	dst = append(dst, h.Reserved[:]...)
	dst = append(dst, h.InfoHash[:]...)
	return append(dst, h.PeerID[:]...)
}

// WriteHandshake writes h to w in a single Write.
func WriteHandshake(w io.Writer, h Handshake) error {
	var b [HandshakeLen]byte
	if _, err := w.Write(AppendHandshake(b[:0], h)); err != nil {
		return fmt.Errorf("wire: writing handshake: %w", err)
	}
	return nil
}

// ReadHandshake reads a complete handshake. It reads exactly HandshakeLen
// bytes on success and never more, so the same reader can then be handed to
// NewDecoder. It is ReadHandshakeHead followed by ReadPeerID.
func ReadHandshake(r io.Reader) (Handshake, error) {
	h, err := ReadHandshakeHead(r)
	if err != nil {
		return h, err
	}
	h.PeerID, err = ReadPeerID(r)
	return h, err
}

// ReadHandshakeHead reads the handshake up to and including the info-hash,
// and returns it with a zero PeerID. An accepting side calls it, looks the
// info-hash up, answers with its own handshake, and only then calls
// ReadPeerID: some peers wait for the answer before sending their peer-id.
//
// The pstrlen byte is checked before anything else is read, so a peer that
// speaks another protocol is refused with ErrBadProtocol at once. A stream
// that ends before the first byte gives an error wrapping io.EOF; one that
// ends later gives an error wrapping io.ErrUnexpectedEOF.
func ReadHandshakeHead(r io.Reader) (Handshake, error) {
	var h Handshake
	var b [headLen]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return h, fmt.Errorf("wire: reading handshake: %w", err)
	}
	if int(b[0]) != len(Protocol) {
		return h, fmt.Errorf("%w: protocol string length %d, want %d", ErrBadProtocol, b[0], len(Protocol))
	}
	if _, err := io.ReadFull(r, b[1:]); err != nil {
		return h, fmt.Errorf("wire: reading handshake: %w", noEOF(err))
	}
	if string(b[1:1+len(Protocol)]) != Protocol {
		return h, fmt.Errorf("%w: protocol string %q", ErrBadProtocol, b[1:1+len(Protocol)])
	}
	rest := b[1+len(Protocol):]
	copy(h.Reserved[:], rest[:8])
	copy(h.InfoHash[:], rest[8:])
	return h, nil
}

// ReadPeerID reads the 20-byte peer-id that ends a handshake. A stream that
// ends before it is complete gives an error wrapping io.ErrUnexpectedEOF.
func ReadPeerID(r io.Reader) ([20]byte, error) {
	var id [20]byte
	if _, err := io.ReadFull(r, id[:]); err != nil {
		return id, fmt.Errorf("wire: reading handshake peer id: %w", noEOF(err))
	}
	return id, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF, for reads that begin in the
// middle of a handshake or message.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
