package extension_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tbproxy/tbproxy/bencode"
	"github.com/tbproxy/tbproxy/swarm/internal/extension"
)

const libtorrentHandshake = "d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v16:libtorrent/2.0.8e"

func TestParseLibtorrent(t *testing.T) {
	h, err := extension.ParseHandshake([]byte(libtorrentHandshake), extension.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	want := extension.Handshake{
		M:            map[string]int{"ut_metadata": 2, "ut_pex": 1},
		V:            "libtorrent/2.0.8",
		P:            6881,
		Reqq:         500,
		MetadataSize: 31235,
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("got %+v, want %+v", h, want)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		h    extension.Handshake
		want string // exact encoding, when checked
	}{
		{
			name: "empty",
			h:    extension.Handshake{},
			want: "d1:mdee",
		},
		{
			name: "libtorrent-like",
			h: extension.Handshake{
				M: map[string]int{"ut_metadata": 2, "ut_pex": 1}, V: "libtorrent/2.0.8",
				P: 6881, Reqq: 500, MetadataSize: 31235,
			},
			want: "d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v16:libtorrent/2.0.8e",
		},
		{
			name: "disabled entry and addresses",
			h: extension.Handshake{
				M:      map[string]int{"ut_metadata": 0, "lt_donthave": 7},
				YourIP: []byte{127, 0, 0, 1},
				IPv4:   []byte{10, 1, 2, 3},
				IPv6:   bytes.Repeat([]byte{0xfe}, 16),
			},
		},
		{
			name: "ipv6 yourip and max values",
			h: extension.Handshake{
				M:            map[string]int{strings.Repeat("x", extension.MaxNameLen): 255},
				V:            strings.Repeat("é", extension.MaxClientLen/2),
				P:            65535,
				Reqq:         1<<31 - 1,
				MetadataSize: extension.DefaultMaxMetadataSize,
				YourIP:       bytes.Repeat([]byte{1}, 16),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := extension.MarshalHandshake(tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != "" && string(b) != tt.want {
				t.Errorf("encoded %q, want %q", b, tt.want)
			}
			got, err := extension.ParseHandshake(b, extension.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			want := tt.h
			if want.M == nil {
				want.M = map[string]int{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip: got %+v, want %+v", got, want)
			}
		})
	}
}

func TestMarshalRefuses(t *testing.T) {
	tests := []struct {
		name string
		h    extension.Handshake
	}{
		{"id above 255", extension.Handshake{M: map[string]int{"a": 256}}},
		{"negative id", extension.Handshake{M: map[string]int{"a": -1}}},
		{"empty name", extension.Handshake{M: map[string]int{"": 1}}},
		{"long name", extension.Handshake{M: map[string]int{strings.Repeat("n", 65): 1}}},
		{"port", extension.Handshake{P: 65536}},
		{"negative reqq", extension.Handshake{Reqq: -1}},
		{"negative metadata_size", extension.Handshake{MetadataSize: -5}},
		{"invalid utf-8 client", extension.Handshake{V: "a\xffb"}},
		{"long client", extension.Handshake{V: strings.Repeat("v", 257)}},
		{"yourip length", extension.Handshake{YourIP: []byte{1, 2, 3}}},
		{"ipv4 length", extension.Handshake{IPv4: make([]byte, 16)}},
		{"ipv6 length", extension.Handshake{IPv6: make([]byte, 4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := extension.MarshalHandshake(tt.h); err == nil {
				t.Fatalf("marshalled %q, want an error", b)
			}
		})
	}
}

// names returns an "m" dictionary with n entries, keys sorted as strict
// bencode requires.
func names(n int) string {
	var sb strings.Builder
	sb.WriteString("d1:md")
	for i := range n {
		k := fmt.Sprintf("x%04d", i)
		fmt.Fprintf(&sb, "%d:%si%de", len(k), k, i%255+1)
	}
	sb.WriteString("ee")
	return sb.String()
}

func TestParseHostile(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		lim     extension.Limits
		wantErr error // nil means success and want is compared
		want    extension.Handshake
	}{
		{name: "empty payload", payload: "", wantErr: extension.ErrHandshake},
		{name: "integer", payload: "i1e", wantErr: extension.ErrHandshake},
		{name: "list", payload: "l1:me", wantErr: extension.ErrHandshake},
		{name: "string", payload: "4:spam", wantErr: extension.ErrHandshake},
		{name: "truncated", payload: "d1:md11:ut_metadatai2e", wantErr: bencode.ErrUnexpectedEOF},
		{name: "length prefix past the end", payload: "d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e1:v17:libtorrent/2.0.8e", wantErr: bencode.ErrUnexpectedEOF},
		{name: "truncated string", payload: "d1:v99999:abc", wantErr: extension.ErrHandshake},
		{name: "trailing data", payload: "d1:mdeexyz", wantErr: bencode.ErrTrailingData},
		{name: "unsorted keys", payload: "d1:v1:a1:mdee", wantErr: bencode.ErrUnsortedKeys},
		{name: "integer overflow", payload: "d13:metadata_sizei99999999999999999999999ee", wantErr: bencode.ErrIntegerOverflow},
		{name: "payload too large", payload: "d1:v70000:" + strings.Repeat("a", 70000) + "e", wantErr: extension.ErrPayloadTooLarge},
		{name: "payload over custom cap", payload: libtorrentHandshake, lim: extension.Limits{MaxPayload: 50}, wantErr: extension.ErrPayloadTooLarge},
		{name: "huge metadata_size", payload: "d1:mde13:metadata_sizei31457281ee", wantErr: extension.ErrMetadataSize},
		{name: "metadata_size over custom cap", payload: "d1:mde13:metadata_sizei1025ee", lim: extension.Limits{MaxMetadataSize: 1024}, wantErr: extension.ErrMetadataSize},
		{name: "negative metadata_size", payload: "d1:mde13:metadata_sizei-1ee", wantErr: extension.ErrMetadataSize},
		{
			name:    "metadata_size at cap",
			payload: "d1:mde13:metadata_sizei31457280ee",
			want:    extension.Handshake{M: map[string]int{}, MetadataSize: 30 << 20},
		},
		{
			name:    "ids outside 0..255 ignored",
			payload: "d1:md1:ai256e1:bi-1e1:ci255e1:di0eee",
			want:    extension.Handshake{M: map[string]int{"c": 255, "d": 0}},
		},
		{
			name:    "long and empty names ignored",
			payload: "d1:md0:i1e64:" + strings.Repeat("n", 64) + "i3e65:" + strings.Repeat("n", 65) + "i2eee",
			want:    extension.Handshake{M: map[string]int{strings.Repeat("n", 64): 3}},
		},
		{
			name:    "no m",
			payload: "d1:pi1ee",
			want:    extension.Handshake{M: map[string]int{}, P: 1},
		},
		{
			name:    "unknown keys ignored",
			payload: "d8:completei1e1:md6:ut_pexi1ee11:upload_onlyi1e1:xld1:yleeee",
			want:    extension.Handshake{M: map[string]int{"ut_pex": 1}},
		},
		{
			name:    "wrong types ignored",
			payload: "d4:ipv4i4e4:ipv6le1:mli1ee13:metadata_size3:big1:p4:68814:reqqde1:vi3e6:youripi1ee",
			want:    extension.Handshake{M: map[string]int{}},
		},
		{
			name:    "m entries of wrong type ignored",
			payload: "d1:md1:a1:11:bli1ee1:ci3eee",
			want:    extension.Handshake{M: map[string]int{"c": 3}},
		},
		{
			name:    "bad lengths and ranges ignored",
			payload: "d4:ipv46:abcdef4:ipv64:abcd1:mde1:pi70000e4:reqqi-5e6:yourip5:abcdee",
			want:    extension.Handshake{M: map[string]int{}},
		},
		{
			name:    "zero port ignored",
			payload: "d1:mde1:pi0ee",
			want:    extension.Handshake{M: map[string]int{}},
		},
		{
			name:    "huge reqq ignored",
			payload: "d1:mde4:reqqi4294967296ee",
			want:    extension.Handshake{M: map[string]int{}},
		},
		{
			name:    "invalid utf-8 client replaced",
			payload: "d1:mde1:v6:ab\xff\xfecde",
			want:    extension.Handshake{M: map[string]int{}, V: "ab\uFFFDcd"},
		},
		{
			name:    "long client truncated",
			payload: "d1:mde1:v300:" + strings.Repeat("v", 300) + "e",
			want:    extension.Handshake{M: map[string]int{}, V: strings.Repeat("v", 256)},
		},
		{
			name:    "long client truncated on a character boundary",
			payload: "d1:mde1:v258:a" + strings.Repeat("é", 128) + "ze",
			want:    extension.Handshake{M: map[string]int{}, V: "a" + strings.Repeat("é", 127)},
		},
		{
			name:    "addresses",
			payload: "d4:ipv44:\x0a\x00\x00\x014:ipv616:" + strings.Repeat("\xfe", 16) + "1:mde6:yourip4:\x7f\x00\x00\x01e",
			want: extension.Handshake{
				M: map[string]int{}, IPv4: []byte{10, 0, 0, 1},
				IPv6: bytes.Repeat([]byte{0xfe}, 16), YourIP: []byte{127, 0, 0, 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := extension.ParseHandshake([]byte(tt.payload), tt.lim)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("parsed %+v, want error %v", got, tt.wantErr)
				}
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, extension.ErrHandshake) {
					t.Fatalf("error %v, want %v and ErrHandshake", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if !utf8.ValidString(got.V) || len(got.V) > extension.MaxClientLen {
				t.Fatalf("client name %q not sanitised", got.V)
			}
		})
	}
}

func TestParseNamesCapped(t *testing.T) {
	tests := []struct {
		name string
		n    int
		lim  extension.Limits
		want int
	}{
		{"under default cap", 100, extension.Limits{}, 100},
		{"1000 names, default cap", 1000, extension.Limits{}, extension.DefaultMaxNames},
		{"custom cap", 1000, extension.Limits{MaxNames: 10}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := extension.ParseHandshake([]byte(names(tt.n)), tt.lim)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.M) != tt.want {
				t.Fatalf("kept %d names, want %d", len(h.M), tt.want)
			}
			// The first names in key order are the ones kept.
			for i := range tt.want {
				if _, ok := h.M[fmt.Sprintf("x%04d", i)]; !ok {
					t.Fatalf("name %d missing", i)
				}
			}
		})
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	payload := []byte("d1:md1:ai1ee1:v1:x6:yourip4:abcde")
	h, err := extension.ParseHandshake(payload, extension.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		payload[i] = '!'
	}
	if string(h.YourIP) != "abcd" || h.V != "x" || h.M["a"] != 1 {
		t.Fatalf("result changed with its input: %+v", h)
	}
}
