package negotiate

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	br := func(pairs ...int64) []ByteRange {
		var out []ByteRange
		for i := 0; i+1 < len(pairs); i += 2 {
			out = append(out, ByteRange{pairs[i], pairs[i+1]})
		}
		return out
	}
	many := func(n int, f func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = f(i)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	tests := []struct {
		name   string
		header string
		size   int64
		want   []ByteRange
		err    error
	}{
		{"closed", "bytes=0-499", size, br(0, 500), nil},
		{"first byte", "bytes=0-0", size, br(0, 1), nil},
		{"open", "bytes=500-", size, br(500, size), nil},
		{"suffix", "bytes=-500", size, br(500, size), nil},
		{"suffix larger than size", "bytes=-5000", size, br(0, size), nil},
		{"last clipped", "bytes=900-5000", size, br(900, size), nil},
		{"last byte", "bytes=999-999", size, br(999, size), nil},
		{"multiple kept in order", "bytes=500-599, 0-99,-1", size, br(500, 600, 0, 100, 999, 1000), nil},
		{"unit case and empty elements", "BYTES=,0-1,, 5-6 ,", size, br(0, 2, 5, 7), nil},
		{"some unsatisfiable", "bytes=2000-3000,0-1", size, br(0, 2), nil},
		{"huge last position", "bytes=10-99999999999999999999999999", size, br(10, size), nil},
		{"huge suffix", "bytes=-99999999999999999999999999", size, br(0, size), nil},
		{"three overlapping allowed", "bytes=0-9,0-9,0-9", size, br(0, 10, 0, 10, 0, 10), nil},
		{"touching ranges do not overlap", many(10, func(i int) string { return fmt.Sprintf("%d-%d", i*10, i*10+9) }), size,
			br(0, 10, 10, 20, 20, 30, 30, 40, 40, 50, 50, 60, 60, 70, 70, 80, 80, 90, 90, 100), nil},
		{"fifty ranges", many(50, func(i int) string { return fmt.Sprintf("%d-%d", i, i) }), size, nil, nil},
		{"past the end", "bytes=999999999-", size, nil, ErrUnsatisfiable},
		{"at the end", "bytes=1000-", size, nil, ErrUnsatisfiable},
		{"huge first", "bytes=99999999999999999999999-", size, nil, ErrUnsatisfiable},
		{"suffix zero", "bytes=-0", size, nil, ErrUnsatisfiable},
		{"empty representation", "bytes=0-", 0, nil, ErrUnsatisfiable},
		{"negative size", "bytes=-5", -1, nil, ErrUnsatisfiable},
		{"reversed", "bytes=5-2", size, nil, ErrInvalid},
		{"letters", "bytes=abc", size, nil, ErrInvalid},
		{"letters in range", "bytes=1-a", size, nil, ErrInvalid},
		{"sign", "bytes=+1-2", size, nil, ErrInvalid},
		{"negative", "bytes=--5", size, nil, ErrInvalid},
		{"no dash", "bytes=5", size, nil, ErrInvalid},
		{"bare dash", "bytes=-", size, nil, ErrInvalid},
		{"empty set", "bytes=", size, nil, ErrInvalid},
		{"only commas", "bytes=, ,", size, nil, ErrInvalid},
		{"other unit", "items=0-1", size, nil, ErrInvalid},
		{"no equals", "bytes 0-1", size, nil, ErrInvalid},
		{"space before equals", "bytes =0-1", size, nil, ErrInvalid},
		{"crlf", "bytes=0-1\r\nX: y", size, nil, ErrInvalid},
		{"invalid beats unsatisfiable", "bytes=2000-,5-2", size, nil, ErrInvalid},
		{"too long", "bytes=" + strings.Repeat("0", MaxRangeLen), size, nil, ErrInvalid},
		{"fifty-one ranges", many(51, func(i int) string { return fmt.Sprintf("%d-%d", i, i) }), size, nil, ErrTooManyRanges},
		{"hundred ranges", many(100, func(i int) string { return fmt.Sprintf("%d-%d", i, i) }), size, nil, ErrTooManyRanges},
		{"four overlapping", "bytes=0-9,5-14,8-20,9-9", size, nil, ErrTooManyRanges},
		{"ten overlapping", many(10, func(int) string { return "0-" }), size, nil, ErrTooManyRanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.header, tc.size)
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("ParseRange(%.60q) error = %v, want %v", tc.header, err, tc.err)
			}
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Fatalf("ParseRange(%.60q) = %v, want %v", tc.header, got, tc.want)
			}
			if err != nil && got != nil {
				t.Fatalf("ranges returned with error: %v", got)
			}
		})
	}
}

