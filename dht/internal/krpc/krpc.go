// Package krpc is the message codec of the Mainline DHT (BEP 5): KRPC
// queries, responses and errors as bencoded dictionaries, and the compact
// node and peer formats they carry.
//
// Decode is strict and bounded: a datagram larger than MaxPacket, input
// that is not strict bencode, a field of the wrong type or length, or a
// message that lacks what its kind requires is an error, and nothing is
// allocated in proportion to a declared length. The package does no I/O and
// knows nothing of routing or tokens.
package krpc

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/tbproxy/tbproxy/bencode"
)

// MaxPacket is the largest datagram Decode accepts. BEP 5 messages fit in
// one unfragmented UDP datagram; a get_peers answer with 100 values and 8
// nodes is about 1 KB.
const MaxPacket = 1500

// Limits a KRPC message must stay within, on top of MaxPacket.
const (
	maxDepth   = 6   // msg > a|r > values list > string, with room for unknown extensions
	maxTokens  = 512 // keys and values; 100 peer values are about 200
	maxTxIDLen = 16  // transaction IDs are 2-4 bytes in practice
	maxTokLen  = 64  // write tokens are 4-20 bytes in practice
	maxValues  = 200 // peer values in one response
	maxVerLen  = 16  // client version string
	// NodeLen is the size of one compact IPv4 node: ID, address, port.
	NodeLen = 26
	// PeerLen is the size of one compact IPv4 peer: address, port.
	PeerLen = 6
	// IDLen is the size of a node ID or an info-hash.
	IDLen = 20
)

// Message kinds (the "y" key).
const (
	Query    = "q"
	Response = "r"
	Failure  = "e"
)

// Query method names (the "q" key).
const (
	Ping         = "ping"
	FindNode     = "find_node"
	GetPeers     = "get_peers"
	AnnouncePeer = "announce_peer"
)

// Error codes of BEP 5.
const (
	ErrGeneric  = 201
	ErrServer   = 202
	ErrProtocol = 203
	ErrMethod   = 204
)

// ErrInvalid is wrapped by every Decode error about the message's shape
// (as opposed to its bencoding).
var ErrInvalid = errors.New("krpc: invalid message")

// Msg is one KRPC message. Exactly one of A, R and E is set, as Y says.
type Msg struct {
	T  string  `bencode:"t"`            // transaction ID, echoed by the responder
	Y  string  `bencode:"y"`            // Query, Response or Failure
	Q  string  `bencode:"q,omitempty"`  // the method, for a query
	A  *Args   `bencode:"a,omitempty"`  // a query's arguments
	R  *Return `bencode:"r,omitempty"`  // a response's values
	E  *Error  `bencode:"e,omitempty"`  // an error
	IP string  `bencode:"ip,omitempty"` // BEP 42: the receiver's address as the sender saw it, compact
	RO int64   `bencode:"ro,omitempty"` // BEP 43: the sender is read-only
	V  string  `bencode:"v,omitempty"`  // client version
}

// Args are a query's arguments; which ones are set depends on the method.
type Args struct {
	ID          string `bencode:"id"`                     // the querier's node ID, 20 bytes
	ImpliedPort int64  `bencode:"implied_port,omitempty"` // announce_peer: use the UDP source port
	InfoHash    string `bencode:"info_hash,omitempty"`    // get_peers, announce_peer
	Port        int64  `bencode:"port,omitempty"`         // announce_peer
	Target      string `bencode:"target,omitempty"`       // find_node
	Token       string `bencode:"token,omitempty"`        // announce_peer
}

// Return are a response's values.
type Return struct {
	ID     string   `bencode:"id"`               // the responder's node ID, 20 bytes
	Nodes  string   `bencode:"nodes,omitempty"`  // compact IPv4 nodes, NodeLen each
	Token  string   `bencode:"token,omitempty"`  // get_peers: the write token
	Values []string `bencode:"values,omitempty"` // get_peers: compact peers
}

// Error is a KRPC error: a list of a code and a message.
type Error struct {
	Code int64
	Msg  string
}

func (e *Error) Error() string { return "krpc error " + strconv.FormatInt(e.Code, 10) + ": " + e.Msg }

// MarshalBencode encodes e as a list [code, message].
func (e Error) MarshalBencode() ([]byte, error) {
	b := []byte("li")
	b = strconv.AppendInt(b, e.Code, 10)
	b = append(b, 'e')
	b = strconv.AppendInt(b, int64(len(e.Msg)), 10)
	b = append(b, ':')
	b = append(b, e.Msg...)
	return append(b, 'e'), nil
}

