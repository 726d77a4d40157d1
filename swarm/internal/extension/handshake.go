// Package extension implements the BitTorrent extension protocol (BEP 10):
// the extension handshake that peers exchange once the reserved bit is set,
// and the bookkeeping of extension message ids by name, in both directions.
//
// A Registry assigns our own local ids to the extension messages we support,
// including messages a user of the engine defines for itself. A Peer
// remembers the ids a remote peer announced, which are the ids we must use
// when sending to it. ParseHandshake is lenient about what it does not
// understand but bounded, because every handshake comes from the network.
//
// The package does not read or write connections, frame messages (that is
// the wire package's job), or implement any particular extension such as
// ut_metadata or ut_pex: it only knows their names and the handshake keys
// that describe them.
package extension

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/bencode"
)

// Defaults for the zero fields of Limits.
const (
	// DefaultMaxPayload bounds a handshake payload; real ones are a few
	// hundred bytes.
	DefaultMaxPayload = 64 << 10
	// DefaultMaxNames bounds the entries kept from the "m" dictionary; a
	// client that supports more extensions than this is not a client.
	DefaultMaxNames = 128
	// DefaultMaxMetadataSize bounds the info dictionary a peer may offer
	// through ut_metadata (BEP 9), as libtorrent's max_metadata_size does.
	DefaultMaxMetadataSize = 30 << 20
)

// Bounds on single handshake fields, applied whatever the Limits.
const (
	// MaxNameLen is the longest extension name kept; longer names are
	// ignored when parsing and refused when registering or marshalling.
	MaxNameLen = 64
	// MaxClientLen is the longest client name ("v") kept, in bytes.
	MaxClientLen = 256
)

// Errors returned by ParseHandshake. Every parse error matches
// ErrHandshake under errors.Is; the more specific sentinels say why.
var (
	// ErrHandshake is matched by every error ParseHandshake returns.
	ErrHandshake = errors.New("extension: bad handshake")
	// ErrPayloadTooLarge reports a payload longer than Limits.MaxPayload.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrMetadataSize reports a metadata_size that is negative or above
	// Limits.MaxMetadataSize. The peer should not be asked for metadata.
	ErrMetadataSize = errors.New("metadata_size out of range")
)

// Limits bound what ParseHandshake accepts. A zero (or negative) field takes
// its default.
type Limits struct {
	// MaxPayload is the longest payload accepted; 0 means 64 KiB.
	MaxPayload int
	// MaxNames is the most "m" entries kept; 0 means 128. Entries past it,
	// in the dictionary's (sorted) order, are dropped, not an error.
	MaxNames int
	// MaxMetadataSize is the largest metadata_size accepted; 0 means
	// 30 MiB. A larger value is an error.
	MaxMetadataSize int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxNames <= 0 {
		l.MaxNames = DefaultMaxNames
	}
	if l.MaxMetadataSize <= 0 {
		l.MaxMetadataSize = DefaultMaxMetadataSize
	}
	return l
}

// Handshake is the payload of an extension handshake (extended message id
// 0). Zero values mean absent: MarshalHandshake omits them and
// ParseHandshake leaves them zero when the key is missing or unusable.
type Handshake struct {
	// M maps extension names to the sender's local message ids. An id of 0
	// means the sender disables that extension. ParseHandshake always
	// returns a non-nil map.
	M map[string]int
	// V is the sender's client name and version, valid UTF-8, at most
	// MaxClientLen bytes after parsing.
	V string
	// P is the sender's TCP listen port, 1..65535, or 0.
	P int
	// Reqq is how many outstanding requests the sender accepts, or 0.
	Reqq int
	// MetadataSize is the size of the info dictionary the sender can serve
	// through ut_metadata, or 0.
	MetadataSize int64
	// YourIP is our address as the sender sees it: 4 or 16 bytes, or nil.
	YourIP []byte
	// IPv4 is the sender's own IPv4 address: 4 bytes or nil.
	IPv4 []byte
	// IPv6 is the sender's own IPv6 address: 16 bytes or nil.
	IPv6 []byte
}

// wireHandshake is the dictionary as it is encoded. "m" is always written,
// even empty, because some clients treat its absence as a malformed
// handshake.
type wireHandshake struct {
	M            map[string]int `bencode:"m"`
	V            string         `bencode:"v,omitempty"`
	P            int            `bencode:"p,omitempty"`
	Reqq         int            `bencode:"reqq,omitempty"`
	MetadataSize int64          `bencode:"metadata_size,omitempty"`
	YourIP       []byte         `bencode:"yourip,omitempty"`
	IPv4         []byte         `bencode:"ipv4,omitempty"`
	IPv6         []byte         `bencode:"ipv6,omitempty"`
}

