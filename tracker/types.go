package tracker

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/metainfo"
)

// Defaults for the zero fields of Limits and for a reply without an
// interval.
const (
	DefaultMaxBody     = 1 << 20
	DefaultMaxPeers    = 3000
	DefaultMinInterval = 300 * time.Second
	DefaultMaxInterval = 24 * time.Hour
	DefaultInterval    = 1800 * time.Second
)

// MaxScrapeHashes is the most info-hashes one Scrape call accepts: what
// fits in one BEP 15 datagram. Callers batch larger sets.
const MaxScrapeHashes = 74

// maxReasonLen caps tracker-supplied text (failure reasons, warnings)
// kept after sanitising, in bytes.
const maxReasonLen = 256

// maxTrackerIDLen caps a tracker id we are willing to echo back.
const maxTrackerIDLen = 256

var (
	// ErrBadResponse is wrapped by every error about a reply that is not
	// a well-formed tracker response: garbage, HTML, an empty body, a
	// non-dictionary, a short datagram, or a body over Limits.MaxBody.
	ErrBadResponse = errors.New("tracker: bad response")

	// ErrUnsupportedScheme is returned for a tracker URL whose scheme is
	// not http, https or udp.
	ErrUnsupportedScheme = errors.New("tracker: unsupported url scheme")

	// ErrNoScrape is returned when no scrape URL can be derived from an
	// HTTP announce URL (BEP 48: the last path segment must start with
	// "announce").
	ErrNoScrape = errors.New("tracker: scrape url not derivable from announce url")
)

// FailureError is a tracker's refusal: an HTTP "failure reason" or a UDP
// error action. Reason is sanitised (printable, capped in length), since
// it comes from the network.
type FailureError struct {
	Reason string
}

// Error returns the sanitised reason with the package prefix.
func (e *FailureError) Error() string {
	return "tracker: failure reason: " + e.Reason
}

// newFailure builds a FailureError from raw tracker text.
func newFailure(reason string) *FailureError {
	r := sanitize(reason)
	if r == "" {
		r = "(no reason given)"
	}
	return &FailureError{Reason: r}
}

// StatusError reports an HTTP tracker that answered with a status other
// than 200 OK.
type StatusError struct {
	StatusCode int
	Status     string // sanitised status line text, e.g. "404 Not Found"
}

// Error names the status the tracker answered with.
func (e *StatusError) Error() string {
	return "tracker: http status " + e.Status
}

// Event is the announce event (BEP 3).
type Event int

// The events. None is a regular re-announce.
const (
	None Event = iota
	Started
	Completed
	Stopped
)

// String returns the event's name as sent in an HTTP announce; None is
// "none", which is never sent.
func (e Event) String() string {
	switch e {
	case None:
		return "none"
	case Started:
		return "started"
	case Completed:
		return "completed"
	case Stopped:
		return "stopped"
	}
	return "event(" + strconv.Itoa(int(e)) + ")"
}

// AnnounceRequest is what a client tells a tracker.
type AnnounceRequest struct {
	InfoHash metainfo.Hash // sent as raw bytes, percent-encoded over HTTP
	PeerID   [20]byte      // sent as raw bytes, percent-encoded over HTTP
	Port     uint16        // our listening port for peer connections
	// Byte counts since the Started event; negative values are sent as 0.
	Uploaded   int64
	Downloaded int64
	Left       int64 // 0 tells the tracker we seed
	Event      Event
	// NumWant is how many peers to ask for; 0 or less asks for the
	// tracker's default. It is capped at Limits.MaxPeers.
	NumWant int
	// Key identifies this client across IP changes (BEP 7 style); 0 is
	// not sent over HTTP.
	Key uint32
	// NoCompact asks an HTTP tracker for the dictionary peer list
	// (compact=0). The zero value asks for compact peers (compact=1),
	// which every tracker worth using supports. UDP is always compact.
	NoCompact bool
	// TrackerID echoes the "tracker id" from this tracker's previous
	// answer, if any (HTTP only).
	TrackerID string
}

