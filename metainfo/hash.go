package metainfo

import (
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
)

// HashSize is the size in bytes of a SHA-1 digest: a v1 info-hash or a piece hash.
const HashSize = 20

// Hash is a SHA-1 digest: the v1 info-hash of a torrent, or the hash of one piece.
type Hash [HashSize]byte

// ErrBadHash reports a textual info-hash that is neither 40 hex nor 32 base32 characters.
var ErrBadHash = errors.New("metainfo: info-hash must be 40 hex or 32 base32 characters")

// String returns the lower-case hex form, as trackers, clients and logs show it.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// HexString is String, named for call sites where the encoding matters.
func (h Hash) HexString() string { return h.String() }

// IsZero reports whether h is all zero bytes, the value of an unset Hash.
func (h Hash) IsZero() bool { return h == Hash{} }

// ParseHash reads a 40-character hex or a 32-character base32 (RFC 4648, as in
// magnet links) info-hash. Hex is case-insensitive; so is base32.
func ParseHash(s string) (Hash, error) {
	var h Hash
	switch len(s) {
	case 2 * HashSize:
		if _, err := hex.Decode(h[:], []byte(s)); err != nil {
			return Hash{}, fmt.Errorf("%w: %v", ErrBadHash, err)
		}
	case 32:
		buf := make([]byte, 32)
		for i := 0; i < len(s); i++ {
			c := s[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			buf[i] = c
		}
		n, err := base32.StdEncoding.Decode(h[:], buf)
		if err != nil || n != HashSize {
			return Hash{}, fmt.Errorf("%w: bad base32", ErrBadHash)
		}
	default:
		return Hash{}, ErrBadHash
	}
	return h, nil
}
