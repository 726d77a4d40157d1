package swarm

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/negotiate"
)

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"BYTES 5-9/10", 5, 9, 10, true},
		{"bytes 0-9/*", 0, 9, -1, true},
		{"bytes 9223372036854775805-9223372036854775806/9223372036854775807", 9223372036854775805, 9223372036854775806, 9223372036854775807, true},
		{in: ""},
		{in: "bytes"},
		{in: "bytes "},
		{in: "bytes 0-9"},
		{in: "bytes */10"},                                 // the 416 form names no bytes
		{in: "bytes 5-4/10"},                               // last before first
		{in: "bytes 0-10/10"},                              // last past the end
		{in: "bytes 0-9/9"},                                // last past the end
		{in: "bytes +0-9/10"},                              // signs are not digits
		{in: "bytes 0-+9/10"},                              // signs are not digits
		{in: "bytes -1-9/10"},                              // nor is a minus
		{in: "bytes 0-9/+10"},                              // signs are not digits
		{in: "bytes 0 -9/10"},                              // no spaces inside
		{in: "bytes  0-9/10"},                              // one space after the unit
		{in: "bytes 0-9/10 "},                              // nothing after the length
		{in: "bytes 0x0-9/10"},                             // decimal only
		{in: "items 0-9/10"},                               // another unit
		{in: "bytes=0-9/10"},                               // a Range header, not a Content-Range
		{in: "bytes 0-9223372036854775807/*"},              // last + 1 overflows
		{in: "bytes 0-99999999999999999999/*"},             // does not fit
		{in: "bytes 0-1/" + strings.Repeat("9", 19)},       // does not fit an int64
		{in: "bytes 0-1/00000000000000000000000000000010"}, // too long a number
		{in: "bytes 0-1/" + strings.Repeat("1", 100)},      // longer than any real header
		{in: "bytes ０-9/10"},                               // full-width digits
	}
	for _, tt := range tests {
		first, last, total, ok := parseContentRange(tt.in)
		if ok != tt.ok || ok && (first != tt.first || last != tt.last || total != tt.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v",
				tt.in, first, last, total, ok, tt.first, tt.last, tt.total, tt.ok)
		}
	}
}

// FuzzParseContentRange holds the web seed's parser of Content-Range to
// negotiate.ParseContentRange, which the proxy uses on the same header:
// swarm may not import negotiate, so the two are kept equal here. Any
// range either accepts is consistent, and prints back to itself.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{
		"bytes 0-0/1", "bytes 100-199/1000", "bytes 0-9/*", "Bytes 1-2/3", "bytes */10",
		"bytes +0-9/10", "bytes 0-9/9", "bytes 0-9223372036854775807/*", "bytes 00-01/02",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		first, last, total, ok := parseContentRange(v)
		start, end, ntotal, err := negotiate.ParseContentRange(v)
		if ok != (err == nil) {
			t.Fatalf("%q: web seed parser ok=%v, negotiate's err=%v", v, ok, err)
		}
		if !ok {
			return
		}
		if first != start || last != end-1 || total != ntotal {
			t.Fatalf("%q: web seed parser %d-%d/%d, negotiate's %d-%d/%d", v, first, last, total, start, end-1, ntotal)
		}
		if first < 0 || last < first || total != -1 && total <= last {
			t.Fatalf("%q: inconsistent range %d-%d/%d", v, first, last, total)
		}
		length := "*"
		if total >= 0 {
			length = fmt.Sprint(total)
		}
		f2, l2, t2, ok2 := parseContentRange(fmt.Sprintf("bytes %d-%d/%s", first, last, length))
		if !ok2 || f2 != first || l2 != last || t2 != total {
			t.Fatalf("%q: printed back, reads %d-%d/%d, %v", v, f2, l2, t2, ok2)
		}
	})
}