// MarshalHandshake encodes h canonically. It refuses, rather than silently
// drops, what ParseHandshake would ignore or reject: names that are empty
// or longer than MaxNameLen, ids outside 0..255, a port outside 0..65535,
// a negative Reqq or MetadataSize, a V that is not valid UTF-8 or is longer
// than MaxClientLen, and addresses of the wrong length.
func MarshalHandshake(h Handshake) ([]byte, error) {
	for name, id := range h.M {
		if name == "" || len(name) > MaxNameLen {
			return nil, fmt.Errorf("extension: marshalling handshake: bad extension name %q", name)
		}
		if id < 0 || id > 255 {
			return nil, fmt.Errorf("extension: marshalling handshake: id %d of %q outside 0..255", id, name)
		}
	}
	switch {
	case h.P < 0 || h.P > 65535:
		return nil, fmt.Errorf("extension: marshalling handshake: port %d out of range", h.P)
	case h.Reqq < 0:
		return nil, fmt.Errorf("extension: marshalling handshake: negative reqq %d", h.Reqq)
	case h.MetadataSize < 0:
		return nil, fmt.Errorf("extension: marshalling handshake: negative metadata_size %d", h.MetadataSize)
	case len(h.V) > MaxClientLen || !utf8.ValidString(h.V):
		return nil, errors.New("extension: marshalling handshake: client name too long or not UTF-8")
	case len(h.YourIP) != 0 && len(h.YourIP) != 4 && len(h.YourIP) != 16:
		return nil, fmt.Errorf("extension: marshalling handshake: yourip of %d bytes", len(h.YourIP))
	case len(h.IPv4) != 0 && len(h.IPv4) != 4:
		return nil, fmt.Errorf("extension: marshalling handshake: ipv4 of %d bytes", len(h.IPv4))
	case len(h.IPv6) != 0 && len(h.IPv6) != 16:
		return nil, fmt.Errorf("extension: marshalling handshake: ipv6 of %d bytes", len(h.IPv6))
	}
	m := h.M
	if m == nil {
		m = map[string]int{}
	}
	b, err := bencode.Marshal(wireHandshake{
		M:            m,
		V:            h.V,
		P:            h.P,
		Reqq:         h.Reqq,
		MetadataSize: h.MetadataSize,
		YourIP:       h.YourIP,
		IPv4:         h.IPv4,
		IPv6:         h.IPv6,
	})
	if err != nil {
		return nil, fmt.Errorf("extension: marshalling handshake: %w", err)
	}
	return b, nil
}

// ParseHandshake decodes an extension handshake payload.
//
// It fails only when the payload is longer than lim.MaxPayload, is not one
// strict bencoded dictionary, or carries a metadata_size that is negative or
// above lim.MaxMetadataSize. Everything else is lenient: unknown keys are
// skipped, and a known key whose value has the wrong type or is out of range
// is treated as absent. In "m", entries whose id is not an integer in 0..255
// or whose name is empty or longer than MaxNameLen are skipped, and at most
// lim.MaxNames entries are kept. V is made valid UTF-8 (invalid bytes
// become U+FFFD) and cut to MaxClientLen bytes on a character boundary.
// P is kept only in 1..65535 and Reqq only when positive and at most
// 1<<31-1.
//
// The result never aliases payload.
func ParseHandshake(payload []byte, lim Limits) (Handshake, error) {
	lim = lim.withDefaults()
	if len(payload) > lim.MaxPayload {
		return Handshake{}, fmt.Errorf("%w: %w: %d bytes", ErrHandshake, ErrPayloadTooLarge, len(payload))
	}
	opts := bencode.DecodeOptions{Limits: bencode.Limits{
		MaxSize:      int64(lim.MaxPayload),
		MaxStringLen: lim.MaxPayload,
	}}
	var dict map[string]bencode.RawMessage
	if err := opts.Unmarshal(payload, &dict); err != nil {
		return Handshake{}, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	h := Handshake{M: parseNames(dict["m"], lim.MaxNames)}

	if n, ok := intValue(dict["metadata_size"]); ok {
		if n < 0 || n > lim.MaxMetadataSize {
			return Handshake{}, fmt.Errorf("%w: %w: %d", ErrHandshake, ErrMetadataSize, n)
		}
		h.MetadataSize = n
	}
	if s, ok := stringValue(dict["v"]); ok {
		h.V = clientName(s)
	}
	if n, ok := intValue(dict["p"]); ok && n >= 1 && n <= 65535 {
		h.P = int(n)
	}
	if n, ok := intValue(dict["reqq"]); ok && n >= 1 && n <= 1<<31-1 {
		h.Reqq = int(n)
	}
	if s, ok := stringValue(dict["yourip"]); ok && (len(s) == 4 || len(s) == 16) {
		h.YourIP = []byte(s)
	}
	if s, ok := stringValue(dict["ipv4"]); ok && len(s) == 4 {
		h.IPv4 = []byte(s)
	}
	if s, ok := stringValue(dict["ipv6"]); ok && len(s) == 16 {
		h.IPv6 = []byte(s)
	}
	return h, nil
}

// parseNames decodes the "m" dictionary leniently. The raw value has
// already passed the strict decoder, so a failure here can only be a type
// mismatch.
func parseNames(raw bencode.RawMessage, maxNames int) map[string]int {
	m := map[string]int{}
	var entries map[string]bencode.RawMessage
	if raw == nil || bencode.Unmarshal(raw, &entries) != nil {
		return m
	}
	// Keep the first maxNames usable entries in key order, which strict
	// decoding guarantees is the order they were sent in, so the result
	// does not depend on map iteration.
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if len(m) >= maxNames {
			break
		}
		if name == "" || len(name) > MaxNameLen {
			continue
		}
		id, ok := intValue(entries[name])
		if !ok || id < 0 || id > 255 {
			continue
		}
		m[name] = int(id)
	}
	return m
}

// intValue decodes raw as an integer; ok is false when raw is absent or is
// not an integer.
func intValue(raw bencode.RawMessage) (int64, bool) {
	if len(raw) == 0 || raw[0] != 'i' {
		return 0, false
	}
	var n int64
	if bencode.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	return n, true
}

// stringValue decodes raw as a byte string; ok is false when raw is absent
// or is not a string.
func stringValue(raw bencode.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return "", false
	}
	var s string
	if bencode.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// clientName makes s valid UTF-8 and cuts it to MaxClientLen bytes without
// splitting a character. Replacing first means a cut can never create a
// fresh invalid sequence.
func clientName(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxClientLen {
		return s
	}
	cut := MaxClientLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
