package server

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/tbproxy/tbproxy/metainfo"
	"github.com/tbproxy/tbproxy/tracker"
)

func TestParseAnnounce(t *testing.T) {
	ih, id := hashN(1), idN(1)
	base := query(ih, id, 6881)
	tests := []struct {
		name  string
		q     string
		check func(t *testing.T, r Request)
		err   string // substring of the error; "" for success
	}{
		{name: "minimal", q: base, check: func(t *testing.T, r Request) {
			if r.InfoHash != ih || r.PeerID != id || r.Port != 6881 {
				t.Errorf("got %+v", r)
			}
			if r.NumWant != -1 || !r.Compact || r.Event != tracker.None || r.LeftKnown {
				t.Errorf("defaults wrong: %+v", r)
			}
		}},
		{name: "full libtorrent style", q: base + "&uploaded=10&downloaded=20&left=30&corrupt=0&key=ABCD1234&event=started&numwant=200&compact=1&no_peer_id=1&supportcrypto=1&redundant=0", check: func(t *testing.T, r Request) {
			if r.Uploaded != 10 || r.Downloaded != 20 || r.Left != 30 || !r.LeftKnown || r.Event != tracker.Started || r.NumWant != 200 || !r.NoPeerID {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "unescaped safe bytes", q: "info_hash=abcdefghij0123456789&peer_id=-TR2940-abcdefghijkl&port=1", check: func(t *testing.T, r Request) {
			if string(r.InfoHash[:]) != "abcdefghij0123456789" {
				t.Errorf("info_hash %q", r.InfoHash[:])
			}
		}},
		{name: "plus is space", q: "info_hash=abcdefghij012345678+&peer_id=-TR2940-abcdefghijkl&port=1", check: func(t *testing.T, r Request) {
			if r.InfoHash[19] != ' ' {
				t.Errorf("info_hash %q", r.InfoHash[:])
			}
		}},
		{name: "escaped key", q: "info%5Fhash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]) + "&port=1", check: func(t *testing.T, r Request) {
			if r.InfoHash != ih {
				t.Error("escaped key not decoded")
			}
		}},
		{name: "empty segments", q: "&&" + base + "&&", check: func(t *testing.T, r Request) {}},
		{name: "left MaxInt64", q: base + "&left=9223372036854775807&uploaded=9223372036854775807&downloaded=0000000000000000001", check: func(t *testing.T, r Request) {
			if !r.LeftKnown || r.Left != math.MaxInt64 || r.Uploaded != math.MaxInt64 || r.Downloaded != 1 {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "left zero", q: base + "&left=0", check: func(t *testing.T, r Request) {
			if !r.LeftKnown || r.Left != 0 {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "compact=0", q: base + "&compact=0", check: func(t *testing.T, r Request) {
			if r.Compact {
				t.Error("compact=0 ignored")
			}
		}},
		{name: "events", q: base + "&event=completed", check: func(t *testing.T, r Request) {
			if r.Event != tracker.Completed {
				t.Error(r.Event)
			}
		}},
		{name: "event stopped", q: base + "&event=stopped", check: func(t *testing.T, r Request) {
			if r.Event != tracker.Stopped {
				t.Error(r.Event)
			}
		}},
		{name: "event empty", q: base + "&event=empty", check: func(t *testing.T, r Request) {}},
		{name: "event paused", q: base + "&event=paused", check: func(t *testing.T, r Request) {}},
		{name: "numwant huge saturates", q: base + "&numwant=1000000000000000000000000", check: func(t *testing.T, r Request) {
			if r.NumWant != maxNumWantParsed {
				t.Error(r.NumWant)
			}
		}},
		{name: "numwant negative is default", q: base + "&numwant=-1", check: func(t *testing.T, r Request) {
			if r.NumWant != -1 {
				t.Error(r.NumWant)
			}
		}},
		{name: "numwant zero", q: base + "&numwant=0", check: func(t *testing.T, r Request) {
			if r.NumWant != 0 {
				t.Error(r.NumWant)
			}
		}},
		{name: "ip v4", q: base + "&ip=10.1.2.3", check: func(t *testing.T, r Request) {
			if r.IP != netip.MustParseAddr("10.1.2.3") {
				t.Error(r.IP)
			}
		}},
		{name: "ip v6 escaped", q: base + "&ip=2001%3Adb8%3A%3A1", check: func(t *testing.T, r Request) {
			if r.IP != netip.MustParseAddr("2001:db8::1") {
				t.Error(r.IP)
			}
		}},
		{name: "ip mapped", q: base + "&ip=::ffff:10.0.0.1", check: func(t *testing.T, r Request) {
			if r.IP != netip.MustParseAddr("10.0.0.1") {
				t.Error(r.IP)
			}
		}},
		{name: "ip name is ignored", q: base + "&ip=victim.example", check: func(t *testing.T, r Request) {
			if r.IP.IsValid() {
				t.Error(r.IP)
			}
		}},
		{name: "unknown params ignored", q: base + "&foo=bar&trackerid=x", check: func(t *testing.T, r Request) {}},

		{name: "missing info_hash", q: "peer_id=" + esc(id[:]) + "&port=1", err: "missing info_hash"},
		{name: "missing peer_id", q: "info_hash=" + esc(ih[:]) + "&port=1", err: "missing peer_id"},
		{name: "missing port", q: "info_hash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]), err: "missing port"},
		{name: "empty query", q: "", err: "missing info_hash"},
		{name: "19-byte info_hash", q: query(ih, id, 1)[:len("info_hash=")+19*3] + "&peer_id=" + esc(id[:]) + "&port=1", err: "invalid info_hash"},
		{name: "21-byte info_hash", q: "info_hash=" + esc(ih[:]) + "%00&peer_id=" + esc(id[:]) + "&port=1", err: "invalid info_hash"},
		{name: "garbage info_hash", q: "info_hash=%zz" + esc(ih[1:]) + "&peer_id=" + esc(id[:]) + "&port=1", err: "invalid info_hash"},
		{name: "truncated escape", q: "info_hash=" + esc(ih[:19]) + "%4&peer_id=" + esc(id[:]) + "&port=1", err: "invalid info_hash"},
		{name: "hex info_hash", q: "info_hash=" + ih.HexString() + "&peer_id=" + esc(id[:]) + "&port=1", err: "invalid info_hash"},
		{name: "short peer_id", q: "info_hash=" + esc(ih[:]) + "&peer_id=abc&port=1", err: "invalid peer_id"},
		{name: "repeated info_hash", q: base + "&info_hash=" + esc(ih[:]), err: "invalid info_hash"},
		{name: "port=0", q: query(ih, id, 0), err: "invalid port"},
		{name: "port=65536", q: query(ih, id, 65536), err: "invalid port"},
		{name: "port negative", q: query(ih, id, -1), err: "invalid port"},
		{name: "port hex", q: "info_hash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]) + "&port=0x10", err: "invalid port"},
		{name: "port empty", q: "info_hash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]) + "&port=", err: "invalid port"},
		{name: "left=-1", q: base + "&left=-1", err: "invalid left"},
		{name: "left non-numeric", q: base + "&left=abc", err: "invalid left"},
		{name: "left overflows", q: base + "&left=99999999999999999999", err: "invalid left"},
		{name: "uploaded 19 nines overflows", q: base + "&uploaded=9999999999999999999&left=9223372036854775808", err: "invalid uploaded"},
		{name: "left MaxInt64+1 overflows", q: base + "&left=9223372036854775808", err: "invalid left"},
		{name: "downloaded 19 nines overflows", q: base + "&downloaded=9999999999999999999", err: "invalid downloaded"},
		{name: "uploaded MaxInt64+2 overflows", q: base + "&uploaded=9223372036854775809", err: "invalid uploaded"},
		{name: "port 19 nines", q: "info_hash=" + esc(ih[:]) + "&peer_id=" + esc(id[:]) + "&port=9999999999999999999", err: "invalid port"},
		{name: "uploaded negative", q: base + "&uploaded=-5", err: "invalid uploaded"},
		{name: "downloaded float", q: base + "&downloaded=1.5", err: "invalid downloaded"},
		{name: "numwant garbage", q: base + "&numwant=lots", err: "invalid numwant"},
		{name: "bad event", q: base + "&event=exploded", err: "invalid event"},
		{name: "too long", q: base + "&pad=" + strings.Repeat("x", MaxAnnounceQuery), err: "request too long"},
		{name: "too many params", q: base + strings.Repeat("&a=1", MaxAnnounceParams), err: "too many parameters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseAnnounce(tt.q)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			tt.check(t, r)
		})
	}
}

func TestParseAnnounceErrorTypes(t *testing.T) {
	_, err := ParseAnnounce("port=1")
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != "info_hash" || !pe.Missing {
		t.Errorf("got %#v", err)
	}
	_, err = ParseAnnounce(strings.Repeat("a", MaxAnnounceQuery+1))
	if !errors.Is(err, ErrQueryTooLong) {
		t.Errorf("got %v", err)
	}
}

func TestParseAnnounceAllocs(t *testing.T) {
	q := query(hashN(1), idN(1), 6881, "uploaded=0", "downloaded=0", "left=100", "event=started", "numwant=50", "compact=1", "no_peer_id=1", "key=1234")
	if n := testing.AllocsPerRun(100, func() { ParseAnnounce(q) }); n != 0 {
		t.Errorf("%v allocations per parse, want 0", n)
	}
}

func TestParseScrape(t *testing.T) {
	h1, h2 := hashN(1), hashN(2)
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte('&')
			}
			h := hashN(i)
			b.WriteString("info_hash=" + esc(h[:]))
		}
		return b.String()
	}
	tests := []struct {
		name string
		q    string
		max  int
		want []metainfo.Hash
		err  error  // errors.Is target
		msg  string // or error substring
	}{
		{name: "one", q: "info_hash=" + esc(h1[:]), want: []metainfo.Hash{h1}},
		{name: "two with repeat", q: "info_hash=" + esc(h1[:]) + "&info_hash=" + esc(h2[:]) + "&info_hash=" + esc(h1[:]), want: []metainfo.Hash{h1, h2, h1}},
		{name: "other params ignored", q: "passkey=x&info_hash=" + esc(h1[:]), want: []metainfo.Hash{h1}},
		{name: "74 hashes", q: many(74), want: func() []metainfo.Hash {
			var hs []metainfo.Hash
			for i := range 74 {
				hs = append(hs, hashN(i))
			}
			return hs
		}()},
		{name: "full scrape", q: "", err: ErrFullScrape},
		{name: "full scrape with junk", q: "a=b", err: ErrFullScrape},
		{name: "75 hashes", q: many(75), err: ErrTooManyHashes},
		{name: "custom cap", q: many(3), max: 2, err: ErrTooManyHashes},
		{name: "10k hashes", q: many(10_000), err: ErrQueryTooLong},
		{name: "19-byte hash", q: "info_hash=" + esc(h1[:19]), msg: "invalid info_hash"},
		{name: "too many other params", q: "info_hash=" + esc(h1[:]) + strings.Repeat("&x=1", maxScrapeExtraParams+1), err: ErrTooManyParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseScrape(tt.q, tt.max, nil)
			switch {
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Fatalf("error %v, want %v", err, tt.err)
				}
				return
			case tt.msg != "":
				if err == nil || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("error %v, want %q", err, tt.msg)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d hashes, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("hash %d: %x, want %x", i, got[i], tt.want[i])
				}
			}
		})
	}
}
