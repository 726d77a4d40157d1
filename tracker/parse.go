package tracker

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/metainfo"
)

// rawAnnounce is an HTTP announce reply with every field kept raw, so
// that a field of the wrong type costs only that field, not the reply.
type rawAnnounce struct {
	Complete       bencode.RawMessage `bencode:"complete"`
	FailureReason  bencode.RawMessage `bencode:"failure reason"`
	Incomplete     bencode.RawMessage `bencode:"incomplete"`
	Interval       bencode.RawMessage `bencode:"interval"`
	MinInterval    bencode.RawMessage `bencode:"min interval"`
	Peers          bencode.RawMessage `bencode:"peers"`
	Peers6         bencode.RawMessage `bencode:"peers6"`
	TrackerID      bencode.RawMessage `bencode:"tracker id"`
	WarningMessage bencode.RawMessage `bencode:"warning message"`
}

// rawPeer is one entry of a non-compact peer list.
type rawPeer struct {
	IP   bencode.RawMessage `bencode:"ip"`
	Port bencode.RawMessage `bencode:"port"`
}

// rawScrape is an HTTP scrape reply.
type rawScrape struct {
	FailureReason bencode.RawMessage `bencode:"failure reason"`
	Files         bencode.RawMessage `bencode:"files"`
}

// rawScrapeFile is one info-hash's entry in a scrape reply.
type rawScrapeFile struct {
	Complete   bencode.RawMessage `bencode:"complete"`
	Downloaded bencode.RawMessage `bencode:"downloaded"`
	Incomplete bencode.RawMessage `bencode:"incomplete"`
}

// decodeOptions returns bencode options bounded by lim. Alias is safe:
// nothing decoded with it outlives the parse, every kept value is copied
// into a string or a netip value.
func decodeOptions(lim Limits) bencode.DecodeOptions {
	return bencode.DecodeOptions{
		Limits: bencode.Limits{MaxSize: int64(lim.MaxBody)},
		Alias:  true,
	}
}

// ParseAnnounceResponse parses the body of an HTTP announce reply (BEP 3,
// BEP 23 compact peers, BEP 7 peers6). A "failure reason" yields a
// *FailureError. A body that is empty, larger than lim.MaxBody, not
// bencode, or not a dictionary yields an error wrapping ErrBadResponse.
// Malformed peer entries are skipped; see AnnounceResponse for the
// bounds applied to what is returned.
func ParseAnnounceResponse(body []byte, lim Limits) (AnnounceResponse, error) {
	lim = lim.withDefaults()
	if err := checkBody(body, lim); err != nil {
		return AnnounceResponse{}, err
	}
	opts := decodeOptions(lim)
	var raw rawAnnounce
	if err := opts.Unmarshal(body, &raw); err != nil {
		return AnnounceResponse{}, classify(body, err)
	}
	if raw.FailureReason != nil {
		return AnnounceResponse{}, failure(opts, raw.FailureReason)
	}
	var resp AnnounceResponse
	interval := int64(DefaultInterval / time.Second)
	if n, ok := decodeInt(opts, raw.Interval); ok {
		interval = n
	}
	resp.Interval = clampSeconds(interval, lim.MinInterval, lim.MaxInterval)
	resp.MinInterval = lim.MinInterval
	if n, ok := decodeInt(opts, raw.MinInterval); ok {
		resp.MinInterval = clampSeconds(n, lim.MinInterval, resp.Interval)
	}
	if n, ok := decodeInt(opts, raw.Complete); ok {
		resp.Complete = clampCount(n)
	}
	if n, ok := decodeInt(opts, raw.Incomplete); ok {
		resp.Incomplete = clampCount(n)
	}
	if s, ok := decodeString(opts, raw.TrackerID); ok && len(s) <= maxTrackerIDLen {
		resp.TrackerID = string(s)
	}
	if s, ok := decodeString(opts, raw.WarningMessage); ok {
		resp.Warning = sanitize(string(s))
	}

	ps := newPeerSet(lim.MaxPeers)
	switch {
	case len(raw.Peers) == 0:
	case raw.Peers[0] == 'l':
		ps.addList(opts, raw.Peers)
	default:
		if s, ok := decodeString(opts, raw.Peers); ok {
			ps.addCompact(s, 4)
		}
	}
	if s, ok := decodeString(opts, raw.Peers6); ok {
		ps.addCompact(s, 16)
	}
	resp.Peers = ps.list
	return resp, nil
}

// ParseScrapeResponse parses the body of an HTTP scrape reply (BEP 48).
// Entries whose key is not a 20-byte info-hash, or that are not
// dictionaries, are skipped; missing or malformed counts are 0.
func ParseScrapeResponse(body []byte, lim Limits) (map[metainfo.Hash]ScrapeResponse, error) {
	lim = lim.withDefaults()
	if err := checkBody(body, lim); err != nil {
		return nil, err
	}
	opts := decodeOptions(lim)
	var raw rawScrape
	if err := opts.Unmarshal(body, &raw); err != nil {
		return nil, classify(body, err)
	}
	if raw.FailureReason != nil {
		return nil, failure(opts, raw.FailureReason)
	}
	out := map[metainfo.Hash]ScrapeResponse{}
	if raw.Files == nil {
		return out, nil
	}
	var files map[string]bencode.RawMessage
	if err := opts.Unmarshal(raw.Files, &files); err != nil {
		return nil, fmt.Errorf("%w: \"files\" is not a dictionary", ErrBadResponse)
	}
	for k, v := range files {
		if len(k) != metainfo.HashSize {
			continue
		}
		var f rawScrapeFile
		if opts.Unmarshal(v, &f) != nil {
			continue
		}
		var s ScrapeResponse
		if n, ok := decodeInt(opts, f.Complete); ok {
			s.Complete = clampCount(n)
		}
		if n, ok := decodeInt(opts, f.Downloaded); ok {
			s.Downloaded = clampCount(n)
		}
		if n, ok := decodeInt(opts, f.Incomplete); ok {
			s.Incomplete = clampCount(n)
		}
		out[metainfo.Hash([]byte(k))] = s
	}
	return out, nil
}

