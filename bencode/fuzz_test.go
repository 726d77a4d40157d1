package bencode

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzBdecode checks, for any input: no panic; what decodes re-encodes to
// exactly the input (strict decoding accepts only canonical bytes); the
// stream decoder agrees with Unmarshal; and the limits hold.
func FuzzBdecode(f *testing.F) {
	for _, s := range []string{
		"i0e", "i-1e", "4:spam", "le", "de", "l4:spami42ee",
		"d3:bar4:spam3:fooi42ee", "d1:ad1:bl1:cee1:di0ee",
		"i-0e", "i03e", "d1:bi1e1:ai2ee", "d1:ai1e1:ai2ee", "99999999:x",
		"lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllle",
	} {
		f.Add([]byte(s))
	}
	lim := Limits{MaxDepth: 32, MaxStringLen: 1 << 16, MaxSize: 1 << 20, MaxTokens: 1 << 14}
	f.Fuzz(func(t *testing.T, in []byte) {
		var v any
		err := DecodeOptions{Limits: lim}.Unmarshal(in, &v)

		dec := NewDecoder(bytes.NewReader(in))
		dec.Limits = lim
		var sv any
		serr := dec.Decode(&sv)
		if serr == nil && dec.InputOffset() != int64(len(in)) {
			serr = ErrTrailingData // the stream allows more values; Unmarshal does not
		}
		if (err == nil) != (serr == nil) {
			t.Fatalf("Unmarshal err %v, stream err %v", err, serr)
		}
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > int64(len(in)) {
				t.Fatalf("error %v is not a SyntaxError with an offset in range", err)
			}
			return
		}
		if !reflect.DeepEqual(v, sv) {
			t.Fatalf("Unmarshal %#v, stream %#v", v, sv)
		}
		out, err := Marshal(v)
		if err != nil {
			t.Fatalf("Marshal of decoded value: %v", err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("re-encoded %q, input %q", out, in)
		}
		var raw RawMessage
		if err := Unmarshal(in, &raw); err != nil || !bytes.Equal(raw, in) {
			t.Fatalf("RawMessage %q, %v", raw, err)
		}
	})
}
