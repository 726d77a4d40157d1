package extension

import (
	"errors"
	"fmt"
)

// Names of the extensions the engine knows about. Any other name may be
// registered too; these are here so that callers do not misspell them.
const (
	// Metadata is the ut_metadata extension (BEP 9): fetching the info
	// dictionary from peers, for magnet links.
	Metadata = "ut_metadata"
	// PEX is the ut_pex extension: peer exchange.
	PEX = "ut_pex"
)

// Errors returned by Registry.Register.
var (
	// ErrDuplicate reports a name that is already registered.
	ErrDuplicate = errors.New("extension: name already registered")
	// ErrFull reports a registry that already holds 255 names, every id a
	// one-byte extended message id can carry besides the handshake's 0.
	ErrFull = errors.New("extension: registry full")
	// ErrBadName reports a name that is empty or longer than MaxNameLen.
	ErrBadName = errors.New("extension: bad extension name")
)

// Registry maps the names of the extension messages we support to our local
// message ids: the ids peers use when sending those messages to us, and that
// we announce in our handshake's "m". Ids run from 1 to 255 in registration
// order and never change, so every connection of a client sees the same
// ones.
//
// The zero value is an empty registry ready to use. Register every name
// before sharing the registry: it takes no locks, and afterwards any number
// of goroutines may call its other methods at once.
type Registry struct {
	byName map[string]uint8 // name → local id; lazily made by Register
	names  []string         // names[id-1] is the name of local id id
}

// Register adds name and returns its local id. It fails with ErrDuplicate,
// ErrBadName or ErrFull.
func (r *Registry) Register(name string) (uint8, error) {
	if name == "" || len(name) > MaxNameLen {
		return 0, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if _, ok := r.byName[name]; ok {
		return 0, fmt.Errorf("%w: %q", ErrDuplicate, name)
	}
	if len(r.names) >= 255 {
		return 0, fmt.Errorf("%w: cannot add %q", ErrFull, name)
	}
	if r.byName == nil {
		r.byName = map[string]uint8{}
	}
	r.names = append(r.names, name)
	id := uint8(len(r.names))
	r.byName[name] = id
	return id, nil
}

// Local returns our local id for name, and whether name is registered.
func (r *Registry) Local(name string) (uint8, bool) {
	id, ok := r.byName[name]
	return id, ok
}

// NameOf returns the name registered under our local id, which is how an
// incoming extended message is dispatched. Id 0 (the handshake) and
// unassigned ids report false.
func (r *Registry) NameOf(localID uint8) (string, bool) {
	if localID == 0 || int(localID) > len(r.names) {
		return "", false
	}
	return r.names[localID-1], true
}

// Ours returns a fresh map of every registered name to its local id, ready
// to be the "m" of our handshake. The caller may modify it.
func (r *Registry) Ours() map[string]int {
	m := make(map[string]int, len(r.names))
	for i, name := range r.names {
		m[name] = i + 1
	}
	return m
}

// Peer is what one remote peer told us in its extension handshakes. It is
// owned by that peer's connection (or the torrent's loop) and takes no
// locks. The zero value is a peer that has not sent a handshake yet.
type Peer struct {
	ids  map[string]uint8 // name → the peer's id for it, never 0
	info Handshake        // the latest non-zero value of each other field; info.M unused
	seen bool             // at least one handshake was received
}

// Update merges a handshake from the peer, as BEP 10 asks of later
// handshakes: a name with a non-zero id is enabled under that id (replacing
// any earlier id), a name with id 0 is disabled, and names the handshake
// does not mention keep their mapping. Ids outside 0..255 are ignored, and
// so are new names once the peer has DefaultMaxNames: later handshakes
// cannot grow the table past what one may carry. The
// other fields replace earlier values only when the new handshake carries
// them (is non-zero), so a short follow-up handshake does not erase the
// port or client name.
func (p *Peer) Update(h Handshake) {
	p.seen = true
	// Names disabled first: the slots they free are there for the names
	// the same handshake enables, whatever the map's order.
	for name, id := range h.M {
		if id == 0 {
			delete(p.ids, name)
		}
	}
	for name, id := range h.M {
		if id <= 0 || id > 255 {
			continue
		}
		if p.ids == nil {
			p.ids = map[string]uint8{}
		}
		if _, known := p.ids[name]; known || len(p.ids) < DefaultMaxNames {
			p.ids[name] = uint8(id)
		}
	}
	if h.V != "" {
		p.info.V = h.V
	}
	if h.P != 0 {
		p.info.P = h.P
	}
	if h.Reqq != 0 {
		p.info.Reqq = h.Reqq
	}
	if h.MetadataSize != 0 {
		p.info.MetadataSize = h.MetadataSize
	}
	if h.YourIP != nil {
		p.info.YourIP = append([]byte(nil), h.YourIP...)
	}
	if h.IPv4 != nil {
		p.info.IPv4 = append([]byte(nil), h.IPv4...)
	}
	if h.IPv6 != nil {
		p.info.IPv6 = append([]byte(nil), h.IPv6...)
	}
}

// ID returns the id we must put in an extended message named name when
// sending it to this peer, and false when the peer has not enabled it.
func (p *Peer) ID(name string) (uint8, bool) {
	id, ok := p.ids[name]
	return id, ok
}

// Received reports whether the peer has sent at least one handshake.
func (p *Peer) Received() bool { return p.seen }

// Handshake returns the merged view of everything the peer has told us:
// M holds its currently enabled extensions (never a 0 id), the other fields
// their latest non-zero values. The result shares no memory with p.
func (p *Peer) Handshake() Handshake {
	h := p.info
	h.M = make(map[string]int, len(p.ids))
	for name, id := range p.ids {
		h.M[name] = int(id)
	}
	h.YourIP = cloneBytes(h.YourIP)
	h.IPv4 = cloneBytes(h.IPv4)
	h.IPv6 = cloneBytes(h.IPv6)
	return h
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