// checkBody rejects bodies that cannot be a reply before decoding them.
func checkBody(body []byte, lim Limits) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: empty body", ErrBadResponse)
	}
	if len(body) > lim.MaxBody {
		return fmt.Errorf("%w: body larger than %d bytes", ErrBadResponse, lim.MaxBody)
	}
	return nil
}

// classify turns a decoding failure into an error that says what the
// body looked like, without quoting any of it.
func classify(body []byte, err error) error {
	trimmed := bytes.TrimSpace(body)
	switch {
	case trimmed[0] == '<':
		return fmt.Errorf("%w: html or xml, not bencode", ErrBadResponse)
	case body[0] != 'd' && bencode.Valid(body):
		return fmt.Errorf("%w: not a dictionary", ErrBadResponse)
	}
	var typeErr *bencode.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field == "" {
		return fmt.Errorf("%w: not a dictionary", ErrBadResponse)
	}
	return fmt.Errorf("%w: %w", ErrBadResponse, err)
}

// failure builds the *FailureError for a "failure reason" value.
func failure(opts bencode.DecodeOptions, raw bencode.RawMessage) error {
	s, ok := decodeString(opts, raw)
	if !ok {
		return &FailureError{Reason: "(failure reason is not a string)"}
	}
	return newFailure(string(s))
}

// decodeInt decodes an integer field. ok is false when the field is
// absent or not an integer. (An integer too large for int64 never gets
// here: the strict decoder rejects the whole reply.)
func decodeInt(opts bencode.DecodeOptions, raw bencode.RawMessage) (int64, bool) {
	if len(raw) == 0 || raw[0] != 'i' {
		return 0, false
	}
	var n int64
	if opts.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	return n, true
}

// decodeString decodes a byte-string field; the result aliases raw.
// ok is false when the field is absent or not a string.
func decodeString(opts bencode.DecodeOptions, raw bencode.RawMessage) ([]byte, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return nil, false
	}
	var b []byte
	if opts.Unmarshal(raw, &b) != nil {
		return nil, false
	}
	return b, true
}

// peerSet collects distinct usable peers up to a cap.
type peerSet struct {
	max  int
	list []netip.AddrPort
	seen map[netip.AddrPort]struct{}
}

func newPeerSet(maxPeers int) *peerSet {
	return &peerSet{max: maxPeers, seen: map[netip.AddrPort]struct{}{}}
}

func (ps *peerSet) full() bool { return len(ps.list) >= ps.max }

// add keeps ap if it is usable and new, and reports whether the set can
// take more.
func (ps *peerSet) add(ap netip.AddrPort) bool {
	if ps.full() {
		return false
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !usablePeer(ap) {
		return true
	}
	if _, dup := ps.seen[ap]; dup {
		return true
	}
	ps.seen[ap] = struct{}{}
	ps.list = append(ps.list, ap)
	return !ps.full()
}

// addCompact adds peers from a compact string of (ipLen+2)-byte entries.
// A trailing partial entry is ignored.
func (ps *peerSet) addCompact(b []byte, ipLen int) {
	entry := ipLen + 2
	for ; len(b) >= entry; b = b[entry:] {
		addr, _ := netip.AddrFromSlice(b[:ipLen])
		port := uint16(b[ipLen])<<8 | uint16(b[ipLen+1])
		if !ps.add(netip.AddrPortFrom(addr, port)) {
			return
		}
	}
}

// addList adds peers from a BEP 3 list of {ip, port} dictionaries. Entries
// that are not dictionaries, lack a field, carry the wrong type, a port
// outside 1..65535, or an ip that is not a literal address (a DNS name,
// say) are skipped.
func (ps *peerSet) addList(opts bencode.DecodeOptions, raw bencode.RawMessage) {
	var entries []bencode.RawMessage
	if opts.Unmarshal(raw, &entries) != nil {
		return
	}
	for _, e := range entries {
		if len(e) == 0 || e[0] != 'd' {
			continue
		}
		var p rawPeer
		if opts.Unmarshal(e, &p) != nil {
			continue
		}
		ip, ok := decodeString(opts, p.IP)
		if !ok {
			continue
		}
		port, ok := decodeInt(opts, p.Port)
		if !ok || port < 1 || port > math.MaxUint16 {
			continue
		}
		addr, err := netip.ParseAddr(string(ip))
		if err != nil {
			continue
		}
		if !ps.add(netip.AddrPortFrom(addr, uint16(port))) {
			return
		}
	}
}
