package metainfo

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

const (
	magnetTestHex    = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
	magnetTestBase32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK"
	magnetTestV2     = "urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e"
)

func magnetTestHash(t testing.TB) Hash {
	t.Helper()
	h, err := ParseHash(magnetTestHex)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParseMagnet(t *testing.T) {
	h := magnetTestHash(t)
	xt := "magnet:?xt=urn:btih:" + magnetTestHex
	tests := []struct {
		name    string
		uri     string
		want    Magnet
		wantErr error // nil: success expected
	}{
		{
			name: "hex",
			uri:  xt,
			want: Magnet{InfoHash: h, Length: -1},
		},
		{
			name: "base32",
			uri:  "magnet:?xt=urn:btih:" + magnetTestBase32,
			want: Magnet{InfoHash: h, Length: -1},
		},
		{
			name: "base32 lower-case",
			uri:  "magnet:?xt=urn:btih:" + strings.ToLower(magnetTestBase32),
			want: Magnet{InfoHash: h, Length: -1},
		},
		{
			name: "upper-case scheme, urn, hash and key",
			uri:  "MAGNET:?XT=URN:BTIH:" + strings.ToUpper(magnetTestHex),
			want: Magnet{InfoHash: h, Length: -1},
		},
		{
			name: "all fields",
			uri: xt + "&dn=My+File%20%C3%A9.mkv&xl=1234&tr=udp%3A%2F%2Ft1%3A80&tr=http://t2/announce" +
				"&ws=https%3A%2F%2Fseed%2Ff&so=0,2,4-6&x.pe=1.2.3.4%3A5&foo=b&foo=a",
			want: Magnet{
				InfoHash:   h,
				Name:       "My File é.mkv",
				Trackers:   []string{"udp://t1:80", "http://t2/announce"},
				WebSeeds:   []string{"https://seed/f"},
				Length:     1234,
				SelectOnly: []int{0, 2, 4, 5, 6},
				Params:     url.Values{"x.pe": {"1.2.3.4:5"}, "foo": {"b", "a"}},
			},
		},
		{
			name: "numbered keys",
			uri:  "magnet:?xt.1=urn:btih:" + magnetTestHex + "&tr.1=http://a&tr.2=http://b&dn.1=n&ws.1=http://w",
			want: Magnet{InfoHash: h, Name: "n", Trackers: []string{"http://a", "http://b"},
				WebSeeds: []string{"http://w"}, Length: -1},
		},
		{
			name: "duplicate and empty trackers dropped",
			uri:  xt + "&tr=http://a&tr=&tr=http://b&tr=http://a",
			want: Magnet{InfoHash: h, Trackers: []string{"http://a", "http://b"}, Length: -1},
		},
		{
			name: "hybrid v1 and v2",
			uri:  xt + "&xt=" + magnetTestV2,
			want: Magnet{InfoHash: h, Length: -1, Params: url.Values{"xt": {magnetTestV2}}},
		},
		{
			name: "fragment ignored",
			uri:  xt + "&dn=a#dn=b",
			want: Magnet{InfoHash: h, Name: "a", Length: -1},
		},
		{
			name: "repeated identical dn",
			uri:  xt + "&dn=a&dn=a",
			want: Magnet{InfoHash: h, Name: "a", Length: -1},
		},
		{
			name: "xl zero",
			uri:  xt + "&xl=0",
			want: Magnet{InfoHash: h, Length: 0},
		},
		{
			name: "so overlapping ranges",
			uri:  xt + "&so=5-7,1,6-9,1",
			want: Magnet{InfoHash: h, Length: -1, SelectOnly: []int{1, 5, 6, 7, 8, 9}},
		},
		{
			name: "so at the limits",
			uri:  xt + "&so=1038576-1048575",
			want: Magnet{InfoHash: h, Length: -1, SelectOnly: magnetTestRange(1038576, 1048575)},
		},
		{name: "missing xt", uri: "magnet:?dn=x&tr=http://a", wantErr: ErrMagnet},
		{name: "empty query", uri: "magnet:?", wantErr: ErrMagnet},
		{name: "two btih xts", uri: xt + "&xt=urn:btih:" + magnetTestBase32, wantErr: ErrMagnet},
		{name: "two identical btih xts", uri: xt + "&xt=urn:btih:" + magnetTestHex, wantErr: ErrMagnet},
		{name: "bad hex", uri: "magnet:?xt=urn:btih:" + strings.Repeat("g", 40), wantErr: ErrBadHash},
		{name: "short hash", uri: "magnet:?xt=urn:btih:abcd", wantErr: ErrBadHash},
		{name: "v2 only", uri: "magnet:?xt=" + magnetTestV2, wantErr: ErrV2Only},
		{name: "other urn only", uri: "magnet:?xt=urn:sha1:abc", wantErr: ErrMagnet},
		{name: "so descending", uri: xt + "&so=6-4", wantErr: ErrMagnet},
		{name: "so hostile", uri: xt + "&so=0-99999999", wantErr: ErrMagnet},
		{name: "so just over the count", uri: xt + "&so=0-9999,10000", wantErr: ErrMagnet},
		{name: "so index too large", uri: xt + "&so=1048576", wantErr: ErrMagnet},
		{name: "so huge digits", uri: xt + "&so=" + strings.Repeat("9", 40), wantErr: ErrMagnet},
		{name: "so negative", uri: xt + "&so=-1", wantErr: ErrMagnet},
		{name: "so empty item", uri: xt + "&so=1,,2", wantErr: ErrMagnet},
		{name: "so empty", uri: xt + "&so=", wantErr: ErrMagnet},
		{name: "so open range", uri: xt + "&so=3-", wantErr: ErrMagnet},
		{name: "so conflicting", uri: xt + "&so=1&so=2", wantErr: ErrMagnet},
		{name: "xl negative", uri: xt + "&xl=-5", wantErr: ErrMagnet},
		{name: "xl plus sign", uri: xt + "&xl=%2B5", wantErr: ErrMagnet},
		{name: "xl not a number", uri: xt + "&xl=12a", wantErr: ErrMagnet},
		{name: "xl overflow", uri: xt + "&xl=9223372036854775808", wantErr: ErrMagnet},
		{name: "xl conflicting", uri: xt + "&xl=1&xl=2", wantErr: ErrMagnet},
		{name: "dn conflicting", uri: xt + "&dn=a&dn=b", wantErr: ErrMagnet},
		{name: "not a magnet scheme", uri: "http://example.com/?xt=urn:btih:" + magnetTestHex, wantErr: ErrMagnet},
		{name: "magnet without query", uri: "magnet:xt=urn:btih:" + magnetTestHex, wantErr: ErrMagnet},
		{name: "bad escape", uri: xt + "&dn=%zz", wantErr: ErrMagnet},
		{name: "empty key", uri: xt + "&=v", wantErr: ErrMagnet},
		{name: "huge URI", uri: xt + "&dn=" + strings.Repeat("a", MaxMagnetLen), wantErr: ErrMagnet},
		{name: "canonical form too long", uri: xt + "&dn=" + strings.Repeat("é", 20000), wantErr: ErrMagnet},
		{name: "too many trackers", uri: xt + magnetTestRepeat("tr", MaxMagnetTrackers+1), wantErr: ErrMagnet},
		{name: "too many web seeds", uri: xt + magnetTestRepeat("ws", MaxMagnetWebSeeds+1), wantErr: ErrMagnet},
		{
			name: "trackers at the limit",
			uri:  xt + magnetTestRepeat("tr", MaxMagnetTrackers),
			want: Magnet{InfoHash: h, Length: -1, Trackers: magnetTestURLs(MaxMagnetTrackers)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMagnet(tt.uri)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseMagnet succeeded with %+v, want an error", got)
				}
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrMagnet) {
					t.Fatalf("error %q does not match %v and ErrMagnet", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "metainfo: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseMagnet: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
			again, err := ParseMagnet(got.String())
			if err != nil {
				t.Fatalf("re-parsing %q: %v", got.String(), err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("round trip through %q changed\n%#v\nto\n%#v", got.String(), got, again)
			}
		})
	}
}

func TestMagnetV2OnlyMessage(t *testing.T) {
	_, err := ParseMagnet("magnet:?xt=" + magnetTestV2)
	if err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Fatalf("error %v does not say unsupported", err)
	}
}

func TestMagnetString(t *testing.T) {
	h := magnetTestHash(t)
	tests := []struct {
		name string
		m    Magnet
		want string
	}{
		{
			name: "hash only",
			m:    Magnet{InfoHash: h, Length: -1},
			want: "magnet:?xt=urn:btih:" + magnetTestHex,
		},
		{
			name: "canonical order and escaping",
			m: Magnet{
				InfoHash:   h,
				Name:       "a b&c=d",
				Trackers:   []string{"udp://t:1", "http://u/a?x=1"},
				WebSeeds:   []string{"https://w/"},
				Length:     0,
				SelectOnly: []int{9, 0, 1, 2, 4, 2, 7, 8},
				Params:     url.Values{"z": {"1"}, "a": {"2", "3"}, "xt": {"urn:btmh:12"}},
			},
			want: "magnet:?xt=urn:btih:" + magnetTestHex + "&dn=a+b%26c%3Dd&xl=0" +
				"&tr=udp%3A%2F%2Ft%3A1&tr=http%3A%2F%2Fu%2Fa%3Fx%3D1&ws=https%3A%2F%2Fw%2F" +
				"&so=0-2,4,7-9&a=2&a=3&xt=urn%3Abtmh%3A12&z=1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.String(); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// magnetTestRepeat returns "&key=http://h<i>/" for n distinct i.
func magnetTestRepeat(key string, n int) string {
	var b strings.Builder
	for _, u := range magnetTestURLs(n) {
		b.WriteString("&" + key + "=" + u)
	}
	return b.String()
}

func magnetTestURLs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "http://h" + strings.Repeat("x", i) + "/"
	}
	return out
}

func magnetTestRange(lo, hi int) []int {
	out := make([]int, 0, hi-lo+1)
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}

func FuzzMagnet(f *testing.F) {
	xt := "magnet:?xt=urn:btih:" + magnetTestHex
	for _, s := range []string{
		xt,
		"magnet:?xt=urn:btih:" + magnetTestBase32 + "&dn=x",
		xt + "&dn=a+b&xl=10&tr=udp%3A%2F%2Ft%3A1&ws=http://w/&so=0,2,4-6&x.pe=h:1",
		xt + "&xt=" + magnetTestV2 + "&tr.1=a&tr.2=b",
		"magnet:?xt=" + magnetTestV2,
		xt + "&so=0-99999999",
		xt + "&so=5-3",
		xt + "&xl=-1",
		"MAGNET:?XT=URN:BTIH:" + strings.ToUpper(magnetTestHex) + "#frag",
		xt + "&=&&a&b=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		m, err := ParseMagnet(uri)
		if err != nil {
			if !errors.Is(err, ErrMagnet) {
				t.Fatalf("error %v does not wrap ErrMagnet", err)
			}
			return
		}
		if len(m.Trackers) > MaxMagnetTrackers || len(m.WebSeeds) > MaxMagnetWebSeeds ||
			len(m.SelectOnly) > MaxMagnetSelect || m.Length < -1 {
			t.Fatalf("limits not enforced: %+v", m)
		}
		s := m.String()
		again, err := ParseMagnet(s)
		if err != nil {
			t.Fatalf("re-parsing %q: %v", s, err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip through %q changed\n%#v\nto\n%#v", s, m, again)
		}
		if again.String() != s {
			t.Fatalf("String is not stable: %q then %q", s, again.String())
		}
	})
}