// UnmarshalBencode decodes a list [code, message].
func (e *Error) UnmarshalBencode(data []byte) error {
	var l []any
	if err := bencode.Unmarshal(data, &l); err != nil {
		return err
	}
	if len(l) != 2 {
		return fmt.Errorf("%w: error is a list of %d items, want 2", ErrInvalid, len(l))
	}
	code, ok1 := l[0].(int64)
	msg, ok2 := l[1].(string)
	if !ok1 || !ok2 {
		return fmt.Errorf("%w: error is not [code, message]", ErrInvalid)
	}
	e.Code, e.Msg = code, msg
	return nil
}

var decodeOptions = bencode.DecodeOptions{Limits: bencode.Limits{
	MaxDepth:     maxDepth,
	MaxStringLen: MaxPacket,
	MaxSize:      MaxPacket,
	MaxTokens:    maxTokens,
}}

// Decode parses one datagram. It checks the shape every message of its
// kind must have; method-specific arguments (info_hash, target, token) are
// left to the caller, which answers a bad one with an error message.
func Decode(b []byte) (*Msg, error) {
	if len(b) > MaxPacket {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(b), MaxPacket)
	}
	m := new(Msg)
	if err := decodeOptions.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("krpc: %w", err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func (m *Msg) check() error {
	if len(m.T) == 0 || len(m.T) > maxTxIDLen {
		return invalid("transaction ID of %d bytes", len(m.T))
	}
	if len(m.V) > maxVerLen {
		return invalid("version of %d bytes", len(m.V))
	}
	if m.IP != "" && len(m.IP) != PeerLen && len(m.IP) != 18 {
		return invalid("ip of %d bytes", len(m.IP))
	}
	switch m.Y {
	case Query:
		if m.A == nil || m.Q == "" || m.R != nil || m.E != nil {
			return invalid("query without method or arguments")
		}
		if len(m.A.ID) != IDLen {
			return invalid("querier ID of %d bytes", len(m.A.ID))
		}
		if len(m.A.Token) > maxTokLen {
			return invalid("token of %d bytes", len(m.A.Token))
		}
	case Response:
		if m.R == nil || m.A != nil || m.E != nil {
			return invalid("response without values")
		}
		r := m.R
		if len(r.ID) != IDLen {
			return invalid("responder ID of %d bytes", len(r.ID))
		}
		if len(r.Nodes)%NodeLen != 0 {
			return invalid("nodes of %d bytes", len(r.Nodes))
		}
		if len(r.Token) > maxTokLen {
			return invalid("token of %d bytes", len(r.Token))
		}
		if len(r.Values) > maxValues {
			return invalid("%d values", len(r.Values))
		}
	case Failure:
		if m.E == nil || m.A != nil || m.R != nil {
			return invalid("error message without error")
		}
	default:
		return invalid("kind %q", m.Y)
	}
	return nil
}

// Encode returns the bencoding of m.
func Encode(m *Msg) ([]byte, error) {
	b, err := bencode.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("krpc: %w", err)
	}
	return b, nil
}

// Node is one entry of a compact node list.
type Node struct {
	ID   [IDLen]byte
	Addr netip.AddrPort
}

// ParseNodes splits a compact IPv4 node list; len(s) must be a multiple of
// NodeLen (Decode checks that for responses).
func ParseNodes(s string) []Node {
	out := make([]Node, 0, len(s)/NodeLen)
	for ; len(s) >= NodeLen; s = s[NodeLen:] {
		var n Node
		copy(n.ID[:], s[:IDLen])
		n.Addr = parseAddr(s[IDLen:NodeLen])
		out = append(out, n)
	}
	return out
}

// AppendNodes appends the compact form of the IPv4 nodes in ns to b.
func AppendNodes(b []byte, ns []Node) []byte {
	for _, n := range ns {
		if !n.Addr.Addr().Unmap().Is4() {
			continue
		}
		b = append(b, n.ID[:]...)
		b = AppendPeer(b, n.Addr)
	}
	return b
}

// ParsePeer decodes a compact IPv4 peer; ok is false if s is not PeerLen
// bytes.
func ParsePeer(s string) (a netip.AddrPort, ok bool) {
	if len(s) != PeerLen {
		return netip.AddrPort{}, false
	}
	return parseAddr(s), true
}

func parseAddr(s string) netip.AddrPort {
	ip := netip.AddrFrom4([4]byte{s[0], s[1], s[2], s[3]})
	return netip.AddrPortFrom(ip, uint16(s[4])<<8|uint16(s[5]))
}

// AppendPeer appends the compact form of an IPv4 address and port.
func AppendPeer(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap().As4()
	return append(b, ip[0], ip[1], ip[2], ip[3], byte(a.Port()>>8), byte(a.Port()))
}
