package bencode

import (
	"bufio"
	"errors"
	"io"
	"slices"
)

// Decoder reads bencoded values from a stream, one per Decode call.
//
// Each value is read into a buffer of its own and then decoded, so []byte
// and RawMessage results share that buffer rather than copying it again:
// the bytes of a string are copied once, from the reader.
type Decoder struct {
	// Limits bound each value. Set before the first Decode; zero fields
	// take their defaults.
	Limits Limits

	r      *bufio.Reader
	offset int64 // bytes consumed before the current value
}

// NewDecoder returns a decoder that reads from r. It may read ahead of the
// value it returns.
func NewDecoder(r io.Reader) *Decoder {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Decoder{r: br}
}

// InputOffset is the offset in the stream just past the last value decoded.
func (dec *Decoder) InputOffset() int64 { return dec.offset }

// Decode reads the next value and stores it in v. At the end of the stream,
// before any byte of a value, it returns io.EOF.
func (dec *Decoder) Decode(v any) error {
	lim := dec.Limits.withDefaults()
	raw, err := dec.readValue(lim)
	if err != nil {
		return err
	}
	d := decodeState{data: raw, lim: lim, alias: true, base: dec.offset}
	dec.offset += int64(len(raw))
	return d.unmarshal(v)
}

// frameState finds where one value ends in a stream without holding more
// than that value: it checks the framing and the limits as bytes arrive,
// and leaves the strict checks to decodeState.
type frameState struct {
	r      *bufio.Reader
	lim    Limits
	buf    []byte
	base   int64
	tokens int
}

func (f *frameState) fail(err error) error {
	return &SyntaxError{Offset: f.base + int64(len(f.buf)), Err: err}
}

// failLast reports a problem with the byte just read.
func (f *frameState) failLast(err error) error {
	return &SyntaxError{Offset: f.base + int64(len(f.buf)-1), Err: err}
}

func (f *frameState) byte() (byte, error) {
	if int64(len(f.buf)) >= f.lim.MaxSize {
		return 0, f.fail(ErrInputTooLarge)
	}
	c, err := f.r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return 0, f.fail(ErrUnexpectedEOF)
		}
		return 0, err
	}
	f.buf = append(f.buf, c)
	return c, nil
}

// maxIntBytes bounds the text of an integer: a sign and 20 digits is more
// than any int64 needs, and decodeState reports the overflow exactly.
const maxIntBytes = 22

func (dec *Decoder) readValue(lim Limits) ([]byte, error) {
	if _, err := dec.r.Peek(1); err != nil {
		return nil, err // io.EOF at a value boundary is the clean end
	}
	f := &frameState{r: dec.r, lim: lim, base: dec.offset}
	depth := 0
	for {
		c, err := f.byte()
		if err != nil {
			return nil, err
		}
		if c != 'e' || depth == 0 {
			f.tokens++
			if f.tokens > lim.MaxTokens {
				return nil, f.failLast(ErrTooManyTokens)
			}
		}
		switch {
		case c == 'i':
			for n := 0; c != 'e'; n++ {
				if n > maxIntBytes {
					return nil, f.fail(ErrBadInteger)
				}
				if c, err = f.byte(); err != nil {
					return nil, err
				}
			}
		case c >= '0' && c <= '9':
			n := int64(c - '0')
			for {
				if c, err = f.byte(); err != nil {
					return nil, err
				}
				if c == ':' {
					break
				}
				if c < '0' || c > '9' {
					return nil, f.fail(ErrBadStringLength)
				}
				if max := int64(lim.MaxStringLen); n > max/10 || n*10 > max-int64(c-'0') { // checked before it can overflow
					return nil, f.fail(ErrStringTooLong)
				}
				n = n*10 + int64(c-'0')
			}
			if int64(len(f.buf))+n > lim.MaxSize {
				return nil, f.fail(ErrInputTooLarge)
			}
			if err := f.readN(int(n)); err != nil {
				return nil, err
			}
		case c == 'l' || c == 'd':
			depth++
			if depth > lim.MaxDepth {
				return nil, f.failLast(ErrDepthExceeded)
			}
			continue
		case c == 'e' && depth > 0:
			depth--
		default:
			return nil, f.failLast(ErrExpectedValue)
		}
		if depth == 0 {
			return f.buf, nil
		}
	}
}

// readN appends exactly n more bytes. A length prefix is only a claim, so
// the buffer first grows by at most 1 MiB; once that much has arrived it
// grows once to the whole length (already bounded by the limits), so a
// large string is neither allocated on a false claim nor copied repeatedly.
func (f *frameState) readN(n int) error {
	first := min(n, 1<<20)
	if err := f.readChunk(first); err != nil {
		return err
	}
	if n > first {
		return f.readChunk(n - first)
	}
	return nil
}

func (f *frameState) readChunk(n int) error {
	start := len(f.buf)
	f.buf = slices.Grow(f.buf, n)[:start+n]
	m, err := io.ReadFull(f.r, f.buf[start:])
	f.buf = f.buf[:start+m]
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return f.fail(ErrUnexpectedEOF)
	}
	return err
}
