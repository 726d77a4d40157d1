package bencode

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUnmarshalAny(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"zero", "i0e", int64(0)},
		{"negative", "i-42e", int64(-42)},
		{"max int64", "i9223372036854775807e", int64(9223372036854775807)},
		{"min int64", "i-9223372036854775808e", int64(-9223372036854775808)},
		{"empty string", "0:", ""},
		{"string", "4:spam", "spam"},
		{"binary string", "3:\x00\xff\n", "\x00\xff\n"},
		{"empty list", "le", []any{}},
		{"list", "l4:spami42ee", []any{"spam", int64(42)}},
		{"empty dict", "de", map[string]any{}},
		{"dict", "d3:bar4:spam3:fooi42ee", map[string]any{"bar": "spam", "foo": int64(42)}},
		{"nested", "d1:ald1:bleeee", map[string]any{"a": []any{map[string]any{"b": []any{}}}}},
		{"binary keys sorted bytewise", "d1:Ai1e1:ai2e1:\xffi3ee", map[string]any{"A": int64(1), "a": int64(2), "\xff": int64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got any
			if err := Unmarshal([]byte(tt.in), &got); err != nil {
				t.Fatalf("Unmarshal(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Unmarshal(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			out, err := Marshal(got)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if string(out) != tt.in {
				t.Fatalf("re-encoded %q, want %q", out, tt.in)
			}
		})
	}
}

func TestUnmarshalRejects(t *testing.T) {
	deep := strings.Repeat("l", 10_000) + strings.Repeat("e", 10_000)
	manyItems := "l" + strings.Repeat("i0e", 3_000_000) + "e"
	tests := []struct {
		name   string
		in     string
		lim    Limits
		err    error
		offset int64
	}{
		{"negative zero", "i-0e", Limits{}, ErrNegativeZero, 1},
		{"leading zero integer", "i03e", Limits{}, ErrLeadingZero, 1},
		{"leading zero negative", "i-03e", Limits{}, ErrLeadingZero, 1},
		{"plus sign", "i+1e", Limits{}, ErrBadInteger, 1},
		{"no digits", "ie", Limits{}, ErrBadInteger, 1},
		{"only minus", "i-e", Limits{}, ErrBadInteger, 2},
		{"integer overflow", "i99999999999999999999e", Limits{}, ErrIntegerOverflow, 1},
		{"int64 overflow by one", "i9223372036854775808e", Limits{}, ErrIntegerOverflow, 1},
		{"negative overflow", "i-9223372036854775809e", Limits{}, ErrIntegerOverflow, 1},
		{"integer unterminated", "i12", Limits{}, ErrUnexpectedEOF, 3},
		{"leading zero string length", "06:foobar", Limits{}, ErrLeadingZero, 0},
		{"string past end of input", "5:ab", Limits{}, ErrUnexpectedEOF, 4},
		{"huge string length", "99999999:x", Limits{}, ErrStringTooLong, 0},
		{"uint64 string length", "18446744073709551615:", Limits{}, ErrStringTooLong, 0},
		{"negative string length", "-10:", Limits{}, ErrExpectedValue, 0},
		{"string length no colon", "3abc", Limits{}, ErrBadStringLength, 1},
		{"string over limit", "5:abcde", Limits{MaxStringLen: 4}, ErrStringTooLong, 0},
		{"string length past int64", "9223372036854775808:", Limits{MaxStringLen: 1 << 62}, ErrStringTooLong, 0},
		{"string length wrapping to 1", "18446744073709551617:x", Limits{MaxStringLen: 1 << 62}, ErrStringTooLong, 0},
		{"unsorted keys", "d1:bi1e1:ai2ee", Limits{}, ErrUnsortedKeys, 7},
		{"duplicate key", "d1:ai1e1:ai2ee", Limits{}, ErrDuplicateKey, 7},
		{"integer key", "di1ei2ee", Limits{}, ErrKeyNotString, 1},
		{"list key", "dlei2ee", Limits{}, ErrKeyNotString, 1},
		{"dict missing value", "d1:ae", Limits{}, ErrExpectedValue, 4},
		{"unterminated list", "l", Limits{}, ErrUnexpectedEOF, 1},
		{"unterminated dict", "d1:ai1e", Limits{}, ErrUnexpectedEOF, 7},
		{"empty input", "", Limits{}, ErrUnexpectedEOF, 0},
		{"stray end", "e", Limits{}, ErrExpectedValue, 0},
		{"garbage", "x", Limits{}, ErrExpectedValue, 0},
		{"trailing data", "i1ei2e", Limits{}, ErrTrailingData, 3},
		{"nesting 10000 deep", deep, Limits{}, ErrDepthExceeded, 100},
		{"dicts deeper than limit", strings.Repeat("d1:a", 4) + "i1e" + strings.Repeat("e", 4), Limits{MaxDepth: 3}, ErrDepthExceeded, 12},
		{"3 million list items", manyItems, Limits{}, ErrTooManyTokens, 3*2_000_000 - 2},
		{"input over size limit", "10:abcdefghij", Limits{MaxSize: 8}, ErrInputTooLarge, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, target := range []any{new(any), new(RawMessage)} {
				err := DecodeOptions{Limits: tt.lim}.Unmarshal([]byte(tt.in), target)
				var se *SyntaxError
				if !errors.As(err, &se) {
					t.Fatalf("into %T: got %v, want a *SyntaxError", target, err)
				}
				if !errors.Is(err, tt.err) {
					t.Fatalf("into %T: got %v, want %v", target, err, tt.err)
				}
				if se.Offset != tt.offset {
					t.Fatalf("into %T: offset %d, want %d (%v)", target, se.Offset, tt.offset, err)
				}
			}
		})
	}
}

