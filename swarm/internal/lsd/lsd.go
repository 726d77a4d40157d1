// Package lsd implements the message of local service discovery (BEP 14):
// the "BT-SEARCH" announce that peers multicast on their local network,
// naming the torrents they have and the port they listen on.
//
// It is pure: a parser bounded by Limits, since every datagram comes from
// the network, and an encoder. The engine owns the sockets and the timing.
package lsd

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Group is BEP 14's IPv4 multicast group and port; Group6 the IPv6 one.
const (
	Group  = "239.192.152.143:6771"
	Group6 = "[ff15::efc0:988f]:6771"
)

// MaxSendHashes is the most info-hashes Append is given per message by the
// engine, so that an announce fits one unfragmented datagram.
const MaxSendHashes = 20

// Defaults for the zero fields of Limits.
const (
	// DefaultMaxSize bounds a datagram: more than an Ethernet frame's
	// payload is not a local announce.
	DefaultMaxSize = 1500
	// DefaultMaxHashes bounds the info-hashes kept from one announce.
	DefaultMaxHashes = 32
)

// Bounds on single fields, whatever the Limits.
const (
	maxLine   = 256 // the longest header line
	maxCookie = 64  // the longest cookie kept
	maxHost   = 64  // the longest Host kept
)

// Limits bound what Parse accepts. A zero (or negative) field takes its
// default.
type Limits struct {
	// MaxSize is the longest message accepted; 0 means 1500 bytes.
	MaxSize int
	// MaxHashes is the most info-hashes kept; 0 means 32. Further ones
	// are dropped, not an error.
	MaxHashes int
}

func (l Limits) withDefaults() Limits {
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxHashes <= 0 {
		l.MaxHashes = DefaultMaxHashes
	}
	return l
}

// ErrBad reports a malformed or hostile announce.
var ErrBad = errors.New("lsd: bad announce")

// Announce is one BT-SEARCH message.
type Announce struct {
	Host       string     // the group it was sent to, as the sender wrote it
	Port       uint16     // where the sender listens for peers, never 0
	InfoHashes [][20]byte // never empty when parsed
	Cookie     string     // the sender's, to recognise its own announces; may be empty
}

const requestLine = "BT-SEARCH * HTTP/1.1"

// Parse reads an announce. Header names are case-insensitive; lines may
// end in CRLF or LF; unknown headers are ignored, and so are info-hashes
// that are not 40 hex digits (BEP 52's longer ones included). It is an
// error for Port to be missing or invalid, or for no info-hash to be
// valid.
func Parse(b []byte, lim Limits) (Announce, error) {
	lim = lim.withDefaults()
	if len(b) > lim.MaxSize {
		return Announce{}, fmt.Errorf("%w: %d bytes", ErrBad, len(b))
	}
	var a Announce
	first, havePort := true, false
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		if len(line) > maxLine {
			return Announce{}, fmt.Errorf("%w: a line of %d bytes", ErrBad, len(line))
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if first {
			if string(line) != requestLine {
				return Announce{}, fmt.Errorf("%w: request line %q", ErrBad, truncate(line))
			}
			first = false
			continue
		}
		if len(line) == 0 {
			continue // the blank lines that end the message
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return Announce{}, fmt.Errorf("%w: header line %q", ErrBad, truncate(line))
		}
		v := strings.TrimSpace(string(value))
		switch strings.ToLower(strings.TrimSpace(string(name))) {
		case "host":
			if len(v) <= maxHost {
				a.Host = v
			}
		case "port":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return Announce{}, fmt.Errorf("%w: port %q", ErrBad, truncate([]byte(v)))
			}
			a.Port, havePort = uint16(n), true
		case "infohash":
			var ih [20]byte
			if len(v) != 40 || len(a.InfoHashes) >= lim.MaxHashes {
				continue
			}
			if _, err := hex.Decode(ih[:], []byte(v)); err != nil {
				continue
			}
			a.InfoHashes = append(a.InfoHashes, ih)
		case "cookie":
			if len(v) <= maxCookie {
				a.Cookie = v
			}
		}
	}
	switch {
	case first:
		return Announce{}, fmt.Errorf("%w: empty", ErrBad)
	case !havePort:
		return Announce{}, fmt.Errorf("%w: no port", ErrBad)
	case len(a.InfoHashes) == 0:
		return Announce{}, fmt.Errorf("%w: no info-hash", ErrBad)
	}
	return a, nil
}

func truncate(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

// Append encodes a after dst, in BEP 14's layout. The cookie is left out
// when empty.
func Append(dst []byte, a Announce) []byte {
	dst = append(dst, requestLine+"\r\n"...)
	dst = append(dst, "Host: "+a.Host+"\r\n"...)
	dst = append(dst, "Port: "+strconv.Itoa(int(a.Port))+"\r\n"...)
	for _, ih := range a.InfoHashes {
		dst = append(dst, "Infohash: "...)
		dst = hex.AppendEncode(dst, ih[:])
		dst = append(dst, "\r\n"...)
	}
	if a.Cookie != "" {
		dst = append(dst, "cookie: "+a.Cookie+"\r\n"...)
	}
	return append(dst, "\r\n\r\n"...)
}