func TestFormatRange(t *testing.T) {
	tests := []struct {
		start, end int64
		want       string
	}{
		{0, 1, "bytes=0-0"},
		{0, 500, "bytes=0-499"},
		{500, -1, "bytes=500-"},
		{0, -1, "bytes=0-"},
		{math.MaxInt64 - 1, math.MaxInt64, "bytes=9223372036854775806-9223372036854775806"},
		{5, 5, ""},
		{5, 2, ""},
		{-1, 5, ""},
	}
	for _, tc := range tests {
		if got := FormatRange(tc.start, tc.end); got != tc.want {
			t.Errorf("FormatRange(%d, %d) = %q, want %q", tc.start, tc.end, got, tc.want)
		}
		if tc.want != "" && tc.end > 0 && tc.end < 1<<40 {
			rs, err := ParseRange(tc.want, 1<<40)
			if err != nil || len(rs) != 1 || rs[0] != (ByteRange{tc.start, tc.end}) {
				t.Errorf("round trip of %q: %v, %v", tc.want, rs, err)
			}
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                string
		start, end, total int64
		err               error
	}{
		{"bytes 0-99/1000", 0, 100, 1000, nil},
		{"bytes 999-999/1000", 999, 1000, 1000, nil},
		{"Bytes 5-9/*", 5, 10, -1, nil},
		{"bytes */1000", -1, -1, 1000, ErrUnsatisfiable},
		{"bytes */*", -1, -1, -1, ErrInvalid},
		{"bytes 0-1000/1000", -1, -1, -1, ErrInvalid},
		{"bytes 9-5/1000", -1, -1, -1, ErrInvalid},
		{"bytes 0-99", -1, -1, -1, ErrInvalid},
		{"bytes=0-99/1000", -1, -1, -1, ErrInvalid},
		{"items 0-99/1000", -1, -1, -1, ErrInvalid},
		{"bytes  0-99/1000", -1, -1, -1, ErrInvalid},
		{"bytes -5-99/1000", -1, -1, -1, ErrInvalid},
		{"bytes +0-99/1000", -1, -1, -1, ErrInvalid},
		{"bytes 0-99/1000\r\n", -1, -1, -1, ErrInvalid},
		{"bytes 0-99999999999999999999/*", -1, -1, -1, ErrInvalid},
		{"bytes 0-9223372036854775807/*", -1, -1, -1, ErrInvalid},
		{"bytes 0-9223372036854775806/*", 0, math.MaxInt64, -1, nil},
		{"", -1, -1, -1, ErrInvalid},
	}
	for _, tc := range tests {
		start, end, total, err := ParseContentRange(tc.in)
		if start != tc.start || end != tc.end || total != tc.total || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("ParseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v",
				tc.in, start, end, total, err, tc.start, tc.end, tc.total, tc.err)
		}
	}
}

func TestServeRange(t *testing.T) {
	const size = 1000
	tests := []struct {
		in      []string // Range fields
		want    []string // Range after
		ifRange bool     // If-Range kept
	}{
		{nil, nil, true},
		{[]string{"bytes=0-9"}, []string{"bytes=0-9"}, true},
		{[]string{"Bytes=0-9, 20-"}, []string{"bytes=0-9,20-999"}, true},
		{[]string{"bytes=-5"}, []string{"bytes=995-999"}, true},
		{[]string{"bytes=-0"}, []string{"bytes=1000-"}, true},
		{[]string{"bytes=1000-"}, []string{"bytes=1000-"}, true},
		{[]string{"bytes=5-99999999999999999999"}, []string{"bytes=5-999"}, true},
		{[]string{"bytes=99999999999999999999-"}, []string{"bytes=1000-"}, true},
		{[]string{"bytes=5-2"}, nil, false},
		{[]string{"items=0-1"}, nil, false},
		{[]string{"bytes=0-1", "bytes=2-3"}, nil, false},
		{[]string{"bytes=0-9,0-9,0-9,0-9"}, nil, false},
	}
	for _, tc := range tests {
		h := http.Header{"If-Range": {`"e"`}}
		if tc.in != nil {
			h["Range"] = tc.in
		}
		ServeRange(h, size)
		if !slices.Equal(h["Range"], tc.want) || (h.Get("If-Range") != "") != tc.ifRange {
			t.Errorf("%q: Range %q, If-Range %q; want %q, kept %v", tc.in, h["Range"], h.Get("If-Range"), tc.want, tc.ifRange)
		}
	}
	h := http.Header{"Range": {"bytes=0-"}}
	if ServeRange(h, 0); h.Get("Range") != "bytes=0-" {
		t.Errorf("empty representation: Range %q", h.Get("Range"))
	}
}
