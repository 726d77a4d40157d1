package negotiate

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPlainFileRoundTrip(t *testing.T) {
	mod := time.Date(2026, 11, 21, 10, 30, 0, 0, time.FixedZone("CET", 3600))
	h := http.Header{}
	SetPlainFile(h, 1<<30, mod)
	if got := h.Get(PlainLastModifiedHeader); got != "Sat, 21 Nov 2026 09:30:00 GMT" {
		t.Fatalf("date written as %q", got)
	}
	pf, err := ParsePlainFile(h)
	if err != nil || pf.Size != 1<<30 || !pf.LastModified.Equal(mod) {
		t.Fatalf("ParsePlainFile = %+v, %v", pf, err)
	}
	h = http.Header{}
	SetPlainFile(h, 7, time.Time{})
	if _, ok := h[PlainLastModifiedHeader]; ok {
		t.Fatal("a zero date was written")
	}
	if pf, err := ParsePlainFile(h); err != nil || pf.Size != 7 || !pf.LastModified.IsZero() {
		t.Fatalf("ParsePlainFile = %+v, %v", pf, err)
	}
}

func TestParsePlainFile(t *testing.T) {
	const date = "Sat, 21 Nov 2026 09:30:00 GMT"
	for _, tc := range []struct {
		name    string
		lengths []string
		dates   []string
		size    int64 // 0: an error is wanted
		noClaim bool
	}{
		{"length only", []string{"1000"}, nil, 1000, false},
		{"length and date", []string{"1000"}, []string{date}, 1000, false},
		{"optional white space", []string{" \t1000 "}, []string{" " + date + "\t"}, 1000, false},
		{"RFC 850 date", []string{"5"}, []string{"Saturday, 21-Nov-26 09:30:00 GMT"}, 5, false},
		{"asctime date", []string{"5"}, []string{"Sat Nov 21 09:30:00 2026"}, 5, false},
		{"largest length", []string{"9223372036854775807"}, nil, 9223372036854775807, false},
		{"nothing said", nil, nil, 0, true},
		{"a date alone", nil, []string{date}, 0, true},
		{"empty length", []string{""}, nil, 0, false},
		{"zero", []string{"0"}, nil, 0, false},
		{"negative", []string{"-5"}, nil, 0, false},
		{"plus sign", []string{"+5"}, nil, 0, false},
		{"hex", []string{"0x10"}, nil, 0, false},
		{"a list", []string{"5, 5"}, nil, 0, false},
		{"two lengths", []string{"5", "5"}, nil, 0, false},
		{"overflow", []string{"9223372036854775808"}, nil, 0, false},
		{"20 digits", []string{"00000000000000000001"}, nil, 0, false},
		{"huge", []string{strings.Repeat("9", 1<<16)}, nil, 0, false},
		{"bad date", []string{"5"}, []string{"yesterday"}, 0, false},
		{"two dates", []string{"5"}, []string{date, date}, 0, false},
		{"long date", []string{"5"}, []string{date + strings.Repeat(" ", 40) + "x"}, 0, false},
		{"huge date", []string{"5"}, []string{strings.Repeat("a", 1<<16)}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.lengths {
				h.Add(PlainLengthHeader, v)
			}
			for _, v := range tc.dates {
				h.Add(PlainLastModifiedHeader, v)
			}
			pf, err := ParsePlainFile(h)
			switch {
			case tc.noClaim:
				if !errors.Is(err, ErrNoPlainFile) {
					t.Fatalf("got %+v, %v; want ErrNoPlainFile", pf, err)
				}
			case tc.size == 0:
				if err == nil || errors.Is(err, ErrNoPlainFile) {
					t.Fatalf("got %+v, %v; want a malformed-statement error", pf, err)
				}
			case err != nil || pf.Size != tc.size:
				t.Fatalf("got %+v, %v; want size %d", pf, err, tc.size)
			}
		})
	}
}

func TestPlainContentType(t *testing.T) {
	for _, tc := range []struct {
		types []string
		want  string
	}{
		{nil, ""},
		{[]string{"audio/mpeg"}, "audio/mpeg"},
		{[]string{" Text/HTML; Charset=UTF-8 "}, "text/html; charset=UTF-8"},
		{[]string{"audio/mpeg", "audio/mp4"}, ""},
		{[]string{"application/x-bittorrent"}, ""},
		{[]string{"not a type"}, ""},
		{[]string{"audio/mpeg\r\nX-Evil: 1"}, ""},
		{[]string{"audio/" + strings.Repeat("x", 300)}, ""},
	} {
		h := http.Header{PlainLengthHeader: {"5"}}
		for _, v := range tc.types {
			h.Add(PlainContentTypeHeader, v)
		}
		pf, err := ParsePlainFile(h)
		if err != nil || pf.ContentType != tc.want {
			t.Errorf("%q: %+v, %v; want type %q", tc.types, pf, err, tc.want)
		}
	}
	h := http.Header{}
	SetPlainFile(h, 5, time.Time{})
	SetPlainType(h, "audio/mpeg")
	if pf, err := ParsePlainFile(h); err != nil || pf.ContentType != "audio/mpeg" {
		t.Errorf("round trip: %+v, %v", pf, err)
	}
}