// TestTruncationAtEveryOffset cuts a valid document at every byte and
// expects a clean error each time, never a partial value.
func TestTruncationAtEveryOffset(t *testing.T) {
	doc := "d8:announce30:http://127.0.0.1:6969/announce4:infod6:lengthi1024e4:name5:a.bin12:piece lengthi16384e6:pieces20:01234567890123456789ee"
	if !Valid([]byte(doc)) {
		t.Fatal("fixture is not valid")
	}
	for i := range len(doc) {
		var v any
		err := Unmarshal([]byte(doc[:i]), &v)
		if !errors.Is(err, ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: got %v, want ErrUnexpectedEOF", i, err)
		}
		err = NewDecoder(strings.NewReader(doc[:i])).Decode(&v)
		if i == 0 {
			if err != io.EOF {
				t.Fatalf("stream cut at 0: got %v, want io.EOF", err)
			}
			continue
		}
		if !errors.Is(err, ErrUnexpectedEOF) {
			t.Fatalf("stream cut at %d: got %v, want ErrUnexpectedEOF", i, err)
		}
	}
}

type torrentish struct {
	Announce string     `bencode:"announce"`
	Info     RawMessage `bencode:"info"`
	Comment  string     `bencode:"comment,omitempty"`
	Created  int64      `bencode:"creation date,omitempty"`
	URLs     []string   `bencode:"url-list,omitempty"`
	Private  *bool      `bencode:"private,omitempty"`
	Skipped  string     `bencode:"-"`
}

type infoish struct {
	Name        string    `bencode:"name"`
	PieceLength int64     `bencode:"piece length"`
	Pieces      []byte    `bencode:"pieces"`
	Length      int64     `bencode:"length,omitempty"`
	Root        [4]byte   `bencode:"root,omitempty"`
	Files       []fileish `bencode:"files,omitempty"`
}

type fileish struct {
	Length int64    `bencode:"length"`
	Path   []string `bencode:"path"`
}

func TestStructRoundTrip(t *testing.T) {
	in := "d8:announce4:http7:comment2:hi13:creation datei7e5:extrai9e4:infod6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces3:xyz4:root4:abcde7:privatei1e8:url-listl2:u12:u2ee"
	var tor torrentish
	if err := Unmarshal([]byte(in), &tor); err != nil {
		t.Fatal(err)
	}
	if tor.Announce != "http" || tor.Comment != "hi" || tor.Created != 7 || len(tor.URLs) != 2 || tor.Private == nil || !*tor.Private {
		t.Fatalf("decoded %+v", tor)
	}
	var info infoish
	if err := Unmarshal(tor.Info, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != "a" || info.PieceLength != 16384 || string(info.Pieces) != "xyz" || string(info.Root[:]) != "abcd" {
		t.Fatalf("decoded info %+v", info)
	}
	out, err := Marshal(tor)
	if err != nil {
		t.Fatal(err)
	}
	// The unknown key "extra" is dropped; everything else is canonical.
	want := strings.Replace(in, "5:extrai9e", "", 1)
	if string(out) != want {
		t.Fatalf("Marshal = %q\nwant      %q", out, want)
	}
	info.Files = []fileish{{Length: 1, Path: []string{"d", "f"}}}
	out, err = Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if !Valid(out) || !bytes.Contains(out, []byte("5:filesld6:lengthi1e4:pathl1:d1:feee")) {
		t.Fatalf("Marshal(info) = %q", out)
	}
}

func TestUnmarshalTypeErrors(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		target any
		field  string
	}{
		{"string into int", "d6:lengthi1e4:name3:abc12:piece length3:oopse", &infoish{}, "PieceLength"},
		{"int into string", "d4:namei1ee", &infoish{}, "Name"},
		{"list into int", "le", new(int), ""},
		{"overflow int8", "i300e", new(int8), ""},
		{"negative into uint", "i-1e", new(uint32), ""},
		{"wrong array length", "3:abc", new([4]byte), ""},
		{"bool out of range", "i2e", new(bool), ""},
		{"dict into slice", "de", new([]int), ""},
		{"nested field path", "d5:filesld6:length1:xeee", &infoish{}, "Files.Length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Unmarshal([]byte(tt.in), tt.target)
			var te *UnmarshalTypeError
			if !errors.As(err, &te) {
				t.Fatalf("got %v, want *UnmarshalTypeError", err)
			}
			if te.Field != tt.field {
				t.Fatalf("field %q, want %q", te.Field, tt.field)
			}
		})
	}
}

