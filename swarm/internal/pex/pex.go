// Package pex implements the ut_pex message of peer exchange (BEP 11): its
// parser and encoder, and the two small state machines a connection needs,
// one deciding what to tell a peer and when (a diff of the connected set,
// at most once a minute), one deciding which of its messages to take.
//
// It is pure: no sockets, no goroutines, no clock of its own. The engine
// sends and receives the messages over the BEP 10 extension protocol and
// decides what to do with the addresses; every message comes from the
// network, so parsing is bounded by Limits.
package pex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
)

// Name is the extension's name in the BEP 10 handshake.
const Name = "ut_pex"

// Flags of an added peer (the added.f and added6.f bytes).
const (
	FlagEncryption = 0x01 // prefers encryption
	FlagSeed       = 0x02 // is a seed, or upload only
	FlagUTP        = 0x04 // supports uTP
	FlagHolepunch  = 0x08 // supports ut_holepunch
	FlagReachable  = 0x10 // the sender connected to it: it accepts connections
)

const (
	// MaxSend is the most added, and the most dropped, entries one message
	// we send may carry: BEP 11's rule.
	MaxSend = 50
	// Interval is the shortest time between two messages to one peer.
	Interval = time.Minute
	// MinReceiveInterval is the shortest time between two messages from
	// one peer that are both taken: a minute, less some slack for delays
	// on the way. Faster messages are ignored.
	MinReceiveInterval = 45 * time.Second
)

// Defaults for the zero fields of Limits.
const (
	// DefaultMaxSize bounds a message. 200 IPv6 peers with flags, added
	// and dropped, take about 7.4 KiB.
	DefaultMaxSize = 16 << 10
	// DefaultMaxPeers bounds the entries kept from each of the four lists.
	DefaultMaxPeers = 200
)

// Limits bound what Parse accepts. A zero (or negative) field takes its
// default.
type Limits struct {
	// MaxSize is the longest message accepted; 0 means 16 KiB.
	MaxSize int
	// MaxPeers is the most entries kept from each list (added, added6,
	// dropped, dropped6); 0 means 200. Entries past it are dropped, not
	// an error, and Message.Truncated says so.
	MaxPeers int
}

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxPeers <= 0 {
		l.MaxPeers = DefaultMaxPeers
	}
	return l
}

// Errors returned by Parse. Every one matches ErrBad under errors.Is.
var (
	// ErrBad reports a malformed or hostile ut_pex message.
	ErrBad = errors.New("pex: bad ut_pex message")
	// ErrTooLarge reports a message longer than Limits.MaxSize.
	ErrTooLarge = fmt.Errorf("%w: too large", ErrBad)
)

// Peer is one added entry: a listening address and its flags.
type Peer struct {
	Addr  netip.AddrPort
	Flags byte
}

// Message is one ut_pex message. IPv4 and IPv6 entries share the lists;
// IPv4 addresses are never IPv4-mapped IPv6 ones.
type Message struct {
	Added   []Peer
	Dropped []netip.AddrPort
	// Truncated reports that Parse kept only the first Limits.MaxPeers
	// entries of at least one list.
	Truncated bool
}

// wireMessage is the bencoded dictionary. libtorrent sends every key, with
// empty strings for empty lists; we leave empty ones out.
type wireMessage struct {
	Added    []byte `bencode:"added,omitempty"`
	AddedF   []byte `bencode:"added.f,omitempty"`
	Added6   []byte `bencode:"added6,omitempty"`
	Added6F  []byte `bencode:"added6.f,omitempty"`
	Dropped  []byte `bencode:"dropped,omitempty"`
	Dropped6 []byte `bencode:"dropped6,omitempty"`
}