// AnnounceResponse is what a tracker told us, already bounded and
// sanitised.
type AnnounceResponse struct {
	// Interval is the re-announce period, clamped to
	// [Limits.MinInterval, Limits.MaxInterval]; DefaultInterval (clamped)
	// when the tracker gave none.
	Interval time.Duration
	// MinInterval is the shortest allowed re-announce period, clamped to
	// [Limits.MinInterval, Interval]; Limits.MinInterval when absent.
	MinInterval time.Duration
	// Peers holds at most Limits.MaxPeers distinct addresses, IPv4 ones
	// unmapped, without port 0, unspecified, multicast or broadcast
	// addresses. Loopback and private addresses are kept.
	Peers      []netip.AddrPort
	Complete   int // seeders, 0 if unknown
	Incomplete int // leechers, 0 if unknown
	// TrackerID is to be echoed in the next announce (raw, at most 256
	// bytes; longer ones are dropped).
	TrackerID string
	// Warning is the tracker's "warning message", sanitised.
	Warning string
}

// ScrapeResponse is a tracker's count for one info-hash.
type ScrapeResponse struct {
	Complete   int // seeders
	Downloaded int // completed downloads ever reported
	Incomplete int // leechers
}

// Limits bounds what is accepted from a tracker. A zero (or negative)
// field takes its default.
type Limits struct {
	// MaxBody is the most bytes of an HTTP reply body, after
	// decompression; a larger body is an error. Default 1 MiB.
	MaxBody int
	// MaxPeers caps the peer list; further peers are dropped. Default 3000.
	MaxPeers int
	// MinInterval is the floor for intervals. Default 300 s. Tests of a
	// local tracker lower it.
	MinInterval time.Duration
	// MaxInterval is the ceiling for intervals. Default 1 day. When it is
	// below MinInterval, MinInterval wins.
	MaxInterval time.Duration
}

// withDefaults returns l with every zero or negative field defaulted.
func (l Limits) withDefaults() Limits {
	if l.MaxBody <= 0 {
		l.MaxBody = DefaultMaxBody
	}
	if l.MaxPeers <= 0 {
		l.MaxPeers = DefaultMaxPeers
	}
	if l.MinInterval <= 0 {
		l.MinInterval = DefaultMinInterval
	}
	if l.MaxInterval <= 0 {
		l.MaxInterval = DefaultMaxInterval
	}
	if l.MaxInterval < l.MinInterval {
		l.MaxInterval = l.MinInterval
	}
	return l
}

// clampSeconds turns a tracker-supplied count of seconds into a duration
// within [lo, hi], without overflowing on huge values.
func clampSeconds(sec int64, lo, hi time.Duration) time.Duration {
	if sec <= int64(lo/time.Second) {
		return lo
	}
	if sec >= int64(hi/time.Second) {
		return hi
	}
	return max(lo, min(hi, time.Duration(sec)*time.Second))
}

// clampCount turns a tracker-supplied count into a non-negative int.
func clampCount(n int64) int {
	const maxCount = 1<<31 - 1 // fits int on every platform
	return int(max(0, min(n, maxCount)))
}

// sanitize makes tracker text safe for errors and logs: invalid UTF-8 and
// control or format characters (bidi overrides included) become U+FFFD or
// are dropped, and the result is at most maxReasonLen bytes.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			r = '\uFFFD'
		case r == '\t' || r == '\n' || r == '\r':
			r = ' '
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || !unicode.IsPrint(r) && r != ' ':
			r = '\uFFFD'
		}
		if b.Len()+utf8.RuneLen(r) > maxReasonLen {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// usablePeer reports whether a tracker-supplied address could be a peer
// at all. Loopback and private addresses pass: filtering those is dial
// policy, not parsing.
func usablePeer(ap netip.AddrPort) bool {
	a := ap.Addr()
	return ap.Port() != 0 && a.IsValid() && a.Zone() == "" &&
		!a.IsUnspecified() && !a.IsMulticast() &&
		a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}
