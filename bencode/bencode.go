// Package bencode encodes and decodes the BitTorrent bencoding (BEP 3) with an
// API shaped like encoding/json: Marshal, Unmarshal, NewEncoder, NewDecoder,
// struct tags, Marshaler, Unmarshaler and RawMessage.
//
// Decoding is strict and bounded, because every caller feeds it hostile
// input: integers with leading zeros or "-0", dictionary keys that are
// unsorted or repeated, and truncation are rejected with a *SyntaxError that
// gives the byte offset; nesting depth, string length, total size and token
// count are capped by Limits. Encoding is canonical (dictionary keys sorted),
// so a strictly decoded value re-encodes to exactly its input bytes.
//
// The package knows nothing of torrents, trackers or networks.
package bencode

import "io"

// Limits bound what a decoder accepts. A zero field takes its default.
type Limits struct {
	// MaxDepth is the deepest nesting of lists and dictionaries; 0 means 100.
	MaxDepth int
	// MaxStringLen is the longest byte string; 0 means 16 MiB.
	MaxStringLen int
	// MaxSize is the most input bytes one value may span; 0 means 16 MiB.
	MaxSize int64
	// MaxTokens is the most values (integers, strings, lists, dictionaries,
	// keys included) one value may hold; 0 means 2,000,000.
	MaxTokens int
}

// Default limits, chosen after libtorrent's bdecode defaults.
const (
	DefaultMaxDepth     = 100
	DefaultMaxStringLen = 16 << 20
	DefaultMaxSize      = 16 << 20
	DefaultMaxTokens    = 2_000_000
)

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxStringLen <= 0 {
		l.MaxStringLen = DefaultMaxStringLen
	}
	if l.MaxSize <= 0 {
		l.MaxSize = DefaultMaxSize
	}
	if l.MaxTokens <= 0 {
		l.MaxTokens = DefaultMaxTokens
	}
	return l
}

// Marshaler is a type that encodes itself. Its output must be one canonical
// bencoded value; Marshal checks that.
type Marshaler interface {
	MarshalBencode() ([]byte, error)
}

// Unmarshaler is a type that decodes itself from the raw bytes of one value,
// already checked to be strict bencode. It must copy data if it keeps it.
type Unmarshaler interface {
	UnmarshalBencode(data []byte) error
}

// RawMessage is a raw encoded value. It delays decoding, and keeps the exact
// bytes of a value: the info-hash of a torrent is the SHA-1 of its raw info
// dictionary.
type RawMessage []byte

// MarshalBencode returns m, after checking it is one canonical value.
func (m RawMessage) MarshalBencode() ([]byte, error) {
	if len(m) == 0 {
		return nil, errEmptyRaw
	}
	return m, nil
}

// UnmarshalBencode sets *m to a copy of data.
func (m *RawMessage) UnmarshalBencode(data []byte) error {
	*m = append((*m)[:0], data...)
	return nil
}

// DecodeOptions configures Unmarshal. The zero value is what Unmarshal uses.
type DecodeOptions struct {
	Limits
	// Alias makes decoded []byte and RawMessage values share the input's
	// memory instead of copying it. Set it only when the caller owns the
	// input and never changes it afterwards: it saves a copy of large
	// strings such as a torrent's piece hashes.
	Alias bool
}

// Unmarshal decodes exactly one value from data into v, with the options'
// limits. Bytes after the value are an error.
func (o DecodeOptions) Unmarshal(data []byte, v any) error {
	lim := o.Limits.withDefaults()
	if int64(len(data)) > lim.MaxSize {
		return &SyntaxError{Offset: lim.MaxSize, Err: ErrInputTooLarge}
	}
	d := decodeState{data: data, lim: lim, alias: o.Alias}
	return d.unmarshal(v)
}

// Unmarshal decodes exactly one value from data into v with default limits.
// Byte strings are copied out of data.
func Unmarshal(data []byte, v any) error {
	return DecodeOptions{}.Unmarshal(data, v)
}

// Valid reports whether data is exactly one strict bencoded value within the
// default limits.
func Valid(data []byte) bool {
	return validate(data, Limits{}) == nil
}

// validate checks that data is exactly one strict value within lim.
func validate(data []byte, lim Limits) error {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxSize {
		return &SyntaxError{Offset: lim.MaxSize, Err: ErrInputTooLarge}
	}
	d := decodeState{data: data, lim: lim, alias: true}
	if err := d.skip(); err != nil {
		return err
	}
	if d.pos != len(data) {
		return d.syntax(ErrTrailingData)
	}
	return nil
}

// Marshal returns the canonical encoding of v.
func Marshal(v any) ([]byte, error) {
	var e encodeState
	if err := e.marshal(v); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// Encoder writes bencoded values to a stream.
type Encoder struct {
	w io.Writer
	e encodeState // reused buffer between calls
}

// NewEncoder returns an encoder that writes to w.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes the canonical encoding of v. Nothing is written if v cannot
// be encoded.
func (enc *Encoder) Encode(v any) error {
	enc.e.buf = enc.e.buf[:0]
	if err := enc.e.marshal(v); err != nil {
		return err
	}
	_, err := enc.w.Write(enc.e.buf)
	return err
}