// Parse reads a message. Compact lists whose length is not a multiple of
// an entry, and flag strings that do not match their list, are errors;
// entries with port 0 or an unspecified address are skipped; other keys
// are ignored.
func Parse(b []byte, lim Limits) (Message, error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxSize {
		return Message{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	opts := bencode.DecodeOptions{Limits: bencode.Limits{
		MaxDepth:     2,
		MaxSize:      int64(lim.MaxSize),
		MaxStringLen: lim.MaxSize,
		MaxTokens:    64,
	}, Alias: true}
	var w wireMessage
	if err := opts.Unmarshal(b, &w); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	var m Message
	var err error
	if m.Added, err = parseAdded(&m, w.Added, w.AddedF, 4, lim.MaxPeers); err != nil {
		return Message{}, err
	}
	added6, err := parseAdded(&m, w.Added6, w.Added6F, 16, lim.MaxPeers)
	if err != nil {
		return Message{}, err
	}
	m.Added = append(m.Added, added6...)
	if m.Dropped, err = parseAddrs(&m, w.Dropped, 4, lim.MaxPeers); err != nil {
		return Message{}, err
	}
	dropped6, err := parseAddrs(&m, w.Dropped6, 16, lim.MaxPeers)
	if err != nil {
		return Message{}, err
	}
	m.Dropped = append(m.Dropped, dropped6...)
	return m, nil
}

func parseAdded(m *Message, list, flags []byte, ipLen, max int) ([]Peer, error) {
	if err := checkList(m, list, ipLen, max); err != nil {
		return nil, err
	}
	n := len(list) / (ipLen + 2)
	if len(flags) != 0 && len(flags) != n {
		return nil, fmt.Errorf("%w: %d flags for %d peers", ErrBad, len(flags), n)
	}
	var out []Peer
	i := 0
	for e := range entries(list, ipLen, max) {
		if e.valid {
			p := Peer{Addr: e.addr}
			if len(flags) != 0 {
				p.Flags = flags[i]
			}
			out = append(out, p)
		}
		i++
	}
	return out, nil
}

// checkList checks that list is made of whole entries, and notes in m
// when it holds more than max.
func checkList(m *Message, list []byte, ipLen, max int) error {
	size := ipLen + 2
	if len(list)%size != 0 {
		return fmt.Errorf("%w: a list of %d bytes is not made of %d-byte entries", ErrBad, len(list), size)
	}
	if len(list)/size > max {
		m.Truncated = true
	}
	return nil
}

func parseAddrs(m *Message, list []byte, ipLen, max int) ([]netip.AddrPort, error) {
	if err := checkList(m, list, ipLen, max); err != nil {
		return nil, err
	}
	var out []netip.AddrPort
	for e := range entries(list, ipLen, max) {
		if e.valid {
			out = append(out, e.addr)
		}
	}
	return out, nil
}

type entry struct {
	addr  netip.AddrPort
	valid bool
}

// entries yields the first max compact entries of list.
func entries(list []byte, ipLen, max int) func(func(entry) bool) {
	return func(yield func(entry) bool) {
		size := ipLen + 2
		for i := 0; i+size <= len(list) && i/size < max; i += size {
			ip, _ := netip.AddrFromSlice(list[i : i+ipLen])
			ip = ip.Unmap()
			port := binary.BigEndian.Uint16(list[i+ipLen:])
			a := netip.AddrPortFrom(ip, port)
			if !yield(entry{addr: a, valid: port != 0 && !ip.IsUnspecified()}) {
				return
			}
		}
	}
}

// Append encodes m after dst. IPv4 (and IPv4-mapped) addresses go to the
// IPv4 lists, others to the IPv6 lists; invalid addresses are left out.
func Append(dst []byte, m Message) []byte {
	var w wireMessage
	for _, p := range m.Added {
		ip := p.Addr.Addr().Unmap()
		switch {
		case !p.Addr.IsValid():
		case ip.Is4():
			w.Added = appendAddr(w.Added, ip, p.Addr.Port())
			w.AddedF = append(w.AddedF, p.Flags)
		default:
			w.Added6 = appendAddr(w.Added6, ip, p.Addr.Port())
			w.Added6F = append(w.Added6F, p.Flags)
		}
	}
	for _, a := range m.Dropped {
		ip := a.Addr().Unmap()
		switch {
		case !a.IsValid():
		case ip.Is4():
			w.Dropped = appendAddr(w.Dropped, ip, a.Port())
		default:
			w.Dropped6 = appendAddr(w.Dropped6, ip, a.Port())
		}
	}
	b, _ := bencode.Marshal(w) // a struct of byte strings always encodes
	return append(dst, b...)
}

func appendAddr(b []byte, ip netip.Addr, port uint16) []byte {
	b = append(b, ip.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, port)
}

// Sender decides what to tell one peer: the first message lists the
// connected peers, later ones what changed since, at most MaxSend added
// and MaxSend dropped each, and never more often than Interval. The zero
// value is a peer told nothing yet.
type Sender struct {
	told map[netip.AddrPort]bool // what the peer has been told is connected
	last time.Time               // when we last sent; zero before the first
}

// Due reports whether a message may be sent at now, so that the caller
// need not gather the connected peers before it is.
func (s *Sender) Due(now time.Time) bool {
	return s.last.IsZero() || now.Sub(s.last) >= Interval
}

// Next returns the message due at now, given the peers connected now
// (their listening addresses, without the recipient), and false when
// nothing is due: too early, or nothing changed. A message returned is
// taken as sent.
func (s *Sender) Next(now time.Time, connected []Peer) (Message, bool) {
	if !s.Due(now) {
		return Message{}, false
	}
	current := make(map[netip.AddrPort]bool, len(connected))
	var m Message
	for _, p := range connected {
		a := unmap(p.Addr)
		if !a.IsValid() || a.Port() == 0 || current[a] {
			continue
		}
		current[a] = true
		if !s.told[a] && len(m.Added) < MaxSend {
			m.Added = append(m.Added, Peer{Addr: a, Flags: p.Flags})
		}
	}
	for a := range s.told {
		if !current[a] && len(m.Dropped) < MaxSend {
			m.Dropped = append(m.Dropped, a)
		}
	}
	if len(m.Added) == 0 && len(m.Dropped) == 0 {
		return Message{}, false
	}
	// Map order is random: sort so that what is sent is reproducible.
	slices.SortFunc(m.Dropped, func(a, b netip.AddrPort) int { return a.Compare(b) })
	if s.told == nil {
		s.told = map[netip.AddrPort]bool{}
	}
	for _, p := range m.Added {
		s.told[p.Addr] = true
	}
	for _, a := range m.Dropped {
		delete(s.told, a)
	}
	s.last = now
	return m, true
}

// Told is how many addresses the peer has been told of and not told
// dropped.
func (s *Sender) Told() int { return len(s.told) }

// Receiver rate-limits the messages of one peer. The zero value has taken
// none yet.
type Receiver struct {
	last time.Time // when a message was last taken
}

// Allow reports whether a message arriving at now is taken, and if so
// records it: the first always is, later ones only MinReceiveInterval
// after the last one taken.
func (r *Receiver) Allow(now time.Time) bool {
	if !r.last.IsZero() && now.Sub(r.last) < MinReceiveInterval {
		return false
	}
	r.last = now
	return true
}

// Plausible reports whether a peer at from may tell us of addr: a loopback
// address only from a loopback peer, a private or link-local one only from
// a peer on a loopback, private or link-local address, as libtorrent does,
// so that a remote peer cannot point us at our own network. Multicast,
// broadcast and unspecified addresses and port 0 never are.
func Plausible(from netip.Addr, addr netip.AddrPort) bool {
	ip, from := addr.Addr().Unmap(), from.Unmap()
	switch {
	case !addr.IsValid() || addr.Port() == 0 || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false
	case ip.IsLoopback():
		return from.IsLoopback()
	case local(ip):
		return local(from) || from.IsLoopback()
	}
	return true
}

func local(ip netip.Addr) bool {
	return ip.IsPrivate() || ip.IsLinkLocalUnicast()
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}