func TestInvalidUnmarshal(t *testing.T) {
	var ip *int
	for _, v := range []any{nil, 3, ip} {
		var e *InvalidUnmarshalError
		if err := Unmarshal([]byte("i1e"), v); !errors.As(err, &e) {
			t.Fatalf("Unmarshal into %T: got %v", v, err)
		}
	}
}

type upper string

func (u *upper) UnmarshalBencode(b []byte) error {
	var s string
	if err := Unmarshal(b, &s); err != nil {
		return err
	}
	*u = upper(strings.ToUpper(s))
	return nil
}

func (u upper) MarshalBencode() ([]byte, error) { return Marshal(strings.ToLower(string(u))) }

type badMarshaler struct{}

func (badMarshaler) MarshalBencode() ([]byte, error) { return []byte("d1:bi1e1:ai2ee"), nil }

func TestMarshalerAndUnmarshaler(t *testing.T) {
	var v struct {
		U upper `bencode:"u"`
	}
	if err := Unmarshal([]byte("d1:u3:abce"), &v); err != nil {
		t.Fatal(err)
	}
	if v.U != "ABC" {
		t.Fatalf("got %q", v.U)
	}
	out, err := Marshal(v)
	if err != nil || string(out) != "d1:u3:abce" {
		t.Fatalf("Marshal = %q, %v", out, err)
	}
	// A Marshaler cannot smuggle non-canonical bytes into the output.
	var me *MarshalerError
	if _, err := Marshal(badMarshaler{}); !errors.As(err, &me) || !errors.Is(err, ErrUnsortedKeys) {
		t.Fatalf("non-canonical Marshaler output: got %v", err)
	}
	if _, err := Marshal(RawMessage(nil)); err == nil {
		t.Fatal("empty RawMessage marshalled")
	}
}

func TestMarshalCanonical(t *testing.T) {
	type unordered struct {
		Z int    `bencode:"z"`
		A string `bencode:"a"`
		M map[string]int
	}
	out, err := Marshal(unordered{Z: 1, A: "x", M: map[string]int{"b": 2, "a": 1, "B": 0}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "d1:Md1:Bi0e1:ai1e1:bi2ee1:a1:x1:zi1ee"; string(out) != want {
		t.Fatalf("got %q, want %q", out, want)
	}
	var ue *UnsupportedTypeError
	for _, v := range []any{1.5, map[int]int{1: 1}, make(chan int), nil, (*int)(nil)} {
		if _, err := Marshal(v); !errors.As(err, &ue) {
			t.Fatalf("Marshal(%T): got %v, want *UnsupportedTypeError", v, err)
		}
	}
	type dup struct {
		A int `bencode:"x"`
		B int `bencode:"x"`
	}
	if _, err := Marshal(dup{}); err == nil {
		t.Fatal("struct with two fields named alike marshalled")
	}
}

func TestAliasSharesInput(t *testing.T) {
	in := []byte("d6:pieces4:abcde")
	var alias, copied struct {
		Pieces []byte `bencode:"pieces"`
	}
	if err := (DecodeOptions{Alias: true}).Unmarshal(in, &alias); err != nil {
		t.Fatal(err)
	}
	if err := Unmarshal(in, &copied); err != nil {
		t.Fatal(err)
	}
	in[11] = 'X'
	if string(alias.Pieces) != "Xbcd" {
		t.Fatalf("aliased value %q does not share the input", alias.Pieces)
	}
	if string(copied.Pieces) != "abcd" {
		t.Fatalf("copied value %q changed with the input", copied.Pieces)
	}
	// An aliased slice has no spare capacity, so appending cannot clobber
	// the input after it.
	if cap(alias.Pieces) != len(alias.Pieces) {
		t.Fatalf("aliased slice cap %d, len %d", cap(alias.Pieces), len(alias.Pieces))
	}
}

// TestMarshalRawOverflowingLength: Marshal checks a Marshaler's output
// with limits of 1<<62; a string length past int64 is refused, neither
// wrapped to a negative length (a panic) nor to a small one (a
// non-canonical value spliced into the output). A peer's BEP 9 metadata
// reaches Marshal as a RawMessage (swarm's metaFromInfo).
func TestMarshalRawOverflowingLength(t *testing.T) {
	for _, raw := range []string{
		"9223372036854775808:",   // would wrap to MinInt64
		"18446744073709551617:x", // would wrap to 1: "1:x"
	} {
		t.Run(raw, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Marshal(RawMessage(%q)) panicked: %v", raw, r)
				}
			}()
			out, err := Marshal(map[string]any{"info": RawMessage(raw)})
			if err == nil {
				t.Fatalf("Marshal accepted %q and produced %q", raw, out)
			}
			var me *MarshalerError
			if !errors.As(err, &me) {
				t.Fatalf("error %v is not a *MarshalerError", err)
			}
		})
	}
}
