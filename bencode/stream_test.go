package bencode

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestDecoderStream(t *testing.T) {
	dec := NewDecoder(strings.NewReader("i1e4:spamd1:ai2eeli3ee"))
	var got []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if len(got) != 4 || dec.InputOffset() != 22 {
		t.Fatalf("got %v values, offset %d", got, dec.InputOffset())
	}
}

func TestDecoderRejects(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		lim    Limits
		err    error
		offset int64
	}{
		// The framer catches limit breaches before reading on.
		{"huge string length", "99999999:x", Limits{}, ErrStringTooLong, 8},
		{"string length past int64", "18446744073709551617:x", Limits{MaxStringLen: 1 << 62, MaxSize: 1 << 62}, ErrStringTooLong, 20},
		{"string beyond size limit", "100:x", Limits{MaxSize: 50}, ErrInputTooLarge, 4},
		{"string past end", "5:ab", Limits{}, ErrUnexpectedEOF, 4},
		{"nesting 10000 deep", strings.Repeat("l", 10_000), Limits{}, ErrDepthExceeded, 100},
		{"too many tokens", "l" + strings.Repeat("i0e", 20) + "e", Limits{MaxTokens: 10}, ErrTooManyTokens, 28},
		{"long integer", "i" + strings.Repeat("1", 40) + "e", Limits{}, ErrBadInteger, 24},
		{"bad string length", "3x", Limits{}, ErrBadStringLength, 2},
		{"stray end", "e", Limits{}, ErrExpectedValue, 0},
		// The strict checks run on the framed value, with stream offsets.
		{"negative zero", "i-0e", Limits{}, ErrNegativeZero, 1},
		{"unsorted keys", "d1:bi1e1:ai2ee", Limits{}, ErrUnsortedKeys, 7},
		{"duplicate key", "d1:ai1e1:ai2ee", Limits{}, ErrDuplicateKey, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := NewDecoder(strings.NewReader(tt.in))
			dec.Limits = tt.lim
			var v any
			err := dec.Decode(&v)
			var se *SyntaxError
			if !errors.As(err, &se) || !errors.Is(err, tt.err) {
				t.Fatalf("got %v, want %v", err, tt.err)
			}
			if se.Offset != tt.offset {
				t.Fatalf("offset %d, want %d (%v)", se.Offset, tt.offset, err)
			}
		})
	}
}

func TestDecoderOffsetsAcrossValues(t *testing.T) {
	dec := NewDecoder(strings.NewReader("i1ed1:bi1e1:ai2ee"))
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	err := dec.Decode(&v)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 3+7 {
		t.Fatalf("got %v, want unsorted keys at offset 10", err)
	}
}

// oneByteReader hands out one byte per Read, the worst case for framing.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestDecoderLargeStringSlowReader(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB, crosses the 1 MiB chunks
	in := append([]byte("d6:pieces3000000:"), payload...)
	in = append(in, 'e')
	var v struct {
		Pieces []byte `bencode:"pieces"`
	}
	if err := NewDecoder(oneByteReader{bytes.NewReader(in)}).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Pieces, payload) {
		t.Fatal("payload mismatch")
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestDecoderReaderError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("l4:sp"), failingReader{})
	var v any
	err := NewDecoder(r).Decode(&v)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("got %v, want the reader's error", err)
	}
}

func TestEncoder(t *testing.T) {
	var buf bytes.Buffer
	enc := NewEncoder(&buf)
	if err := enc.Encode(map[string]any{"b": 1, "a": []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(1.5); err == nil {
		t.Fatal("float encoded")
	}
	if err := enc.Encode("s"); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "d1:al1:xe1:bi1ee1:s" {
		t.Fatalf("got %q", buf.String())
	}
}
