package lsd

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

var ih1 = [20]byte{0xde, 0xad, 0xbe, 0xef, 19: 1}

const ih1Hex = "deadbeef00000000000000000000000000000001"

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Announce
		bad  bool
	}{
		{"bep 14", "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: " + ih1Hex + "\r\ncookie: abc\r\n\r\n\r\n",
			Announce{Host: "239.192.152.143:6771", Port: 6881, InfoHashes: [][20]byte{ih1}, Cookie: "abc"}, false},
		{"lf only, odd case, upper hex, no cookie", "BT-SEARCH * HTTP/1.1\nhost:x\nPORT:  1 \ninfohash: " + strings.ToUpper(ih1Hex) + "\n\n",
			Announce{Host: "x", Port: 1, InfoHashes: [][20]byte{ih1}}, false},
		{"two hashes, one v2 and one junk skipped", "BT-SEARCH * HTTP/1.1\r\nPort: 2\r\nInfohash: " + ih1Hex + "\r\nInfohash: " + strings.Repeat("ab", 32) + "\r\nInfohash: zz" + ih1Hex[2:] + "\r\nInfohash: " + ih1Hex + "\r\n\r\n",
			Announce{Port: 2, InfoHashes: [][20]byte{ih1, ih1}}, false},
		{"unknown header ignored", "BT-SEARCH * HTTP/1.1\r\nX-Foo: bar\r\nPort: 2\r\nInfohash: " + ih1Hex + "\r\n\r\n",
			Announce{Port: 2, InfoHashes: [][20]byte{ih1}}, false},
		{"empty", "", Announce{}, true},
		{"not bt-search", "M-SEARCH * HTTP/1.1\r\nPort: 2\r\nInfohash: " + ih1Hex + "\r\n\r\n", Announce{}, true},
		{"no port", "BT-SEARCH * HTTP/1.1\r\nInfohash: " + ih1Hex + "\r\n\r\n", Announce{}, true},
		{"port zero", "BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: " + ih1Hex + "\r\n\r\n", Announce{}, true},
		{"port too big", "BT-SEARCH * HTTP/1.1\r\nPort: 65536\r\nInfohash: " + ih1Hex + "\r\n\r\n", Announce{}, true},
		{"negative port", "BT-SEARCH * HTTP/1.1\r\nPort: -1\r\nInfohash: " + ih1Hex + "\r\n\r\n", Announce{}, true},
		{"no hash", "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n", Announce{}, true},
		{"header without colon", "BT-SEARCH * HTTP/1.1\r\nPort 1\r\n\r\n", Announce{}, true},
		{"long line", "BT-SEARCH * HTTP/1.1\r\nHost: " + strings.Repeat("a", 300) + "\r\nPort: 1\r\nInfohash: " + ih1Hex + "\r\n", Announce{}, true},
		{"too large", "BT-SEARCH * HTTP/1.1\r\n" + strings.Repeat("Port: 1\r\n", 200), Announce{}, true},
		{"long cookie dropped", "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: " + ih1Hex + "\r\ncookie: " + strings.Repeat("c", 100) + "\r\n",
			Announce{Port: 1, InfoHashes: [][20]byte{ih1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in), Limits{})
			if tt.bad {
				if !errors.Is(err, ErrBad) {
					t.Fatalf("err = %v, want ErrBad", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMaxHashes(t *testing.T) {
	a := Announce{Host: Group, Port: 9, Cookie: "k"}
	for i := range 40 {
		a.InfoHashes = append(a.InfoHashes, [20]byte{byte(i)})
	}
	got, err := Parse(Append(nil, a), Limits{MaxSize: 4096, MaxHashes: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.InfoHashes) != 5 || got.InfoHashes[4] != a.InfoHashes[4] {
		t.Fatalf("kept %d", len(got.InfoHashes))
	}
}

func TestRoundTrip(t *testing.T) {
	a := Announce{Host: Group, Port: 6881, InfoHashes: make([][20]byte, MaxSendHashes), Cookie: "0123456789abcdef"}
	for i := range a.InfoHashes {
		a.InfoHashes[i][0], a.InfoHashes[i][19] = byte(i), 0xff
	}
	b := Append(nil, a)
	if len(b) > DefaultMaxSize {
		t.Fatalf("an announce of %d hashes takes %d bytes, over %d", MaxSendHashes, len(b), DefaultMaxSize)
	}
	got, err := Parse(b, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("got %+v, want %+v", got, a)
	}
	if !strings.HasPrefix(string(b), "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: ") ||
		!strings.HasSuffix(string(b), "\r\ncookie: 0123456789abcdef\r\n\r\n\r\n") {
		t.Fatalf("layout: %q", b)
	}
}
